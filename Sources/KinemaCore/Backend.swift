/// Geometry of a 2-D convolution: stride and zero padding on each side (diffusers' VAE encoder
/// pads asymmetrically: right and bottom only).
public struct Conv2dParameters: Sendable, Equatable {
    public var strideY: Int, strideX: Int
    public var padTop: Int, padLeft: Int, padBottom: Int, padRight: Int

    public init(stride: Int = 1, padding: Int = 0) {
        self.init(strideY: stride, strideX: stride, padTop: padding, padLeft: padding, padBottom: padding, padRight: padding)
    }

    public init(strideY: Int, strideX: Int, padTop: Int, padLeft: Int, padBottom: Int, padRight: Int) {
        self.strideY = strideY; self.strideX = strideX
        self.padTop = padTop; self.padLeft = padLeft; self.padBottom = padBottom; self.padRight = padRight
    }

    /// Output height and width for an input of `height`×`width` and a `kernelH`×`kernelW` kernel.
    public func outputSize(height: Int, width: Int, kernelH: Int, kernelW: Int) -> (Int, Int) {
        ((height + padTop + padBottom - kernelH) / strideY + 1, (width + padLeft + padRight - kernelW) / strideX + 1)
    }
}

/// Shape of one attention call as the workspace policy sees it.
public struct AttentionGeometry: Sendable, Equatable {
    public var batch: Int, heads: Int, queries: Int, keys: Int, headDim: Int
    /// Queries processed at once per (batch, head); bounds the score block to `queryChunk × keys`.
    public var queryChunk: Int
}

/// Scratch memory an op asks its backend for; the answer depends on the backend's algorithm.
public enum WorkspaceRequest: Sendable, Equatable {
    case conv2d(input: [Int], weight: [Int], parameters: Conv2dParameters)
    case attention(AttentionGeometry)
    /// A (kt,1,1) temporal convolution of a (clips·frames, C, H, W) input.
    case temporalConv(input: [Int], weight: [Int], frames: Int)
}

/// How many scratch bytes a backend's kernels need. The meta backend is given the policy of the
/// backend it stands in for, so a dry run allocates exactly what the real run will.
public protocol WorkspacePolicy: Sendable {
    func bytes(for request: WorkspaceRequest) -> Int
}

/// Elementwise functions of one tensor.
public enum UnaryOp: String, Sendable, CaseIterable {
    case silu
    /// Exact GELU, `x · Φ(x)` with erf (torch's default, used by CLIP ViT-H and the UNet).
    case gelu
    /// `x · sigmoid(1.702 x)` (CLIP's quick_gelu).
    case quickGelu
    case exp
}

/// Elementwise functions of two tensors, with numpy broadcasting of the second onto the first.
public enum BinaryOp: String, Sendable, CaseIterable {
    case add, sub, mul, div
}

/// The parameters of diffusers' `get_timestep_embedding`.
public struct TimestepEmbeddingParameters: Sendable, Equatable {
    public var dimension: Int
    public var flipSinToCos: Bool
    public var downscaleFreqShift: Float
    public var scale: Float
    public var maxPeriod: Float

    public init(dimension: Int, flipSinToCos: Bool, downscaleFreqShift: Float, scale: Float = 1, maxPeriod: Float = 10000) {
        self.dimension = dimension
        self.flipSinToCos = flipSinToCos
        self.downscaleFreqShift = downscaleFreqShift
        self.scale = scale
        self.maxPeriod = maxPeriod
    }
}

/// A device that runs ops. Model code calls the ops of the `Backend` extension (`linear`,
/// `conv2d`, `attention`, …), which check shapes, allocate outputs and workspaces through
/// `allocator` and then call the backend's kernel. Because that front-end is shared, every backend
/// makes the same allocations in the same order for the same op sequence; only `workspacePolicy`
/// differs. Kernels write into tensors the front-end has allocated; the meta backend's do nothing.
public protocol Backend: AnyObject {
    /// "cpu", "meta", "cuda:0", …
    var name: String { get }
    var allocator: Allocator { get }
    var workspacePolicy: WorkspacePolicy { get }
    /// The dtype this backend computes in.
    var computeType: DType { get }

