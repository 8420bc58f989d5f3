import Foundation
import KinemaCore

/// One argument of a kernel launch, laid out as the kernel's C parameter.
enum KernelArgument {
    case pointer(CUdeviceptr)
    case null
    case int32(Int32)
    case int64(Int64)
    case float(Float)
    /// The kernels' `struct Dims { long long size[8]; long long stride[8]; }`.
    case dims(sizes: [Int], strides: [Int])

    static func int(_ value: Int) -> KernelArgument { .int32(Int32(value)) }
    static func long(_ value: Int) -> KernelArgument { .int64(Int64(value)) }
}

/// An NVIDIA GPU opened through the driver API: its primary context (made current on whichever
/// thread calls in), one stream that every kernel, copy and allocation is ordered on, a cuBLAS
/// handle on that stream, and the module of `KernelSource`. Opening it measures the fixed
/// overhead: device memory the context, cuBLAS (handle and its workspace) and the module take.
public final class CUDADevice: @unchecked Sendable {
    let driver: CUDADriver
    let nvrtc: NVRTC
    let cublas: CUBLAS
    let device: CUdevice
    let context: CUhandle?
    let stream: CUhandle?
    let cublasHandle: CUhandle?
    let pool: CUhandle?
    private let compiler: KernelCompiler
    private var modules: [KernelSource.Module: CUhandle?] = [:]
    private var functions: [String: CUhandle?] = [:]
    /// One line per kernel module loaded: compiled by NVRTC or read from the disk cache, and seconds.
    public private(set) var moduleLog: [String] = []
    private let lock = NSLock()

    /// e.g. "NVIDIA H200"
    public let deviceName: String
    /// e.g. "sm_90"
    public let architecture: String
    public let multiprocessors: Int
    /// Driver version as the driver reports it (e.g. 13000 for 13.0).
    public let driverVersion: Int
    public let nvrtcVersion: String
    /// Total device memory.
    public let totalBytes: Int
    /// Device memory in use once the context existed (this context plus every other process).
    public let usedAfterContextBytes: Int
    /// Device memory taken by this process's fixed parts after the context: cuBLAS handle and
    /// workspace, the kernel module (and the pool's first reservation, if any).
    public private(set) var fixedOverheadBytes = 0
    /// How the core kernel module was obtained: compiled now or read from the cache, and seconds.
    public var moduleSource: String { moduleLog.first ?? "" }
    let cublasWorkspaceBytes = 32 << 20
    /// `KINEMA_CUDA_SYNC=1`: wait for every kernel and GEMM to finish, so that `--profile`'s
    /// per-op times are GPU times (slower; for finding where time goes).
    let synchronizesEachOp = ProcessInfo.processInfo.environment["KINEMA_CUDA_SYNC"] == "1"
    let multiprocessorsForGrid: Int

