/// The meta device: every op of the front-end runs (shape checks, output and workspace
/// allocations, in the same order as on a real device) but no arithmetic is done and no memory is
/// held. Its meter's peak is the peak the emulated backend will reach for the same op sequence.
public final class MetaBackend: Backend {
    public let name = "meta"
    public let allocator: Allocator = MetaAllocator()
    public let workspacePolicy: WorkspacePolicy
    public let computeType: DType

    /// A meta device standing in for a backend with `workspacePolicy` that computes in `computeType`.
    public init(emulating workspacePolicy: WorkspacePolicy, computeType: DType = .f32) {
        self.workspacePolicy = workspacePolicy
        self.computeType = computeType
    }

    public func writeKernel(_ values: UnsafeRawPointer, dtype: DType, into output: Tensor) {}
    public func convertKernel(_ input: Tensor, into output: Tensor) {}
    public func matmulKernel(_ a: Tensor, _ b: Tensor, transposeA: Bool, transposeB: Bool,
                             batch: Int, m: Int, n: Int, k: Int, into output: Tensor) {}
    public func linearKernel(_ input: Tensor, weight: Tensor, bias: Tensor?, into output: Tensor) {}
    public func conv2dKernel(_ input: Tensor, weight: Tensor, bias: Tensor?, parameters: Conv2dParameters,
                             workspace: Tensor?, into output: Tensor) {}
    public func temporalConvKernel(_ input: Tensor, weight: Tensor, bias: Tensor?, frames: Int,
                                   workspace: Tensor?, into output: Tensor) {}
    public func groupNormKernel(_ input: Tensor, groups: Int, weight: Tensor?, bias: Tensor?, epsilon: Float,
                                frames: Int, fusedSiLU: Bool, into output: Tensor) {}
    public func layerNormKernel(_ input: Tensor, weight: Tensor?, bias: Tensor?, epsilon: Float, into output: Tensor) {}
    public func softmaxKernel(_ input: Tensor, into output: Tensor) {}
    public func attentionKernel(query: Tensor, key: Tensor, value: Tensor, geometry: AttentionGeometry,
                                causal: Bool, scale: Float, workspace: Tensor?, into output: Tensor) {}
    public func unaryKernel(_ op: UnaryOp, _ input: Tensor, into output: Tensor) {}
    public func affineKernel(_ input: Tensor, scale: Float, shift: Float, into output: Tensor) {}
    public func clampKernel(_ input: Tensor, lower: Float, upper: Float, into output: Tensor) {}
    public func adaptiveAveragePoolKernel(_ input: Tensor, into output: Tensor) {}
    public func gegluKernel(_ input: Tensor, into output: Tensor) {}
    public func binaryKernel(_ op: BinaryOp, _ a: Tensor, _ b: Tensor, into output: Tensor) {}
    public func concatKernel(_ inputs: [Tensor], axis: Int, into output: Tensor) {}
    public func permuteKernel(_ input: Tensor, order: [Int], into output: Tensor) {}
    public func upsampleNearestKernel(_ input: Tensor, into output: Tensor) {}
    public func embeddingKernel(ids: [Int], table: Tensor, into output: Tensor) {}
    public func timestepEmbeddingKernel(_ timesteps: [Float], parameters: TimestepEmbeddingParameters, into output: Tensor) {}
}
