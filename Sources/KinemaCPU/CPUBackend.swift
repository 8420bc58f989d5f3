import Foundation
import KinemaCore

/// Workspaces of the CPU kernels: im2col bands for convolution, one block of scores per
/// attention chunk (or per worker thread on the small-sequence path).
public struct CPUWorkspacePolicy: WorkspacePolicy {
    /// Worker threads of the CPU backend this policy describes.
    public let threads: Int
    /// The most bytes one im2col band of a convolution may take.
    public let convolutionBandBytes: Int

    public init(threads: Int, convolutionBandBytes: Int = 32 << 20) {
        self.threads = threads
        self.convolutionBandBytes = convolutionBandBytes
    }

    public func bytes(for request: WorkspaceRequest) -> Int {
        switch request {
        case .conv2d(let input, let weight, let parameters):
            return ConvolutionPlan(input: input, weight: weight, parameters: parameters, bandBytes: convolutionBandBytes).workspaceFloats * 4
        case .attention(let g):
            if AttentionPlan.usesSmallPath(g) { return threads * SmallAttentionLayout.floatsPerWorker(g) * 4 }
            return threads * ChunkedAttentionLayout.floatsPerWorker(g) * 4
        case .temporalConv(let input, let weight, let frames):
            return TemporalConvolutionPlan(input: input, weight: weight, frames: frames, bandBytes: convolutionBandBytes).workspaceFloats * 4
        }
    }
}

/// The CPU backend: fp32 compute, OpenBLAS for matrix products, SIMD Swift kernels for the rest,
/// split over `threads` worker threads.
public final class CPUBackend: Backend {
    public let name = "cpu"
    public let allocator: Allocator
    public let workspacePolicy: WorkspacePolicy
    let policy: CPUWorkspacePolicy
    public let computeType = DType.f32
    /// Worker threads used by the Swift kernels (OpenBLAS has its own pool of the same size).
    public let threads: Int

    /// A CPU backend with one worker per active core unless `threads` is given; convolutions
    /// build their im2col columns in bands of at most `convolutionBandBytes`.
    public init(threads: Int? = nil, convolutionBandBytes: Int = 32 << 20, allocator: Allocator = HostAllocator()) {
        let threads = max(1, threads ?? ProcessInfo.processInfo.activeProcessorCount)
        self.threads = threads
        self.allocator = allocator
        self.policy = CPUWorkspacePolicy(threads: threads, convolutionBandBytes: convolutionBandBytes)
        self.workspacePolicy = policy
        BLAS.setThreads(threads)
    }

    /// The meta backend that allocates exactly what this backend would.
    public func metaTwin() -> MetaBackend { MetaBackend(emulating: workspacePolicy, computeType: .f32) }

    func requireF32(_ tensors: Tensor?..., op: String) {
        for case let t? in tensors {
            precondition(t.dtype == .f32, "\(op) on the CPU computes in f32; got a \(t.dtype) tensor \(t.shape) (convert it first)")
        }
    }
}
