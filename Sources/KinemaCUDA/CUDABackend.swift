import Foundation
import KinemaCore

/// Scratch memory of the CUDA kernels: im2col bands for k×k convolutions (at most
/// `convolutionBandBytes`), the repacked weight of a temporal convolution, and none for attention
/// (the flash kernel keeps no score matrix).
public struct CUDAWorkspacePolicy: WorkspacePolicy {
    /// Bytes per element of the compute type.
    public let elementSize: Int
    public let convolutionBandBytes: Int

    public init(computeType: DType, convolutionBandBytes: Int = 64 << 20) {
        self.elementSize = computeType.size
        self.convolutionBandBytes = convolutionBandBytes
    }

    /// Output pixels per im2col band of a convolution with `rows` = C·kh·kw, for `pixels` output pixels.
    static func bandPixels(rows: Int, pixels: Int, bytes: Int, elementSize: Int) -> Int {
        max(1, min(pixels, bytes / max(1, rows * elementSize)))
    }

    /// Head dims the fused attention kernels do not cover.
    static func usesChunkedAttention(headDim: Int) -> Bool { headDim > 128 }

    static func isPointwise(weight: [Int], parameters: Conv2dParameters) -> Bool {
        weight[2] == 1 && weight[3] == 1 && parameters == Conv2dParameters()
    }

    public func bytes(for request: WorkspaceRequest) -> Int {
        switch request {
        case .conv2d(let input, let weight, let parameters):
            if Self.isPointwise(weight: weight, parameters: parameters) { return 0 }
            let (oh, ow) = parameters.outputSize(height: input[2], width: input[3], kernelH: weight[2], kernelW: weight[3])
            let rows = weight[1] * weight[2] * weight[3]
            return rows * Self.bandPixels(rows: rows, pixels: oh * ow, bytes: convolutionBandBytes, elementSize: elementSize) * elementSize
        case .attention(let g):
            // Fused kernels keep no scores; wider heads use f32 scores and storage-type
            // probabilities for one query chunk of every head.
            return Self.usesChunkedAttention(headDim: g.headDim) ? g.heads * g.queryChunk * g.keys * (4 + elementSize) : 0
        case .temporalConv(_, let weight, _):
            return weight.reduce(1, *) * elementSize
        }
    }
}

/// The CUDA backend: tensors in device memory in f16, bf16 or f32, arithmetic in f32; GEMMs and
/// convolutions (im2col + GEMM) through cuBLAS on tensor cores, the rest in NVRTC-compiled kernels
/// (`KernelSource`). Every kernel is queued on one stream; reads to the host wait for it.
public final class CUDABackend: Backend {
    public let name: String
    public let device: CUDADevice
    public let allocator: Allocator
    public let workspacePolicy: WorkspacePolicy
    public let computeType: DType
    /// Device scratch for embedding ids (part of the fixed overhead, not of the planned peak).
    private var idBuffer: CUdeviceptr = 0
    private var idCapacity = 0

    /// A backend on `device` computing in `computeType` (f16, bf16 or f32).
    public init(device: CUDADevice, computeType: DType = .f16) {
        self.device = device
        self.computeType = computeType
        self.allocator = CUDAAllocator(device: device)
        self.workspacePolicy = CUDAWorkspacePolicy(computeType: computeType)
        self.name = "cuda:0"
    }

    /// Opens GPU `ordinal` and makes a backend on it.
    public convenience init(ordinal: Int = 0, computeType: DType = .f16) throws {
        self.init(device: try CUDADevice(ordinal: ordinal), computeType: computeType)
    }

    /// The meta backend that allocates exactly what this backend would.
    public func metaTwin() -> MetaBackend { MetaBackend(emulating: workspacePolicy, computeType: computeType) }

    /// Whether a CUDA driver and device can be opened here; the reason when not.
    public static func availability() -> Result<CUDADevice, CUDAError> {
        do { return .success(try CUDADevice()) } catch let error as CUDAError { return .failure(error) } catch {
            return .failure(CUDAError("\(error)"))
        }
    }

    func address(_ t: Tensor) -> CUdeviceptr { CUdeviceptr(UInt(bitPattern: t.rawPointer)) }
    func argument(_ t: Tensor?) -> KernelArgument { t.map { .pointer(address($0)) } ?? .null }
    static func suffix(_ dtype: DType) -> String { dtype.rawValue }

    func requireSame(_ tensors: Tensor?..., op: String) {
        let first = tensors.compactMap { $0 }.first!.dtype
        for case let t? in tensors {
            if t.dtype != first { fatalError("\(op): mixed dtypes on CUDA (\(tensors.compactMap { $0?.dtype })); convert first") }
        }
    }

