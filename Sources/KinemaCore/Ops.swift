/// The op front-end shared by every backend: shape checks, output and workspace allocation
/// (labelled with the op's name in the meter), then the backend's kernel.
extension Backend {
    /// A new uninitialised tensor on this device, counted under `op`.
    public func empty(_ shape: [Int], dtype: DType? = nil, op: String = "empty") -> Tensor {
        let dtype = dtype ?? computeType
        allocator.meter.currentOp = op
        let storage = Storage(byteCount: shape.reduce(1, *) * dtype.size, allocator: allocator)
        return Tensor(shape: shape, dtype: dtype, storage: storage)
    }

    /// Scratch memory of at least `bytes` bytes as a flat f32 tensor, or nil for none.
    func workspace(bytes: Int, op: String) -> Tensor? {
        bytes > 0 ? empty([(bytes + 3) / 4], dtype: .f32, op: op) : nil
    }

    /// A tensor on this device holding `values` (converted to `dtype`).
    public func tensor(_ values: [Float], shape: [Int], dtype: DType? = nil) -> Tensor {
        precondition(values.count == shape.reduce(1, *), "\(values.count) values do not fill shape \(shape)")
        let output = empty(shape, dtype: dtype, op: "tensor")
        values.withUnsafeBytes { writeKernel($0.baseAddress!, dtype: .f32, into: output) }
        return output
    }

    /// Copies a tensor from any device that holds data (a host or memory-mapped tensor) onto this
    /// one, converting its dtype to `dtype` (default: unchanged).
    public func upload(_ source: Tensor, dtype: DType? = nil) -> Tensor {
        let output = empty(source.shape, dtype: dtype ?? source.dtype, op: "upload")
        if source.hasData { writeKernel(source.rawPointer, dtype: source.dtype, into: output) }
        return output
    }

    /// The elements of a tensor of this device as `Float`s in host memory (a device-to-host copy on
    /// a GPU). Traps on the meta device.
    public func floats(_ input: Tensor) -> [Float] {
        [Float](unsafeUninitializedCapacity: input.count) { buffer, initialized in
            if input.count > 0 { readKernel(input, dtype: .f32, into: buffer.baseAddress!) }
            initialized = input.count
        }
    }

    /// The same values in another dtype.
    public func convert(_ input: Tensor, to dtype: DType) -> Tensor {
        let output = empty(input.shape, dtype: dtype, op: "convert")
        OpProfile.shared.time("convert") {
            convertKernel(input, into: output)
        }
        return output
    }

    /// `weight` in `dtype`: itself, or (a weight kept in a narrower storage type) a temporary copy
    /// that lives until the op using it returns.
    func widened(_ weight: Tensor, to dtype: DType) -> Tensor {
        weight.dtype == dtype ? weight : convert(weight, to: dtype)
    }

    /// Copies `source` into `destination`, a tensor of the same shape and dtype (typically a slice
    /// view of a larger tensor that a chunked computation fills piece by piece). Allocates nothing.
    public func copy(_ source: Tensor, into destination: Tensor) {
        precondition(source.shape == destination.shape && source.dtype == destination.dtype,
                     "copy of \(source.shape) \(source.dtype) into \(destination.shape) \(destination.dtype)")
        OpProfile.shared.time("copy") {
            convertKernel(source, into: destination)
        }
    }

