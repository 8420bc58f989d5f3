import Foundation
import KinemaCore
import KinemaCPU
import XCTest

/// Every CPU op against the scalar reference on fresh random inputs and shapes.
final class CPUOpTests: XCTestCase {
    let random = RandomInputs()
    let cpu = CPUBackend()
    var seed: String { "seed \(random.seed)" }

    func tensor(_ shape: [Int], scale: Float = 1) -> (Tensor, [Float]) {
        let values = random.normal(shape.reduce(1, *), scale: scale)
        return (cpu.tensor(values, shape: shape), values)
    }

    func testLinearWithAndWithoutBias() {
        let rows = random.int(in: 1...40), inFeatures = random.int(in: 1...70), outFeatures = random.int(in: 1...50)
        let (x, xv) = tensor([rows, inFeatures])
        let (w, wv) = tensor([outFeatures, inFeatures])
        let (b, bv) = tensor([outFeatures])
        assertClose(cpu.linear(x, weight: w, bias: b).floats(),
                    ReferenceOps.linear(xv, rows: rows, inFeatures: inFeatures, weight: wv, outFeatures: outFeatures, bias: bv), atol: 1e-4, rtol: 1e-4, seed)
        assertClose(cpu.linear(x, weight: w).floats(),
                    ReferenceOps.linear(xv, rows: rows, inFeatures: inFeatures, weight: wv, outFeatures: outFeatures, bias: nil), atol: 1e-4, rtol: 1e-4, seed)
    }

