import ArgumentParser
import Foundation
import KinemaCore

struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List the components, tensors, parameter counts and sizes of a checkpoint.",
        discussion: """
            PATH is a .safetensors file, a diffusers model folder (with model_index.json), or one \
            component folder (e.g. MODEL/unet). Every .safetensors file of a component is listed, \
            variants such as diffusion_pytorch_model.fp16.safetensors included. Headers are read \
            and validated; tensor data is memory-mapped, not read.

            Examples:
              kinema inspect Models/kinema-tiny
              kinema inspect Models/kinema-tiny/unet --summary
              kinema inspect weights.safetensors --json
            """
    )

    @Argument(help: "A .safetensors file or a model/component folder.")
    var path: String

    @Flag(help: "Only the per-file totals, not every tensor.")
    var summary = false

    @Flag(help: "Print JSON instead of text.")
    var json = false

    func run() throws {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw CLIError("no such file or folder: \(path)")
        }
        let components: [(name: String, files: [String])]
        if isDirectory.boolValue {
            components = try Self.components(in: path)
        } else {
            components = [((path as NSString).lastPathComponent, [path])]
        }
        var report: [[String: Any]] = []
        for component in components {
            for filePath in component.files {
                let file = try SafeTensorsFile(path: filePath)
                let parameters = file.tensors.reduce(0) { $0 + $1.count }
                let bytes = file.tensors.reduce(0) { $0 + $1.byteRange.count }
                let dtypes = Set(file.tensors.map(\.dtype.rawValue)).sorted().joined(separator: ",")
                if json {
                    report.append([
                        "component": component.name, "file": filePath, "tensors": file.tensors.count,
                        "parameters": parameters, "bytes": bytes, "dtypes": dtypes,
                        "tensor_list": summary ? [] : file.tensors.map { ["name": $0.name, "shape": $0.shape, "dtype": $0.dtype.rawValue] },
                    ])
                    continue
                }
                print("\(component.name): \((filePath as NSString).lastPathComponent)")
                print("  \(file.tensors.count) tensors, \(Self.grouped(parameters)) parameters, \(Self.bytes(bytes)) (\(dtypes))")
                if !summary {
                    let width = file.tensors.map(\.name.count).max() ?? 0
                    for t in file.tensors {
                        print("  \(t.name.padding(toLength: width, withPad: " ", startingAt: 0))  \(t.shape)  \(t.dtype)")
                    }
                }
            }
        }
        if json {
            let data = try JSONSerialization.data(withJSONObject: report, options: [.prettyPrinted, .sortedKeys])
            print(String(decoding: data, as: UTF8.self))
        }
    }

    /// The component folders of a diffusers model (from model_index.json), or the folder itself.
    static func components(in folder: String) throws -> [(name: String, files: [String])] {
        let fm = FileManager.default
        func safetensors(in dir: String) -> [String] {
            ((try? fm.contentsOfDirectory(atPath: dir)) ?? []).filter { $0.hasSuffix(".safetensors") }.sorted()
                .map { (dir as NSString).appendingPathComponent($0) }
        }
        let index = (folder as NSString).appendingPathComponent("model_index.json")
        if fm.fileExists(atPath: index) {
            guard let data = fm.contents(atPath: index),
                  let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
                throw CLIError("\(index): not a JSON object")
            }
            let names = object.keys.filter { !$0.hasPrefix("_") }.sorted()
            let found = names.map { ($0, safetensors(in: (folder as NSString).appendingPathComponent($0))) }.filter { !$0.1.isEmpty }
            if found.isEmpty { throw CLIError("\(folder): model_index.json names no component folder with .safetensors weights") }
            return found
        }
        let files = safetensors(in: folder)
        if files.isEmpty { throw CLIError("\(folder): no model_index.json and no .safetensors files") }
        return [((folder as NSString).lastPathComponent, files)]
    }

    static func grouped(_ n: Int) -> String {
        let digits = Array(String(n))
        var out = ""
        for (i, d) in digits.enumerated() {
            if i > 0 && (digits.count - i) % 3 == 0 { out.append(",") }
            out.append(d)
        }
        return out
    }

    static func bytes(_ n: Int) -> String {
        let units = ["B", "KB", "MB", "GB", "TB"]
        var value = Double(n), unit = 0
        while value >= 1000 && unit < units.count - 1 { value /= 1000; unit += 1 }
        return unit == 0 ? "\(n) B" : String(format: "%.2f %@", value, units[unit])
    }
}