    /// Batched matrix product: `a` (…, m, k) times `b` (…, k, n) or (k, n), optionally transposed.
    public func matmul(_ a: Tensor, _ b: Tensor, transposeA: Bool = false, transposeB: Bool = false) -> Tensor {
        precondition(a.rank >= 2 && b.rank >= 2, "matmul needs matrices, got \(a.shape) and \(b.shape)")
        let m = transposeA ? a.dim(-1) : a.dim(-2)
        let k = transposeA ? a.dim(-2) : a.dim(-1)
        let kb = transposeB ? b.dim(-1) : b.dim(-2)
        let n = transposeB ? b.dim(-2) : b.dim(-1)
        precondition(k == kb, "matmul inner dimensions differ: \(a.shape) and \(b.shape)")
        let batchShape = Array(a.shape.dropLast(2))
        let batch = batchShape.reduce(1, *)
        let bBatch = b.shape.dropLast(2).reduce(1, *)
        precondition(bBatch == 1 || bBatch == batch, "matmul batch sizes differ: \(a.shape) and \(b.shape)")
        let output = empty(batchShape + [m, n], dtype: a.dtype, op: "matmul")
        OpProfile.shared.time("matmul") {
            matmulKernel(a, b, transposeA: transposeA, transposeB: transposeB, batch: batch, m: m, n: n, k: k, into: output)
        }
        return output
    }

    /// torch's Linear: `input` (…, in) with `weight` (out, in) and optional `bias` (out).
    public func linear(_ input: Tensor, weight: Tensor, bias: Tensor? = nil) -> Tensor {
        precondition(weight.rank == 2 && input.dim(-1) == weight.shape[1],
                     "linear: input \(input.shape) does not match weight \(weight.shape)")
        if let bias { precondition(bias.shape == [weight.shape[0]], "linear: bias \(bias.shape) for weight \(weight.shape)") }
        let weight = widened(weight, to: input.dtype)
        let output = empty(Array(input.shape.dropLast()) + [weight.shape[0]], dtype: input.dtype, op: "linear")
        OpProfile.shared.time("linear") {
            linearKernel(input, weight: weight, bias: bias, into: output)
        }
        return output
    }

    /// torch's conv2d on (N, C, H, W) with weight (O, C, kh, kw).
    public func conv2d(_ input: Tensor, weight: Tensor, bias: Tensor? = nil,
                       parameters: Conv2dParameters = Conv2dParameters()) -> Tensor {
        precondition(input.rank == 4 && weight.rank == 4 && input.shape[1] == weight.shape[1],
                     "conv2d: input \(input.shape) does not match weight \(weight.shape)")
        if let bias { precondition(bias.shape == [weight.shape[0]], "conv2d: bias \(bias.shape) for weight \(weight.shape)") }
        let (oh, ow) = parameters.outputSize(height: input.shape[2], width: input.shape[3],
                                             kernelH: weight.shape[2], kernelW: weight.shape[3])
        precondition(oh > 0 && ow > 0, "conv2d: kernel \(weight.shape) larger than padded input \(input.shape)")
        let weight = widened(weight, to: input.dtype)
        let workspaceBytes = workspacePolicy.bytes(for: .conv2d(input: input.shape, weight: weight.shape, parameters: parameters))
        let output = empty([input.shape[0], weight.shape[0], oh, ow], dtype: input.dtype, op: "conv2d")
        let workspace = self.workspace(bytes: workspaceBytes, op: "conv2d.workspace")
        OpProfile.shared.time("conv2d") {
            conv2dKernel(input, weight: weight, bias: bias, parameters: parameters, workspace: workspace, into: output)
        }
        return output
    }

    /// The (kt, 1, 1) Conv3d of diffusers' TemporalConvLayer, on a `(batch*frames, C, H, W)` tensor.
    /// `weight` is (O, C, kt, 1, 1) as stored in checkpoints.
    public func temporalConv(_ input: Tensor, weight: Tensor, bias: Tensor? = nil, frames: Int) -> Tensor {
        precondition(input.rank == 4 && weight.rank == 5 && weight.shape[1] == input.shape[1]
                     && weight.shape[3] == 1 && weight.shape[4] == 1 && weight.shape[2] % 2 == 1,
                     "temporalConv: input \(input.shape) does not match weight \(weight.shape)")
        precondition(frames > 0 && input.shape[0] % frames == 0, "temporalConv: \(input.shape[0]) images are not a multiple of \(frames) frames")
        let weight = widened(weight, to: input.dtype)
        let workspaceBytes = workspacePolicy.bytes(for: .temporalConv(input: input.shape, weight: weight.shape, frames: frames))
        let output = empty([input.shape[0], weight.shape[0], input.shape[2], input.shape[3]], dtype: input.dtype, op: "temporalConv")
        let workspace = self.workspace(bytes: workspaceBytes, op: "temporalConv.workspace")
        OpProfile.shared.time("temporalConv") {
            temporalConvKernel(input, weight: weight, bias: bias, frames: frames, workspace: workspace, into: output)
        }
        return output
    }

