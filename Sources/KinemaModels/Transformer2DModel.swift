import KinemaCore

/// diffusers `Transformer2DModel` as the I2VGen-XL UNet builds it: per-frame GroupNorm
/// (eps 1e-6), linear `proj_in`, one `BasicTransformerBlock` with cross-attention to the
/// context tokens, linear `proj_out`, residual.
public struct Transformer2DModel {
    public let norm: GroupNorm
    public let projIn: Linear, projOut: Linear
    public let block: BasicTransformerBlock

    public init(_ w: WeightReader, _ key: String, channels: Int, heads: Int, headDim: Int, groups: Int, contextDim: Int) {
        let inner = heads * headDim
        norm = GroupNorm(w, "\(key).norm", groups: groups, channels: channels, epsilon: 1e-6)
        projIn = Linear(w, "\(key).proj_in", channels, inner)
        block = BasicTransformerBlock(w, "\(key).transformer_blocks.0", dim: inner, heads: heads, headDim: headDim, contextDim: contextDim)
        projOut = Linear(w, "\(key).proj_out", inner, channels)
    }

    /// x (N, C, H, W), context (N, M, contextDim) → (N, C, H, W). `tokenMergeRatio` merges that
    /// share of each frame's tokens in the self-attention (lossy; nil: none).
    public func callAsFunction(_ x: Tensor, context: Tensor, tokenMergeRatio: Double? = nil, _ b: Backend) -> Tensor {
        let (n, c, h, wd) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        // (N, C, H, W) -> (N, H·W, C)
        let tokens = b.permute(norm(x, b).reshaped([n, c, h * wd]), [0, 2, 1])
        let merge = tokenMergeRatio.map { TokenMerge(ratio: $0, height: h, width: wd) }
        let out = projOut(block(projIn(tokens, b), context: context, tokenMerge: merge, b), b)
        // (N, H·W, C) -> (N, C, H, W)
        return b.add(b.permute(out, [0, 2, 1]).reshaped([n, c, h, wd]), x)
    }
}
