import Foundation
import KinemaJobs

/// Finished outputs live in `outputs/<job id>/`; a run writes into `outputs/.partial/<job id>-<attempt>/`
/// and the folder is renamed into place only when everything in it is complete.
///
/// With a `shared` blob store (several nodes, no shared file system) publishing stores every file there
/// before the job is completed, and `outputs/<job id>/` becomes a local cache that an API node fills from the
/// blob store on the first request for one of the job's files.
struct OutputStore: Sendable {
    let root: URL
    let partialRoot: URL
    let shared: (any BlobStore)?

    /// The files a finished job has, and their types.
    static let files: [String: String] = [
        "video.mp4": "video/mp4", "preview.gif": "image/gif", "preview.webp": "image/webp",
        "poster.png": "image/png", "params.json": "application/json",
    ]
    static let fileOrder = ["video.mp4", "preview.gif", "preview.webp", "poster.png", "params.json"]

    init(dataDirectory: URL, shared: (any BlobStore)? = nil) throws {
        root = dataDirectory.appendingPathComponent("outputs")
        partialRoot = root.appendingPathComponent(".partial")
        self.shared = shared
        try FileManager.default.createDirectory(at: partialRoot, withIntermediateDirectories: true)
    }

    /// Job ids are lowercase UUIDs; nothing else names a folder.
    static func isValidJobID(_ id: String) -> Bool {
        UUID(uuidString: id) != nil && id == id.lowercased() && id.utf8.count == 36
    }

    func folder(_ id: String) -> URL { root.appendingPathComponent(id) }

    /// A fresh folder for this attempt's files; other attempts' leftovers of the same job are removed.
    func prepare(_ id: String, attempt: Int) throws -> URL {
        removePartials(of: id)
        let folder = partialRoot.appendingPathComponent("\(id)-\(attempt)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        return folder
    }

    /// Moves a complete partial folder into place (with a shared blob store: stores its files there first).
    /// Existing outputs (published by an earlier attempt of the same parameters and seed) are kept and these
    /// dropped.
    func publish(_ partial: URL, id: String) async throws {
        if let shared {
            let blobs = try Self.fileOrder.map { name in
                (key: "outputs/\(id)/\(name)", contentType: Self.files[name]!, bytes: try Data(contentsOf: partial.appendingPathComponent(name)))
            }
            try await shared.put(blobs)
        }
        let target = folder(id)
        if rename(partial.path, target.path) != 0 {
            let error = errno
            try? FileManager.default.removeItem(at: partial)
            guard error == ENOTEMPTY || error == EEXIST else {
                throw ServerError("could not move the outputs of job \(id) into place: \(String(cString: strerror(error)))")
            }
        }
    }

    /// The path of one output file, nil for a name that is not an output or a file that does not exist.
    /// With a shared blob store, a file this node does not have yet is fetched into the local cache.
    func file(_ id: String, _ name: String) async throws -> URL? {
        guard Self.isValidJobID(id), let type = Self.files[name] else { return nil }
        let url = folder(id).appendingPathComponent(name)
        if FileManager.default.fileExists(atPath: url.path) { return url }
        guard let shared, let blob = try await shared.get("outputs/\(id)/\(name)") else { return nil }
        // Written under a temporary name and renamed, so a concurrent reader never sees half a file.
        try FileManager.default.createDirectory(at: folder(id), withIntermediateDirectories: true)
        let staging = folder(id).appendingPathComponent(".\(name)-\(UUID().uuidString)")
        try blob.bytes.write(to: staging)
        guard rename(staging.path, url.path) == 0 else {
            try? FileManager.default.removeItem(at: staging)
            throw ServerError("could not cache output \(name) of job \(id) (\(type)): \(String(cString: strerror(errno)))")
        }
        return url
    }

    /// The output files a succeeded job has: all of them with a shared blob store (publishing stores every
    /// file before the job completes), else those in its local folder.
    func published(_ id: String) -> [String] {
        guard shared == nil else { return Self.fileOrder }
        return Self.fileOrder.filter { FileManager.default.fileExists(atPath: folder(id).appendingPathComponent($0).path) }
    }

    /// Removes a job's outputs (from the shared blob store too) and partial files.
    func remove(_ id: String) async {
        guard Self.isValidJobID(id) else { return }
        try? await shared?.removeAll(withPrefix: "outputs/\(id)/")
        try? FileManager.default.removeItem(at: folder(id))
        removePartials(of: id)
    }

    /// Removes one attempt's partial folder.
    func removePartials(of id: String, attempt: Int) {
        try? FileManager.default.removeItem(at: partialRoot.appendingPathComponent("\(id)-\(attempt)"))
    }

    func removePartials(of id: String) {
        for name in (try? FileManager.default.contentsOfDirectory(atPath: partialRoot.path)) ?? [] where name.hasPrefix(id + "-") {
            try? FileManager.default.removeItem(at: partialRoot.appendingPathComponent(name))
        }
    }

    /// Partial folders at start-up, as (job id, attempt), for the caller to drop those of runs that are over.
    func partials() -> [(id: String, attempt: Int, url: URL)] {
        ((try? FileManager.default.contentsOfDirectory(atPath: partialRoot.path)) ?? []).compactMap { name in
            guard let dash = name.lastIndex(of: "-"), let attempt = Int(name[name.index(after: dash)...]) else { return nil }
            return (String(name[..<dash]), attempt, partialRoot.appendingPathComponent(name))
        }
    }
}

/// What the job store keeps of a job: its resolved parameters and the plan chosen at submission.
struct JobRecord: Codable, Sendable {
    var params: JobParameters
    /// The plan's knobs as shown to clients, as JSON text (the worker plans again when it runs).
    var plan: String?

    init(params: JobParameters, plan: [String: Any]?) {
        self.params = params
        self.plan = plan.map { String(decoding: JSONBody.data($0), as: UTF8.self) }
    }

    var planObject: Any {
        plan.flatMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) } ?? NSNull()
    }

    static func decode(_ text: String) -> JobRecord? {
        try? JSONDecoder().decode(JobRecord.self, from: Data(text.utf8))
    }

    func encoded() -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        return String(decoding: (try? encoder.encode(self)) ?? Data(), as: UTF8.self)
    }
}