    /// Opens GPU `ordinal`. Throws a `CUDAError` naming the failing call where there is no driver,
    /// no device, or a library is missing.
    public init(ordinal: Int = 0) throws {
        let driver = try CUDADriver()
        self.driver = driver
        try driver.check(driver.cuInit(0), "cuInit")
        var count: Int32 = 0
        try driver.check(driver.cuDeviceGetCount(&count), "cuDeviceGetCount")
        guard ordinal < count else { throw CUDAError("CUDA device \(ordinal) requested but the driver sees \(count) device(s)") }
        var device: CUdevice = 0
        try driver.check(driver.cuDeviceGet(&device, Int32(ordinal)), "cuDeviceGet(\(ordinal))")
        self.device = device
        var nameBuffer = [CChar](repeating: 0, count: 256)
        try driver.check(driver.cuDeviceGetName(&nameBuffer, 256, device), "cuDeviceGetName")
        deviceName = String(cString: nameBuffer)
        func attribute(_ id: Int32, _ what: String) throws -> Int {
            var value: Int32 = 0
            try driver.check(driver.cuDeviceGetAttribute(&value, id, device), "cuDeviceGetAttribute(\(what))")
            return Int(value)
        }
        let major = try attribute(75, "COMPUTE_CAPABILITY_MAJOR"), minor = try attribute(76, "COMPUTE_CAPABILITY_MINOR")
        architecture = "sm_\(major)\(minor)"
        multiprocessors = try attribute(16, "MULTIPROCESSOR_COUNT")
        multiprocessorsForGrid = max(1, multiprocessors)
        var version: Int32 = 0
        try driver.check(driver.cuDriverGetVersion(&version), "cuDriverGetVersion")
        driverVersion = Int(version)

        var context: CUhandle?
        try driver.check(driver.cuDevicePrimaryCtxRetain(&context, device), "cuDevicePrimaryCtxRetain")
        self.context = context
        try driver.check(driver.cuCtxSetCurrent(context), "cuCtxSetCurrent")
        var stream: CUhandle?
        try driver.check(driver.cuStreamCreate(&stream, 1), "cuStreamCreate(CU_STREAM_NON_BLOCKING)")
        self.stream = stream
        var free = 0, total = 0
        try driver.check(driver.cuMemGetInfo(&free, &total), "cuMemGetInfo")
        totalBytes = total
        usedAfterContextBytes = total - free
        let freeAfterContext = free

        // The stream-ordered pool keeps freed blocks for reuse (release threshold: never).
        var pool: CUhandle?
        try driver.check(driver.cuDeviceGetDefaultMemPool(&pool, device), "cuDeviceGetDefaultMemPool")
        self.pool = pool
        var threshold = UInt64.max
        try driver.check(driver.cuMemPoolSetAttribute(pool, 4, &threshold), "cuMemPoolSetAttribute(RELEASE_THRESHOLD)")

        let nvrtc = try NVRTC()
        self.nvrtc = nvrtc
        nvrtcVersion = try nvrtc.version()
        let cublas = try CUBLAS()
        self.cublas = cublas
        var handle: CUhandle?
        try cublas.check(cublas.cublasCreate(&handle), "cublasCreate")
        cublasHandle = handle
        try cublas.check(cublas.cublasSetStream(handle, stream), "cublasSetStream")
        // cuBLAS gets its workspace from us, so it allocates nothing behind the allocator's back.
        var workspace: CUdeviceptr = 0
        try driver.check(driver.cuMemAllocAsync(&workspace, cublasWorkspaceBytes, stream), "cuMemAllocAsync(cuBLAS workspace)")
        try cublas.check(cublas.cublasSetWorkspace(handle, UnsafeMutableRawPointer(bitPattern: UInt(workspace)), cublasWorkspaceBytes),
                         "cublasSetWorkspace")

        compiler = KernelCompiler(nvrtc: nvrtc, architecture: architecture)
        try loadModule(.core)
        try driver.check(driver.cuStreamSynchronize(stream), "cuStreamSynchronize")
        try driver.check(driver.cuMemGetInfo(&free, &total), "cuMemGetInfo")
        fixedOverheadBytes = freeAfterContext - free
    }

    /// Whether libcuda.so.1 can be loaded here (a driver is installed; says nothing about a GPU).
    public static var driverIsInstalled: Bool { (try? SharedLibrary(["libcuda.so.1", "libcuda.so"], what: "driver")) != nil }

    /// Makes this device's context current on the calling thread (cheap; done before every call).
    func makeCurrent() { driver.must(driver.cuCtxSetCurrent(context), "cuCtxSetCurrent") }

    /// Waits for all work queued on the stream.
    public func synchronize() {
        makeCurrent()
        driver.must(driver.cuStreamSynchronize(stream), "cuStreamSynchronize")
    }

    /// Free and total device memory now (cuMemGetInfo).
    public func memoryInfo() -> (free: Int, total: Int) {
        makeCurrent()
        var free = 0, total = 0
        driver.must(driver.cuMemGetInfo(&free, &total), "cuMemGetInfo")
        return (free, total)
    }

    /// The stream-ordered pool's reserved bytes now and at their peak, and used bytes at peak.
    public func poolStatistics() -> (reserved: Int, reservedPeak: Int, usedPeak: Int) {
        func read(_ attribute: Int32) -> Int {
            var value: UInt64 = 0
            driver.must(driver.cuMemPoolGetAttribute(pool, attribute, &value), "cuMemPoolGetAttribute(\(attribute))")
            return Int(value)
        }
        return (read(5), read(6), read(8))
    }

    /// Compiles (or reads from the disk cache) and loads one kernel module.
    private func loadModule(_ which: KernelSource.Module) throws {
        let (image, fromCache, seconds) = try compiler.cubin(which.source, name: "kinema_\(which.rawValue)")
        moduleLog.append("\(which.rawValue) " + (fromCache ? "read from the cache" : "compiled by NVRTC \(nvrtcVersion)")
                         + String(format: " in %.2f s", seconds))
        var module: CUhandle?
        try image.withUnsafeBytes { try driver.check(driver.cuModuleLoadData(&module, $0.baseAddress!), "cuModuleLoadData(kinema_\(which.rawValue))") }
        modules[which] = module
    }