    /// GroupNorm over (N, C, …) with statistics per (image, group); with `frames` > 1 the first
    /// dimension is batch*frames and the statistics span each clip's frames, as diffusers'
    /// temporal layers compute on (B, C, F, H, W). Optionally followed by SiLU in the same pass.
    public func groupNorm(_ input: Tensor, groups: Int, weight: Tensor?, bias: Tensor?, epsilon: Float,
                          frames: Int = 1, fusedSiLU: Bool = false) -> Tensor {
        precondition(input.rank >= 2 && input.shape[1] % groups == 0, "groupNorm: \(input.shape[1]) channels not divisible into \(groups) groups")
        precondition(frames > 0 && input.shape[0] % frames == 0, "groupNorm: \(input.shape[0]) images are not a multiple of \(frames) frames")
        let output = empty(input.shape, dtype: input.dtype, op: fusedSiLU ? "groupNorm+silu" : "groupNorm")
        OpProfile.shared.time("groupNorm") {
            groupNormKernel(input, groups: groups, weight: weight, bias: bias, epsilon: epsilon, frames: frames, fusedSiLU: fusedSiLU, into: output)
        }
        return output
    }

    /// LayerNorm over the last dimension.
    public func layerNorm(_ input: Tensor, weight: Tensor?, bias: Tensor?, epsilon: Float) -> Tensor {
        let output = empty(input.shape, dtype: input.dtype, op: "layerNorm")
        OpProfile.shared.time("layerNorm") {
            layerNormKernel(input, weight: weight, bias: bias, epsilon: epsilon, into: output)
        }
        return output
    }

    /// Softmax over the last dimension.
    public func softmax(_ input: Tensor) -> Tensor {
        let output = empty(input.shape, dtype: input.dtype, op: "softmax")
        OpProfile.shared.time("softmax") {
            softmaxKernel(input, into: output)
        }
        return output
    }

    /// Scaled dot-product attention on token-major tensors: `query` (B, Nq, heads·D), `key` and
    /// `value` (B, Nk, heads·D), heads interleaved as after diffusers' `to_q`. Scores are computed
    /// `queryChunk` queries at a time, so at most one chunk × Nk block of scores exists per worker.
    public func attention(query: Tensor, key: Tensor, value: Tensor, heads: Int, causal: Bool = false,
                          scale: Float? = nil, queryChunk: Int? = nil) -> Tensor {
        precondition(query.rank == 3 && key.rank == 3 && value.shape == key.shape && query.shape[0] == key.shape[0]
                     && query.shape[2] == key.shape[2] && query.shape[2] % heads == 0,
                     "attention: query \(query.shape), key \(key.shape), value \(value.shape), \(heads) heads")
        let headDim = query.shape[2] / heads
        let chunk = max(1, min(queryChunk ?? Self.defaultQueryChunk(keys: key.shape[1]), query.shape[1]))
        let geometry = AttentionGeometry(batch: query.shape[0], heads: heads, queries: query.shape[1],
                                         keys: key.shape[1], headDim: headDim, queryChunk: chunk)
        let workspaceBytes = workspacePolicy.bytes(for: .attention(geometry))
        let output = empty(query.shape, dtype: query.dtype, op: "attention")
        let workspace = self.workspace(bytes: workspaceBytes, op: "attention.workspace")
        OpProfile.shared.time("attention") {
            attentionKernel(query: query, key: key, value: value, geometry: geometry, causal: causal,
                            scale: scale ?? 1 / Float(headDim).squareRoot(), workspace: workspace, into: output)
        }
        return output
    }