    // MARK: host <-> device

    public func writeKernel(_ values: UnsafeRawPointer, dtype: DType, into output: Tensor) {
        guard output.count > 0 else { return }
        device.makeCurrent()
        let driver = device.driver
        if dtype == output.dtype {
            driver.must(driver.cuMemcpyHtoDAsync(address(output), values, output.byteCount, device.stream), "cuMemcpyHtoDAsync")
        } else {
            // Converted on the host with DType.convert: the same rounding as the CPU backend's.
            let staging = UnsafeMutableRawPointer.allocate(byteCount: output.byteCount, alignment: 64)
            defer { staging.deallocate() }
            DType.convert(values, from: dtype, to: staging, output.dtype, count: output.count)
            driver.must(driver.cuMemcpyHtoDAsync(address(output), staging, output.byteCount, device.stream), "cuMemcpyHtoDAsync")
            driver.must(driver.cuStreamSynchronize(device.stream), "cuStreamSynchronize")
        }
    }

    public func readKernel(_ input: Tensor, dtype: DType, into destination: UnsafeMutableRawPointer) {
        guard input.count > 0 else { return }
        device.makeCurrent()
        let driver = device.driver
        if dtype == input.dtype {
            driver.must(driver.cuMemcpyDtoHAsync(destination, address(input), input.byteCount, device.stream), "cuMemcpyDtoHAsync")
            driver.must(driver.cuStreamSynchronize(device.stream), "cuStreamSynchronize")
        } else {
            let staging = UnsafeMutableRawPointer.allocate(byteCount: input.byteCount, alignment: 64)
            defer { staging.deallocate() }
            driver.must(driver.cuMemcpyDtoHAsync(staging, address(input), input.byteCount, device.stream), "cuMemcpyDtoHAsync")
            driver.must(driver.cuStreamSynchronize(device.stream), "cuStreamSynchronize")
            DType.convert(staging, from: input.dtype, to: destination, dtype, count: input.count)
        }
    }

    public func convertKernel(_ input: Tensor, into output: Tensor) {
        guard input.count > 0 else { return }
        if input.dtype == output.dtype {
            device.makeCurrent()
            device.driver.must(device.driver.cuMemcpyDtoDAsync(address(output), address(input), input.byteCount, device.stream),
                               "cuMemcpyDtoDAsync")
        } else {
            device.launchElementwise("convert_\(Self.suffix(input.dtype))_\(Self.suffix(output.dtype))", count: input.count,
                                     [.pointer(address(input)), .pointer(address(output)), .long(input.count)])
        }
    }

    // MARK: elementwise

    public func unaryKernel(_ op: UnaryOp, _ input: Tensor, into output: Tensor) {
        let code: Int
        switch op {
        case .silu: code = 0
        case .gelu: code = 1
        case .quickGelu: code = 2
        case .exp: code = 3
        }
        device.launchElementwise("unary_\(Self.suffix(input.dtype))", count: input.count,
                                 [.int(code), argument(input), argument(output), .long(input.count)])
    }

    public func affineKernel(_ input: Tensor, scale: Float, shift: Float, into output: Tensor) {
        device.launchElementwise("affine_\(Self.suffix(input.dtype))", count: input.count,
                                 [argument(input), argument(output), .long(input.count), .float(scale), .float(shift)])
    }

    public func clampKernel(_ input: Tensor, lower: Float, upper: Float, into output: Tensor) {
        device.launchElementwise("clamp_\(Self.suffix(input.dtype))", count: input.count,
                                 [argument(input), argument(output), .long(input.count), .float(lower), .float(upper)])
    }

    public func gegluKernel(_ input: Tensor, into output: Tensor) {
        let width = output.dim(-1), rows = output.count / max(width, 1)
        device.launchElementwise("geglu_\(Self.suffix(input.dtype))", count: output.count,
                                 [argument(input), argument(output), .long(rows), .long(width)])
    }

    public func binaryKernel(_ op: BinaryOp, _ a: Tensor, _ b: Tensor, into output: Tensor) {
        requireSame(a, b, op: op.rawValue)
        let code: Int
        switch op {
        case .add: code = 0
        case .sub: code = 1
        case .mul: code = 2
        case .div: code = 3
        }
        let runs = Self.broadcastRuns(a: a.shape, b: b.shape)
        device.launchElementwise("binary_\(Self.suffix(a.dtype))", count: a.count,
                                 [.int(code), argument(a), argument(b), argument(output), .long(a.count), .int(runs.sizes.count),
                                  .dims(sizes: runs.sizes, strides: runs.strides)])
    }

