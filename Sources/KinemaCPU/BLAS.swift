import CBLAS
import Foundation

/// The linked BLAS library: OpenBLAS's own description of itself and its thread pool, and a
/// row-major sgemm wrapper.
public enum BLAS {
    /// OpenBLAS's build configuration string, e.g. "OpenBLAS 0.3.21 DYNAMIC_ARCH NO_AFFINITY Haswell MAX_THREADS=64".
    /// Only OpenBLAS exports `openblas_get_config`, so reading it proves OpenBLAS is the BLAS in use.
    public static var configuration: String { String(cString: openblas_get_config()) }
    /// The kernel family OpenBLAS picked for this CPU (e.g. "Haswell", "SkylakeX").
    public static var coreName: String { String(cString: openblas_get_corename()) }
    /// Threads in OpenBLAS's pool.
    public static var threads: Int { Int(openblas_get_num_threads()) }
    /// 0 = sequential build, 1 = pthreads, 2 = OpenMP.
    public static var parallelMode: Int { Int(openblas_get_parallel()) }

    /// Sets OpenBLAS's own thread pool; kernels that give each worker its own products set it to
    /// 1 while they run.
    static func setThreads(_ n: Int) { openblas_set_num_threads(Int32(n)) }

    /// The kernel family OpenBLAS should be told to use, when its own CPU detection fell back to
    /// generic SSE kernels (Debian 12's OpenBLAS 0.3.21 does not know recent Xeons and picks
    /// "Prescott", about 6× slower). On Intel CPUs with AVX-512 that is SkylakeX: the test suite's
    /// sweep of sizes and transpositions passes with it on such a machine. Elsewhere with AVX2
    /// and FMA it is Haswell: 0.3.21's AVX-512 kernels are not trusted on other vendors' CPUs.
    /// nil when detection worked or the user chose with OPENBLAS_CORETYPE.
    public static var suggestedCoreType: String? {
        guard ProcessInfo.processInfo.environment["OPENBLAS_CORETYPE"] == nil,
              ["Prescott", "Core2", "Katmai", "Coppermine", "Northwood", "Banias", "Unknown"].contains(coreName),
              let cpuinfo = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8) else { return nil }
        let lines = cpuinfo.split(separator: "\n")
        guard let flags = lines.first(where: { $0.hasPrefix("flags") })?.split(separator: " ").map(String.init) else { return nil }
        let intel = lines.first(where: { $0.hasPrefix("vendor_id") })?.hasSuffix("GenuineIntel") ?? false
        if intel && ["avx512f", "avx512bw", "avx512dq", "avx512vl"].allSatisfy(flags.contains) { return "SkylakeX" }
        return flags.contains("avx2") && flags.contains("fma") ? "Haswell" : nil
    }

    /// Row-major `C = alpha · op(A) · op(B) + beta · C`.
    @inline(__always)
    static func sgemm(transposeA: Bool, transposeB: Bool, m: Int, n: Int, k: Int, alpha: Float = 1,
                      a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
                      beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int) {
        cblas_sgemm(CblasRowMajor, transposeA ? CblasTrans : CblasNoTrans, transposeB ? CblasTrans : CblasNoTrans,
                    Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
    }

    /// Runs one large sgemm and returns the ratio of process CPU time to wall time: about the
    /// number of cores OpenBLAS kept busy.
    public static func measureParallelism(size: Int = 1536) -> (cpuOverWall: Double, gflops: Double) {
        let a = [Float](repeating: 0.5, count: size * size)
        let b = [Float](repeating: 0.25, count: size * size)
        var c = [Float](repeating: 0, count: size * size)
        func cpuSeconds() -> Double {
            var usage = rusage()
            getrusage(RUSAGE_SELF.rawValue, &usage)
            return Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) + Double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6
        }
        let cpu0 = cpuSeconds()
        let wall0 = DispatchTime.now().uptimeNanoseconds
        for _ in 0..<3 {
            sgemm(transposeA: false, transposeB: false, m: size, n: size, k: size, a: a, lda: size, b: b, ldb: size, beta: 0, c: &c, ldc: size)
        }
        let wall = Double(DispatchTime.now().uptimeNanoseconds - wall0) / 1e9
        let cpu = cpuSeconds() - cpu0
        return (cpu / wall, 3 * 2 * pow(Double(size), 3) / wall / 1e9)
    }
}