    /// Queries per chunk so that one block of scores stays near 4 MiB of f32.
    public static func defaultQueryChunk(keys: Int) -> Int { max(16, (1 << 20) / max(keys, 1)) }

    public func unary(_ op: UnaryOp, _ input: Tensor) -> Tensor {
        let output = empty(input.shape, dtype: input.dtype, op: op.rawValue)
        OpProfile.shared.time("unary") {
            unaryKernel(op, input, into: output)
        }
        return output
    }

    public func silu(_ input: Tensor) -> Tensor { unary(.silu, input) }
    public func gelu(_ input: Tensor) -> Tensor { unary(.gelu, input) }
    public func quickGelu(_ input: Tensor) -> Tensor { unary(.quickGelu, input) }

    /// `input · scale + shift`.
    public func affine(_ input: Tensor, scale: Float, shift: Float = 0) -> Tensor {
        let output = empty(input.shape, dtype: input.dtype, op: "affine")
        OpProfile.shared.time("affine") {
            affineKernel(input, scale: scale, shift: shift, into: output)
        }
        return output
    }

    /// `min(max(input, lower), upper)`.
    public func clamp(_ input: Tensor, lower: Float, upper: Float) -> Tensor {
        let output = empty(input.shape, dtype: input.dtype, op: "clamp")
        OpProfile.shared.time("clamp") {
            clampKernel(input, lower: lower, upper: upper, into: output)
        }
        return output
    }

    /// torch's `AdaptiveAvgPool2d((height, width))` on (N, C, H, W).
    public func adaptiveAveragePool(_ input: Tensor, height: Int, width: Int) -> Tensor {
        precondition(input.rank == 4 && height > 0 && width > 0, "adaptiveAveragePool: input \(input.shape) to \(height)x\(width)")
        let output = empty([input.shape[0], input.shape[1], height, width], dtype: input.dtype, op: "adaptiveAveragePool")
        OpProfile.shared.time("adaptiveAveragePool") {
            adaptiveAveragePoolKernel(input, into: output)
        }
        return output
    }

    /// diffusers' GEGLU after its projection: (…, 2D) → (…, D), first half the value, second half
    /// the gate: `value · gelu(gate)`.
    public func geglu(_ input: Tensor) -> Tensor {
        precondition(input.dim(-1) % 2 == 0, "geglu: last dimension \(input.dim(-1)) is odd")
        let output = empty(Array(input.shape.dropLast()) + [input.dim(-1) / 2], dtype: input.dtype, op: "geglu")
        OpProfile.shared.time("geglu") {
            gegluKernel(input, into: output)
        }
        return output
    }

    /// `a op b`, with `b` broadcast onto `a` by numpy's rules (the output has `a`'s shape).
    public func binary(_ op: BinaryOp, _ a: Tensor, _ b: Tensor) -> Tensor {
        precondition(Self.broadcasts(b.shape, onto: a.shape), "\(op): shape \(b.shape) does not broadcast onto \(a.shape)")
        let output = empty(a.shape, dtype: a.dtype, op: op.rawValue)
        OpProfile.shared.time("binary") {
            binaryKernel(op, a, b, into: output)
        }
        return output
    }

    public func add(_ a: Tensor, _ b: Tensor) -> Tensor { binary(.add, a, b) }
    public func sub(_ a: Tensor, _ b: Tensor) -> Tensor { binary(.sub, a, b) }
    public func mul(_ a: Tensor, _ b: Tensor) -> Tensor { binary(.mul, a, b) }
    public func div(_ a: Tensor, _ b: Tensor) -> Tensor { binary(.div, a, b) }