    func writeKernel(_ values: UnsafeRawPointer, dtype: DType, into output: Tensor)
    /// Copies `input`'s elements to host memory at `destination`, converted to `dtype`. Backends
    /// whose tensors live in host memory use the default (a plain conversion).
    func readKernel(_ input: Tensor, dtype: DType, into destination: UnsafeMutableRawPointer)
    func convertKernel(_ input: Tensor, into output: Tensor)
    /// `output[b] = op(a[b]) · op(b[b or 0])` with `a` (batch, m, k) and `b` (batch or 1, k, n),
    /// where op transposes the stored matrix when asked.
    func matmulKernel(_ a: Tensor, _ b: Tensor, transposeA: Bool, transposeB: Bool,
                      batch: Int, m: Int, n: Int, k: Int, into output: Tensor)
    /// `output = input · weightᵀ + bias` over the last dimension (torch's Linear).
    func linearKernel(_ input: Tensor, weight: Tensor, bias: Tensor?, into output: Tensor)
    func conv2dKernel(_ input: Tensor, weight: Tensor, bias: Tensor?, parameters: Conv2dParameters,
                      workspace: Tensor?, into output: Tensor)
    /// A (kt,1,1) convolution over frames of a `(batch*frames, C, H, W)` tensor, zero padded by kt/2.
    func temporalConvKernel(_ input: Tensor, weight: Tensor, bias: Tensor?, frames: Int,
                            workspace: Tensor?, into output: Tensor)
    func groupNormKernel(_ input: Tensor, groups: Int, weight: Tensor?, bias: Tensor?, epsilon: Float,
                         frames: Int, fusedSiLU: Bool, into output: Tensor)
    func layerNormKernel(_ input: Tensor, weight: Tensor?, bias: Tensor?, epsilon: Float, into output: Tensor)
    func softmaxKernel(_ input: Tensor, into output: Tensor)
    func attentionKernel(query: Tensor, key: Tensor, value: Tensor, geometry: AttentionGeometry,
                         causal: Bool, scale: Float, workspace: Tensor?, into output: Tensor)
    func unaryKernel(_ op: UnaryOp, _ input: Tensor, into output: Tensor)
    func affineKernel(_ input: Tensor, scale: Float, shift: Float, into output: Tensor)
    func clampKernel(_ input: Tensor, lower: Float, upper: Float, into output: Tensor)
    /// torch's AdaptiveAvgPool2d on (N, C, H, W): output cell i spans [⌊i·H/oh⌋, ⌈(i+1)·H/oh⌉).
    func adaptiveAveragePoolKernel(_ input: Tensor, into output: Tensor)
    func gegluKernel(_ input: Tensor, into output: Tensor)
    func binaryKernel(_ op: BinaryOp, _ a: Tensor, _ b: Tensor, into output: Tensor)
    func concatKernel(_ inputs: [Tensor], axis: Int, into output: Tensor)
    func permuteKernel(_ input: Tensor, order: [Int], into output: Tensor)
    func upsampleNearestKernel(_ input: Tensor, into output: Tensor)
    func embeddingKernel(ids: [Int], table: Tensor, into output: Tensor)
    func timestepEmbeddingKernel(_ timesteps: [Float], parameters: TimestepEmbeddingParameters, into output: Tensor)
    /// Token merging (`TokenMerging.swift`): default implementations work on host memory and skip
    /// tensors without data; a backend whose tensors live elsewhere implements them itself.
    func tokenMatchKernel(_ metric: Tensor, height: Int, width: Int, merged: Int, workspace: Tensor?, into slots: Tensor)
    func tokenMergeKernel(_ tokens: Tensor, slots: Tensor, into output: Tensor)
    func tokenUnmergeKernel(_ merged: Tensor, slots: Tensor, into output: Tensor)
}

extension Backend {
    /// Host memory backends read a tensor's bytes in place.
    public func readKernel(_ input: Tensor, dtype: DType, into destination: UnsafeMutableRawPointer) {
        DType.convert(input.rawPointer, from: input.dtype, to: destination, dtype, count: input.count)
    }
}
