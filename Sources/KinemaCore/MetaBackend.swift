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

    /// The work of every op this device has been given (see `OpWork`).
    public var work = OpWork()

    public func writeKernel(_ values: UnsafeRawPointer, dtype: DType, into output: Tensor) { countMemory([], output) }
    public func convertKernel(_ input: Tensor, into output: Tensor) { countMemory([input], output) }
    public func matmulKernel(_ a: Tensor, _ b: Tensor, transposeA: Bool, transposeB: Bool,
                             batch: Int, m: Int, n: Int, k: Int, into output: Tensor) {
        countMatmul(2 * Double(batch) * Double(m) * Double(n) * Double(k))
    }
    public func linearKernel(_ input: Tensor, weight: Tensor, bias: Tensor?, into output: Tensor) {
        countMatmul(2 * Double(output.count) * Double(weight.shape[1]))
    }
    public func conv2dKernel(_ input: Tensor, weight: Tensor, bias: Tensor?, parameters: Conv2dParameters,
                             workspace: Tensor?, into output: Tensor) {
        countConvolution(2 * Double(output.count) * Double(weight.shape[1] * weight.shape[2] * weight.shape[3]))
    }
    public func temporalConvKernel(_ input: Tensor, weight: Tensor, bias: Tensor?, frames: Int,
                                   workspace: Tensor?, into output: Tensor) {
        countConvolution(2 * Double(output.count) * Double(weight.shape[1] * weight.shape[2]))
    }
    public func groupNormKernel(_ input: Tensor, groups: Int, weight: Tensor?, bias: Tensor?, epsilon: Float,
                                frames: Int, fusedSiLU: Bool, into output: Tensor) { countMemory([input], output) }
    public func layerNormKernel(_ input: Tensor, weight: Tensor?, bias: Tensor?, epsilon: Float, into output: Tensor) {
        countMemory([input], output)
    }
    public func softmaxKernel(_ input: Tensor, into output: Tensor) { countMemory([input], output) }
    public func attentionKernel(query: Tensor, key: Tensor, value: Tensor, geometry g: AttentionGeometry,
                                causal: Bool, scale: Float, workspace: Tensor?, into output: Tensor) {
        countAttention(4 * Double(g.batch * g.heads) * Double(g.queries) * Double(g.keys) * Double(g.headDim))
    }
    public func unaryKernel(_ op: UnaryOp, _ input: Tensor, into output: Tensor) { countMemory([input], output) }
    public func affineKernel(_ input: Tensor, scale: Float, shift: Float, into output: Tensor) { countMemory([input], output) }
    public func clampKernel(_ input: Tensor, lower: Float, upper: Float, into output: Tensor) { countMemory([input], output) }
    public func adaptiveAveragePoolKernel(_ input: Tensor, into output: Tensor) { countMemory([input], output) }
    public func gegluKernel(_ input: Tensor, into output: Tensor) { countMemory([input], output) }
    public func binaryKernel(_ op: BinaryOp, _ a: Tensor, _ b: Tensor, into output: Tensor) { countMemory([a, b], output) }
    public func concatKernel(_ inputs: [Tensor], axis: Int, into output: Tensor) { countMemory(inputs, output) }
    public func permuteKernel(_ input: Tensor, order: [Int], into output: Tensor) { countMemory([input], output) }
    public func upsampleNearestKernel(_ input: Tensor, into output: Tensor) { countMemory([input], output) }
    public func embeddingKernel(ids: [Int], table: Tensor, into output: Tensor) { countMemory([], output) }
    public func timestepEmbeddingKernel(_ timesteps: [Float], parameters: TimestepEmbeddingParameters, into output: Tensor) {
        countMemory([], output)
    }
    public func tokenMatchKernel(_ metric: Tensor, height: Int, width: Int, merged: Int, workspace: Tensor?, into slots: Tensor) {
        // Every source token against every destination: (T − T/4) · T/4 dot products of C per row.
        let tokens = Double(metric.shape[1]), destinations = Double((height / 2) * (width / 2))
        countAttention(2 * Double(metric.shape[0]) * (tokens - destinations) * destinations * Double(metric.shape[2]))
    }
    public func tokenMergeKernel(_ tokens: Tensor, slots: Tensor, into output: Tensor) { countMemory([tokens, slots], output) }
    public func tokenUnmergeKernel(_ merged: Tensor, slots: Tensor, into output: Tensor) { countMemory([merged, slots], output) }
}
