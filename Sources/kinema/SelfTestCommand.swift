import ArgumentParser
import Foundation
import KinemaCore
import KinemaCPU
import KinemaCUDA

struct SelfTestCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "selftest",
        abstract: "Run every op of a backend against its reference on random inputs and print a table.",
        discussion: """
            Each op is compared with a plain scalar implementation computed in double precision \
            (the CPU backend's reference semantics) on fresh random inputs; the error column is \
            max |actual − expected| / (1 + |expected|). For the CPU backend it also shows which BLAS \
            is linked and how many cores it keeps busy. On CUDA the inputs are rounded to the storage \
            type before the reference sees them, and f16/bf16 tolerances allow for the output's own \
            rounding; without --precision all three storage types are tested. Exits non-zero if any \
            op is outside its tolerance, the linked BLAS is not OpenBLAS, or --device cuda finds no GPU.
            """
    )

    enum Device: String, ExpressibleByArgument, CaseIterable { case cpu, cuda }

    @Option(help: "The backend to test: cpu or cuda.")
    var device: Device = .cpu

    @Option(help: "CUDA storage type to test: f16, bf16 or f32 (default: all three).")
    var precision: DeviceOptions.Precision?

    @Option(help: "CPU worker threads (default: one per core).")
    var threads: Int?

    func run() throws {
        if let threads, threads < 1 { throw CLIError("--threads must be at least 1, got \(threads)") }
        var failures = 0
        switch device {
        case .cpu:
            let backend = CPUBackend(threads: threads)
            print("Kinema \(kinemaVersion) selftest: cpu backend, \(backend.threads) threads")
            let blasOK = BLAS.configuration.hasPrefix("OpenBLAS")
            let parallelism = BLAS.measureParallelism()
            print("BLAS: \(BLAS.configuration)")
            print("      kernels \(BLAS.coreName), \(BLAS.threads) threads, sgemm 1536³ at \(String(format: "%.0f", parallelism.gflops)) GFLOP/s, "
                  + "CPU time / wall time = \(String(format: "%.2f", parallelism.cpuOverWall))"
                  + (parallelism.cpuOverWall > 1.5 ? " (more than one core busy)" : ""))
            failures += Self.table(backend)
            if !blasOK { throw CLIError("the linked BLAS is not OpenBLAS: \(BLAS.configuration)") }
        case .cuda:
            let device: CUDADevice
            do { device = try CUDADevice() } catch { throw CLIError("no CUDA device to test: \(error)") }
            print("Kinema \(kinemaVersion) selftest: cuda backend on \(device.deviceName) (\(device.architecture), "
                  + "\(device.multiprocessors) SMs, \(device.totalBytes >> 20) MiB), driver \(device.driverVersion), NVRTC \(device.nvrtcVersion)")
            print("kernels \(device.moduleSource); fixed overhead after the context \(device.fixedOverheadBytes >> 20) MiB "
                  + "(cuBLAS handle and workspace, module), \(device.usedAfterContextBytes >> 20) MiB in use once the context existed")
            let precisions = precision.map { [$0] } ?? DeviceOptions.Precision.allCases
            for precision in precisions {
                let backend = CUDABackend(device: device, computeType: precision.computeType)
                print("\n\(precision.rawValue) storage, f32 arithmetic")
                failures += Self.table(backend)
            }
            print("\nkernel modules: " + device.moduleLog.joined(separator: "; "))
        }
        if failures > 0 { throw ExitCode(1) }
    }

    /// Runs the cases on `backend`, prints one line each and the totals; returns the failures.
    static func table(_ backend: Backend) -> Int {
        print("")
        let header = "op".padding(toLength: 30, withPad: " ", startingAt: 0) + "shape".padding(toLength: 32, withPad: " ", startingAt: 0)
            + "error      tolerance  ms       result"
        print(header)
        print(String(repeating: "-", count: header.count))
        var selfTest = SelfTest(backend: backend)
        let results = selfTest.run { r in
            print(r.op.padding(toLength: 30, withPad: " ", startingAt: 0) + r.shape.padding(toLength: 32, withPad: " ", startingAt: 0)
                  + String(format: "%-10.2e %-10.0e %-8.2f ", r.maxError, r.tolerance, r.milliseconds) + (r.passed ? "ok" : "FAIL"))
        }
        let failed = results.filter { !$0.passed }
        print("")
        print("\(results.count - failed.count) passed, \(failed.count) failed")
        return failed.count
    }
}
