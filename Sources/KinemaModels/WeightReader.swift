import Foundation
import KinemaCore

/// What was wrong with a component's weights: every missing, unexpected and mis-shaped key at once.
public struct WeightError: Error, CustomStringConvertible, Equatable {
    public let component: String
    public let missing: [String]
    public let unexpected: [String]
    /// (key, expected shape, shape in the file)
    public let misshaped: [String]

    public var description: String {
        var lines = ["\(component): the weights do not match the model"]
        func list(_ title: String, _ keys: [String]) {
            guard !keys.isEmpty else { return }
            lines.append("  \(title) (\(keys.count)): " + keys.prefix(12).joined(separator: ", ") + (keys.count > 12 ? ", …" : ""))
        }
        list("missing keys", missing)
        list("unexpected keys", unexpected)
        list("mis-shaped keys", misshaped)
        return lines.joined(separator: "\n")
    }
}

/// Hands a model's constructors their weights by checkpoint key, strictly: at `finish()` every
/// key the model asked for must have been found with the expected shape, and every key in the
/// files must have been used. Weights are copied onto the backend in its compute type (so f16
/// checkpoints widen to f32 on the CPU). Without files, it makes weights of the expected shapes
/// (the meta dry run, or planning from a config alone).
public final class WeightReader {
    public let component: String
    public let backend: Backend
    private var sources: [String: (file: SafeTensorsFile, info: SafeTensorInfo)] = [:]
    private let shapesOnly: Bool
    private var used: Set<String> = []
    private var missing: [String] = []
    private var misshaped: [String] = []
    /// Keys in the files that the model does not use and that are known to be harmless.
    private let ignorable: (String) -> Bool
    /// Other spellings of a key to try when it is absent (e.g. with or without `text_model.`).
    private let aliases: (String) -> [String]

    /// Reads weights from `files` (one component's safetensors files, shards or one file).
    public init(component: String, files: [SafeTensorsFile], backend: Backend,
                aliases: @escaping (String) -> [String] = { _ in [] },
                ignorable: @escaping (String) -> Bool = { _ in false }) throws {
        self.component = component
        self.backend = backend
        self.shapesOnly = false
        self.aliases = aliases
        self.ignorable = ignorable
        for file in files {
            for info in file.tensors {
                if sources[info.name] != nil {
                    throw WeightError(component: component, missing: [], unexpected: [], misshaped: ["\(info.name) appears in two files"])
                }
                sources[info.name] = (file, info)
            }
        }
    }

    /// Makes weights of the expected shapes without reading anything.
    public init(shapesOnlyFor component: String, backend: Backend) {
        self.component = component
        self.backend = backend
        self.shapesOnly = true
        self.aliases = { _ in [] }
        self.ignorable = { _ in false }
    }

    /// Makes weights of the expected shapes filled with uniform random values of standard
    /// deviation 0.02 (on a device that holds data), for benchmarks without a checkpoint.
    public convenience init(randomFor component: String, backend: Backend, seed: UInt64) {
        self.init(shapesOnlyFor: component, backend: backend)
        randomState = seed | 1
    }

    private var randomState: UInt64?

    private func randomWeight(_ shape: [Int], dtype: DType) -> Tensor {
        let tensor = backend.empty(shape, dtype: dtype, op: "weights")
        guard var state = randomState, tensor.hasData else { return tensor }
        let bound = Float(0.02 * 3.0.squareRoot())
        let values = [Float](unsafeUninitializedCapacity: tensor.count) { buffer, initialized in
            for i in 0..<tensor.count {
                state ^= state << 13; state ^= state >> 7; state ^= state << 17
                buffer[i] = (Float(state >> 40) / Float(1 << 24) * 2 - 1) * bound
            }
            initialized = tensor.count
        }
        randomState = state
        values.withUnsafeBytes { backend.writeKernel($0.baseAddress!, dtype: .f32, into: tensor) }
        return tensor
    }

    /// The dtype the weight matrices of linear and convolution layers (`matrix(_:_:)`) are kept in
    /// on the device; nil = the compute type. The ops widen them to the compute type one at a time,
    /// so f16 halves their memory and, for an f16 checkpoint, changes no value.
    public var matrixStorage: DType?

    /// The weight stored under `key`, which must have `shape`, in the compute type.
    public func callAsFunction(_ key: String, _ shape: [Int]) -> Tensor {
        read(key, shape, dtype: backend.computeType)
    }

    /// The weight matrix of a linear or convolution layer stored under `key`, in `matrixStorage`.
    public func matrix(_ key: String, _ shape: [Int]) -> Tensor {
        read(key, shape, dtype: matrixStorage ?? backend.computeType)
    }

    /// The bytes each key's weight takes on the device, as read so far.
    public private(set) var bytesByKey: [String: Int] = [:]
    /// The shape the model asked for under each key, so far.
    public private(set) var shapesByKey: [String: [Int]] = [:]

    private func read(_ key: String, _ shape: [Int], dtype: DType) -> Tensor {
        bytesByKey[key] = shape.reduce(1, *) * dtype.size
        shapesByKey[key] = shape
        if shapesOnly { return randomWeight(shape, dtype: dtype) }
        guard let name = ([key] + aliases(key)).first(where: { sources[$0] != nil }), let source = sources[name] else {
            missing.append(key)
            return backend.empty(shape, dtype: dtype, op: "weights")
        }
        used.insert(name)
        guard source.info.shape == shape else {
            misshaped.append("\(key) expected \(shape), found \(source.info.shape)")
            return backend.empty(shape, dtype: dtype, op: "weights")
        }
        do {
            let stored = try source.file.tensor(name)
            return backend.upload(stored, dtype: dtype)
        } catch {
            misshaped.append("\(key): \(error)")
            return backend.empty(shape, dtype: dtype, op: "weights")
        }
    }

    /// Throws a `WeightError` listing every problem found while building the model.
    public func finish() throws {
        let unexpected = shapesOnly ? [] : sources.keys.filter { !used.contains($0) && !ignorable($0) }.sorted()
        if !missing.isEmpty || !unexpected.isEmpty || !misshaped.isEmpty {
            throw WeightError(component: component, missing: missing.sorted(), unexpected: unexpected, misshaped: misshaped.sorted())
        }
    }
}
