import KinemaCore

/// torch `nn.Linear`: weight (out, in), optional bias (out).
public struct Linear {
    public let weight: Tensor
    public let bias: Tensor?

    public init(_ w: WeightReader, _ key: String, _ inputs: Int, _ outputs: Int, bias: Bool = true) {
        weight = w.matrix("\(key).weight", [outputs, inputs])
        self.bias = bias ? w("\(key).bias", [outputs]) : nil
    }

    public func callAsFunction(_ x: Tensor, _ b: Backend) -> Tensor { b.linear(x, weight: weight, bias: bias) }
}

/// torch `nn.Conv2d` with bias, square kernel, symmetric padding unless given.
public struct Conv2d {
    public let weight: Tensor
    public let bias: Tensor?
    public let parameters: Conv2dParameters

    public init(_ w: WeightReader, _ key: String, _ inputs: Int, _ outputs: Int, kernel: Int, stride: Int = 1,
                padding: Int? = nil, bias: Bool = true) {
        weight = w.matrix("\(key).weight", [outputs, inputs, kernel, kernel])
        self.bias = bias ? w("\(key).bias", [outputs]) : nil
        parameters = Conv2dParameters(stride: stride, padding: padding ?? kernel / 2)
    }

    public init(_ w: WeightReader, _ key: String, _ inputs: Int, _ outputs: Int, kernel: Int, parameters: Conv2dParameters) {
        weight = w.matrix("\(key).weight", [outputs, inputs, kernel, kernel])
        bias = w("\(key).bias", [outputs])
        self.parameters = parameters
    }

    public var outputChannels: Int { weight.shape[0] }

    public func callAsFunction(_ x: Tensor, _ b: Backend) -> Tensor {
        b.conv2d(x, weight: weight, bias: bias, parameters: parameters)
    }
}

/// torch `nn.GroupNorm` (affine). `frames` > 1 spans each clip's frames, as on a 5-D tensor.
public struct GroupNorm {
    public let weight: Tensor
    public let bias: Tensor
    public let groups: Int
    public let epsilon: Float

    public init(_ w: WeightReader, _ key: String, groups: Int, channels: Int, epsilon: Float) {
        weight = w("\(key).weight", [channels])
        bias = w("\(key).bias", [channels])
        self.groups = groups
        self.epsilon = epsilon
    }

    public func callAsFunction(_ x: Tensor, _ b: Backend, frames: Int = 1, silu: Bool = false) -> Tensor {
        b.groupNorm(x, groups: groups, weight: weight, bias: bias, epsilon: epsilon, frames: frames, fusedSiLU: silu)
    }
}

/// torch `nn.LayerNorm` over the last dimension (affine).
public struct LayerNorm {
    public let weight: Tensor
    public let bias: Tensor
    public let epsilon: Float

    public init(_ w: WeightReader, _ key: String, _ channels: Int, epsilon: Float = 1e-5) {
        weight = w("\(key).weight", [channels])
        bias = w("\(key).bias", [channels])
        self.epsilon = epsilon
    }

    public func callAsFunction(_ x: Tensor, _ b: Backend) -> Tensor {
        b.layerNorm(x, weight: weight, bias: bias, epsilon: epsilon)
    }
}

/// diffusers `Attention` with `AttnProcessor2_0` as the UNet uses it: q/k/v projections (bias
/// optional), scaled dot-product attention over heads, `to_out.0` with bias.
public struct Attention {
    public let toQ: Linear, toK: Linear, toV: Linear, toOut: Linear
    public let heads: Int

    public init(_ w: WeightReader, _ key: String, queryDim: Int, contextDim: Int? = nil, heads: Int, headDim: Int,
                qkvBias: Bool = false) {
        let inner = heads * headDim
        toQ = Linear(w, "\(key).to_q", queryDim, inner, bias: qkvBias)
        toK = Linear(w, "\(key).to_k", contextDim ?? queryDim, inner, bias: qkvBias)
        toV = Linear(w, "\(key).to_v", contextDim ?? queryDim, inner, bias: qkvBias)
        toOut = Linear(w, "\(key).to_out.0", inner, queryDim)
        self.heads = heads
    }