    /// `a`'s shape merged into runs over which `b` either varies (stride: b's contiguous stride) or
    /// repeats (stride 0).
    static func broadcastRuns(a: [Int], b: [Int]) -> (sizes: [Int], strides: [Int]) {
        let padded = Array(repeating: 1, count: a.count - b.count) + b
        var kinds: [(size: Int, repeats: Bool)] = []
        for (sa, sb) in zip(a, padded) where sa != 1 {
            let repeats = sb == 1
            if let last = kinds.last, last.repeats == repeats { kinds[kinds.count - 1].size *= sa } else { kinds.append((sa, repeats)) }
        }
        var sizes: [Int] = [], strides: [Int] = [], stride = 1
        for kind in kinds.reversed() {
            sizes.insert(kind.size, at: 0)
            strides.insert(kind.repeats ? 0 : stride, at: 0)
            if !kind.repeats { stride *= kind.size }
        }
        return sizes.isEmpty ? ([1], [0]) : (sizes, strides)
    }

    // MARK: layout

    public func concatKernel(_ inputs: [Tensor], axis: Int, into output: Tensor) {
        let after = output.shape[(axis + 1)...].reduce(1, *)
        let outer = output.shape[..<axis].reduce(1, *)
        let row = output.shape[axis] * after
        var column = 0
        for input in inputs {
            let block = input.shape[axis] * after
            device.launchElementwise("concat_\(output.dtype.size)", count: outer * block,
                                     [argument(input), argument(output), .long(outer), .long(block), .long(row), .long(column)])
            column += block
        }
    }

    public func permuteKernel(_ input: Tensor, order: [Int], into output: Tensor) {
        var inputStrides = [Int](repeating: 1, count: input.rank)
        for d in stride(from: input.rank - 2, through: 0, by: -1) { inputStrides[d] = inputStrides[d + 1] * input.shape[d + 1] }
        device.launchElementwise("permute_\(input.dtype.size)", count: output.count,
                                 [argument(input), argument(output), .long(output.count), .int(output.rank),
                                  .dims(sizes: output.shape, strides: order.map { inputStrides[$0] })])
    }

    public func upsampleNearestKernel(_ input: Tensor, into output: Tensor) {
        let planes = input.shape[0] * input.shape[1], h = input.shape[2], w = input.shape[3]
        let oh = output.shape[2], ow = output.shape[3]
        device.launchElementwise("upsample_\(Self.suffix(input.dtype))", count: output.count,
                                 [argument(input), argument(output), .long(planes), .int(h), .int(w), .int(oh), .int(ow),
                                  .float(Float(h) / Float(oh)), .float(Float(w) / Float(ow))])
    }

    public func adaptiveAveragePoolKernel(_ input: Tensor, into output: Tensor) {
        let planes = input.shape[0] * input.shape[1]
        device.launchElementwise("pool_\(Self.suffix(input.dtype))", count: output.count,
                                 [argument(input), argument(output), .long(planes), .int(input.shape[2]), .int(input.shape[3]),
                                  .int(output.shape[2]), .int(output.shape[3])])
    }

    public func embeddingKernel(ids: [Int], table: Tensor, into output: Tensor) {
        guard !ids.isEmpty else { return }
        device.makeCurrent()
        let driver = device.driver
        if ids.count > idCapacity {
            if idBuffer != 0 { driver.must(driver.cuMemFreeAsync(idBuffer, device.stream), "cuMemFreeAsync") }
            idCapacity = max(ids.count, 1024)
            driver.must(driver.cuMemAllocAsync(&idBuffer, idCapacity * 8, device.stream), "cuMemAllocAsync(embedding ids)")
        }
        let values = ids.map { Int64($0) }
        values.withUnsafeBytes { driver.must(driver.cuMemcpyHtoDAsync(idBuffer, $0.baseAddress!, $0.count, device.stream), "cuMemcpyHtoDAsync") }
        let width = table.shape[1]
        device.launchElementwise("gather_\(Self.suffix(table.dtype))_\(Self.suffix(output.dtype))", count: ids.count * width,
                                 [.pointer(idBuffer), argument(table), argument(output), .long(ids.count), .long(width)])
        // The ids live in a reused buffer: the gather must read them before the next call writes.
        driver.must(driver.cuStreamSynchronize(device.stream), "cuStreamSynchronize")
    }

