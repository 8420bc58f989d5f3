import Foundation

// The safetensors format: an 8-byte little-endian header length N, N bytes of UTF-8 JSON, then the
// data buffer. The JSON maps each tensor name to {"dtype", "shape", "data_offsets": [begin, end]}
// (offsets relative to the data buffer), plus an optional "__metadata__" of string -> string.

/// Why a safetensors file could not be read or written: the file, and what is wrong with it.
public struct SafeTensorsError: Error, CustomStringConvertible, Equatable {
    /// The file being read or written.
    public let path: String
    /// What is wrong, in words a user can act on (which tensor, what was expected, what was found).
    public let problem: String
    /// `path: problem`.
    public var description: String { "\(path): \(problem)" }

    /// An error about the file at `path`.
    public init(path: String, problem: String) {
        self.path = path
        self.problem = problem
    }
}

/// One tensor's entry in a safetensors header.
public struct SafeTensorInfo: Sendable, Equatable {
    /// The tensor's key in the checkpoint, for example `down_blocks.0.resnets.0.conv1.weight`.
    public let name: String
    /// The element type (only dtypes Kinema loads; see `SafeTensorsFile`).
    public let dtype: DType
    /// Dimensions, outermost first; `[]` is a scalar, and a 0 makes an empty tensor.
    public let shape: [Int]
    /// Where the tensor's bytes lie within the data buffer (which starts after the header).
    public let byteRange: Range<Int>
    /// Number of elements.
    public var count: Int { shape.reduce(1, *) }
}

/// A safetensors checkpoint, memory-mapped read-only. Opening validates the whole header, so
/// every tensor of an open file lies inside it; tensors are zero-copy views into the mapping that
/// keep this object (and so the mapping) alive.
///
/// Only dtypes Kinema computes with are accepted (F32, F16, BF16): a file holding any other dtype
/// is rejected at open, naming each such tensor, rather than failing later at the first use.
/// Tensor names that are equal as Swift `String`s (canonically equivalent Unicode) count as
/// duplicates, since lookups by name could not tell them apart.
///
/// Tensor data need not be aligned: a tensor may start at any byte of the data buffer (files
/// written by `SafeTensorsWriter` and by the reference writer align the buffer to 8 bytes). The
/// mapping is read-only, so tensors from a file must not be written to. As with any mapping, a
/// file truncated by another process while open makes reads of the lost pages fault.
public final class SafeTensorsFile: @unchecked Sendable {
    /// The largest header accepted, in bytes (the reference implementation's limit).
    public static let maximumHeaderLength = 100_000_000

    /// The path the file was opened from.
    public let path: String
    /// The header's `__metadata__` (empty when absent).
    public let metadata: [String: String]
    /// Tensor names, sorted.
    public let names: [String]
    /// Every tensor's entry, sorted by name.
    public let tensors: [SafeTensorInfo]
    /// Size of the file in bytes.
    public let fileSize: Int
    /// Where the data buffer starts in the file: 8 + the header length.
    let dataOffset: Int
    private let mapping: FileMapping
    private let indexByName: [String: Int]

    /// Opens and maps the file at `path` and validates its header; throws `SafeTensorsError`
    /// saying what is wrong when the file is missing, unreadable, or not a valid safetensors file.
    public init(path: String) throws {
        let mapping = try FileMapping(path: path)
        let headerLength = try Self.headerLength(of: mapping, path: path)
        let header = try Self.parseHeader(
            UnsafeRawBufferPointer(start: mapping.base + 8, count: headerLength), path: path)
        let dataOffset = 8 + headerLength
        try Self.checkLayout(header.tensors, dataOffset: dataOffset, headerLength: headerLength,
                             fileSize: mapping.size, path: path)
        let sorted = header.tensors.sorted { $0.name < $1.name }
        self.path = path
        self.metadata = header.metadata
        self.tensors = sorted
        self.names = sorted.map(\.name)
        self.fileSize = mapping.size
        self.dataOffset = dataOffset
        self.mapping = mapping
        self.indexByName = Dictionary(uniqueKeysWithValues: sorted.enumerated().map { ($0.element.name, $0.offset) })
    }

