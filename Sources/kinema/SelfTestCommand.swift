import ArgumentParser
import Foundation
import KinemaCore
import KinemaCPU

struct SelfTestCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "selftest",
        abstract: "Run every op of a backend against its reference on random inputs and print a table.",
        discussion: """
            For the CPU backend each op is compared with a plain scalar implementation computed in \
            double precision; the error column is max |actual − expected| / (1 + |expected|). \
            It also shows which BLAS is linked and how many cores it keeps busy. Exits non-zero \
            if any op is outside its tolerance or the linked BLAS is not OpenBLAS.
            """
    )

    enum Device: String, ExpressibleByArgument, CaseIterable { case cpu, cuda }

    @Option(help: "The backend to test: cpu or cuda.")
    var device: Device = .cpu

    @Option(help: "CPU worker threads (default: one per core).")
    var threads: Int?

    func run() throws {
        guard device == .cpu else {
            throw CLIError("the CUDA backend is not part of this build yet; `kinema selftest --device cpu` tests the CPU backend")
        }
        if let threads, threads < 1 { throw CLIError("--threads must be at least 1, got \(threads)") }
        let backend = CPUBackend(threads: threads)
        print("Kinema \(kinemaVersion) selftest: cpu backend, \(backend.threads) threads")
        let blasOK = BLAS.configuration.hasPrefix("OpenBLAS")
        let parallelism = BLAS.measureParallelism()
        print("BLAS: \(BLAS.configuration)")
        print("      kernels \(BLAS.coreName), \(BLAS.threads) threads, sgemm 1536³ at \(String(format: "%.0f", parallelism.gflops)) GFLOP/s, "
              + "CPU time / wall time = \(String(format: "%.2f", parallelism.cpuOverWall))"
              + (parallelism.cpuOverWall > 1.5 ? " (more than one core busy)" : ""))
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
        if !blasOK { throw CLIError("the linked BLAS is not OpenBLAS: \(BLAS.configuration)") }
        if !failed.isEmpty { throw ExitCode(1) }
    }
}