    func function(_ name: String) -> CUhandle? {
        lock.lock(); defer { lock.unlock() }
        if let cached = functions[name] { return cached }
        let which = KernelSource.Module(kernel: name)
        if modules[which] == nil {
            do { try loadModule(which) } catch { fatalError("\(error)") }
        }
        var function: CUhandle?
        driver.must(driver.cuModuleGetFunction(&function, modules[which]!, name), "cuModuleGetFunction(\(name))")
        functions[name] = function
        return function
    }

    /// Launches kernel `name` on the stream.
    func launch(_ name: String, grid: (Int, Int), block: Int, _ arguments: [KernelArgument]) {
        makeCurrent()
        let function = self.function(name)
        // Each argument gets its own 8-byte-aligned slot; cuLaunchKernel reads it through a pointer.
        var slots: [UnsafeMutableRawPointer?] = []
        defer { slots.forEach { $0?.deallocate() } }
        for argument in arguments {
            let slot: UnsafeMutableRawPointer
            switch argument {
            case .pointer(let p): slot = .allocate(byteCount: 8, alignment: 8); slot.storeBytes(of: p, as: UInt64.self)
            case .null: slot = .allocate(byteCount: 8, alignment: 8); slot.storeBytes(of: 0, as: UInt64.self)
            case .int32(let v): slot = .allocate(byteCount: 8, alignment: 8); slot.storeBytes(of: v, as: Int32.self)
            case .int64(let v): slot = .allocate(byteCount: 8, alignment: 8); slot.storeBytes(of: v, as: Int64.self)
            case .float(let v): slot = .allocate(byteCount: 8, alignment: 8); slot.storeBytes(of: v, as: Float.self)
            case .dims(let sizes, let strides):
                precondition(sizes.count <= 8 && strides.count <= 8, "kernel dims of rank \(sizes.count) (at most 8)")
                slot = .allocate(byteCount: 128, alignment: 8)
                for i in 0..<8 {
                    slot.storeBytes(of: Int64(i < sizes.count ? sizes[i] : 1), toByteOffset: i * 8, as: Int64.self)
                    slot.storeBytes(of: Int64(i < strides.count ? strides[i] : 0), toByteOffset: 64 + i * 8, as: Int64.self)
                }
            }
            slots.append(slot)
        }
        let result = slots.withUnsafeMutableBufferPointer { buffer in
            driver.cuLaunchKernel(function, UInt32(grid.0), UInt32(grid.1), 1, UInt32(block), 1, 1, 0, stream, buffer.baseAddress, nil)
        }
        driver.must(result, "cuLaunchKernel(\(name), grid \(grid), block \(block))")
        if synchronizesEachOp { driver.must(driver.cuStreamSynchronize(stream), "cuStreamSynchronize after \(name)") }
    }

    /// Launches an elementwise kernel over `count` items with a grid-stride loop.
    func launchElementwise(_ name: String, count: Int, _ arguments: [KernelArgument]) {
        guard count > 0 else { return }
        let blocks = min((count + 255) / 256, multiprocessorsForGrid * 32)
        launch(name, grid: (blocks, 1), block: 256, arguments)
    }
}

/// Device memory from the CUDA stream-ordered pool, ordered on the device's stream (a block freed
/// by a tensor is reused by the next allocation without waiting for the GPU). Counting is done by
/// `Storage` in the same `MemoryMeter` every backend uses.
public final class CUDAAllocator: Allocator, @unchecked Sendable {
    public let meter = MemoryMeter()
    let device: CUDADevice

    init(device: CUDADevice) { self.device = device }

    public func allocate(byteCount: Int) -> UnsafeMutableRawPointer? {
        device.makeCurrent()
        var pointer: CUdeviceptr = 0
        do {
            try device.driver.check(device.driver.cuMemAllocAsync(&pointer, max(byteCount, 256), device.stream),
                                    "cuMemAllocAsync(\(byteCount) bytes)")
        } catch {
            let info = device.memoryInfo()
            fatalError("\(error); \(info.free >> 20) MiB of \(info.total >> 20) MiB free, "
                                + "\(meter.current >> 20) MiB held by Kinema's tensors")
        }
        return UnsafeMutableRawPointer(bitPattern: UInt(pointer))
    }

    public func deallocate(_ pointer: UnsafeMutableRawPointer?, byteCount: Int) {
        guard let pointer else { return }
        device.makeCurrent()
        device.driver.must(device.driver.cuMemFreeAsync(CUdeviceptr(UInt(bitPattern: pointer)), device.stream), "cuMemFreeAsync")
    }
}