    /// The entry of tensor `name`, or nil if the file has no such tensor.
    public func info(_ name: String) -> SafeTensorInfo? {
        indexByName[name].map { tensors[$0] }
    }

    /// Tensor `name` as a zero-copy view into the mapping; throws if the file has no such tensor.
    public func tensor(_ name: String) throws -> Tensor {
        guard let info = info(name) else {
            throw SafeTensorsError(path: path, problem: "no tensor named \"\(name)\" among the file's \(tensors.count) tensors")
        }
        // A zero-byte tensor may start at the end of the file: a valid address, never read.
        let storage = Storage(borrowing: mapping.base + dataOffset + info.byteRange.lowerBound,
                              byteCount: info.byteRange.count, owner: self)
        return Tensor(shape: info.shape, dtype: info.dtype, storage: storage)
    }

    /// Reads and checks the 8-byte little-endian header length.
    private static func headerLength(of mapping: FileMapping, path: String) throws -> Int {
        let length = UInt64(littleEndian: mapping.base.loadUnaligned(as: UInt64.self))
        if length == 0 {
            throw SafeTensorsError(path: path, problem: "header length is 0; a safetensors header is a JSON object of at least 2 bytes")
        }
        if length > UInt64(maximumHeaderLength) {
            throw SafeTensorsError(path: path, problem: "header length \(length) is larger than the \(maximumHeaderLength)-byte limit; the file is corrupt or not a safetensors file")
        }
        let available = mapping.size - 8
        if length > UInt64(available) {
            throw SafeTensorsError(path: path, problem: "file is truncated inside its header: the header length says \(length) bytes of JSON follow, but only \(available) bytes do")
        }
        return Int(length)
    }

    /// Parses the header JSON into tensor entries (unsorted) and metadata.
    private static func parseHeader(
        _ bytes: UnsafeRawBufferPointer, path: String
    ) throws -> (tensors: [SafeTensorInfo], metadata: [String: String]) {
        let root: StrictJSON.Value
        do {
            root = try StrictJSON.parse(bytes)
        } catch {
            if let key = error.duplicateKey {
                throw SafeTensorsError(path: path, problem: "header has duplicate key \"\(key)\" (at byte \(error.offset) of the header); every tensor name, and every field of an entry, must appear once")
            }
            throw SafeTensorsError(path: path, problem: "header is not valid JSON: \(error.message) (at byte \(error.offset) of the header)")
        }
        guard case .object(let members) = root else {
            throw SafeTensorsError(path: path, problem: "header must be a JSON object mapping tensor names to {dtype, shape, data_offsets}, found \(root.kindName)")
        }
        var tensors: [SafeTensorInfo] = []
        var metadata: [String: String] = [:]
        var unsupported: [String] = []
        for (name, value) in members {
            if name == "__metadata__" {
                metadata = try parseMetadata(value, path: path)
                continue
            }
            guard let entry = try parseEntry(name, value, path: path) else {
                unsupported.append(name)
                continue
            }
            tensors.append(entry)
        }
        if !unsupported.isEmpty {
            throw SafeTensorsError(path: path, problem: unsupportedDTypeProblem(unsupported, members))
        }
        return (tensors, metadata)
    }

    /// `__metadata__` must be an object of string values; null (accepted by the reference) means none.
    private static func parseMetadata(_ value: StrictJSON.Value, path: String) throws -> [String: String] {
        switch value {
        case .null:
            return [:]
        case .object(let members):
            var metadata: [String: String] = [:]
            for (key, item) in members {
                guard case .string(let text) = item else {
                    throw SafeTensorsError(path: path, problem: "__metadata__ must map strings to strings, but \"\(key)\" holds \(item.kindName)")
                }
                metadata[key] = text
            }
            return metadata
        default:
            throw SafeTensorsError(path: path, problem: "__metadata__ must be an object of strings, found \(value.kindName)")
        }
    }

