import Foundation
import PostgresNIO

/// Files that every node must reach (uploaded images, finished outputs) when the nodes share no file system.
/// Keys are paths such as `uploads/<sha256>` or `outputs/<job id>/video.mp4`. Blobs are immutable: the first
/// `put` of a key wins, as when two attempts of one job (same parameters and seed) publish the same outputs.
public protocol BlobStore: Sendable {
    /// Stores `bytes` under `key` unless the key is already stored (then nothing changes).
    func put(_ key: String, contentType: String, bytes: Data) async throws
    /// Stores several blobs at once, all or none.
    func put(_ blobs: [(key: String, contentType: String, bytes: Data)]) async throws
    /// The blob under `key`, nil when there is none.
    func get(_ key: String) async throws -> (contentType: String, bytes: Data)?
    /// Removes every blob whose key starts with `prefix`.
    func removeAll(withPrefix prefix: String) async throws
}

/// Blobs in the job database's `kinema_blobs` table (bytea), reached through the store's connection pool.
public struct PostgresBlobStore: BlobStore {
    let store: PostgresJobStore

    public func put(_ key: String, contentType: String, bytes: Data) async throws {
        try await put([(key, contentType, bytes)])
    }

    public func put(_ blobs: [(key: String, contentType: String, bytes: Data)]) async throws {
        let rows = blobs.map { (key: $0.key, contentType: $0.contentType, bytes: $0.bytes) }
        try await store.transaction { connection in
            for blob in rows {
                _ = try await store.query("""
                    INSERT INTO kinema_blobs (key, content_type, bytes, created_at)
                    VALUES (\(blob.key), \(blob.contentType), \(blob.bytes), (extract(epoch FROM clock_timestamp()) * 1000)::bigint)
                    ON CONFLICT (key) DO NOTHING
                    """, on: connection)
            }
        }
    }

    public func get(_ key: String) async throws -> (contentType: String, bytes: Data)? {
        let found: [String: Data] = try await store.connection { connection in
            let rows = try await store.query("SELECT content_type, bytes FROM kinema_blobs WHERE key = \(key)", on: connection)
            guard let row = rows.first else { return [:] }
            let (type, bytes) = try row.decode((String, Data).self)
            return [type: bytes]
        }
        return found.first.map { (contentType: $0.key, bytes: $0.value) }
    }

    public func removeAll(withPrefix prefix: String) async throws {
        let pattern = prefix.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "%", with: "\\%")
            .replacingOccurrences(of: "_", with: "\\_") + "%"
        try await store.connection { connection in
            _ = try await store.query("DELETE FROM kinema_blobs WHERE key LIKE \(pattern)", on: connection)
        }
    }
}

extension PostgresJobStore {
    /// Blobs kept in this store's database.
    public var blobs: PostgresBlobStore { PostgresBlobStore(store: self) }
}
