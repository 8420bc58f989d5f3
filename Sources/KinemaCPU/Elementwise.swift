import KinemaCore

extension CPUBackend {
    public func writeKernel(_ values: UnsafeRawPointer, dtype: DType, into output: Tensor) {
        DType.convert(values, from: dtype, to: output.rawPointer, output.dtype, count: output.count)
    }

    public func convertKernel(_ input: Tensor, into output: Tensor) {
        let from = input.rawPointer, to = output.rawPointer
        parallelFor(input.count, threads: threads, minimumPerThread: 1 << 16) { range in
            DType.convert(from + range.lowerBound * input.dtype.size, from: input.dtype,
                          to: to + range.lowerBound * output.dtype.size, output.dtype, count: range.count)
        }
    }

    public func unaryKernel(_ op: UnaryOp, _ input: Tensor, into output: Tensor) {
        requireF32(input, op: op.rawValue)
        switch op {
        case .silu: map(input, output) { vsilu($0) }
        case .gelu: map(input, output) { vgelu($0) }
        case .quickGelu: map(input, output) { vquickGelu($0) }
        case .exp: map(input, output) { vexp($0) }
        }
    }

    public func affineKernel(_ input: Tensor, scale: Float, shift: Float, into output: Tensor) {
        requireF32(input, op: "affine")
        let s = Vector(repeating: scale), b = Vector(repeating: shift)
        map(input, output) { $0 * s + b }
    }

    public func clampKernel(_ input: Tensor, lower: Float, upper: Float, into output: Tensor) {
        requireF32(input, op: "clamp")
        map(input, output) { x in
            var y = x.replacing(with: lower, where: x .< lower)
            y.replace(with: upper, where: y .> upper)
            return y
        }
    }

    @inline(__always)
    private func map(_ input: Tensor, _ output: Tensor, _ f: (Vector) -> Vector) {
        let x = input.pointer(Float.self), y = output.pointer(Float.self)
        parallelFor(input.count, threads: threads, minimumPerThread: 1 << 14) { range in
            mapVectors(x + range.lowerBound, y + range.lowerBound, range.count, f)
        }
    }

    public func gegluKernel(_ input: Tensor, into output: Tensor) {
        requireF32(input, op: "geglu")
        let width = output.dim(-1), rows = output.count / max(width, 1)
        let x = input.pointer(Float.self), y = output.pointer(Float.self)
        parallelFor(rows, threads: threads, minimumPerThread: max(1, 16384 / max(width, 1))) { range in
            for r in range {
                let value = x + r * 2 * width, gate = value + width, out = y + r * width
                mapVectors(gate, out, width) { vgelu($0) }
                var i = 0
                while i + vectorWidth <= width { storeVector(loadVector(out + i) * loadVector(value + i), out + i); i += vectorWidth }
                while i < width { out[i] *= value[i]; i += 1 }
            }
        }
    }

    public func binaryKernel(_ op: BinaryOp, _ a: Tensor, _ b: Tensor, into output: Tensor) {
        requireF32(a, b, op: op.rawValue)
        switch op {
        case .add: broadcast(a, b, output) { $0 + $1 }
        case .sub: broadcast(a, b, output) { $0 - $1 }
        case .mul: broadcast(a, b, output) { $0 * $1 }
        case .div: broadcast(a, b, output) { $0 / $1 }
        }
    }

    /// `out = f(a, b)` with `b` broadcast onto `a`. Dimensions are merged into alternating runs
    /// of "b varies" and "b repeats", so the inner loop is either vector-vector or vector-scalar.
    @inline(__always)
    private func broadcast(_ a: Tensor, _ b: Tensor, _ output: Tensor, _ f: (Vector, Vector) -> Vector) {
        let runs = BroadcastRuns(a: a.shape, b: b.shape)
        let x = a.pointer(Float.self), y = b.pointer(Float.self), out = output.pointer(Float.self)
        let inner = runs.sizes.last ?? 1
        let innerRepeats = runs.bStrides.last == 0 && runs.sizes.count > 0
        let outer = a.count / max(inner, 1)
        parallelFor(outer, threads: threads, minimumPerThread: max(1, 16384 / max(inner, 1))) { range in
            for o in range {
                let base = o * inner
                let bOffset = runs.bOffset(outerIndex: o)
                if innerRepeats {
                    let s = Vector(repeating: y[bOffset])
                    mapVectors(x + base, out + base, inner) { f($0, s) }
                } else {
                    var i = 0
                    while i + vectorWidth <= inner {
                        storeVector(f(loadVector(x + base + i), loadVector(y + bOffset + i)), out + base + i)
                        i += vectorWidth
                    }
                    while i < inner {
                        out[base + i] = f(Vector(repeating: x[base + i]), Vector(repeating: y[bOffset + i]))[0]
                        i += 1
                    }
                }
            }
        }
    }
}

/// `a`'s shape as runs of dimensions over which `b` either varies (stride = its contiguous size)
/// or repeats (stride 0).
struct BroadcastRuns {
    var sizes: [Int] = []
    var bStrides: [Int] = []

    init(a: [Int], b: [Int]) {
        let padded = Array(repeating: 1, count: a.count - b.count) + b
        var kinds: [(size: Int, repeats: Bool)] = []
        for (sa, sb) in zip(a, padded) where sa != 1 {
            let repeats = sb == 1
            if let last = kinds.last, last.repeats == repeats {
                kinds[kinds.count - 1].size *= sa
            } else {
                kinds.append((sa, repeats))
            }
        }
        var stride = 1
        for kind in kinds.reversed() {
            sizes.insert(kind.size, at: 0)
            bStrides.insert(kind.repeats ? 0 : stride, at: 0)
            if !kind.repeats { stride *= kind.size }
        }
    }

    /// Offset into `b` of the start of inner block `outerIndex`.
    @inline(__always)
    func bOffset(outerIndex: Int) -> Int {
        var remaining = outerIndex, offset = 0
        var d = sizes.count - 2
        while d >= 0 {
            offset += (remaining % sizes[d]) * bStrides[d]
            remaining /= sizes[d]
            d -= 1
        }
        return offset
    }
}
