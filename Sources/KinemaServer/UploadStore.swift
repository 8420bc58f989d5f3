import Foundation
import KinemaJobs
import KinemaPipeline

/// Uploaded pictures, content-addressed: `uploads/<sha256>` holds the bytes as sent, `uploads/<sha256>.json`
/// their decoded size and type. A file is stored only after ffmpeg decoded it as an image.
///
/// With a `shared` blob store (several nodes, no shared file system) every upload is also stored there, and
/// the local folder becomes a cache: an image uploaded through one API node is fetched by the node that
/// needs it (another API node, a worker) on first use.
struct UploadStore: Sendable {
    let directory: URL
    let limitBytes: Int
    let shared: (any BlobStore)?

    struct Upload: Codable, Sendable {
        var imageID: String
        var width: Int
        var height: Int
        var contentType: String
        var bytes: Int

        var json: [String: Any] { ["image_id": imageID, "sha256": imageID, "width": width, "height": height] }
    }

    init(dataDirectory: URL, limitBytes: Int, shared: (any BlobStore)? = nil) throws {
        directory = dataDirectory.appendingPathComponent("uploads")
        self.limitBytes = limitBytes
        self.shared = shared
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    }

    /// 64 lowercase hex digits: the only ids that ever reach the file system.
    static func isValidID(_ id: String) -> Bool {
        id.utf8.count == 64 && id.utf8.allSatisfy { (48...57).contains($0) || (97...102).contains($0) }
    }

    /// Stores `data` after decoding it (on a thread of its own), or answers why not (413 too large, 415 not an
    /// image); with a shared blob store, there too before answering.
    func store(_ data: Data) async throws -> Upload {
        let upload = try await BlockingWork.run { try storeLocally(data) }
        if let shared {
            try await shared.put([(key: "uploads/\(upload.imageID)", contentType: upload.contentType, bytes: data),
                                  (key: "uploads/\(upload.imageID).json", contentType: "application/json", bytes: try JSONEncoder().encode(upload))])
        }
        return upload
    }

    private func storeLocally(_ data: Data) throws -> Upload {
        guard data.count <= limitBytes else {
            throw APIError(.contentTooLarge, "too_large", "the upload is \(data.count) bytes; the limit is \(limitBytes)")
        }
        guard !data.isEmpty else { throw APIError(.unsupportedMediaType, "not_an_image", "the upload is empty") }
        let id = SHA256.hex(data)
        if let existing = try? findLocally(id) { return existing }
        guard let contentType = Self.sniffType(data) else {
            throw APIError(.unsupportedMediaType, "not_an_image", "the upload is not a PNG, JPEG, WebP, GIF, BMP or TIFF image")
        }
        let staging = directory.appendingPathComponent(".incoming-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: staging) }
        try data.write(to: staging)
        let image: RGBImage
        do { image = try ImageLoader.load(path: staging.path) } catch {
            throw APIError(.unsupportedMediaType, "not_an_image", "the upload could not be decoded as an image")
        }
        let upload = Upload(imageID: id, width: image.width, height: image.height, contentType: contentType, bytes: data.count)
        try JSONEncoder().encode(upload).write(to: metadataURL(id), options: .atomic)
        guard rename(staging.path, fileURL(id).path) == 0 else {
            throw ServerError("could not store the upload: \(String(cString: strerror(errno)))")
        }
        return upload
    }

    /// The upload with this id, nil when there is none; with a shared blob store, fetched from it into the
    /// local folder when this node has not seen it yet.
    func find(_ id: String) async throws -> Upload? {
        if let local = try findLocally(id) { return local }
        guard let shared, Self.isValidID(id), let metadata = try await shared.get("uploads/\(id).json"),
              let image = try await shared.get("uploads/\(id)") else { return nil }
        let staging = directory.appendingPathComponent(".incoming-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: staging) }
        try image.bytes.write(to: staging)
        try metadata.bytes.write(to: metadataURL(id), options: .atomic)
        guard rename(staging.path, fileURL(id).path) == 0 else {
            throw ServerError("could not store the upload \(id) fetched from the shared store: \(String(cString: strerror(errno)))")
        }
        return try findLocally(id)
    }

    private func findLocally(_ id: String) throws -> Upload? {
        guard Self.isValidID(id), FileManager.default.fileExists(atPath: fileURL(id).path),
              let data = FileManager.default.contents(atPath: metadataURL(id).path) else { return nil }
        return try JSONDecoder().decode(Upload.self, from: data)
    }

    func fileURL(_ id: String) -> URL { directory.appendingPathComponent(id) }
    private func metadataURL(_ id: String) -> URL { directory.appendingPathComponent(id + ".json") }

    /// The image type by its first bytes; nil for anything else (ffmpeg then never sees it).
    static func sniffType(_ data: Data) -> String? {
        let head = [UInt8](data.prefix(16))
        func starts(_ bytes: [UInt8], at offset: Int = 0) -> Bool {
            head.count >= offset + bytes.count && Array(head[offset..<offset + bytes.count]) == bytes
        }
        if starts([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]) { return "image/png" }
        if starts([0xFF, 0xD8, 0xFF]) { return "image/jpeg" }
        if starts(Array("RIFF".utf8)) && starts(Array("WEBP".utf8), at: 8) { return "image/webp" }
        if starts(Array("GIF87a".utf8)) || starts(Array("GIF89a".utf8)) { return "image/gif" }
        if starts(Array("BM".utf8)) { return "image/bmp" }
        if starts([0x49, 0x49, 0x2A, 0x00]) || starts([0x4D, 0x4D, 0x00, 0x2A]) { return "image/tiff" }
        return nil
    }
}