    func testBatchedMatmulInEveryTransposition() {
        let batch = random.int(in: 1...4), m = random.int(in: 1...30), n = random.int(in: 1...30), k = random.int(in: 1...30)
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            for bBatched in [true, false] {
                let (a, av) = tensor(ta ? [batch, k, m] : [batch, m, k])
                let (b, bv) = tensor(bBatched ? (tb ? [batch, n, k] : [batch, k, n]) : (tb ? [n, k] : [k, n]))
                let result = cpu.matmul(a, b, transposeA: ta, transposeB: tb)
                XCTAssertEqual(result.shape, [batch, m, n])
                assertClose(result.floats(), ReferenceOps.matmul(av, bv, batch: batch, m: m, n: n, k: k, transposeA: ta, transposeB: tb, bBatched: bBatched),
                            atol: 1e-4, rtol: 1e-4, "\(ta) \(tb) \(bBatched) \(seed)")
            }
        }
    }

    func checkConv(n: Int, c: Int, h: Int, w: Int, o: Int, kh: Int, kw: Int, parameters: Conv2dParameters,
                   bias: Bool, backend: CPUBackend? = nil, file: StaticString = #filePath, line: UInt = #line) {
        let backend = backend ?? cpu
        let xv = random.normal(n * c * h * w), wv = random.normal(o * c * kh * kw, scale: 0.3), bv = random.normal(o)
        let result = backend.conv2d(backend.tensor(xv, shape: [n, c, h, w]), weight: backend.tensor(wv, shape: [o, c, kh, kw]),
                                    bias: bias ? backend.tensor(bv, shape: [o]) : nil, parameters: parameters)
        let p = parameters
        let expected = ReferenceOps.conv2d(xv, n: n, c: c, h: h, w: w, weight: wv, o: o, kh: kh, kw: kw, bias: bias ? bv : nil,
                                        stride: (p.strideY, p.strideX), pad: (p.padTop, p.padLeft, p.padBottom, p.padRight))
        XCTAssertEqual(result.shape, [n, o, expected.oh, expected.ow], file: file, line: line)
        assertClose(result.floats(), expected.out, atol: 1e-4, rtol: 1e-4, seed, file: file, line: line)
    }

    func testConv3x3StrideOneAndTwo() {
        let c = random.int(in: 1...6), h = random.int(in: 3...12), w = random.int(in: 3...12)
        checkConv(n: 2, c: c, h: h, w: w, o: random.int(in: 1...7), kh: 3, kw: 3, parameters: .init(stride: 1, padding: 1), bias: true)
        checkConv(n: 1, c: c, h: h, w: w, o: random.int(in: 1...7), kh: 3, kw: 3, parameters: .init(stride: 2, padding: 1), bias: true)
        checkConv(n: 1, c: c, h: h, w: w, o: 3, kh: 3, kw: 3, parameters: .init(stride: 1, padding: 1), bias: false)
    }

    func testConvAsymmetricPaddingOfTheVAEDownsampler() {
        checkConv(n: 1, c: 3, h: random.int(in: 4...10), w: random.int(in: 4...10), o: 4, kh: 3, kw: 3,
                  parameters: .init(strideY: 2, strideX: 2, padTop: 0, padLeft: 0, padBottom: 1, padRight: 1), bias: true)
    }

    func testPointwiseAndPatchConvolutions() {
        checkConv(n: 2, c: random.int(in: 1...9), h: 5, w: 7, o: random.int(in: 1...9), kh: 1, kw: 1, parameters: .init(), bias: true)
        checkConv(n: 1, c: 3, h: 28, w: 28, o: 5, kh: 14, kw: 14, parameters: .init(stride: 14, padding: 0), bias: false)
    }

    func testConvolutionSplitIntoManyBandsEqualsOneBand() {
        // A 1 KiB band limit forces one output row per band.
        let small = CPUBackend(convolutionBandBytes: 1024)
        checkConv(n: 2, c: 4, h: 9, w: 11, o: 5, kh: 3, kw: 3, parameters: .init(stride: 1, padding: 1), bias: true, backend: small)
        checkConv(n: 1, c: 4, h: 9, w: 11, o: 5, kh: 3, kw: 3, parameters: .init(stride: 2, padding: 1), bias: true, backend: small)
    }

    func testStrideOneConvolutionOnShiftedPaddedBands() {
        // One large image with few channels takes the shifted path; a tiny band limit splits it
        // into many bands. Symmetric, asymmetric and no padding, square and wide kernels.
        let small = CPUBackend(convolutionBandBytes: 4096)
        for backend in [cpu, small] {
            checkConv(n: 1, c: random.int(in: 1...6), h: random.int(in: 30...40), w: random.int(in: 33...45), o: random.int(in: 1...5),
                      kh: 3, kw: 3, parameters: .init(stride: 1, padding: 1), bias: true, backend: backend)
            checkConv(n: 1, c: 3, h: 35, w: 31, o: 4, kh: 3, kw: 3,
                      parameters: .init(strideY: 1, strideX: 1, padTop: 0, padLeft: 2, padBottom: 1, padRight: 0), bias: false, backend: backend)
            checkConv(n: 2, c: 2, h: 40, w: 30, o: 3, kh: 5, kw: 3, parameters: .init(stride: 1, padding: 0), bias: true, backend: backend)
        }
    }

    func testTemporalConvOverFrames() {
        let clips = random.int(in: 1...3), frames = random.int(in: 1...6), c = random.int(in: 1...5), o = random.int(in: 1...5)
        let h = 3, w = 4
        let (x, xv) = tensor([clips * frames, c, h, w])
        let (weight, wv) = tensor([o, c, 3, 1, 1])
        let (bias, bv) = tensor([o])
        let result = cpu.temporalConv(x, weight: weight, bias: bias, frames: frames)
        assertClose(result.floats(), ReferenceOps.temporalConv(xv, clips: clips, frames: frames, c: c, pixels: h * w, weight: wv, o: o, taps: 3, bias: bv),
                    atol: 1e-4, rtol: 1e-4, seed)
        let noBias = cpu.temporalConv(x, weight: weight, frames: frames)
        assertClose(noBias.floats(), ReferenceOps.temporalConv(xv, clips: clips, frames: frames, c: c, pixels: h * w, weight: wv, o: o, taps: 3, bias: nil),
                    atol: 1e-4, rtol: 1e-4, seed)
    }

    func testGroupNormPerImageAcrossFramesAndWithSiLU() {
        let groups = random.int(in: 1...4), channels = groups * random.int(in: 1...3)
        let frames = random.int(in: 2...4), clips = 2, spatial = random.int(in: 1...30)
        let shape = [clips * frames, channels, spatial]
        let (x, xv) = tensor(shape, scale: 3)
        let (w, wv) = tensor([channels])
        let (b, bv) = tensor([channels])
        for (f, silu) in [(1, false), (1, true), (frames, false), (frames, true)] {
            let result = cpu.groupNorm(x, groups: groups, weight: w, bias: b, epsilon: 1e-5, frames: f, fusedSiLU: silu)
            let expected = ReferenceOps.groupNorm(xv, images: clips * frames, channels: channels, spatial: spatial, groups: groups,
                                               frames: f, weight: wv, bias: bv, eps: 1e-5, silu: silu)
            assertClose(result.floats(), expected, atol: 2e-5, rtol: 1e-4, "frames \(f) silu \(silu) \(seed)")
        }
    }

    func testLayerNormAndSoftmax() {
        let width = random.int(in: 1...70), rows = random.int(in: 1...20)
        let (x, xv) = tensor([rows, width], scale: 3)
        let (w, wv) = tensor([width])
        let (b, bv) = tensor([width])
        assertClose(cpu.layerNorm(x, weight: w, bias: b, epsilon: 1e-5).floats(),
                    ReferenceOps.layerNorm(xv, width: width, weight: wv, bias: bv, eps: 1e-5), atol: 2e-5, rtol: 1e-4, seed)
        assertClose(cpu.softmax(x).floats(), ReferenceOps.softmax(xv, width: width), atol: 1e-6, rtol: 1e-5, seed)
    }

    func checkAttention(batch: Int, queries: Int, keys: Int, heads: Int, headDim: Int, causal: Bool, chunk: Int? = nil,
                        file: StaticString = #filePath, line: UInt = #line) {
        let (q, qv) = tensor([batch, queries, heads * headDim])
        let (k, kv) = tensor([batch, keys, heads * headDim])
        let (v, vv) = tensor([batch, keys, heads * headDim])
        let result = cpu.attention(query: q, key: k, value: v, heads: heads, causal: causal, queryChunk: chunk)
        assertClose(result.floats(), ReferenceOps.attention(q: qv, k: kv, v: vv, batch: batch, queries: queries, keys: keys,
                                                         heads: heads, headDim: headDim, causal: causal),
                    atol: 2e-5, rtol: 1e-4, "\(queries)x\(keys) h\(heads) d\(headDim) causal \(causal) \(seed)", file: file, line: line)
    }

    func testAttentionShortSequencesAndTinyHeads() {
        checkAttention(batch: random.int(in: 1...5), queries: random.int(in: 1...16), keys: random.int(in: 1...16),
                       heads: random.int(in: 1...4), headDim: random.int(in: 1...20), causal: false)
        checkAttention(batch: 2, queries: 13, keys: 13, heads: 2, headDim: 4, causal: true)
    }

    func testAttentionLongSequencesInQueryChunks() {
        let queries = random.int(in: 65...200), keys = random.int(in: 65...150)
        checkAttention(batch: 2, queries: queries, keys: keys, heads: 2, headDim: random.int(in: 3...24), causal: false, chunk: random.int(in: 7...50))
        checkAttention(batch: 1, queries: 90, keys: 90, heads: 3, headDim: 8, causal: true, chunk: 32)
    }

    func testActivations() {
        let (x, xv) = tensor([random.int(in: 1...300)], scale: 4)
        assertClose(cpu.gelu(x).floats(), xv.map(ReferenceOps.gelu), atol: 1e-6, rtol: 1e-5, seed)
        assertClose(cpu.quickGelu(x).floats(), xv.map(ReferenceOps.quickGelu), atol: 1e-6, rtol: 1e-5, seed)
        assertClose(cpu.silu(x).floats(), xv.map(ReferenceOps.silu), atol: 1e-6, rtol: 1e-5, seed)
        assertClose(cpu.affine(x, scale: 0.5, shift: -2).floats(), xv.map { $0 * 0.5 - 2 }, atol: 1e-6, seed)
    }

    func testExpAndClamp() {
        let (x, xv) = tensor([random.int(in: 1...300)], scale: 8)
        assertClose(cpu.unary(.exp, x).floats(), xv.map { Float(Foundation.exp(Double($0))) }, atol: 1e-7, rtol: 2e-6, seed)
        assertClose(cpu.clamp(x, lower: -1.5, upper: 2).floats(), xv.map { min(max($0, -1.5), 2) }, atol: 0, rtol: 0, seed)
    }

    func testAdaptiveAveragePoolUsesTorchsBins() {
        let h = random.int(in: 1...13), w = random.int(in: 1...13), oh = random.int(in: 1...9), ow = random.int(in: 1...9)
        let (x, xv) = tensor([2, 3, h, w])
        var expected: [Float] = []
        for plane in 0..<6 { for i in 0..<oh { for j in 0..<ow {
            let y0 = Int((Double(i * h) / Double(oh)).rounded(.down)), y1 = Int((Double((i + 1) * h) / Double(oh)).rounded(.up))
            let x0 = Int((Double(j * w) / Double(ow)).rounded(.down)), x1 = Int((Double((j + 1) * w) / Double(ow)).rounded(.up))
            var sum = 0.0
            for yy in y0..<y1 { for xx in x0..<x1 { sum += Double(xv[plane * h * w + yy * w + xx]) } }
            expected.append(Float(sum / Double((y1 - y0) * (x1 - x0))))
        }}}
        assertClose(cpu.adaptiveAveragePool(x, height: oh, width: ow).floats(), expected, atol: 1e-6, seed)
    }

    func testGEGLUTakesTheValueFromTheFirstHalf() {
        let rows = random.int(in: 1...9), width = random.int(in: 1...20)
        let (x, xv) = tensor([rows, 2 * width], scale: 2)
        var expected: [Float] = []
        for r in 0..<rows { for i in 0..<width { expected.append(xv[r * 2 * width + i] * ReferenceOps.gelu(xv[r * 2 * width + width + i])) } }
        assertClose(cpu.geglu(x).floats(), expected, atol: 1e-6, rtol: 1e-5, seed)
    }

    func testBinaryOpsBroadcast() {
        let shape = [2, random.int(in: 1...5), random.int(in: 1...4), random.int(in: 1...9)]
        let (a, av) = tensor(shape)
        for bShape in [shape, [shape[3]], [shape[1], 1, 1], [2, 1, shape[2], 1], [1], [2, shape[1], 1, shape[3]]] {
            var bv = random.normal(bShape.reduce(1, *))
            bv = bv.map { $0 == 0 ? 1 : $0 }
            let b = cpu.tensor(bv, shape: bShape)
            let padded = Array(repeating: 1, count: 4 - bShape.count) + bShape
            func bAt(_ i: Int) -> Float {
                var index = [Int](repeating: 0, count: 4), rest = i
                for d in (0..<4).reversed() { index[d] = rest % shape[d]; rest /= shape[d] }
                var offset = 0
                for d in 0..<4 { offset = offset * padded[d] + (padded[d] == 1 ? 0 : index[d]) }
                return bv[offset]
            }
            let expectedAdd = av.indices.map { av[$0] + bAt($0) }
            let expectedMul = av.indices.map { av[$0] * bAt($0) }
            let expectedSub = av.indices.map { av[$0] - bAt($0) }
            let expectedDiv = av.indices.map { av[$0] / bAt($0) }
            assertClose(cpu.add(a, b).floats(), expectedAdd, "add \(bShape) \(seed)")
            assertClose(cpu.mul(a, b).floats(), expectedMul, "mul \(bShape) \(seed)")
            assertClose(cpu.sub(a, b).floats(), expectedSub, "sub \(bShape) \(seed)")
            assertClose(cpu.div(a, b).floats(), expectedDiv, atol: 1e-4, rtol: 1e-5, "div \(bShape) \(seed)")
        }
    }

    func testConcatAlongEveryAxis() {
        let shape = [2, 3, 4]
        for axis in 0..<3 {
            var parts: [(Tensor, [Float], [Int])] = []
            for _ in 0..<3 {
                var s = shape
                s[axis] = random.int(in: 1...3)
                let (t, v) = tensor(s)
                parts.append((t, v, s))
            }
            let result = cpu.concat(parts.map(\.0), axis: axis)
            // Reference: walk output indices.
            let outer = shape[..<axis].reduce(1, *), after = shape[(axis + 1)...].reduce(1, *)
            var expected: [Float] = []
            for o in 0..<outer { for part in parts {
                let block = part.2[axis] * after
                expected += part.1[(o * block)..<((o + 1) * block)]
            }}
            XCTAssertEqual(result.floats(), expected, "axis \(axis)")
        }
    }

    func testPermuteIsAGeneralTranspose() {
        let shape = [2, 3, 4, 5]
        let (x, xv) = tensor(shape)
        let order = [0, 3, 2, 1].shuffled()
        let result = cpu.permute(x, order)
        let outShape = order.map { shape[$0] }
        XCTAssertEqual(result.shape, outShape)
        let values = result.floats()
        for i in 0..<xv.count {
            var index = [Int](repeating: 0, count: 4), rest = i
            for d in (0..<4).reversed() { index[d] = rest % shape[d]; rest /= shape[d] }
            var outIndex = 0
            for d in 0..<4 { outIndex = outIndex * outShape[d] + index[order[d]] }
            XCTAssertEqual(values[outIndex], xv[i], "order \(order)")
        }
    }

    func testUpsampleNearestRepeatsPixels() {
        let (x, xv) = tensor([2, 2, 3, 4])
        let result = cpu.upsampleNearest(x, factor: 2).floats()
        for p in 0..<4 { for y in 0..<6 { for xo in 0..<8 {
            XCTAssertEqual(result[(p * 6 + y) * 8 + xo], xv[(p * 3 + y / 2) * 4 + xo / 2])
        }}}
    }

    func testEmbeddingLookupFromAHalfTable() {
        let (table32, values) = tensor([10, 6])
        let table = cpu.convert(table32, to: .f16)
        let ids = (0..<7).map { _ in random.int(in: 0...9) }
        let result = cpu.embedding(ids: ids, table: table).floats()
        for (r, id) in ids.enumerated() {
            assertClose(Array(result[(r * 6)..<((r + 1) * 6)]), Array(values[(id * 6)..<((id + 1) * 6)]), atol: 2e-3, rtol: 1e-3)
        }
    }

    func testTimestepEmbeddingMatchesDiffusersFormula() {
        let timesteps: [Float] = [Float(random.int(in: 0...999)), 1, 0]
        let dim = 2 * random.int(in: 2...40)
        let result = cpu.timestepEmbedding(timesteps, parameters: .init(dimension: dim, flipSinToCos: true, downscaleFreqShift: 0)).floats()
        let half = dim / 2
        for (r, t) in timesteps.enumerated() {
            for i in 0..<half {
                let frequency = exp(-log(10000.0) * Double(i) / Double(half))
                XCTAssertEqual(result[r * dim + i], Float(cos(Double(t) * frequency)), accuracy: 2e-4)
                XCTAssertEqual(result[r * dim + half + i], Float(sin(Double(t) * frequency)), accuracy: 2e-4)
            }
        }
    }

    func testDtypeConversionRoundTrips() {
        let (x, xv) = tensor([1000], scale: 10)
        assertClose(cpu.convert(cpu.convert(x, to: .f16), to: .f32).floats(), xv, atol: 0, rtol: 1e-3)
        assertClose(cpu.convert(cpu.convert(x, to: .bf16), to: .f32).floats(), xv, atol: 0, rtol: 8e-3)
    }
}

