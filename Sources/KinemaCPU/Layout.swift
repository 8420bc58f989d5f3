import Foundation
import KinemaCore

extension CPUBackend {
    public func concatKernel(_ inputs: [Tensor], axis: Int, into output: Tensor) {
        let elementSize = output.dtype.size
        let outer = output.shape[..<axis].reduce(1, *)
        let after = output.shape[(axis + 1)...].reduce(1, *)
        let outRow = output.shape[axis] * after * elementSize
        var column = 0
        for input in inputs {
            let block = input.shape[axis] * after * elementSize
            let source = input.rawPointer, destination = output.rawPointer + column
            parallelFor(outer, threads: threads, minimumPerThread: max(1, 65536 / max(block, 1))) { range in
                for o in range { (destination + o * outRow).copyMemory(from: source + o * block, byteCount: block) }
            }
            column += block
        }
    }

    public func permuteKernel(_ input: Tensor, order: [Int], into output: Tensor) {
        precondition(input.dtype.size == 4 || input.dtype.size == 2, "permute: unsupported dtype")
        // Input strides in output order; the last output dimension is the inner loop.
        var inputStrides = [Int](repeating: 1, count: input.rank)
        for d in stride(from: input.rank - 2, through: 0, by: -1) { inputStrides[d] = inputStrides[d + 1] * input.shape[d + 1] }
        let strides = order.map { inputStrides[$0] }
        let shape = output.shape
        let inner = shape.last ?? 1, innerStride = strides.last ?? 1
        let outer = output.count / max(inner, 1)
        func run<T>(_ type: T.Type) {
            let x = input.pointer(T.self), y = output.pointer(T.self)
            parallelFor(outer, threads: threads, minimumPerThread: max(1, 16384 / max(inner, 1))) { range in
                for o in range {
                    var remaining = o, offset = 0
                    var d = shape.count - 2
                    while d >= 0 { offset += (remaining % shape[d]) * strides[d]; remaining /= shape[d]; d -= 1 }
                    let out = y + o * inner
                    if innerStride == 1 {
                        out.update(from: x + offset, count: inner)
                    } else {
                        for i in 0..<inner { out[i] = x[offset + i * innerStride] }
                    }
                }
            }
        }
        if input.dtype.size == 4 { run(Float.self) } else { run(UInt16.self) }
    }

    public func upsampleNearestKernel(_ input: Tensor, into output: Tensor) {
        requireF32(input, op: "upsampleNearest")
        let planes = input.shape[0] * input.shape[1], h = input.shape[2], w = input.shape[3]
        let oh = output.shape[2], ow = output.shape[3]
        let x = input.pointer(Float.self), y = output.pointer(Float.self)
        // As torch: source = min(floor(destination · (in / out)), in − 1), the scale in f32.
        let scaleY = Float(h) / Float(oh), scaleX = Float(w) / Float(ow)
        let columns = (0..<ow).map { min(Int((Float($0) * scaleX).rounded(.down)), w - 1) }
        parallelFor(planes * oh, threads: threads, minimumPerThread: max(1, 4096 / max(ow, 1))) { range in
            for row in range {
                let plane = row / oh, oy = row % oh
                let iy = min(Int((Float(oy) * scaleY).rounded(.down)), h - 1)
                let source = x + (plane * h + iy) * w, target = y + row * ow
                for ox in 0..<ow { target[ox] = source[columns[ox]] }
            }
        }
    }

    public func adaptiveAveragePoolKernel(_ input: Tensor, into output: Tensor) {
        requireF32(input, op: "adaptiveAveragePool")
        let planes = input.shape[0] * input.shape[1], h = input.shape[2], w = input.shape[3]
        let oh = output.shape[2], ow = output.shape[3]
        let x = input.pointer(Float.self), y = output.pointer(Float.self)
        parallelFor(planes, threads: threads) { range in
            for plane in range {
                let source = x + plane * h * w, target = y + plane * oh * ow
                for i in 0..<oh {
                    let y0 = i * h / oh, y1 = ((i + 1) * h + oh - 1) / oh
                    for j in 0..<ow {
                        let x0 = j * w / ow, x1 = ((j + 1) * w + ow - 1) / ow
                        var sum: Float = 0
                        for yy in y0..<y1 { for xx in x0..<x1 { sum += source[yy * w + xx] } }
                        target[i * ow + j] = sum / Float((y1 - y0) * (x1 - x0))
                    }
                }
            }
        }
    }

    public func embeddingKernel(ids: [Int], table: Tensor, into output: Tensor) {
        let width = table.shape[1]
        for (row, id) in ids.enumerated() {
            DType.convert(table.rawPointer + id * width * table.dtype.size, from: table.dtype,
                          to: output.rawPointer + row * width * 4, .f32, count: width)
        }
    }

    public func timestepEmbeddingKernel(_ timesteps: [Float], parameters p: TimestepEmbeddingParameters, into output: Tensor) {
        let half = p.dimension / 2
        let out = output.pointer(Float.self)
        // As diffusers, in float32: exponent = -ln(max_period) · arange(half) / (half - shift).
        let logPeriod = Float(-log(Double(p.maxPeriod)))
        let frequencies = (0..<half).map { i in expf(logPeriod * Float(i) / (Float(half) - p.downscaleFreqShift)) }
        for (row, t) in timesteps.enumerated() {
            let line = out + row * p.dimension
            for i in 0..<half {
                let angle = p.scale * (t * frequencies[i])
                // [sin, cos], or [cos, sin] when flipped.
                line[p.flipSinToCos ? half + i : i] = sinf(angle)
                line[p.flipSinToCos ? i : half + i] = cosf(angle)
            }
            if p.dimension % 2 == 1 { line[p.dimension - 1] = 0 }
        }
    }
}