    /// One tensor's entry, or nil when its dtype is well-formed but one Kinema does not load.
    /// Fields other than dtype, shape and data_offsets are ignored, as by the reference.
    private static func parseEntry(_ name: String, _ value: StrictJSON.Value, path: String) throws -> SafeTensorInfo? {
        func fail(_ problem: String) -> SafeTensorsError {
            SafeTensorsError(path: path, problem: "tensor \"\(name)\": \(problem)")
        }
        guard case .object(let fields) = value else {
            throw fail("entry must be an object with dtype, shape and data_offsets, found \(value.kindName)")
        }
        func field(_ key: String) throws -> StrictJSON.Value {
            guard let found = fields.first(where: { $0.key == key }) else { throw fail("entry has no \"\(key)\"") }
            return found.value
        }
        func integers(_ key: String, _ value: StrictJSON.Value) throws -> [Int] {
            guard case .array(let items) = value else { throw fail("\"\(key)\" must be an array of integers, found \(value.kindName)") }
            return try items.enumerated().map { index, item in
                guard case .integer(let integer) = item else {
                    let found: String
                    if case .number(let text) = item {
                        found = text.contains(where: { ".eE".contains($0) }) ? "\(text), not an integer," : "\(text), too large for 64 bits,"
                    } else {
                        found = item.kindName
                    }
                    throw fail("\"\(key)\" must be an array of integers, found \(found) at index \(index)")
                }
                return integer
            }
        }

        let dtypeValue = try field("dtype")
        guard case .string(let dtypeName) = dtypeValue else {
            throw fail("\"dtype\" must be a string such as \"F32\", found \(dtypeValue.kindName)")
        }
        let shape = try integers("shape", try field("shape"))
        let offsets = try integers("data_offsets", try field("data_offsets"))
        if let negative = shape.first(where: { $0 < 0 }) {
            throw fail("shape \(shape) has a negative dimension \(negative)")
        }
        guard offsets.count == 2, offsets[0] >= 0, offsets[0] <= offsets[1] else {
            throw fail("data_offsets must be [begin, end] with 0 <= begin <= end, found \(offsets)")
        }
        guard let dtype = DType(safetensorsName: dtypeName) else { return nil }
        // Left to right, as `Tensor` computes it, so a later 0 does not hide an overflow.
        var byteCount = 1
        for dimension in shape + [dtype.size] {
            let (product, overflow) = byteCount.multipliedReportingOverflow(by: dimension)
            if overflow { throw fail("shape \(shape) has too many elements: the element count overflows") }
            byteCount = product
        }
        let range = offsets[0]..<offsets[1]
        if range.count != byteCount {
            throw fail("data_offsets \(offsets) hold \(range.count) bytes, but shape \(shape) of \(dtypeName) needs \(byteCount)")
        }
        return SafeTensorInfo(name: name, dtype: dtype, shape: shape, byteRange: range)
    }

    /// Names every tensor whose dtype Kinema does not load (the first ten, then a count).
    private static func unsupportedDTypeProblem(_ names: [String], _ members: [(key: String, value: StrictJSON.Value)]) -> String {
        let dtypes = Dictionary(members.compactMap { member -> (String, String)? in
            guard case .object(let fields) = member.value,
                  case .string(let dtype)? = fields.first(where: { $0.key == "dtype" })?.value else { return nil }
            return (member.key, dtype)
        }, uniquingKeysWith: { first, _ in first })
        var listed = names.prefix(10).map { "tensor \"\($0)\" is \(dtypes[$0] ?? "?")" }.joined(separator: ", ")
        if names.count > 10 { listed += ", and \(names.count - 10) more" }
        let supported = DType.allCases.map(\.safetensorsName).joined(separator: ", ")
        return "unsupported dtype: \(listed); Kinema loads only \(supported) tensors (convert the checkpoint first)"
    }