    /// x (B, N, queryDim), context (B, M, contextDim) or nil for self-attention → (B, N, queryDim).
    public func callAsFunction(_ x: Tensor, context: Tensor? = nil, _ b: Backend, queryChunk: Int? = nil) -> Tensor {
        let source = context ?? x
        let attended = b.attention(query: toQ(x, b), key: toK(source, b), value: toV(source, b), heads: heads, queryChunk: queryChunk)
        return toOut(attended, b)
    }
}

/// diffusers `FeedForward` with GEGLU: `net.0.proj` Linear(d → 2·inner), value·gelu(gate),
/// `net.2` Linear(inner → d).
public struct GEGLUFeedForward {
    public let proj: Linear, out: Linear

    public init(_ w: WeightReader, _ key: String, dim: Int, mult: Int = 4) {
        proj = Linear(w, "\(key).net.0.proj", dim, 2 * mult * dim)
        out = Linear(w, "\(key).net.2", mult * dim, dim)
    }

    public func callAsFunction(_ x: Tensor, _ b: Backend) -> Tensor { out(b.geglu(proj(x, b)), b) }
}

/// diffusers `BasicTransformerBlock` (layer norms, attn1, attn2, GEGLU feed-forward). attn2 is
/// cross-attention when `contextDim` is given, otherwise a second self-attention.
public struct BasicTransformerBlock {
    public let norm1: LayerNorm, attn1: Attention
    public let norm2: LayerNorm, attn2: Attention
    public let norm3: LayerNorm, ff: GEGLUFeedForward

    public init(_ w: WeightReader, _ key: String, dim: Int, heads: Int, headDim: Int, contextDim: Int?) {
        norm1 = LayerNorm(w, "\(key).norm1", dim)
        attn1 = Attention(w, "\(key).attn1", queryDim: dim, heads: heads, headDim: headDim)
        norm2 = LayerNorm(w, "\(key).norm2", dim)
        attn2 = Attention(w, "\(key).attn2", queryDim: dim, contextDim: contextDim, heads: heads, headDim: headDim)
        norm3 = LayerNorm(w, "\(key).norm3", dim)
        ff = GEGLUFeedForward(w, "\(key).ff", dim: dim)
    }

    /// x (B, N, dim) → (B, N, dim). With `tokenMerge`, the self-attention runs on merged tokens
    /// (matched on the block's input, as tomesd does) and its output is unmerged (lossy).
    public func callAsFunction(_ x: Tensor, context: Tensor?, tokenMerge: TokenMerge? = nil, _ b: Backend) -> Tensor {
        var x = x
        if let merge = tokenMerge {
            let slots = b.matchTokens(x, height: merge.height, width: merge.width, ratio: merge.ratio)
            let merged = b.mergeTokens(norm1(x, b), slots: slots, height: merge.height, width: merge.width, ratio: merge.ratio)
            x = b.add(b.unmergeTokens(attn1(merged, b), slots: slots), x)
        } else {
            x = b.add(attn1(norm1(x, b), b), x)
        }
        x = b.add(attn2(norm2(x, b), context: context, b), x)
        return b.add(ff(norm3(x, b), b), x)
    }
}

/// Token merging on a spatial self-attention: `ratio` of the `height`×`width` tokens of each
/// frame merged (see `TokenMerging.swift`).
public struct TokenMerge: Sendable, Equatable {
    public var ratio: Double
    public var height: Int
    public var width: Int

    public init(ratio: Double, height: Int, width: Int) {
        self.ratio = ratio
        self.height = height
        self.width = width
    }
}

extension Backend {
    /// `body` applied to `x`'s rows (first dimension) in `parts` chunks of equal size (the last may be
    /// smaller), the results written into one output: every row is computed exactly as by
    /// `body(x)`, while `body`'s intermediates exist for one chunk at a time (a lossless plan).
    /// `body` gets the chunk and its row range.
    func inRowChunks(_ x: Tensor, parts: Int, op: String, _ body: (Tensor, Range<Int>) -> Tensor) -> Tensor {
        let rows = x.shape[0]
        let chunk = (rows + parts - 1) / max(parts, 1)
        guard chunk < rows else { return body(x, 0..<rows) }
        var output: Tensor?
        var start = 0
        while start < rows {
            let range = start..<min(rows, start + chunk)
            let part = body(x.slice(range), range)
            if output == nil { output = empty([rows] + part.shape.dropFirst(), dtype: part.dtype, op: op) }
            copy(part, into: output!.slice(range))
            start = range.upperBound
        }
        return output!
    }
}