    public func timestepEmbeddingKernel(_ timesteps: [Float], parameters p: TimestepEmbeddingParameters, into output: Tensor) {
        // A few hundred values: computed on the host exactly as the CPU backend does, then copied.
        let half = p.dimension / 2
        var values = [Float](repeating: 0, count: timesteps.count * p.dimension)
        let logPeriod = Float(-log(Double(p.maxPeriod)))
        let frequencies = (0..<half).map { i in expf(logPeriod * Float(i) / (Float(half) - p.downscaleFreqShift)) }
        for (row, t) in timesteps.enumerated() {
            for i in 0..<half {
                let angle = p.scale * (t * frequencies[i])
                values[row * p.dimension + (p.flipSinToCos ? half + i : i)] = sinf(angle)
                values[row * p.dimension + (p.flipSinToCos ? i : half + i)] = cosf(angle)
            }
        }
        values.withUnsafeBytes { writeKernel($0.baseAddress!, dtype: .f32, into: output) }
    }

    // MARK: normalization

    public func groupNormKernel(_ input: Tensor, groups: Int, weight: Tensor?, bias: Tensor?, epsilon: Float,
                                frames: Int, fusedSiLU: Bool, into output: Tensor) {
        requireSame(input, weight, bias, op: "groupNorm")
        let channels = input.shape[1], spatial = input.shape.dropFirst(2).reduce(1, *)
        let clips = input.shape[0] / frames
        device.launch("groupnorm_\(Self.suffix(input.dtype))", grid: (clips * groups, 1), block: 512,
                      [argument(input), argument(output), argument(weight), argument(bias), .int(frames), .int(channels),
                       .long(spatial), .int(groups), .float(epsilon), .int(fusedSiLU ? 1 : 0)])
    }

    public func layerNormKernel(_ input: Tensor, weight: Tensor?, bias: Tensor?, epsilon: Float, into output: Tensor) {
        requireSame(input, weight, bias, op: "layerNorm")
        let width = input.dim(-1), rows = input.count / max(width, 1)
        guard rows > 0 else { return }
        device.launch("layernorm_\(Self.suffix(input.dtype))", grid: (rows, 1), block: 256,
                      [argument(input), argument(output), argument(weight), argument(bias), .long(width), .float(epsilon)])
    }

    public func softmaxKernel(_ input: Tensor, into output: Tensor) {
        let width = input.dim(-1), rows = input.count / max(width, 1)
        guard rows > 0 else { return }
        device.launch("softmax_\(Self.suffix(input.dtype))", grid: (rows, 1), block: 256,
                      [argument(input), argument(output), .long(width)])
    }

    // MARK: attention

    public func attentionKernel(query: Tensor, key: Tensor, value: Tensor, geometry g: AttentionGeometry,
                                causal: Bool, scale: Float, workspace: Tensor?, into output: Tensor) {
        requireSame(query, key, value, op: "attention")
        guard g.batch > 0, g.queries > 0 else { return }
        if CUDAWorkspacePolicy.usesChunkedAttention(headDim: g.headDim) {
            if causal { fatalError("attention: causal masking with head dimension \(g.headDim) (above 128) is not implemented on CUDA") }
            chunkedAttention(query: query, key: key, value: value, geometry: g, scale: scale, workspace: workspace, into: output)
            return
        }
        if query.dtype != .f32 && g.headDim % 16 == 0 && g.headDim <= 128 {
            // Tensor cores: one warp per 16 query rows, up to 8 warps (128 queries) sharing each key tile.
            let warps = min(8, (g.queries + 15) / 16)
            let tiles = (g.queries + 16 * warps - 1) / (16 * warps)
            // 16-byte loads of key and value rows when every row starts on a 16-byte boundary.
            let aligned = [key, value].allSatisfy { address($0) % 16 == 0 } && (g.heads * g.headDim) % 8 == 0
            device.launch("flash\(g.headDim)_\(Self.suffix(query.dtype))", grid: (g.batch * tiles, g.heads), block: 32 * warps,
                          [argument(query), argument(key), argument(value), argument(output), .int(g.queries), .int(g.keys),
                           .int(g.heads), .float(scale), .int(causal ? 1 : 0), .int(aligned ? 1 : 0)])
            return
        }
        // f32 has kernels for head dims up to 32, 64 and 128; f16/bf16 (head dims off the tensor-core path) up to 128.
        let maxD: Int
        switch g.headDim {
        case ...32 where query.dtype == .f32: maxD = 32
        case ...64 where query.dtype == .f32: maxD = 64
        case ...128: maxD = 128
        default: fatalError("attention: head dimension \(g.headDim) is above the CUDA kernels' 128")
        }
        let block = min(128, (g.queries + 31) / 32 * 32)
        let tiles = (g.queries + block - 1) / block
        device.launch("attention\(maxD)_\(Self.suffix(query.dtype))", grid: (g.batch * tiles, g.heads), block: block,
                      [argument(query), argument(key), argument(value), argument(output), .int(g.queries), .int(g.keys),
                       .int(g.heads), .int(g.headDim), .float(scale), .int(causal ? 1 : 0)])
    }
}