    /// The tensors, sorted by offset, must tile the data buffer exactly: no gap, no overlap, and
    /// the last one ends at the end of the file (the reference's validation).
    private static func checkLayout(_ tensors: [SafeTensorInfo], dataOffset: Int, headerLength: Int, fileSize: Int, path: String) throws {
        let byOffset = tensors.sorted {
            ($0.byteRange.lowerBound, $0.byteRange.upperBound, $0.name) < ($1.byteRange.lowerBound, $1.byteRange.upperBound, $1.name)
        }
        var covered = 0
        var previous: SafeTensorInfo?
        for info in byOffset {
            let begin = info.byteRange.lowerBound
            if begin > covered {
                let place = previous.map { "between tensors \"\($0.name)\" and \"\(info.name)\"" } ?? "before tensor \"\(info.name)\""
                throw SafeTensorsError(path: path, problem: "gap in the data buffer: bytes \(covered)..<\(begin), \(place), belong to no tensor")
            }
            if begin < covered, let previous {
                throw SafeTensorsError(path: path, problem: "tensors \"\(previous.name)\" (bytes \(previous.byteRange)) and \"\(info.name)\" (bytes \(info.byteRange)) overlap in the data buffer")
            }
            covered = info.byteRange.upperBound
            previous = info
        }
        // Both terms are at most Int.max, so their sum fits a UInt.
        let expectedSize = UInt(dataOffset) + UInt(covered)
        let dataLength = fileSize - dataOffset
        if covered > dataLength {
            throw SafeTensorsError(path: path, problem: "file is truncated: expected \(expectedSize) bytes (8 + \(headerLength)-byte header + \(covered) bytes of tensor data), but the file has \(fileSize)")
        }
        if covered < dataLength {
            throw SafeTensorsError(path: path, problem: "file has \(dataLength - covered) trailing bytes that belong to no tensor: expected \(expectedSize) bytes (8 + \(headerLength)-byte header + \(covered) bytes of tensor data), but the file has \(fileSize)")
        }
    }
}

/// A whole file mapped read-only (PROT_READ, MAP_PRIVATE); unmapped when the last reference goes.
/// Only regular files of at least 8 bytes (a safetensors header length) are mapped.
private final class FileMapping {
    let base: UnsafeMutableRawPointer
    let size: Int

    init(path: String) throws {
        func fail(_ problem: String) -> SafeTensorsError { SafeTensorsError(path: path, problem: problem) }
        // O_NONBLOCK so that opening a FIFO by mistake does not hang; it does nothing for files.
        let descriptor = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
        guard descriptor >= 0 else { throw fail("cannot open the file: \(errnoDescription())") }
        defer { close(descriptor) }
        var status = stat()
        guard fstat(descriptor, &status) == 0 else { throw fail("cannot read the file's status: \(errnoDescription())") }
        switch status.st_mode & S_IFMT {
        case S_IFREG: break
        case S_IFDIR: throw fail("is a directory, not a safetensors file")
        default: throw fail("is not a regular file, so it cannot be a safetensors file")
        }
        let size = Int(status.st_size)
        if size == 0 {
            throw fail("file is empty; a safetensors file starts with an 8-byte header length")
        }
        if size < 8 {
            throw fail("file is only \(size) bytes long, shorter than the 8-byte header length a safetensors file starts with")
        }
        guard let base = mmap(nil, size, PROT_READ, MAP_PRIVATE, descriptor, 0),
              base != UnsafeMutableRawPointer(bitPattern: -1)
        else { throw fail("cannot map the file into memory: \(errnoDescription())") }
        self.base = base
        self.size = size
    }

    deinit { munmap(base, size) }
}

