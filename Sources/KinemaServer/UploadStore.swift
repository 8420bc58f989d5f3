import Foundation
import KinemaPipeline

/// Uploaded pictures, content-addressed: `uploads/<sha256>` holds the bytes as sent, `uploads/<sha256>.json`
/// their decoded size and type. A file is stored only after ffmpeg decoded it as an image.
struct UploadStore: Sendable {
    let directory: URL
    let limitBytes: Int

    struct Upload: Codable, Sendable {
        var imageID: String
        var width: Int
        var height: Int
        var contentType: String
        var bytes: Int

        var json: [String: Any] { ["image_id": imageID, "sha256": imageID, "width": width, "height": height] }
    }

    init(dataDirectory: URL, limitBytes: Int) throws {
        directory = dataDirectory.appendingPathComponent("uploads")
        self.limitBytes = limitBytes
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    }

    /// 64 lowercase hex digits: the only ids that ever reach the file system.
    static func isValidID(_ id: String) -> Bool {
        id.utf8.count == 64 && id.utf8.allSatisfy { (48...57).contains($0) || (97...102).contains($0) }
    }

    /// Stores `data` after decoding it, or answers why not (413 too large, 415 not an image).
    func store(_ data: Data) throws -> Upload {
        guard data.count <= limitBytes else {
            throw APIError(.contentTooLarge, "too_large", "the upload is \(data.count) bytes; the limit is \(limitBytes)")
        }
        guard !data.isEmpty else { throw APIError(.unsupportedMediaType, "not_an_image", "the upload is empty") }
        let id = SHA256.hex(data)
        if let existing = try? find(id) { return existing }
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

    /// The upload with this id, nil when there is none.
    func find(_ id: String) throws -> Upload? {
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
