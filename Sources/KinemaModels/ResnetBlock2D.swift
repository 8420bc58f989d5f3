import KinemaCore

/// diffusers `ResnetBlock2D` (pre-norm, `time_embedding_norm="default"`, output scale 1):
/// `shortcut(x) + conv2(SiLU(GN2(conv1(SiLU(GN1(x))) + temb_proj(SiLU(emb)))))`.
/// The VAE's resnets have no time embedding (`timeEmbeddingDim` nil).
public struct ResnetBlock2D {
    public let norm1: GroupNorm, conv1: Conv2d
    public let timeEmbProj: Linear?
    public let norm2: GroupNorm, conv2: Conv2d
    public let convShortcut: Conv2d?

    public init(_ w: WeightReader, _ key: String, inputs: Int, outputs: Int, groups: Int, epsilon: Float,
                timeEmbeddingDim: Int?) {
        norm1 = GroupNorm(w, "\(key).norm1", groups: groups, channels: inputs, epsilon: epsilon)
        conv1 = Conv2d(w, "\(key).conv1", inputs, outputs, kernel: 3)
        timeEmbProj = timeEmbeddingDim.map { Linear(w, "\(key).time_emb_proj", $0, outputs) }
        norm2 = GroupNorm(w, "\(key).norm2", groups: groups, channels: outputs, epsilon: epsilon)
        conv2 = Conv2d(w, "\(key).conv2", outputs, outputs, kernel: 3)
        convShortcut = inputs != outputs ? Conv2d(w, "\(key).conv_shortcut", inputs, outputs, kernel: 1) : nil
    }

    /// x (N, C, H, W); `activatedEmbedding` is SiLU(emb) of shape (N, timeEmbeddingDim), shared
    /// by every resnet of a model, so it is computed once by the caller.
    public func callAsFunction(_ x: Tensor, activatedEmbedding: Tensor?, _ b: Backend) -> Tensor {
        var h = conv1(norm1(x, b, silu: true), b)
        if let timeEmbProj, let activatedEmbedding {
            let t = timeEmbProj(activatedEmbedding, b)  // (N, C_out)
            h = b.add(h, t.reshaped([t.shape[0], t.shape[1], 1, 1]))
        }
        h = conv2(norm2(h, b, silu: true), b)
        return b.add(h, convShortcut.map { $0(x, b) } ?? x)
    }
}