    /// Whether `shape` broadcasts onto `target` without changing `target`.
    public static func broadcasts(_ shape: [Int], onto target: [Int]) -> Bool {
        guard shape.count <= target.count else { return false }
        for (s, t) in zip(shape.reversed(), target.reversed()) where s != t && s != 1 { return false }
        return true
    }

    /// Concatenation along `axis`.
    public func concat(_ inputs: [Tensor], axis: Int) -> Tensor {
        precondition(!inputs.isEmpty, "concat of nothing")
        let rank = inputs[0].rank
        let axis = axis < 0 ? rank + axis : axis
        var shape = inputs[0].shape
        shape[axis] = 0
        for input in inputs {
            precondition(input.rank == rank && input.dtype == inputs[0].dtype, "concat: mismatched inputs \(inputs.map(\.shape))")
            for d in 0..<rank where d != axis {
                precondition(input.shape[d] == inputs[0].shape[d], "concat: shapes \(inputs.map(\.shape)) differ off axis \(axis)")
            }
            shape[axis] += input.shape[axis]
        }
        let output = empty(shape, dtype: inputs[0].dtype, op: "concat")
        OpProfile.shared.time("concat") {
            concatKernel(inputs, axis: axis, into: output)
        }
        return output
    }

    /// A copy with dimensions reordered: output dimension i is input dimension `order[i]`.
    public func permute(_ input: Tensor, _ order: [Int]) -> Tensor {
        precondition(order.sorted() == Array(0..<input.rank), "permute: \(order) is not a permutation of \(input.rank) dimensions")
        let output = empty(order.map { input.shape[$0] }, dtype: input.dtype, op: "permute")
        OpProfile.shared.time("permute") {
            permuteKernel(input, order: order, into: output)
        }
        return output
    }

    /// Nearest-neighbour upsampling of (N, C, H, W) by an integer factor.
    public func upsampleNearest(_ input: Tensor, factor: Int = 2) -> Tensor {
        precondition(input.rank == 4 && factor >= 1, "upsampleNearest: input \(input.shape), factor \(factor)")
        return upsampleNearest(input, height: input.shape[2] * factor, width: input.shape[3] * factor)
    }

    /// torch's `F.interpolate(mode="nearest", size=(height, width))` on (N, C, H, W): output
    /// pixel d reads input pixel min(⌊d · in/out⌋, in − 1), the scale computed in f32.
    public func upsampleNearest(_ input: Tensor, height: Int, width: Int) -> Tensor {
        precondition(input.rank == 4 && height > 0 && width > 0, "upsampleNearest: input \(input.shape) to \(height)x\(width)")
        let output = empty([input.shape[0], input.shape[1], height, width], dtype: input.dtype, op: "upsampleNearest")
        OpProfile.shared.time("upsampleNearest") {
            upsampleNearestKernel(input, into: output)
        }
        return output
    }

    /// Rows of `table` (vocab, D) for each id: (ids.count, D).
    public func embedding(ids: [Int], table: Tensor) -> Tensor {
        precondition(table.rank == 2, "embedding: table \(table.shape) is not a matrix")
        precondition(ids.allSatisfy { $0 >= 0 && $0 < table.shape[0] }, "embedding: id outside a table of \(table.shape[0]) rows")
        let output = empty([ids.count, table.shape[1]], dtype: computeType, op: "embedding")
        OpProfile.shared.time("embedding") {
            embeddingKernel(ids: ids, table: table, into: output)
        }
        return output
    }

    /// diffusers' sinusoidal `get_timestep_embedding`: (timesteps.count, dimension).
    public func timestepEmbedding(_ timesteps: [Float], parameters: TimestepEmbeddingParameters) -> Tensor {
        let output = empty([timesteps.count, parameters.dimension], dtype: computeType, op: "timestepEmbedding")
        OpProfile.shared.time("timestepEmbedding") {
            timestepEmbeddingKernel(timesteps, parameters: parameters, into: output)
        }
        return output
    }
}

