import XCTest
import KinemaPipeline

/// torch_rng.json is written by tools/make_rng_fixtures.py (see there for what each case covers).
private struct TorchRNGFixture: Decodable {
    struct Draw: Decodable {
        let op: String
        let shape: [Int]
        /// Concatenated 8-digit hex float32 bit patterns.
        let bits: String
    }
    struct Case: Decodable {
        let name: String
        let seed: String
        let draws: [Draw]
    }
    struct Digest: Decodable {
        let seed: String
        let shape: [Int]
        let fnv1a64: String
    }
    let torch_version: String
    let cases: [Case]
    let digests: [Digest]

    static func load() throws -> TorchRNGFixture {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("Fixtures/torch_rng.json")
        return try JSONDecoder().decode(TorchRNGFixture.self, from: Data(contentsOf: url))
    }
}

private func bitPatterns(hex: String) -> [UInt32] {
    let digits = Array(hex.utf8)
    return stride(from: 0, to: digits.count, by: 8).map { start in
        UInt32(String(decoding: digits[start..<start + 8], as: UTF8.self), radix: 16)!
    }
}

/// FNV-1a over the float32 bit patterns, one 32-bit word per step, as in the fixture script.
private func fnv1a64(_ values: [Float]) -> UInt64 {
    values.reduce(0xCBF2_9CE4_8422_2325 as UInt64) { hash, value in
        (hash ^ UInt64(value.bitPattern)) &* 0x100_0000_01B3
    }
}

private func randomSeed() -> UInt64 { UInt64.random(in: 0...UInt64.max) }

final class TorchRNGTests: XCTestCase {
    func testEveryFixtureDrawMatchesTorchBitForBit() throws {
        let fixture = try TorchRNGFixture.load()
        XCTAssertGreaterThan(fixture.cases.count, 50)
        for testCase in fixture.cases {
            var generator = TorchGenerator(seed: UInt64(testCase.seed)!)
            for (drawIndex, draw) in testCase.draws.enumerated() {
                let expected = bitPatterns(hex: draw.bits)
                let count = draw.shape.reduce(1, *)
                let actual = draw.op == "randn" ? generator.randn(shape: draw.shape) : generator.rand(count: count)
                XCTAssertEqual(actual.count, expected.count, "\(testCase.name) draw \(drawIndex)")
                if let index = zip(actual, expected).enumerated().first(where: { $0.element.0.bitPattern != $0.element.1 })?.offset {
                    XCTFail("""
                        \(testCase.name) draw \(drawIndex) (\(draw.op) \(draw.shape)): value \(index) is \
                        \(actual[index]) but torch \(fixture.torch_version) gives \(Float(bitPattern: expected[index]))
                        """)
                }
            }
        }
    }

    func testFullSizeLatentsMatchTorchDigest() throws {
        for digest in try TorchRNGFixture.load().digests {
            var generator = TorchGenerator(seed: UInt64(digest.seed)!)
            let latents = generator.randn(shape: digest.shape)
            XCTAssertEqual(String(fnv1a64(latents), radix: 16), digest.fnv1a64, "seed \(digest.seed) shape \(digest.shape)")
        }
    }

    func testShapeDrawEqualsCountDrawOfSameSize() {
        let seed = randomSeed()
        let shape = [1, Int.random(in: 1...4), Int.random(in: 1...5), Int.random(in: 1...9), Int.random(in: 1...9)]
        var byShape = TorchGenerator(seed: seed)
        var byCount = TorchGenerator(seed: seed)
        XCTAssertEqual(byShape.randn(shape: shape), byCount.randn(count: shape.reduce(1, *)))
        XCTAssertEqual(byShape.randn(count: 7), byCount.randn(count: 7), "streams diverged after the shaped draw")
    }

    func testSameSeedGivesSameStream() {
        let seed = randomSeed()
        var first = TorchGenerator(seed: seed)
        var second = TorchGenerator(seed: seed)
        for count in [3, 40, 1, 700] {
            XCTAssertEqual(first.randn(count: count), second.randn(count: count), "seed \(seed) count \(count)")
        }
    }

    func testDifferentSeedsGiveDifferentStreams() {
        let seed = UInt64.random(in: 0..<(1 << 32) - 1)
        var first = TorchGenerator(seed: seed)
        var second = TorchGenerator(seed: seed + 1)
        XCTAssertNotEqual(first.randn(count: 64), second.randn(count: 64), "seed \(seed)")
    }

    func testOnlyLow32BitsOfSeedMatter() {
        let seed = UInt64.random(in: 0..<(1 << 32))
        var low = TorchGenerator(seed: seed)
        var high = TorchGenerator(seed: seed | UInt64.random(in: 1..<(1 << 32)) << 32)
        XCTAssertEqual(low.randn(count: 20), high.randn(count: 20))
    }

    func testCachedNormalOfSmallDrawSurvivesLargeDraw() {
        // A small draw caches the sine half of its last Box–Muller pair; the large path neither
        // uses nor clears it, so the next small draw returns it without touching the stream.
        let seed = randomSeed()
        var pair = TorchGenerator(seed: seed)
        let both = pair.randn(count: 2)
        var split = TorchGenerator(seed: seed)
        let first = split.randn(count: 1)
        _ = split.randn(count: Int.random(in: 16...200))
        let second = split.randn(count: 1)
        XCTAssertEqual(first + second, both)
    }

    func testLargeDrawsAreStandardNormal() {
        var generator = TorchGenerator(seed: randomSeed())
        assertStandardNormal(generator.randn(count: 100_000))
    }

    func testSmallDrawsAreStandardNormal() {
        var generator = TorchGenerator(seed: randomSeed())
        assertStandardNormal((0..<6_667).flatMap { _ in generator.randn(count: 15) })
    }

    func testRandIsUniformOnUnitInterval() {
        var generator = TorchGenerator(seed: randomSeed())
        let values = generator.rand(count: 100_000)
        XCTAssertTrue(values.allSatisfy { $0 >= 0 && $0 < 1 })
        let mean = values.reduce(0.0) { $0 + Double($1) } / Double(values.count)
        XCTAssertEqual(mean, 0.5, accuracy: 0.006)  // about 6 standard errors
    }

    /// Mean within about 6 standard errors of 0 and standard deviation within about 8 of 1.
    private func assertStandardNormal(_ values: [Float], file: StaticString = #filePath, line: UInt = #line) {
        let n = Double(values.count)
        let mean = values.reduce(0.0) { $0 + Double($1) } / n
        let variance = values.reduce(0.0) { $0 + (Double($1) - mean) * (Double($1) - mean) } / n
        XCTAssertTrue(values.allSatisfy(\.isFinite), file: file, line: line)
        XCTAssertEqual(mean, 0, accuracy: 0.02, file: file, line: line)
        XCTAssertEqual(variance.squareRoot(), 1, accuracy: 0.02, file: file, line: line)
    }
}
