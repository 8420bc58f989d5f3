import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A failed CUDA driver, NVRTC or cuBLAS call: which call, and the library's own words for why.
public struct CUDAError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// A shared library opened with dlopen, from the first of `names` that loads (plain names go
/// through the loader's search path; the CUDA toolkit's usual folders are tried after them).
final class SharedLibrary {
    let handle: UnsafeMutableRawPointer
    let path: String

    static let toolkitFolders = ["/usr/local/cuda/lib64", "/usr/local/cuda-13.0/targets/x86_64-linux/lib",
                                 "/usr/local/cuda/targets/x86_64-linux/lib", "/usr/lib/x86_64-linux-gnu"]

    init(_ names: [String], what: String) throws {
        var errors: [String] = []
        let candidates = names + Self.toolkitFolders.flatMap { folder in names.map { folder + "/" + $0 } }
        for name in candidates {
            if let handle = dlopen(name, RTLD_NOW | RTLD_LOCAL) {
                self.handle = handle
                self.path = name
                return
            }
            if let message = dlerror() { errors.append(String(cString: message)) }
        }
        throw CUDAError("\(what) not found (tried \(names.joined(separator: ", ")) and the CUDA toolkit folders): "
                        + (errors.first ?? "dlopen failed"))
    }

    /// The function `name` as the C function type `T`.
    func symbol<T>(_ name: String, as type: T.Type = T.self) throws -> T {
        guard let pointer = dlsym(handle, name) else { throw CUDAError("\(path) has no symbol \(name)") }
        return unsafeBitCast(pointer, to: T.self)
    }
}

typealias CUresult = Int32
typealias CUdevice = Int32
typealias CUdeviceptr = UInt64
typealias CUhandle = OpaquePointer

/// The driver API functions Kinema uses (libcuda.so.1), declared here so no CUDA header is needed.
final class CUDADriver {
    let library: SharedLibrary
    let cuInit: @convention(c) (UInt32) -> CUresult
    let cuDriverGetVersion: @convention(c) (UnsafeMutablePointer<Int32>) -> CUresult
    let cuDeviceGetCount: @convention(c) (UnsafeMutablePointer<Int32>) -> CUresult
    let cuDeviceGet: @convention(c) (UnsafeMutablePointer<CUdevice>, Int32) -> CUresult
    let cuDeviceGetName: @convention(c) (UnsafeMutablePointer<CChar>, Int32, CUdevice) -> CUresult
    let cuDeviceGetAttribute: @convention(c) (UnsafeMutablePointer<Int32>, Int32, CUdevice) -> CUresult
    let cuDevicePrimaryCtxRetain: @convention(c) (UnsafeMutablePointer<CUhandle?>, CUdevice) -> CUresult
    let cuCtxSetCurrent: @convention(c) (CUhandle?) -> CUresult
    let cuStreamCreate: @convention(c) (UnsafeMutablePointer<CUhandle?>, UInt32) -> CUresult
    let cuStreamSynchronize: @convention(c) (CUhandle?) -> CUresult
    let cuMemAllocAsync: @convention(c) (UnsafeMutablePointer<CUdeviceptr>, Int, CUhandle?) -> CUresult
    let cuMemFreeAsync: @convention(c) (CUdeviceptr, CUhandle?) -> CUresult
    let cuMemGetInfo: @convention(c) (UnsafeMutablePointer<Int>, UnsafeMutablePointer<Int>) -> CUresult
    let cuMemcpyHtoDAsync: @convention(c) (CUdeviceptr, UnsafeRawPointer, Int, CUhandle?) -> CUresult
    let cuMemcpyDtoHAsync: @convention(c) (UnsafeMutableRawPointer, CUdeviceptr, Int, CUhandle?) -> CUresult
    let cuMemcpyDtoDAsync: @convention(c) (CUdeviceptr, CUdeviceptr, Int, CUhandle?) -> CUresult
    let cuMemsetD8Async: @convention(c) (CUdeviceptr, UInt8, Int, CUhandle?) -> CUresult
    let cuDeviceGetDefaultMemPool: @convention(c) (UnsafeMutablePointer<CUhandle?>, CUdevice) -> CUresult
    let cuMemPoolSetAttribute: @convention(c) (CUhandle?, Int32, UnsafeMutableRawPointer) -> CUresult
    let cuMemPoolGetAttribute: @convention(c) (CUhandle?, Int32, UnsafeMutableRawPointer) -> CUresult
    let cuModuleLoadData: @convention(c) (UnsafeMutablePointer<CUhandle?>, UnsafeRawPointer) -> CUresult
    let cuModuleGetFunction: @convention(c) (UnsafeMutablePointer<CUhandle?>, CUhandle?, UnsafePointer<CChar>) -> CUresult
    let cuLaunchKernel: @convention(c) (CUhandle?, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, CUhandle?,
                                        UnsafeMutablePointer<UnsafeMutableRawPointer?>?, UnsafeMutablePointer<UnsafeMutableRawPointer?>?) -> CUresult
    let cuGetErrorString: @convention(c) (CUresult, UnsafeMutablePointer<UnsafePointer<CChar>?>) -> CUresult
    let cuGetErrorName: @convention(c) (CUresult, UnsafeMutablePointer<UnsafePointer<CChar>?>) -> CUresult

