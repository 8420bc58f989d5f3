// The encoder layer both CLIP towers share (transformers' modeling_clip.py, 5.24): `CLIPEncoderLayer`
// and its `CLIPAttention`.
import Foundation
import KinemaCore

/// transformers' `CLIPAttention`: q/k/v/out projections with bias and scaled dot-product attention
/// over `heads` heads.
struct CLIPAttention {
    let qProj: Linear, kProj: Linear, vProj: Linear, outProj: Linear
    let heads: Int
    /// transformers' `head_dim ** -0.5`, a Python double rounded once to float.
    let scale: Float

    init(_ w: WeightReader, _ key: String, hiddenSize: Int, heads: Int) {
        qProj = Linear(w, "\(key).q_proj", hiddenSize, hiddenSize)
        kProj = Linear(w, "\(key).k_proj", hiddenSize, hiddenSize)
        vProj = Linear(w, "\(key).v_proj", hiddenSize, hiddenSize)
        outProj = Linear(w, "\(key).out_proj", hiddenSize, hiddenSize)
        self.heads = heads
        scale = Float(pow(Double(hiddenSize / heads), -0.5))
    }

    /// x (B, N, hidden) → (B, N, hidden); `causal` hides later tokens from earlier ones.
    func callAsFunction(_ x: Tensor, causal: Bool, _ b: Backend) -> Tensor {
        let attended = b.attention(query: qProj(x, b), key: kProj(x, b), value: vProj(x, b), heads: heads,
                                   causal: causal, scale: scale)
        return outProj(attended, b)
    }
}

/// transformers' `CLIPEncoderLayer`, shared by the text and vision towers (`encoder.layers.i`):
/// `x += self_attn(layer_norm1(x))`, then `x += fc2(act(fc1(layer_norm2(x))))`.
struct CLIPEncoderLayer {
    let selfAttn: CLIPAttention
    let layerNorm1: LayerNorm
    /// `mlp.fc1`, `mlp.fc2`.
    let fc1: Linear, fc2: Linear
    let layerNorm2: LayerNorm
    let activation: CLIPActivation

    init(_ w: WeightReader, _ key: String, hiddenSize: Int, intermediateSize: Int, heads: Int,
         activation: CLIPActivation, epsilon: Float) {
        selfAttn = CLIPAttention(w, "\(key).self_attn", hiddenSize: hiddenSize, heads: heads)
        layerNorm1 = LayerNorm(w, "\(key).layer_norm1", hiddenSize, epsilon: epsilon)
        fc1 = Linear(w, "\(key).mlp.fc1", hiddenSize, intermediateSize)
        fc2 = Linear(w, "\(key).mlp.fc2", intermediateSize, hiddenSize)
        layerNorm2 = LayerNorm(w, "\(key).layer_norm2", hiddenSize, epsilon: epsilon)
        self.activation = activation
    }

    /// x (B, N, hidden) → (B, N, hidden).
    func callAsFunction(_ x: Tensor, causal: Bool, _ b: Backend) -> Tensor {
        let attended = b.add(selfAttn(layerNorm1(x, b), causal: causal, b), x)
        let expanded = fc1(layerNorm2(attended, b), b)  // (B, N, intermediate)
        let activated: Tensor
        switch activation {
        case .gelu: activated = b.gelu(expanded)
        case .quickGelu: activated = b.quickGelu(expanded)
        }
        return b.add(fc2(activated, b), attended)
    }
}
