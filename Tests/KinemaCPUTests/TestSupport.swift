import Foundation
import KinemaCore
import KinemaCPU
import XCTest

/// SplitMix64: a small seeded generator, so a failing run can be replayed from its printed seed.
struct SeededGenerator: RandomNumberGenerator {
    private var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Fresh random inputs for every test run; the seed is part of every failure message.
final class RandomInputs {
    let seed: UInt64
    private var generator: SeededGenerator

    init() {
        seed = UInt64.random(in: 1...UInt64.max)
        generator = SeededGenerator(seed: seed)
    }

    /// Normally distributed values (Box–Muller), scaled; never all zero.
    func normal(_ count: Int, scale: Float = 1) -> [Float] {
        (0..<count).map { _ in
            let u1 = Float.random(in: Float.ulpOfOne..<1, using: &generator)
            let u2 = Float.random(in: 0..<1, using: &generator)
            return scale * (-2 * log(u1)).squareRoot() * cos(2 * .pi * u2)
        }
    }

    func uniform(_ count: Int, in range: Range<Float>) -> [Float] {
        (0..<count).map { _ in Float.random(in: range, using: &generator) }
    }

    func int(in range: ClosedRange<Int>) -> Int { Int.random(in: range, using: &generator) }
}

/// Asserts two float arrays agree within `atol + rtol·|expected|` element by element.
func assertClose(_ actual: [Float], _ expected: [Float], atol: Float = 1e-5, rtol: Float = 1e-5,
                 _ message: @autoclosure () -> String = "", file: StaticString = #filePath, line: UInt = #line) {
    guard actual.count == expected.count else {
        XCTFail("count \(actual.count) != \(expected.count). \(message())", file: file, line: line)
        return
    }
    for i in actual.indices {
        let error = abs(actual[i] - expected[i])
        if !(error <= atol + rtol * abs(expected[i])) {
            let maxError = zip(actual, expected).map { abs($0 - $1) }.max() ?? 0
            XCTFail("element \(i): \(actual[i]) vs \(expected[i]) (max error \(maxError)). \(message())", file: file, line: line)
            return
        }
    }
}
