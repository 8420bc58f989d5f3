import Foundation

/// Compiles CUDA C++ source with NVRTC to a cubin for one architecture, caching the cubin on disk
/// under a key of (source hash, options, architecture, NVRTC version), so a second run loads it
/// without compiling. The cache folder is `$KINEMA_CUDA_CACHE`, else `$XDG_CACHE_HOME/kinema/cuda`,
/// else `~/.cache/kinema/cuda`; an unwritable cache only costs the compile.
struct KernelCompiler {
    let nvrtc: NVRTC
    /// e.g. "sm_90"
    let architecture: String
    let options: [String]

    init(nvrtc: NVRTC, architecture: String) {
        self.nvrtc = nvrtc
        self.architecture = architecture
        self.options = ["--gpu-architecture=\(architecture)", "--std=c++17", "-default-device"]
    }

    static var cacheFolder: String {
        let environment = ProcessInfo.processInfo.environment
        if let folder = environment["KINEMA_CUDA_CACHE"], !folder.isEmpty { return folder }
        let base = environment["XDG_CACHE_HOME"].flatMap { $0.isEmpty ? nil : $0 }
            ?? (NSHomeDirectory() as NSString).appendingPathComponent(".cache")
        return (base as NSString).appendingPathComponent("kinema/cuda")
    }

    /// FNV-1a, 64 bits: a stable hash (Swift's `Hasher` is seeded per process).
    static func fnv1a(_ text: String) -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in text.utf8 { hash = (hash ^ UInt64(byte)) &* 0x0000_0100_0000_01b3 }
        return hash
    }

    /// The cache key of `source` under this compiler.
    func cacheKey(_ source: String) throws -> String {
        let key = [String(Self.fnv1a(source), radix: 16), options.joined(separator: " "), architecture, try nvrtc.version()]
            .joined(separator: "|")
        return "\(architecture)-nvrtc\(try nvrtc.version())-\(String(Self.fnv1a(key), radix: 16))"
    }

    /// The cubin of `source`, from the cache or compiled now. `compiled` says which.
    func cubin(_ source: String, name: String) throws -> (image: [UInt8], fromCache: Bool, seconds: Double) {
        let start = Date()
        let key = try cacheKey(source)
        let path = (Self.cacheFolder as NSString).appendingPathComponent("\(name)-\(key).cubin")
        if let data = FileManager.default.contents(atPath: path), !data.isEmpty {
            return ([UInt8](data), true, Date().timeIntervalSince(start))
        }
        let image = try compile(source, name: name)
        try? FileManager.default.createDirectory(atPath: Self.cacheFolder, withIntermediateDirectories: true)
        let temporary = path + ".partial-\(getpid())"
        if FileManager.default.createFile(atPath: temporary, contents: Data(image)) { _ = rename(temporary, path) }
        return (image, false, Date().timeIntervalSince(start))
    }

    private func compile(_ source: String, name: String) throws -> [UInt8] {
        var program: CUhandle?
        try nvrtc.check(nvrtc.nvrtcCreateProgram(&program, source, name + ".cu", 0, nil, nil), "nvrtcCreateProgram(\(name))")
        defer { _ = nvrtc.nvrtcDestroyProgram(&program) }
        let cOptions = options.map { strdup($0) }
        defer { cOptions.forEach { free($0) } }
        let result = cOptions.map { UnsafePointer($0) }.withUnsafeBufferPointer { buffer in
            nvrtc.nvrtcCompileProgram(program, Int32(buffer.count), buffer.baseAddress)
        }
        if result != 0 {
            var size = 0
            _ = nvrtc.nvrtcGetProgramLogSize(program, &size)
            var log = [CChar](repeating: 0, count: max(size, 1))
            _ = nvrtc.nvrtcGetProgramLog(program, &log)
            try nvrtc.check(result, "nvrtcCompileProgram(\(name), \(options.joined(separator: " ")))\n\(String(cString: log))")
        }
        var size = 0
        try nvrtc.check(nvrtc.nvrtcGetCUBINSize(program, &size), "nvrtcGetCUBINSize(\(name))")
        var image = [CChar](repeating: 0, count: size)
        try nvrtc.check(nvrtc.nvrtcGetCUBIN(program, &image), "nvrtcGetCUBIN(\(name))")
        return image.map { UInt8(bitPattern: $0) }
    }
}