    init() throws {
        let l = try SharedLibrary(["libcuda.so.1", "libcuda.so"], what: "the CUDA driver (libcuda.so.1)")
        library = l
        cuInit = try l.symbol("cuInit")
        cuDriverGetVersion = try l.symbol("cuDriverGetVersion")
        cuDeviceGetCount = try l.symbol("cuDeviceGetCount")
        cuDeviceGet = try l.symbol("cuDeviceGet")
        cuDeviceGetName = try l.symbol("cuDeviceGetName")
        cuDeviceGetAttribute = try l.symbol("cuDeviceGetAttribute")
        cuDevicePrimaryCtxRetain = try l.symbol("cuDevicePrimaryCtxRetain")
        cuCtxSetCurrent = try l.symbol("cuCtxSetCurrent")
        cuStreamCreate = try l.symbol("cuStreamCreate")
        cuStreamSynchronize = try l.symbol("cuStreamSynchronize")
        cuMemAllocAsync = try l.symbol("cuMemAllocAsync")
        cuMemFreeAsync = try l.symbol("cuMemFreeAsync")
        cuMemGetInfo = try l.symbol("cuMemGetInfo_v2")
        cuMemcpyHtoDAsync = try l.symbol("cuMemcpyHtoDAsync_v2")
        cuMemcpyDtoHAsync = try l.symbol("cuMemcpyDtoHAsync_v2")
        cuMemcpyDtoDAsync = try l.symbol("cuMemcpyDtoDAsync_v2")
        cuMemsetD8Async = try l.symbol("cuMemsetD8Async")
        cuDeviceGetDefaultMemPool = try l.symbol("cuDeviceGetDefaultMemPool")
        cuMemPoolSetAttribute = try l.symbol("cuMemPoolSetAttribute")
        cuMemPoolGetAttribute = try l.symbol("cuMemPoolGetAttribute")
        cuModuleLoadData = try l.symbol("cuModuleLoadData")
        cuModuleGetFunction = try l.symbol("cuModuleGetFunction")
        cuLaunchKernel = try l.symbol("cuLaunchKernel")
        cuGetErrorString = try l.symbol("cuGetErrorString")
        cuGetErrorName = try l.symbol("cuGetErrorName")
    }

    /// Throws unless `result` is CUDA_SUCCESS, naming `call` and the driver's error name and string.
    func check(_ result: CUresult, _ call: @autoclosure () -> String) throws {
        guard result != 0 else { return }
        var name: UnsafePointer<CChar>?, text: UnsafePointer<CChar>?
        _ = cuGetErrorName(result, &name)
        _ = cuGetErrorString(result, &text)
        throw CUDAError("\(call()) failed: \(name.map { String(cString: $0) } ?? "error \(result)")"
                        + (text.map { " (\(String(cString: $0)))" } ?? ""))
    }

    /// `check` for calls that cannot fail on a working device (launches, copies, frees): a failure
    /// there means the device is lost, so it stops the process with the call and the reason.
    func must(_ result: CUresult, _ call: @autoclosure () -> String) {
        do { try check(result, call()) } catch { fatalError("\(error)") }
    }
}

typealias NVRTCResult = Int32

