import KinemaCore

/// diffusers `TemporalConvLayer`: four stages of GroupNorm → SiLU → Conv3d (3,1,1) over frames,
/// added to the input. The GroupNorms see (B, C, F, H, W), so their statistics span all frames.
public struct TemporalConvLayer {
    public let norms: [GroupNorm]
    public let convWeights: [Tensor]
    public let convBiases: [Tensor]

    public init(_ w: WeightReader, _ key: String, channels: Int, groups: Int) {
        var norms: [GroupNorm] = [], weights: [Tensor] = [], biases: [Tensor] = []
        for stage in 1...4 {
            // conv1 = [GN, SiLU, Conv3d]; conv2..4 = [GN, SiLU, Dropout, Conv3d].
            let convIndex = stage == 1 ? 2 : 3
            norms.append(GroupNorm(w, "\(key).conv\(stage).0", groups: groups, channels: channels, epsilon: 1e-5))
            weights.append(w.matrix("\(key).conv\(stage).\(convIndex).weight", [channels, channels, 3, 1, 1]))
            biases.append(w("\(key).conv\(stage).\(convIndex).bias", [channels]))
        }
        self.norms = norms
        convWeights = weights
        convBiases = biases
    }

    /// x (B·F, C, H, W) → same shape.
    public func callAsFunction(_ x: Tensor, frames: Int, _ b: Backend) -> Tensor {
        var h = x
        for stage in 0..<4 {
            h = b.temporalConv(norms[stage](h, b, frames: frames, silu: true), weight: convWeights[stage], bias: convBiases[stage], frames: frames)
        }
        return b.add(x, h)
    }
}