/// OpenBLAS picks different kernels by size (small-matrix paths, packing thresholds) and by CPU;
/// every transposition and a sweep of small and odd sizes must agree with the reference.
final class MatmulSweepTests: XCTestCase {
    func testMatmulAcrossSizesAndTranspositions() {
        let random = RandomInputs()
        let cpu = CPUBackend()
        var sizes = [1, 2, 3, 7, 8, 15, 16, 17, 31, 33, 64, 65]
        sizes += (0..<4).map { _ in random.int(in: 1...100) }
        for m in sizes.shuffled().prefix(6) {
            for n in sizes.shuffled().prefix(6) {
                let k = sizes.randomElement()!
                for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
                    let av = random.normal(m * k), bv = random.normal(k * n)
                    let a = cpu.tensor(av, shape: ta ? [1, k, m] : [1, m, k]), b = cpu.tensor(bv, shape: tb ? [n, k] : [k, n])
                    let expected = ReferenceOps.matmul(av, bv, batch: 1, m: m, n: n, k: k, transposeA: ta, transposeB: tb, bBatched: false)
                    assertClose(cpu.matmul(a, b, transposeA: ta, transposeB: tb).floats(), expected, atol: 1e-4, rtol: 1e-4,
                                "\(m)x\(n)x\(k) \(ta) \(tb) seed \(random.seed)")
                }
            }
        }
    }
}