/// NVRTC (libnvrtc), the run-time CUDA C++ compiler.
final class NVRTC {
    let library: SharedLibrary
    let nvrtcVersion: @convention(c) (UnsafeMutablePointer<Int32>, UnsafeMutablePointer<Int32>) -> NVRTCResult
    let nvrtcGetErrorString: @convention(c) (NVRTCResult) -> UnsafePointer<CChar>?
    let nvrtcCreateProgram: @convention(c) (UnsafeMutablePointer<CUhandle?>, UnsafePointer<CChar>, UnsafePointer<CChar>?, Int32,
                                            UnsafePointer<UnsafePointer<CChar>?>?, UnsafePointer<UnsafePointer<CChar>?>?) -> NVRTCResult
    let nvrtcDestroyProgram: @convention(c) (UnsafeMutablePointer<CUhandle?>) -> NVRTCResult
    let nvrtcCompileProgram: @convention(c) (CUhandle?, Int32, UnsafePointer<UnsafePointer<CChar>?>?) -> NVRTCResult
    let nvrtcGetProgramLogSize: @convention(c) (CUhandle?, UnsafeMutablePointer<Int>) -> NVRTCResult
    let nvrtcGetProgramLog: @convention(c) (CUhandle?, UnsafeMutablePointer<CChar>) -> NVRTCResult
    let nvrtcGetCUBINSize: @convention(c) (CUhandle?, UnsafeMutablePointer<Int>) -> NVRTCResult
    let nvrtcGetCUBIN: @convention(c) (CUhandle?, UnsafeMutablePointer<CChar>) -> NVRTCResult

    init() throws {
        let l = try SharedLibrary(["libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so"], what: "NVRTC (libnvrtc.so)")
        library = l
        nvrtcVersion = try l.symbol("nvrtcVersion")
        nvrtcGetErrorString = try l.symbol("nvrtcGetErrorString")
        nvrtcCreateProgram = try l.symbol("nvrtcCreateProgram")
        nvrtcDestroyProgram = try l.symbol("nvrtcDestroyProgram")
        nvrtcCompileProgram = try l.symbol("nvrtcCompileProgram")
        nvrtcGetProgramLogSize = try l.symbol("nvrtcGetProgramLogSize")
        nvrtcGetProgramLog = try l.symbol("nvrtcGetProgramLog")
        nvrtcGetCUBINSize = try l.symbol("nvrtcGetCUBINSize")
        nvrtcGetCUBIN = try l.symbol("nvrtcGetCUBIN")
    }

    func check(_ result: NVRTCResult, _ call: @autoclosure () -> String) throws {
        guard result != 0 else { return }
        throw CUDAError("\(call()) failed: \(nvrtcGetErrorString(result).map { String(cString: $0) } ?? "NVRTC error \(result)")")
    }

    /// "major.minor" of this NVRTC.
    func version() throws -> String {
        var major: Int32 = 0, minor: Int32 = 0
        try check(nvrtcVersion(&major, &minor), "nvrtcVersion")
        return "\(major).\(minor)"
    }
}

typealias CublasStatus = Int32

/// cuBLAS (libcublas): the GEMMs, on tensor cores for f16/bf16.
final class CUBLAS {
    let library: SharedLibrary
    let cublasCreate: @convention(c) (UnsafeMutablePointer<CUhandle?>) -> CublasStatus
    let cublasSetStream: @convention(c) (CUhandle?, CUhandle?) -> CublasStatus
    let cublasSetWorkspace: @convention(c) (CUhandle?, UnsafeMutableRawPointer?, Int) -> CublasStatus
    let cublasGetStatusString: @convention(c) (CublasStatus) -> UnsafePointer<CChar>?
    let cublasGemmStridedBatchedEx: @convention(c) (
        CUhandle?, Int32, Int32, Int32, Int32, Int32, UnsafeRawPointer,
        UnsafeRawPointer, Int32, Int32, Int64,
        UnsafeRawPointer, Int32, Int32, Int64,
        UnsafeRawPointer, UnsafeMutableRawPointer, Int32, Int32, Int64,
        Int32, Int32, Int32) -> CublasStatus

    init() throws {
        let l = try SharedLibrary(["libcublas.so.13", "libcublas.so.12", "libcublas.so"], what: "cuBLAS (libcublas.so)")
        library = l
        cublasCreate = try l.symbol("cublasCreate_v2")
        cublasSetStream = try l.symbol("cublasSetStream_v2")
        cublasSetWorkspace = try l.symbol("cublasSetWorkspace_v2")
        cublasGetStatusString = try l.symbol("cublasGetStatusString")
        cublasGemmStridedBatchedEx = try l.symbol("cublasGemmStridedBatchedEx")
    }

    func check(_ status: CublasStatus, _ call: @autoclosure () -> String) throws {
        guard status != 0 else { return }
        throw CUDAError("\(call()) failed: \(cublasGetStatusString(status).map { String(cString: $0) } ?? "cuBLAS status \(status)")")
    }
}
