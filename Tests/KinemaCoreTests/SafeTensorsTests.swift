import Foundation
import XCTest
@testable import KinemaCore

/// SplitMix64: a small seeded generator, so fuzz failures reproduce.
private struct SeededGenerator: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

final class SafeTensorsTests: XCTestCase {
    private var directory: URL!

    override func setUpWithError() throws {
        directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("kinema-safetensors-\(UUID().uuidString)", isDirectory: true)
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: directory)
    }

    // MARK: Helpers

    private func path(_ name: String) -> String { directory.appendingPathComponent(name).path }

    /// A host tensor holding `bytes` (which must be `shape`'s count times the dtype size).
    private func hostTensor(_ shape: [Int], _ dtype: DType, bytes: [UInt8]) -> Tensor {
        let count = shape.reduce(1, *)
        precondition(bytes.count == count * dtype.size)
        let storage = Storage(byteCount: count * dtype.size, allocator: HostAllocator())
        let tensor = Tensor(shape: shape, dtype: dtype, storage: storage)
        bytes.withUnsafeBytes { tensor.rawPointer.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
        return tensor
    }

    /// Fresh random, non-zero, finite values of `dtype`, as raw bytes.
    private func randomBytes(count: Int, _ dtype: DType) -> [UInt8] {
        var generator = SystemRandomNumberGenerator()
        let floats = (0..<count).map { _ -> Float in
            let magnitude = Float.random(in: 0.001...100, using: &generator)
            return Bool.random(using: &generator) ? magnitude : -magnitude
        }
        var bytes = [UInt8](repeating: 0, count: count * dtype.size)
        floats.withUnsafeBytes { source in
            bytes.withUnsafeMutableBytes { destination in
                DType.convert(source.baseAddress!, from: .f32, to: destination.baseAddress!, dtype, count: count)
            }
        }
        return bytes
    }

    private func bytes(of tensor: Tensor) -> [UInt8] {
        Array(UnsafeRawBufferPointer(start: tensor.rawPointer, count: tensor.byteCount))
    }

    /// Writes a file by hand: the 8-byte length (of `header`, unless overridden), `header`, `data`.
    @discardableResult
    private func writeRaw(_ name: String, header: String, data: [UInt8] = [], headerLength: UInt64? = nil) -> String {
        var file = [UInt8]()
        withUnsafeBytes(of: (headerLength ?? UInt64(header.utf8.count)).littleEndian) { file += $0 }
        file += Array(header.utf8) + data
        let filePath = path(name)
        store(file, at: filePath)
        return filePath
    }

    private func store(_ bytes: [UInt8], at filePath: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertTrue(FileManager.default.createFile(atPath: filePath, contents: Data(bytes)), "cannot write \(filePath)", file: file, line: line)
    }

    /// One header entry, as JSON.
    private func entry(_ dtype: String, _ shape: [Int], _ begin: Int, _ end: Int) -> String {
        "{\"dtype\":\"\(dtype)\",\"shape\":\(shape),\"data_offsets\":[\(begin),\(end)]}"
    }

    /// The error opening `filePath` throws; fails the test if it opens or throws something else.
    private func openingError(_ filePath: String, file: StaticString = #filePath, line: UInt = #line) -> SafeTensorsError? {
        do {
            _ = try SafeTensorsFile(path: filePath)
            XCTFail("expected \(filePath) to be rejected", file: file, line: line)
        } catch let error as SafeTensorsError {
            XCTAssertEqual(error.path, filePath, file: file, line: line)
            return error
        } catch {
            XCTFail("expected a SafeTensorsError, got \(error)", file: file, line: line)
        }
        return nil
    }

    /// Asserts opening `filePath` fails with a problem that mentions every one of `phrases`.
    private func assertRejected(_ filePath: String, mentioning phrases: String..., file: StaticString = #filePath, line: UInt = #line) {
        guard let error = openingError(filePath, file: file, line: line) else { return }
        for phrase in phrases {
            XCTAssertTrue(error.problem.contains(phrase), "problem \"\(error.problem)\" does not mention \"\(phrase)\"", file: file, line: line)
        }
    }

    // MARK: Round trips

    private func assertRoundTripIsBitExact(_ dtype: DType) throws {
        let shapes: [String: [Int]] = ["conv.weight": [4, 3, 3, 3], "conv.bias": [4], "norm.scale": [7, 5]]
        let originals = shapes.mapValues { shape in
            hostTensor(shape, dtype, bytes: randomBytes(count: shape.reduce(1, *), dtype))
        }
        let filePath = path("model.safetensors")
        try SafeTensorsWriter.write(originals, to: filePath)

        let file = try SafeTensorsFile(path: filePath)
        XCTAssertEqual(file.names, shapes.keys.sorted())
        for (name, original) in originals {
            let loaded = try file.tensor(name)
            XCTAssertEqual(loaded.dtype, dtype)
            XCTAssertEqual(loaded.shape, original.shape)
            XCTAssertEqual(bytes(of: loaded), bytes(of: original), "bits of \(name) changed")
        }
    }

    func testF32RoundTripIsBitExact() throws { try assertRoundTripIsBitExact(.f32) }
    func testF16RoundTripIsBitExact() throws { try assertRoundTripIsBitExact(.f16) }
    func testBF16RoundTripIsBitExact() throws { try assertRoundTripIsBitExact(.bf16) }

    func testMixedDTypesScalarsAndZeroElementTensorsRoundTrip() throws {
        let originals: [String: Tensor] = [
            "a.f32": hostTensor([3, 2], .f32, bytes: randomBytes(count: 6, .f32)),
            "b.f16": hostTensor([5], .f16, bytes: randomBytes(count: 5, .f16)),
            "c.bf16": hostTensor([1, 3], .bf16, bytes: randomBytes(count: 3, .bf16)),
            "d.scalar": hostTensor([], .f32, bytes: randomBytes(count: 1, .f32)),
            "e.empty": hostTensor([0, 4], .f16, bytes: []),
        ]
        let filePath = path("mixed.safetensors")
        try SafeTensorsWriter.write(originals, to: filePath)

        let file = try SafeTensorsFile(path: filePath)
        XCTAssertEqual(file.tensors.map(\.name), ["a.f32", "b.f16", "c.bf16", "d.scalar", "e.empty"])
        for (name, original) in originals {
            let loaded = try file.tensor(name)
            XCTAssertEqual(loaded.dtype, original.dtype)
            XCTAssertEqual(loaded.shape, original.shape)
            XCTAssertEqual(bytes(of: loaded), bytes(of: original))
        }
        XCTAssertEqual(file.info("e.empty")?.count, 0)
        XCTAssertEqual(file.info("d.scalar")?.count, 1)
    }

    func testMetadataRoundTrips() throws {
        let metadata = ["format": "pt", "note": "quote \" backslash \\ newline \n tab \t bell \u{7} café 😀"]
        let filePath = path("meta.safetensors")
        try SafeTensorsWriter.write(["x": hostTensor([2], .f32, bytes: randomBytes(count: 2, .f32))],
                                    metadata: metadata, to: filePath)
        XCTAssertEqual(try SafeTensorsFile(path: filePath).metadata, metadata)
    }

    func testFileWithoutMetadataHasEmptyMetadata() throws {
        let filePath = path("plain.safetensors")
        try SafeTensorsWriter.write(["x": hostTensor([1], .f32, bytes: randomBytes(count: 1, .f32))], to: filePath)
        XCTAssertEqual(try SafeTensorsFile(path: filePath).metadata, [:])
    }

    func testInfoDescribesEachTensor() throws {
        let filePath = path("info.safetensors")
        try SafeTensorsWriter.write([
            "b": hostTensor([2, 3], .bf16, bytes: randomBytes(count: 6, .bf16)),
            "a": hostTensor([4], .f32, bytes: randomBytes(count: 4, .f32)),
        ], to: filePath)
        let file = try SafeTensorsFile(path: filePath)
        // Data is laid out in name order.
        XCTAssertEqual(file.info("a"), SafeTensorInfo(name: "a", dtype: .f32, shape: [4], byteRange: 0..<16))
        XCTAssertEqual(file.info("b"), SafeTensorInfo(name: "b", dtype: .bf16, shape: [2, 3], byteRange: 16..<28))
        XCTAssertNil(file.info("c"))
        XCTAssertEqual(file.fileSize, file.dataOffset + 28)
    }

    func testTensorsAreZeroCopyViewsIntoTheMapping() throws {
        let filePath = path("view.safetensors")
        try SafeTensorsWriter.write(["x": hostTensor([8], .f32, bytes: randomBytes(count: 8, .f32))], to: filePath)
        let file = try SafeTensorsFile(path: filePath)
        let first = try file.tensor("x")
        let second = try file.tensor("x")
        XCTAssertEqual(first.rawPointer, second.rawPointer)
        XCTAssertFalse(first.storage.isCounted)
        XCTAssertEqual(first.storage.byteCount, 32)
    }

    func testTensorOutlivesTheFileObject() throws {
        let original = hostTensor([16], .f32, bytes: randomBytes(count: 16, .f32))
        let filePath = path("outlive.safetensors")
        try SafeTensorsWriter.write(["x": original], to: filePath)

        weak var weakFile: SafeTensorsFile?
        var loaded: Tensor?
        do {
            let file = try SafeTensorsFile(path: filePath)
            weakFile = file
            loaded = try file.tensor("x")
        }
        XCTAssertNotNil(weakFile, "the tensor's storage must keep the file (and its mapping) alive")
        XCTAssertEqual(loaded.map(bytes(of:)), bytes(of: original))
        loaded = nil
        XCTAssertNil(weakFile, "the file must be released with its last tensor")
    }

    func testUnknownTensorNameThrows() throws {
        let filePath = path("names.safetensors")
        try SafeTensorsWriter.write(["x": hostTensor([1], .f32, bytes: randomBytes(count: 1, .f32))], to: filePath)
        let file = try SafeTensorsFile(path: filePath)
        XCTAssertThrowsError(try file.tensor("y")) { error in
            XCTAssertTrue((error as? SafeTensorsError)?.problem.contains("no tensor named \"y\"") == true, "\(error)")
        }
    }

    func testUnalignedTensorOffsetsAreRead() throws {
        // A 1-byte-aligned layout: the header length is odd and the f32 tensor starts at byte 2.
        let values: [Float] = [1.5, -2.25, 3.125]
        var data: [UInt8] = [0x00, 0x3C]  // f16 1.0
        values.withUnsafeBytes { data += $0 }
        let filePath = writeRaw("unaligned.safetensors",
                                header: "{\"h\":\(entry("F16", [1], 0, 2)),\"f\":\(entry("F32", [3], 2, 14))} ",
                                data: data)
        let file = try SafeTensorsFile(path: filePath)
        XCTAssertEqual(try file.tensor("f").floats(), values)
        XCTAssertEqual(try file.tensor("h").floats(), [1.0])
    }

    func testHeaderEscapesAndSurrogatePairsAreDecoded() throws {
        let filePath = writeRaw("escapes.safetensors",
                                header: "{\"caf\\u00e9.\\ud83d\\ude00\\n\\/\":\(entry("F32", [1], 0, 4))}",
                                data: [0, 0, 128, 63])
        let file = try SafeTensorsFile(path: filePath)
        XCTAssertEqual(file.names, ["café.😀\n/"])
        XCTAssertEqual(try file.tensor("café.😀\n/").floats(), [1])
    }

    func testEmptyHeaderObjectIsAValidFileWithoutTensors() throws {
        let file = try SafeTensorsFile(path: writeRaw("none.safetensors", header: "{}"))
        XCTAssertEqual(file.names, [])
    }

    func testUnknownEntryFieldsAreIgnored() throws {
        let filePath = writeRaw("extra.safetensors",
                                header: "{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"note\":[1.5e3,true,null,{}]}}",
                                data: [0, 0, 0, 0])
        XCTAssertEqual(try SafeTensorsFile(path: filePath).names, ["x"])
    }

    // MARK: Writer

    func testWriterPadsTheHeaderSoDataIsEightByteAligned() throws {
        for nameLength in 1...9 {
            let filePath = path("pad\(nameLength).safetensors")
            try SafeTensorsWriter.write([String(repeating: "k", count: nameLength): hostTensor([1], .f32, bytes: randomBytes(count: 1, .f32))], to: filePath)
            XCTAssertEqual(try SafeTensorsFile(path: filePath).dataOffset % 8, 0)
        }
    }

    func testWriterLeavesOnlyTheFinishedFile() throws {
        try SafeTensorsWriter.write(["x": hostTensor([3], .f16, bytes: randomBytes(count: 3, .f16))], to: path("out.safetensors"))
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: directory.path), ["out.safetensors"])
    }

    func testWriterReplacesAnExistingFile() throws {
        let filePath = path("replace.safetensors")
        try SafeTensorsWriter.write(["old": hostTensor([1], .f32, bytes: randomBytes(count: 1, .f32))], to: filePath)
        try SafeTensorsWriter.write(["new": hostTensor([2], .f32, bytes: randomBytes(count: 2, .f32))], to: filePath)
        XCTAssertEqual(try SafeTensorsFile(path: filePath).names, ["new"])
    }

    func testWriterRejectsTensorsWithoutDataAndLeavesNoFile() {
        let meta = Tensor(shape: [4], dtype: .f32, storage: Storage(byteCount: 16, allocator: MetaAllocator()))
        let filePath = path("meta.safetensors")
        XCTAssertThrowsError(try SafeTensorsWriter.write(["weight": meta], to: filePath)) { error in
            XCTAssertTrue((error as? SafeTensorsError)?.problem.contains("\"weight\" has no data") == true, "\(error)")
        }
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: directory.path), [])
    }

    func testWriterRejectsATensorNamedMetadata() {
        let tensor = hostTensor([1], .f32, bytes: randomBytes(count: 1, .f32))
        XCTAssertThrowsError(try SafeTensorsWriter.write(["__metadata__": tensor], to: path("x.safetensors"))) { error in
            XCTAssertTrue((error as? SafeTensorsError)?.problem.contains("__metadata__") == true, "\(error)")
        }
    }

    func testWriterReportsAMissingDirectory() {
        let tensor = hostTensor([1], .f32, bytes: randomBytes(count: 1, .f32))
        XCTAssertThrowsError(try SafeTensorsWriter.write(["x": tensor], to: path("missing/x.safetensors"))) { error in
            XCTAssertTrue((error as? SafeTensorsError)?.problem.contains("No such file or directory") == true, "\(error)")
        }
    }

    // MARK: Files that are not safetensors files

    func testMissingFileIsReported() {
        assertRejected(path("absent.safetensors"), mentioning: "cannot open", "No such file or directory")
    }

    func testDirectoryIsReported() {
        assertRejected(directory.path, mentioning: "is a directory")
    }

    func testEmptyFileIsReported() {
        store([], at: path("empty.safetensors"))
        assertRejected(path("empty.safetensors"), mentioning: "empty")
    }

    func testFileShorterThanTheHeaderLengthIsReported() {
        store([2, 0, 0], at: path("short.safetensors"))
        assertRejected(path("short.safetensors"), mentioning: "3 bytes", "8-byte header length")
    }

    // MARK: Malformed header length

    func testZeroHeaderLengthIsReported() {
        assertRejected(writeRaw("zero.safetensors", header: "{}", headerLength: 0), mentioning: "header length is 0")
    }

    func testHeaderLengthBeyondTheFileIsATruncatedHeader() {
        assertRejected(writeRaw("cut.safetensors", header: "{\"x\":", headerLength: 64), mentioning: "truncated", "64", "5")
    }

    func testHugeHeaderLengthIsRejectedByTheLimit() {
        assertRejected(writeRaw("huge.safetensors", header: "{}", headerLength: 200_000_000), mentioning: "200000000", "limit")
        assertRejected(writeRaw("max.safetensors", header: "{}", headerLength: .max), mentioning: "\(UInt64.max)", "limit")
    }

    // MARK: Malformed header JSON

    func testInvalidJSONIsReported() {
        assertRejected(writeRaw("json.safetensors", header: "{\"x\": [1, 2,]}"), mentioning: "not valid JSON")
        assertRejected(writeRaw("trailing.safetensors", header: "{} x"), mentioning: "not valid JSON", "after the end")
        assertRejected(writeRaw("leading0.safetensors", header: "{\"x\":{\"shape\":[01]}}"), mentioning: "leading zeros")
    }

    func testInvalidUTF8IsReported() {
        var header = Array("{\"\u{1}x\":{}}".utf8)
        header[2] = 0xFF
        var file = [UInt8]()
        withUnsafeBytes(of: UInt64(header.count).littleEndian) { file += $0 }
        store(file + header, at: path("utf8.safetensors"))
        assertRejected(path("utf8.safetensors"), mentioning: "not valid UTF-8")
    }

    func testUnpairedSurrogateIsReported() {
        assertRejected(writeRaw("surrogate.safetensors", header: "{\"\\ud83d\":{}}"), mentioning: "surrogate")
    }

    func testDeeplyNestedJSONIsRejectedWithoutCrashing() {
        let nested = String(repeating: "[", count: 100_000) + String(repeating: "]", count: 100_000)
        assertRejected(writeRaw("deep.safetensors", header: "{\"x\":\(nested)}"), mentioning: "nesting")
    }

    func testHeaderThatIsNotAnObjectIsReported() {
        assertRejected(writeRaw("array.safetensors", header: "[1, 2]"), mentioning: "must be a JSON object", "an array")
    }

    func testEntryThatIsNotAnObjectIsReported() {
        assertRejected(writeRaw("entry.safetensors", header: "{\"w\": \"F32\"}"), mentioning: "tensor \"w\"", "must be an object")
    }

    func testMissingFieldIsReported() {
        let header = "{\"w\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}"
        assertRejected(writeRaw("missing.safetensors", header: header, data: [0, 0, 0, 0]), mentioning: "tensor \"w\"", "no \"shape\"")
    }

    func testIllTypedFieldsAreReported() {
        let dtype = "{\"w\":{\"dtype\":32,\"shape\":[1],\"data_offsets\":[0,4]}}"
        assertRejected(writeRaw("dtype.safetensors", header: dtype, data: [0, 0, 0, 0]), mentioning: "\"dtype\" must be a string")
        let shape = "{\"w\":{\"dtype\":\"F32\",\"shape\":[1.0],\"data_offsets\":[0,4]}}"
        assertRejected(writeRaw("shape.safetensors", header: shape, data: [0, 0, 0, 0]), mentioning: "\"shape\" must be an array of integers", "1.0, not an integer")
        let offsets = "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":\"0-4\"}}"
        assertRejected(writeRaw("offsets.safetensors", header: offsets, data: [0, 0, 0, 0]), mentioning: "\"data_offsets\" must be an array")
    }

    func testMetadataThatIsNotStringToStringIsReported() {
        let header = "{\"__metadata__\":{\"epoch\":3},\"w\":\(entry("F32", [1], 0, 4))}"
        assertRejected(writeRaw("meta.safetensors", header: header, data: [0, 0, 0, 0]), mentioning: "__metadata__", "\"epoch\"")
        let notObject = "{\"__metadata__\":[\"a\"]}"
        assertRejected(writeRaw("meta2.safetensors", header: notObject), mentioning: "__metadata__", "an array")
    }

    func testDuplicateTensorNameIsReported() {
        let header = "{\"w\":\(entry("F32", [1], 0, 4)),\"w\":\(entry("F32", [1], 4, 8))}"
        assertRejected(writeRaw("duplicate.safetensors", header: header, data: [UInt8](repeating: 0, count: 8)),
                       mentioning: "duplicate key \"w\"", "tensor name")
    }

    func testDuplicateFieldInsideAnEntryIsReported() {
        let header = "{\"w\":{\"dtype\":\"F32\",\"dtype\":\"F16\",\"shape\":[1],\"data_offsets\":[0,4]}}"
        assertRejected(writeRaw("field.safetensors", header: header, data: [0, 0, 0, 0]), mentioning: "duplicate key \"dtype\"")
    }

    // MARK: Tensor entries Kinema cannot load

    func testUnsupportedDTypeIsReportedWithTheTensorName() {
        let header = "{\"ids\":\(entry("I64", [2], 0, 16)),\"w\":\(entry("F32", [1], 16, 20))}"
        assertRejected(writeRaw("i64.safetensors", header: header, data: [UInt8](repeating: 0, count: 20)),
                       mentioning: "unsupported dtype", "tensor \"ids\" is I64", "F32, F16, BF16")
    }

    func testEveryUnsupportedDTypeIsListed() {
        let header = "{\"a\":\(entry("F64", [1], 0, 8)),\"b\":\(entry("U8", [1], 8, 9)),\"c\":\(entry("BOOL", [1], 9, 10))}"
        assertRejected(writeRaw("many.safetensors", header: header, data: [UInt8](repeating: 0, count: 10)),
                       mentioning: "tensor \"a\" is F64", "tensor \"b\" is U8", "tensor \"c\" is BOOL")
    }

    func testNegativeDimensionIsReported() {
        let header = "{\"w\":\(entry("F32", [2, -1], 0, 8))}"
        assertRejected(writeRaw("negative.safetensors", header: header, data: [UInt8](repeating: 0, count: 8)),
                       mentioning: "tensor \"w\"", "negative dimension -1")
    }

    func testOverflowingElementCountIsReported() {
        let header = "{\"w\":\(entry("F32", [1 << 40, 1 << 40, 0], 0, 0))}"
        assertRejected(writeRaw("overflow.safetensors", header: header), mentioning: "tensor \"w\"", "overflows")
        let bytes = "{\"w\":\(entry("F32", [1 << 62], 0, 0))}"
        assertRejected(writeRaw("overflow2.safetensors", header: bytes), mentioning: "overflows")
    }

    func testIntegerTooLargeForSixtyFourBitsIsReported() {
        let header = "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,99999999999999999999]}}"
        assertRejected(writeRaw("bigint.safetensors", header: header), mentioning: "99999999999999999999, too large for 64 bits")
    }

    func testMalformedDataOffsetsAreReported() {
        for (index, offsets) in ["[8,4]", "[-4,0]", "[0,4,8]", "[4]"].enumerated() {
            let header = "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":\(offsets)}}"
            assertRejected(writeRaw("offsets\(index).safetensors", header: header, data: [0, 0, 0, 0]),
                           mentioning: "tensor \"w\"", "data_offsets must be [begin, end]")
        }
    }

    func testByteCountThatDoesNotMatchTheShapeIsReported() {
        let header = "{\"w\":\(entry("F32", [2, 2], 0, 12))}"
        assertRejected(writeRaw("count.safetensors", header: header, data: [UInt8](repeating: 0, count: 12)),
                       mentioning: "tensor \"w\"", "hold 12 bytes", "needs 16")
    }

    // MARK: Data buffer layout

    func testGapBetweenTensorsIsReported() {
        let header = "{\"a\":\(entry("F32", [1], 0, 4)),\"b\":\(entry("F32", [1], 8, 12))}"
        assertRejected(writeRaw("gap.safetensors", header: header, data: [UInt8](repeating: 0, count: 12)),
                       mentioning: "gap", "4..<8", "between tensors \"a\" and \"b\"")
    }

    func testGapBeforeTheFirstTensorIsReported() {
        let header = "{\"a\":\(entry("F32", [1], 4, 8))}"
        assertRejected(writeRaw("leading.safetensors", header: header, data: [UInt8](repeating: 0, count: 8)),
                       mentioning: "gap", "0..<4", "before tensor \"a\"")
    }

    func testOverlappingTensorsAreReported() {
        let header = "{\"a\":\(entry("F32", [2], 0, 8)),\"b\":\(entry("F32", [2], 4, 12))}"
        assertRejected(writeRaw("overlap.safetensors", header: header, data: [UInt8](repeating: 0, count: 12)),
                       mentioning: "overlap", "\"a\"", "\"b\"")
    }

    func testTruncatedDataIsReportedWithExpectedAndActualSizes() {
        let header = "{\"a\":\(entry("F32", [4], 0, 16))}"  // 55 bytes
        assertRejected(writeRaw("truncated.safetensors", header: header, data: [UInt8](repeating: 0, count: 10)),
                       mentioning: "truncated", "expected 79 bytes", "has 73")
    }

    func testTrailingBytesAfterTheLastTensorAreReported() {
        let header = "{\"a\":\(entry("F32", [1], 0, 4))}"
        assertRejected(writeRaw("trailing.safetensors", header: header, data: [UInt8](repeating: 0, count: 6)),
                       mentioning: "2 trailing bytes")
    }

    // MARK: Robustness

    /// Opens `bytes` as a file: it must either open, with every tensor inside the file and equal to
    /// the file's bytes there, or throw `SafeTensorsError`.
    @discardableResult
    private func assertOpensSafely(_ bytes: [UInt8], iteration: Int) -> Bool {
        let filePath = path("fuzz.safetensors")
        store(bytes, at: filePath)
        do {
            let file = try SafeTensorsFile(path: filePath)
            XCTAssertEqual(file.fileSize, bytes.count)
            for info in file.tensors {
                let begin = file.dataOffset + info.byteRange.lowerBound
                let end = file.dataOffset + info.byteRange.upperBound
                XCTAssertLessThanOrEqual(end, bytes.count, "iteration \(iteration): \(info.name) ends past the file")
                guard end <= bytes.count else { continue }
                let tensor = try file.tensor(info.name)
                XCTAssertEqual(self.bytes(of: tensor), Array(bytes[begin..<end]), "iteration \(iteration)")
            }
            return true
        } catch is SafeTensorsError {
            // Rejected with a message: the expected outcome for most corruptions.
        } catch {
            XCTFail("iteration \(iteration): unexpected error \(error)")
        }
        return false
    }

    private func validFileBytes() throws -> [UInt8] {
        let source = path("source.safetensors")
        try SafeTensorsWriter.write([
            "down.0.weight": hostTensor([2, 3], .f32, bytes: randomBytes(count: 6, .f32)),
            "down.0.bias": hostTensor([4], .f16, bytes: randomBytes(count: 4, .f16)),
            "up.norm": hostTensor([3], .bf16, bytes: randomBytes(count: 3, .bf16)),
            "empty": hostTensor([0], .f32, bytes: []),
        ], metadata: ["format": "pt"], to: source)
        return Array(try Data(contentsOf: URL(fileURLWithPath: source)))
    }

    func testFlippedHeaderBytesNeverCrash() throws {
        let valid = try validFileBytes()
        let headerEnd = 8 + Int(valid[0]) + Int(valid[1]) << 8
        var generator = SeededGenerator(state: 0x5AFE_7E45)
        var opened = 0
        for iteration in 0..<400 {
            var corrupted = valid
            for _ in 0..<Int.random(in: 1...4, using: &generator) {
                let index = Int.random(in: 0..<headerEnd, using: &generator)
                // Half the time a printable byte, so the JSON often stays parseable.
                corrupted[index] = Bool.random(using: &generator)
                    ? UInt8.random(in: 0x20...0x7E, using: &generator)
                    : corrupted[index] ^ (1 << UInt8.random(in: 0...7, using: &generator))
            }
            if assertOpensSafely(corrupted, iteration: iteration) { opened += 1 }
        }
        // Both outcomes must occur, or the test checks less than it claims.
        XCTAssertGreaterThan(opened, 0, "no corrupted file opened, so reads of opened files went untested")
        XCTAssertLessThan(opened, 400, "every corrupted file opened")
    }

    func testRandomTruncationsNeverCrash() throws {
        let valid = try validFileBytes()
        var generator = SeededGenerator(state: 0x7A11_C0DE)
        for iteration in 0..<300 {
            let length = Int.random(in: 0..<valid.count, using: &generator)
            XCTAssertFalse(assertOpensSafely(Array(valid[..<length]), iteration: iteration),
                           "iteration \(iteration): a file truncated to \(length) bytes opened")
        }
    }
}
