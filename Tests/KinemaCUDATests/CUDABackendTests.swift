import KinemaCore
import KinemaCPU
import XCTest
@testable import KinemaCUDA

/// The CUDA backend. Without a driver and GPU the op tests skip with one line saying why; the
/// tests of host-side logic (library loading errors, broadcasting, workspaces) run everywhere.
final class CUDABackendTests: XCTestCase {
    /// The device, opened once for all tests; nil (with the reason) where there is none.
    static let device: Result<CUDADevice, CUDAError> = CUDABackend.availability()

    func requireDevice() throws -> CUDADevice {
        switch Self.device {
        case .success(let device): return device
        case .failure(let error): throw XCTSkip("CUDA tests skipped: no usable CUDA device (\(error))")
        }
    }

    func testOpeningWithoutADriverFailsWithTheMissingLibraryNamed() throws {
        guard !CUDADevice.driverIsInstalled else { throw XCTSkip("a CUDA driver is installed here") }
        XCTAssertThrowsError(try CUDADevice()) { error in
            XCTAssertTrue("\(error)".contains("libcuda.so.1"), "\(error)")
        }
    }

    func testBroadcastRunsMergeDimensionsByWhetherTheSecondOperandVaries() {
        // (4, 32, 8, 8) + (32, 1, 1): b repeats over images and pixels, varies over channels.
        let runs = CUDABackend.broadcastRuns(a: [4, 32, 8, 8], b: [32, 1, 1])
        XCTAssertEqual(runs.sizes, [4, 32, 64])
        XCTAssertEqual(runs.strides, [0, 1, 0])
        let same = CUDABackend.broadcastRuns(a: [2, 3, 5], b: [2, 3, 5])
        XCTAssertEqual(same.sizes, [30])
        XCTAssertEqual(same.strides, [1])
    }

    func testConvolutionWorkspacesAreOneBandOfColumnsAndNoneForPointwise() {
        let policy = CUDAWorkspacePolicy(computeType: .f16, convolutionBandBytes: 1 << 20)
        XCTAssertEqual(policy.bytes(for: .conv2d(input: [2, 64, 32, 32], weight: [32, 64, 1, 1], parameters: .init())), 0)
        // 3x3 over 320 channels: rows = 2880; 1 MiB / (2880 · 2 bytes) = 182 pixels per band.
        XCTAssertEqual(policy.bytes(for: .conv2d(input: [1, 320, 96, 96], weight: [320, 320, 3, 3], parameters: .init(stride: 1, padding: 1))),
                       2880 * 182 * 2)
        // The temporal convolution's workspace is its weight repacked per tap.
        XCTAssertEqual(policy.bytes(for: .temporalConv(input: [48, 320, 12, 12], weight: [320, 320, 3, 1, 1], frames: 24)), 320 * 320 * 3 * 2)
    }

    func testKernelCacheKeysDifferBySource() {
        XCTAssertEqual(KernelCompiler.fnv1a("kinema"), KernelCompiler.fnv1a("kinema"))
        XCTAssertNotEqual(KernelCompiler.fnv1a("kinema"), KernelCompiler.fnv1a("kinemb"))
    }

    /// Everything that needs a GPU, in one test so that a machine without one prints one skip line.
    func testOnAGPUEveryOpMatchesTheReferenceAndAllocationsAreCounted() throws {
        let device = try requireDevice()
        for dtype in [DType.f32, .f16, .bf16] {
            var selfTest = SelfTest(backend: CUDABackend(device: device, computeType: dtype))
            for result in selfTest.run() {
                XCTAssertTrue(result.passed, "\(dtype) \(result.op) \(result.shape): error \(result.maxError) > \(result.tolerance)")
            }
        }
        let backend = CUDABackend(device: device, computeType: .f16)
        let before = backend.allocator.meter.current
        do {
            let x = backend.tensor((0..<4096).map { Float($0).squareRoot() }, shape: [64, 64])
            XCTAssertEqual(backend.allocator.meter.current - before, 4096 * 2)
            XCTAssertEqual(backend.floats(x)[100], Float(Float16(Float(100).squareRoot())))
        }
        XCTAssertEqual(backend.allocator.meter.current, before)
    }
}
