import KinemaCore

/// diffusers `TransformerTemporalModel` (`double_self_attention`): GroupNorm across frames
/// (eps 1e-6), every pixel's frames as one sequence, a `BasicTransformerBlock` whose two
/// attentions both attend over frames, residual. No positional embeddings.
public struct TransformerTemporalModel {
    public let norm: GroupNorm
    public let projIn: Linear, projOut: Linear
    public let block: BasicTransformerBlock

    public init(_ w: WeightReader, _ key: String, channels: Int, heads: Int, headDim: Int, groups: Int) {
        let inner = heads * headDim
        norm = GroupNorm(w, "\(key).norm", groups: groups, channels: channels, epsilon: 1e-6)
        projIn = Linear(w, "\(key).proj_in", channels, inner)
        block = BasicTransformerBlock(w, "\(key).transformer_blocks.0", dim: inner, heads: heads, headDim: headDim, contextDim: nil)
        projOut = Linear(w, "\(key).proj_out", inner, channels)
    }

    /// x (B·F, C, H, W) → same shape. `splits` > 1 runs the transformer on that many parts of the
    /// B·H·W pixel sequences in turn (the group norm, across frames, sees them all).
    public func callAsFunction(_ x: Tensor, frames: Int, splits: Int = 1, _ b: Backend) -> Tensor {
        let (bf, c, h, wd) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let clips = bf / frames
        // (B, F, C, H·W) -> (B, H·W, F, C) -> (B·H·W, F, C)
        let sequences = b.permute(norm(x, b, frames: frames).reshaped([clips, frames, c, h * wd]), [0, 3, 1, 2])
            .reshaped([clips * h * wd, frames, c])
        let out = b.inRowChunks(sequences, parts: splits, op: "token_chunk") { part, _ in
            projOut(block(projIn(part, b), context: nil, b), b)
        }
        // (B, H·W, F, C) -> (B, F, C, H·W) -> (B·F, C, H, W)
        let back = b.permute(out.reshaped([clips, h * wd, frames, c]), [0, 2, 3, 1]).reshaped([bf, c, h, wd])
        return b.add(back, x)
    }
}
