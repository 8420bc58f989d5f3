import ArgumentParser
import Foundation
import KinemaCore
import KinemaCPU
import KinemaCUDA

/// Where a command computes: `--device cpu|cuda|auto` and, on CUDA, `--precision`.
struct DeviceOptions: ParsableArguments {
    enum Device: String, ExpressibleByArgument, CaseIterable { case cpu, cuda, auto }
    enum Precision: String, ExpressibleByArgument, CaseIterable { case f16, bf16, f32 }

    @Option(help: "Where to compute: cpu, cuda (GPU 0), or auto (cuda when a CUDA driver and GPU are found, else cpu).")
    var device: Device = .auto

    @Option(help: "The CUDA backend's storage type: f16, bf16 or f32 (arithmetic is f32 in all three). The CPU computes in f32.")
    var precision: Precision = .f16

    var computeType: DType { precision.computeType }
}

extension DeviceOptions.Precision {
    var computeType: DType {
        switch self {
        case .f16: return .f16
        case .bf16: return .bf16
        case .f32: return .f32
        }
    }
}

extension DeviceOptions {
    /// The backend asked for. `auto` falls back to the CPU, saying why on stderr, when CUDA cannot be opened.
    func makeBackend(threads: Int?) throws -> Backend {
        switch device {
        case .cpu:
            return CPUBackend(threads: threads)
        case .cuda:
            do { return try CUDABackend(computeType: computeType) } catch { throw CLIError("--device cuda: \(error)") }
        case .auto:
            guard CUDADevice.driverIsInstalled else { return CPUBackend(threads: threads) }
            do {
                return try CUDABackend(computeType: computeType)
            } catch {
                FileHandle.standardError.write(Data("no usable CUDA device, computing on the CPU (\(error))\n".utf8))
                return CPUBackend(threads: threads)
            }
        }
    }
}

extension Backend {
    /// Threads of a CPU backend; 0 elsewhere.
    var cpuThreads: Int { (self as? CPUBackend)?.threads ?? 0 }

    /// A line describing the device, for reports.
    var deviceDescription: String {
        if let cuda = self as? CUDABackend {
            let d = cuda.device
            return "\(d.deviceName) (\(d.architecture), driver \(d.driverVersion / 1000).\(d.driverVersion % 1000 / 10), "
                + "NVRTC \(d.nvrtcVersion)), \(cuda.computeType) storage, f32 arithmetic; kernels \(d.moduleSource)"
        }
        return "cpu, \(cpuThreads) threads"
    }
}
