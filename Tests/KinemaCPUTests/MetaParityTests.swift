import KinemaCore
import KinemaCPU
import XCTest

/// The meta backend must allocate exactly what the CPU backend allocates: same sizes, same
/// order, same owners, so a dry run's peak is the real run's peak.
final class MetaParityTests: XCTestCase {
    /// A UNet-like stretch: resnet (norm, conv, time embedding), temporal conv, spatial
    /// transformer (attention, cross attention, GEGLU feed-forward), temporal attention, a skip
    /// concat and an upsample. Intermediates die at the end of their scope as in model code.
    func unetLikeBlock(_ backend: Backend, frames: Int, size: Int, channels: Int) -> Tensor {
        let values: (Int) -> [Float] = { count in (0..<count).map { Float(($0 * 7919) % 97) / 97 - 0.5 } }
        func weight(_ shape: [Int]) -> Tensor { backend.tensor(values(shape.reduce(1, *)), shape: shape) }
        let heads = 2, context = 5
        var x = weight([frames, channels, size, size])
        let skip = x
        do {  // resnet
            let h = backend.groupNorm(x, groups: 4, weight: weight([channels]), bias: weight([channels]), epsilon: 1e-5, fusedSiLU: true)
            let c = backend.conv2d(h, weight: weight([channels, channels, 3, 3]), bias: weight([channels]), parameters: .init(stride: 1, padding: 1))
            let t = backend.linear(weight([frames, 16]), weight: weight([channels, 16]), bias: weight([channels]))
            x = backend.add(x, backend.add(c, t.reshaped([frames, channels, 1, 1])))
        }
        do {  // temporal conv
            let h = backend.groupNorm(x, groups: 4, weight: weight([channels]), bias: weight([channels]), epsilon: 1e-5, frames: frames, fusedSiLU: true)
            x = backend.add(x, backend.temporalConv(h, weight: weight([channels, channels, 3, 1, 1]), bias: weight([channels]), frames: frames))
        }
        do {  // spatial transformer
            let tokens = backend.permute(x.reshaped([frames, channels, size * size]), [0, 2, 1])
            let n = backend.layerNorm(tokens, weight: weight([channels]), bias: nil, epsilon: 1e-5)
            let q = backend.linear(n, weight: weight([channels, channels]))
            let k = backend.linear(n, weight: weight([channels, channels]))
            let v = backend.linear(n, weight: weight([channels, channels]))
            var h = backend.add(tokens, backend.attention(query: q, key: k, value: v, heads: heads, queryChunk: 16))
            let ctx = weight([frames, context, 8])
            let ca = backend.attention(query: backend.linear(h, weight: weight([channels, channels])),
                                       key: backend.linear(ctx, weight: weight([channels, 8])),
                                       value: backend.linear(ctx, weight: weight([channels, 8])), heads: heads)
            h = backend.add(h, ca)
            let ff = backend.linear(backend.geglu(backend.linear(h, weight: weight([8 * channels, channels]))), weight: weight([channels, 4 * channels]))
            h = backend.add(h, ff)
            x = backend.permute(h, [0, 2, 1]).reshaped([frames, channels, size, size])
        }
        do {  // temporal attention: (F, C, H, W) -> (H*W, F, C)
            let seq = backend.permute(x.reshaped([frames, channels, size * size]), [2, 0, 1])
            let a = backend.attention(query: seq, key: seq, value: seq, heads: heads)
            x = backend.permute(backend.add(seq, a), [1, 2, 0]).reshaped([frames, channels, size, size])
        }
        let merged = backend.concat([x, skip], axis: 1)
        return backend.upsampleNearest(backend.conv2d(merged, weight: weight([channels, 2 * channels, 1, 1])))
    }

    func testMetaPeakEqualsCPUPeakForAModelLikeSequence() {
        for (frames, size, channels) in [(4, 8, 8), (3, 13, 12), (2, 20, 16)] {
            let cpu = CPUBackend()
            let meta = cpu.metaTwin()
            cpu.allocator.meter.recordsEvents = true
            meta.allocator.meter.recordsEvents = true
            let real = unetLikeBlock(cpu, frames: frames, size: size, channels: channels)
            let dry = unetLikeBlock(meta, frames: frames, size: size, channels: channels)
            XCTAssertEqual(real.shape, dry.shape)
            XCTAssertGreaterThan(cpu.allocator.meter.peak, 0)
            XCTAssertEqual(cpu.allocator.meter.peak, meta.allocator.meter.peak, "frames \(frames) size \(size)")
            XCTAssertEqual(cpu.allocator.meter.events, meta.allocator.meter.events)
            XCTAssertEqual(cpu.allocator.meter.current, meta.allocator.meter.current)
        }
    }

    func testReleasedTensorsReturnTheirBytes() {
        let cpu = CPUBackend()
        let meter = cpu.allocator.meter
        let before = meter.current
        do {
            let a = cpu.tensor([1, 2, 3, 4], shape: [4])
            let b = cpu.add(a, a)
            XCTAssertEqual(meter.current, before + 32)
            XCTAssertEqual(b.floats(), [2, 4, 6, 8])
        }
        XCTAssertEqual(meter.current, before)
        XCTAssertEqual(meter.peak, before + 32)
    }

    func testEventLogNamesTheOpBehindThePeak() {
        let cpu = CPUBackend()
        cpu.allocator.meter.recordsEvents = true
        let x = cpu.tensor([Float](repeating: 0.5, count: 64), shape: [1, 64, 1])
        _ = cpu.attention(query: x.reshaped([1, 64, 1]), key: x.reshaped([1, 64, 1]), value: x.reshaped([1, 64, 1]), heads: 1, queryChunk: 64)
        XCTAssertEqual(cpu.allocator.meter.peakEvent?.op, "attention.workspace")
    }
}