/// Writes safetensors files that the reference implementation and `SafeTensorsFile` read.
public enum SafeTensorsWriter {
    /// Writes tensors (any device that has data) in name order; writes to a temporary file in the same directory, then renames, so no partial file is ever left.
    ///
    /// The header is padded with spaces to a multiple of 8 bytes, as the reference writer does, so
    /// the data buffer is 8-byte aligned. Metadata is omitted from the header when empty. Throws
    /// `SafeTensorsError` for a tensor without data (meta device), a tensor named `__metadata__`,
    /// or a failure to create, write or rename the file.
    public static func write(_ tensors: [String: Tensor], metadata: [String: String] = [:], to path: String) throws {
        func fail(_ problem: String) -> SafeTensorsError { SafeTensorsError(path: path, problem: problem) }
        let names = tensors.keys.sorted()
        var header = "{"
        var fields: [String] = []
        if !metadata.isEmpty {
            let pairs = metadata.keys.sorted().map { "\(jsonString($0)):\(jsonString(metadata[$0]!))" }
            fields.append("\"__metadata__\":{\(pairs.joined(separator: ","))}")
        }
        var offset = 0
        for name in names {
            let tensor = tensors[name]!
            if name == "__metadata__" { throw fail("a tensor cannot be named \"__metadata__\"; that key holds the file's metadata") }
            if !tensor.hasData { throw fail("tensor \"\(name)\" has no data (it is on the meta device); only tensors with data can be written") }
            let shape = tensor.shape.map(String.init).joined(separator: ",")
            fields.append("\(jsonString(name)):{\"dtype\":\"\(tensor.dtype.safetensorsName)\",\"shape\":[\(shape)],\"data_offsets\":[\(offset),\(offset + tensor.byteCount)]}")
            offset += tensor.byteCount
        }
        header += fields.joined(separator: ",") + "}"
        var headerBytes = Array(header.utf8)
        headerBytes += [UInt8](repeating: UInt8(ascii: " "), count: (8 - headerBytes.count % 8) % 8)

        let (temporaryPath, descriptor) = try createTemporaryFile(besides: path)
        var renamed = false
        defer { if !renamed { unlink(temporaryPath) } }
        do {
            defer { close(descriptor) }
            let length = UInt64(headerBytes.count).littleEndian
            try withUnsafeBytes(of: length) { try writeFully(descriptor, $0, path: path) }
            try headerBytes.withUnsafeBytes { try writeFully(descriptor, $0, path: path) }
            for name in names {
                let tensor = tensors[name]!
                try writeFully(descriptor, UnsafeRawBufferPointer(start: tensor.rawPointer, count: tensor.byteCount), path: path)
            }
            // Data reaches the disk before the rename makes the file visible.
            guard fsync(descriptor) == 0 else { throw fail("cannot flush \(temporaryPath) to disk: \(errnoDescription())") }
        }
        guard rename(temporaryPath, path) == 0 else {
            throw fail("cannot move the finished temporary file \(temporaryPath) into place: \(errnoDescription())")
        }
        renamed = true
    }

    /// Creates `.<name>.<pid>-<random>.tmp` in the directory of `path` (so the rename stays on
    /// one file system), with the permissions a new file would get.
    private static func createTemporaryFile(besides path: String) throws -> (String, Int32) {
        let slash = path.lastIndex(of: "/")
        let directory = slash.map { $0 == path.startIndex ? "/" : String(path[..<$0]) } ?? "."
        let fileName = slash.map { String(path[path.index(after: $0)...]) } ?? path
        guard !fileName.isEmpty else {
            throw SafeTensorsError(path: path, problem: "path ends with '/', so it names a directory, not a file to write")
        }
        for _ in 0..<16 {
            let candidate = (directory == "/" ? "" : directory) + "/.\(fileName).\(getpid())-\(UInt32.random(in: 0...UInt32.max)).tmp"
            let descriptor = open(candidate, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o666)
            if descriptor >= 0 { return (candidate, descriptor) }
            if errno != EEXIST {
                throw SafeTensorsError(path: path, problem: "cannot create a temporary file in \(directory): \(errnoDescription())")
            }
        }
        throw SafeTensorsError(path: path, problem: "cannot create a temporary file in \(directory): every name tried exists")
    }

    /// `text` as a JSON string literal; non-ASCII characters are written as UTF-8.
    static func jsonString(_ text: String) -> String {
        var literal = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": literal += "\\\""
            case "\\": literal += "\\\\"
            case "\n": literal += "\\n"
            case "\r": literal += "\\r"
            case "\t": literal += "\\t"
            case _ where scalar.value < 0x20:
                let digits = String(scalar.value, radix: 16, uppercase: true)
                literal += "\\u" + String(repeating: "0", count: 4 - digits.count) + digits
            default: literal.unicodeScalars.append(scalar)
            }
        }
        return literal + "\""
    }
}

/// Writes all of `bytes` to `descriptor`, retrying short writes and interrupted calls.
private func writeFully(_ descriptor: Int32, _ bytes: UnsafeRawBufferPointer, path: String) throws {
    guard let base = bytes.baseAddress else { return }
    var written = 0
    while written < bytes.count {
        // At most 1 GiB per call: Linux caps a single write near 2 GiB.
        let result = write(descriptor, base + written, min(bytes.count - written, 1 << 30))
        if result < 0 {
            if errno == EINTR { continue }
            throw SafeTensorsError(path: path, problem: "writing failed: \(errnoDescription())")
        }
        written += result
    }
}

/// The current `errno` in words, for example "No such file or directory".
private func errnoDescription() -> String {
    String(cString: strerror(errno))
}
