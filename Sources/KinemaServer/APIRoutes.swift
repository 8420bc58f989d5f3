import Foundation
import Hummingbird
import KinemaJobs
import KinemaPipeline
import HTTPTypes
import NIOCore

/// The handlers of `/api/v1`, as API.md describes them.
struct APIRoutes: Sendable {
    /// What the server is made of, shared with the worker.
    let parts: ServerParts
    let statusCache = StatusCache()

    static let jsonLimit = 64 * 1024
    static let idempotencyKeyLimit = 255

    func register(on router: Router<BasicRequestContext>) {
        let api = router.group("api/v1")
        api.post("uploads") { request, context in try await upload(request, context) }
        api.get("uploads/:image_id") { request, context in try await uploadedImage(request, context) }
        api.post("plan") { request, context in try await plan(request, context) }
        api.post("jobs") { request, context in try await submit(request, context) }
        api.get("jobs") { request, context in try await history(request, context) }
        api.get("jobs/:id") { _, context in try await jobStatus(context) }
        api.get("jobs/:id/events") { request, context in try await EventStream.response(for: try await job(context), request: request, routes: self) }
        api.post("jobs/:id/cancel") { _, context in try await cancel(context) }
        api.post("jobs/:id/retry") { _, context in try await retry(context) }
        api.delete("jobs/:id") { _, context in try await delete(context) }
        api.get("jobs/:id/:file") { request, context in try await outputFile(request, context) }
        api.get("capabilities") { _, _ in JSONBody.response(capabilities()) }
        api.get("system") { _, _ in try await system() }
    }

    // MARK: Uploads

    func upload(_ request: Request, _ context: BasicRequestContext) async throws -> Response {
        let (fields, image) = try await readForm(request, allowJSON: false)
        guard fields.isEmpty || image != nil else { throw APIError(.unprocessableContent, "missing_field", "send the picture in a field named 'file'", field: "file") }
        guard let image else { throw APIError(.unprocessableContent, "missing_field", "send the picture as the body or in a multipart field named 'file'", field: "file") }
        let stored = try await storeImage(image)
        return JSONBody.response(stored.json, status: .created, headers: [.location: "/api/v1/uploads/\(stored.imageID)"])
    }

    func storeImage(_ data: Data) async throws -> UploadStore.Upload {
        try await parts.uploads.store(data)
    }

    func uploadedImage(_ request: Request, _ context: BasicRequestContext) async throws -> Response {
        let id = context.parameters.get("image_id") ?? ""
        guard let upload = try await parts.uploads.find(id) else { throw APIError.notFound("upload with id \(id)") }
        return try FileResponse.make(parts.uploads.fileURL(id), contentType: upload.contentType, request: request)
    }

    // MARK: Plan and submit

    func plan(_ request: Request, _ context: BasicRequestContext) async throws -> Response {
        let fields = try JSONValue.object(from: try await body(request, limit: Self.jsonLimit))
        let params = try JobParameters.parse(fields, catalog: parts.catalog, requireImage: false)
        let outcome = try await parts.planner.plan(params)
        var answer = outcome.json(parameters: params, predictedSeconds: outcome.fits ? parts.timing.predict(outcome.effective(params)) : nil)
        if fields["seed"] == nil || fields["seed"] == .null, var shown = answer["params"] as? [String: Any] {
            shown["seed"] = NSNull()  // a job would draw its seed at submission
            answer["params"] = shown
        }
        return JSONBody.response(answer)
    }

    func submit(_ request: Request, _ context: BasicRequestContext) async throws -> Response {
        let key = request.headers[HTTPTypes.HTTPField.Name("Idempotency-Key")!]
        if let key, key.isEmpty || key.count > Self.idempotencyKeyLimit {
            throw APIError(.badRequest, "invalid_header", "Idempotency-Key must be 1 to \(Self.idempotencyKeyLimit) characters", field: "Idempotency-Key")
        }
        let raw = try await body(request, limit: parts.configuration.uploadLimitBytes + 1 << 20)
        var (fields, image) = try readForm(raw, contentType: request.headers[.contentType], allowJSON: true)
        // Idempotency compares content, not bytes: key order, spacing and multipart framing do not matter.
        let hash = key.map { _ in SHA256.hex(Data((JSONValue.object(fields).canonical + (image.map { SHA256.hex($0) } ?? "")).utf8)) }
        if let image {
            guard fields["image_id"] == nil else {
                throw APIError(.unprocessableContent, "invalid_value", "send either a file or an image_id, not both", field: "image_id")
            }
            fields["image_id"] = .string(try await storeImage(image).imageID)
        }
        let params = try JobParameters.parse(fields, catalog: parts.catalog, requireImage: true)
        guard try await parts.uploads.find(params.imageID!) != nil else {
            throw APIError(.notFound, "unknown_image", "no uploaded image has id \(params.imageID!); upload it to /api/v1/uploads first", field: "image_id")
        }
        var outcome = try await parts.planner.plan(params)
        guard outcome.fits else {
            throw APIError(.unprocessableContent, "does_not_fit", outcome.reason ?? "no plan fits the memory budget", field: "memory_budget")
        }
        outcome = try await place(params, outcome)
        let record = JobRecord(params: params, plan: outcome.planJSON)
        switch try await parts.store.submit(params: record.encoded(), seed: params.seed, idempotencyKey: key, requestHash: hash,
                                            requiredMemoryBytes: outcome.requiredBytes) {
        case .created(let job):
            parts.metrics.jobsSubmitted.increment()
            return accepted(job)
        case .replayed(let job):
            return accepted(job)
        case .conflict(let existing):
            throw APIError(.unprocessableContent, "idempotency_conflict",
                           "this Idempotency-Key was used for another request (job \(existing.id)); use a new key", field: "Idempotency-Key")
        case .queueFull(let limit):
            throw queueFull(limit)
        }
    }

    /// Checks a planned job against the workers alive now. With no worker registered yet the job waits in the
    /// queue; when none has the memory its smallest plan needs, it is refused with that figure, unless
    /// degrading is allowed and a degraded plan fits the largest worker (the job is then planned for it).
    func place(_ params: JobParameters, _ outcome: PlanOutcome) async throws -> PlanOutcome {
        guard let required = outcome.requiredBytes else { return outcome }
        let workers = try await parts.store.workers()
        guard let largest = workers.map(\.advert.freeMemoryBytes).max(), required > largest else { return outcome }
        if params.allowDegrade {
            let degraded = try await parts.planner.plan(params, workerBudget: largest)
            if degraded.fits { return degraded }
        }
        throw APIError(.unprocessableContent, "does_not_fit",
                       "this job needs a memory budget of at least \(gib(required)) (\(required) bytes), and no registered worker has that much: "
                       + "the largest offers \(gib(largest)) (\(largest) bytes) over \(workers.count) worker\(workers.count == 1 ? "" : "s"). "
                       + "Lower the resolution or frame count\(params.allowDegrade ? "" : ", allow degrading,") or add a worker with more memory",
                       field: "memory_budget")
    }

    func gib(_ bytes: Int) -> String { String(format: "%.2f GiB", Double(bytes) / Double(1 << 30)) }

    // MARK: Operations

    /// The workers alive now and the queue's depth.
    func system() async throws -> Response {
        let workers = try await parts.store.workers()
        let depth = try await parts.store.queueDepth()
        return JSONBody.response([
            "workers": workers.map { worker -> [String: Any] in
                ["id": worker.advert.id, "host": worker.advert.host, "device": worker.advert.device,
                 "free_memory_bytes": worker.advert.freeMemoryBytes,
                 "last_heartbeat": ISO8601DateFormatter.withFractions.string(from: worker.lastHeartbeat),
                 "current_job": worker.currentJob as Any? ?? NSNull()]
            },
            "queue_depth": depth,
        ])
    }

    func accepted(_ job: Job, extra: [String: Any] = [:]) -> Response {
        var object: [String: Any] = ["id": job.id, "status": job.status.rawValue, "queue_position": job.queuePosition as Any? ?? NSNull()]
        object.merge(extra) { $1 }
        return JSONBody.response(object, status: .accepted, headers: [.location: "/api/v1/jobs/\(job.id)"])
    }

    func queueFull(_ limit: Int) -> APIError {
        var error = APIError(.tooManyRequests, "queue_full", "the queue already holds \(limit) jobs; try again when some have run")
        error.headers[.retryAfter] = "10"
        return error
    }

    // MARK: Jobs

    func job(_ context: BasicRequestContext) async throws -> Job {
        let id = context.parameters.get("id") ?? ""
        guard OutputStore.isValidJobID(id), let job = try await parts.store.get(id: id) else { throw APIError.notFound("job with id \(id)") }
        return job
    }

    func jobJSON(_ job: Job) -> [String: Any] {
        let record = JobRecord.decode(job.params)
        var outputs: [String: String] = [:]
        if job.status == .succeeded {
            for name in parts.outputs.published(job.id) { outputs[name] = "/api/v1/jobs/\(job.id)/\(name)" }
        }
        var params = record?.params.json ?? [:]
        params["seed"] = job.seed
        func time(_ date: Date?) -> Any { date.map { ISO8601DateFormatter.withFractions.string(from: $0) } ?? NSNull() }
        let running = job.status == .running
        return [
            "id": job.id, "status": job.status.rawValue,
            "phase": running ? (job.progress.phase?.rawValue as Any? ?? NSNull()) : NSNull(),
            "step": running ? (job.progress.step as Any? ?? NSNull()) : NSNull(),
            "total_steps": running ? (job.progress.totalSteps as Any? ?? NSNull()) : NSNull(),
            "progress": job.status == .succeeded ? 1.0 : (running ? (job.progress.progress as Any? ?? NSNull()) : NSNull()),
            "eta_s": running ? (job.progress.etaSeconds as Any? ?? NSNull()) : NSNull(),
            "queue_position": job.queuePosition as Any? ?? NSNull(),
            "params": params, "seed": job.seed, "plan": record?.planObject ?? NSNull(), "attempt": job.attempt,
            "cancel_requested": job.cancelRequested, "error": job.error as Any? ?? NSNull(), "outputs": outputs,
            "created_at": time(job.createdAt), "started_at": time(job.startedAt), "finished_at": time(job.finishedAt),
            "retry_of": job.retryOf as Any? ?? NSNull(),
        ]
    }

    /// A job's status. Clients poll it (the WebUI, scripts, several times a second), so each answer is kept
    /// for `StatusCache.lifetime`: a poll costs a dictionary lookup, not a query and a JSON encoding, and a
    /// running generation keeps its CPU.
    func jobStatus(_ context: BasicRequestContext) async throws -> Response {
        let id = context.parameters.get("id") ?? ""
        guard let recent = try await recentJob(id) else { throw APIError.notFound("job with id \(id)") }
        return JSONBody.response(bytes: recent.bytes)
    }

    /// The job as read at most `StatusCache.lifetime` ago, with its JSON answer; nil when there is none.
    /// Status polls and event streams share it, so any number of watchers cost a few queries a second.
    func recentJob(_ id: String) async throws -> (job: Job, bytes: Data)? {
        guard OutputStore.isValidJobID(id) else { return nil }
        if let cached = statusCache.get(id) { return cached }
        guard let job = try await parts.store.get(id: id) else { return nil }
        let entry = (job: job, bytes: JSONBody.data(jobJSON(job)))
        statusCache.put(id, entry)
        return entry
    }

    func history(_ request: Request, _ context: BasicRequestContext) async throws -> Response {
        let query = request.uri.queryParameters
        let known: Set<String> = ["status", "cursor", "limit"]
        if let unknown = query.map({ String($0.key) }).first(where: { !known.contains($0) }) {
            throw APIError(.badRequest, "unknown_field", "unknown query parameter '\(unknown)'", field: unknown)
        }
        var status: JobStatus?
        if let text = query.get("status"), !text.isEmpty {
            guard let parsed = JobStatus(rawValue: text) else {
                throw APIError(.badRequest, "invalid_value", "status must be one of \(JobStatus.allCases.map(\.rawValue).joined(separator: ", "))", field: "status")
            }
            status = parsed
        }
        var limit = 20
        if let text = query.get("limit") {
            guard let value = Int(text), (1...100).contains(value) else {
                throw APIError(.badRequest, "out_of_range", "limit must be a whole number from 1 to 100", field: "limit")
            }
            limit = value
        }
        let cursor = query.get("cursor").flatMap { $0.isEmpty ? nil : $0 }
        let page: JobPage
        do { page = try await parts.store.list(status: status, cursor: cursor, limit: limit) } catch JobStoreError.invalidCursor {
            throw APIError(.badRequest, "invalid_cursor", "this cursor was not handed out by this server", field: "cursor")
        }
        return JSONBody.response(["jobs": page.jobs.map(jobJSON), "next_cursor": page.nextCursor as Any? ?? NSNull()])
    }

    func cancel(_ context: BasicRequestContext) async throws -> Response {
        let id = try await job(context).id
        let (job, how): (Job, String)
        defer { statusCache.remove(id) }
        switch try await parts.store.cancel(id: id) {
        case .cancelledAtOnce(let j): (job, how) = (j, "now")
        case .willStopAtNextStep(let j): (job, how) = (j, "at_next_step")
        case .alreadyFinished(let j): (job, how) = (j, "already_finished")
        case .notFound: throw APIError.notFound("job with id \(id)")
        }
        return JSONBody.response(["id": job.id, "status": job.status.rawValue, "cancelled": how])
    }

    func retry(_ context: BasicRequestContext) async throws -> Response {
        let id = try await job(context).id
        switch try await parts.store.retry(id: id) {
        case .created(let job):
            parts.metrics.jobsSubmitted.increment()
            return accepted(job, extra: ["retry_of": id])
        case .notFinished(let job):
            throw APIError(.conflict, "not_finished", "job \(id) is \(job.status.rawValue); only a finished job can be retried")
        case .queueFull(let limit): throw queueFull(limit)
        case .notFound: throw APIError.notFound("job with id \(id)")
        }
    }

    func delete(_ context: BasicRequestContext) async throws -> Response {
        let id = try await job(context).id
        defer { statusCache.remove(id) }
        guard try await parts.store.delete(id: id) != nil else { throw APIError.notFound("job with id \(id)") }
        await parts.outputs.remove(id)
        return Response(status: .noContent)
    }

    func outputFile(_ request: Request, _ context: BasicRequestContext) async throws -> Response {
        let job = try await job(context)
        let name = context.parameters.get("file") ?? ""
        guard let type = OutputStore.files[name] else {
            throw APIError.notFound("output named \(name); the outputs are \(OutputStore.fileOrder.joined(separator: ", "))")
        }
        guard job.status == .succeeded, let url = try await parts.outputs.file(job.id, name) else {
            throw APIError(.notFound, "not_found", "job \(job.id) has no \(name) (it is \(job.status.rawValue))")
        }
        return try FileResponse.make(url, contentType: type, request: request)
    }

    // MARK: Capabilities

    func capabilities() -> [String: Any] {
        [
            "version": KinemaServer.version, "default_model": parts.catalog.defaultModel?.name as Any? ?? NSNull(),
            "models": parts.catalog.models.map { model -> [String: Any] in
                ["name": model.name, "recommended": model.recommended.json, "ranges": model.ranges.json,
                 "presets": parts.catalog.presets(for: model).map(\.name)]
            },
            "presets": parts.catalog.defaultModel.map { parts.catalog.presets(for: $0).map(\.json) } ?? [],
            "ranges": parts.catalog.defaultModel?.ranges.json ?? ParameterRanges(model: ModelSettings()).json,
            "device": ["kind": "cpu", "threads": parts.planner.threads, "memory_bytes": Int(ProcessInfo.processInfo.physicalMemory)],
            "memory_budget": parts.configuration.memoryBudget as Any? ?? NSNull(),
            "upload_limit_bytes": parts.configuration.uploadLimitBytes, "queue_limit": parts.configuration.queueLimit,
        ]
    }

    // MARK: Bodies

    func body(_ request: Request, limit: Int) async throws -> Data {
        var request = request
        do {
            let buffer = try await request.collectBody(upTo: limit)
            return Data(buffer.readableBytesView)
        } catch let error as HTTPResponseError where error.status == .contentTooLarge {
            throw APIError(.contentTooLarge, "too_large", "the request body is larger than \(limit) bytes")
        }
    }

    /// The fields and image of a request: multipart (field `file` + form fields), a raw image body, or JSON.
    func readForm(_ request: Request, allowJSON: Bool) async throws -> ([String: JSONValue], Data?) {
        let raw = try await body(request, limit: parts.configuration.uploadLimitBytes + 1 << 20)
        return try readForm(raw, contentType: request.headers[.contentType], allowJSON: allowJSON)
    }

    func readForm(_ raw: Data, contentType: String?, allowJSON: Bool) throws -> ([String: JSONValue], Data?) {
        let type = (contentType ?? "").lowercased()
        if type.hasPrefix("multipart/form-data") {
            let form = try MultipartForm(body: raw, contentType: contentType ?? "")
            var fields: [String: JSONValue] = [:]
            for (name, value) in form.fields where name != "file" {
                fields[name] = MultipartForm.value(of: name, text: value)
            }
            return (fields, form.file)
        }
        if allowJSON && (type.hasPrefix("application/json") || type.isEmpty) {
            return (try JSONValue.object(from: raw), nil)
        }
        if !allowJSON {
            if raw.count > parts.configuration.uploadLimitBytes {
                throw APIError(.contentTooLarge, "too_large", "the upload is \(raw.count) bytes; the limit is \(parts.configuration.uploadLimitBytes)")
            }
            return ([:], raw)
        }
        throw APIError(.unsupportedMediaType, "unsupported_media_type", "send application/json or multipart/form-data")
    }
}

/// Recently read jobs and their status answers, by id, for a fraction of a second.
final class StatusCache: @unchecked Sendable {
    static let lifetime: TimeInterval = 0.25
    private let lock = NSLock()
    private var entries: [String: (time: Date, job: Job, bytes: Data)] = [:]

    func get(_ id: String) -> (job: Job, bytes: Data)? {
        lock.withLock {
            guard let entry = entries[id], Date().timeIntervalSince(entry.time) < Self.lifetime else { return nil }
            return (entry.job, entry.bytes)
        }
    }

    func put(_ id: String, _ entry: (job: Job, bytes: Data)) {
        lock.withLock {
            let now = Date()
            if entries.count > 1000 { entries = entries.filter { now.timeIntervalSince($0.value.time) < Self.lifetime } }
            entries[id] = (now, entry.job, entry.bytes)
        }
    }

    func remove(_ id: String) { _ = lock.withLock { entries.removeValue(forKey: id) } }
}

extension ISO8601DateFormatter {
    nonisolated(unsafe) static let withFractions: ISO8601DateFormatter = {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return formatter
    }()
}

/// A parsed multipart/form-data body (RFC 7578): text fields by name and the bytes of the `file` field.
/// Strict: a body that does not follow the format is a 400, never a crash.
struct MultipartForm {
    var fields: [String: String] = [:]
    var file: Data?

    static let stringFields: Set<String> = ["prompt", "negative_prompt", "model", "preset", "memory_budget", "image_id"]

    init(body: Data, contentType: String) throws {
        func invalid(_ why: String) -> APIError { APIError(.badRequest, "invalid_multipart", "the multipart body \(why)") }
        guard let boundary = contentType.split(separator: ";").map({ $0.trimmingCharacters(in: .whitespaces) })
            .first(where: { $0.lowercased().hasPrefix("boundary=") })
            .map({ String($0.dropFirst("boundary=".count)).trimmingCharacters(in: CharacterSet(charactersIn: "\"")) }),
            !boundary.isEmpty, boundary.utf8.count <= 70 else {
            throw APIError(.badRequest, "invalid_multipart", "multipart/form-data needs a boundary parameter of 1 to 70 characters")
        }
        let bytes = [UInt8](body)
        let delimiter = Array("--\(boundary)".utf8)
        let crlf: [UInt8] = [13, 10]
        guard var position = Self.find(delimiter, in: bytes, from: 0) else { throw invalid("has no boundary line") }
        position += delimiter.count
        while true {
            // After a delimiter: "--" ends the body; otherwise CRLF, then headers, a blank line and content.
            if bytes.count >= position + 2 && bytes[position] == 45 && bytes[position + 1] == 45 { break }
            guard bytes.count >= position + 2, Array(bytes[position..<position + 2]) == crlf else { throw invalid("has a malformed boundary line") }
            position += 2
            guard let headerEnd = Self.find([13, 10, 13, 10], in: bytes, from: position) else { throw invalid("has a part without headers") }
            guard let headerText = String(bytes: bytes[position..<headerEnd], encoding: .utf8) else { throw invalid("has part headers that are not UTF-8") }
            let contentStart = headerEnd + 4
            guard let next = Self.find(crlf + delimiter, in: bytes, from: contentStart) else { throw invalid("is not terminated by its boundary") }
            var name: String?
            for line in headerText.components(separatedBy: "\r\n") {
                let pieces = line.split(separator: ":", maxSplits: 1)
                guard pieces.count == 2, pieces[0].lowercased() == "content-disposition" else { continue }
                name = pieces[1].split(separator: ";").map { $0.trimmingCharacters(in: .whitespaces) }
                    .first { $0.hasPrefix("name=") }
                    .map { String($0.dropFirst(5)).trimmingCharacters(in: CharacterSet(charactersIn: "\"")) }
            }
            let content = Data(bytes[contentStart..<next])
            if let name {
                if name == "file" {
                    guard file == nil else { throw APIError(.unprocessableContent, "invalid_value", "send one file", field: "file") }
                    file = content
                } else {
                    guard let text = String(data: content, encoding: .utf8) else {
                        throw APIError(.unprocessableContent, "invalid_value", "\(name) is not UTF-8 text", field: name)
                    }
                    fields[name] = text
                }
            }
            position = next + 2 + delimiter.count
        }
    }

    /// The first index of `needle` in `haystack` at or after `start`.
    static func find(_ needle: [UInt8], in haystack: [UInt8], from start: Int) -> Int? {
        guard !needle.isEmpty, haystack.count >= needle.count, start <= haystack.count - needle.count else { return nil }
        let first = needle[0]
        var index = start
        while index <= haystack.count - needle.count {
            if haystack[index] == first && haystack[index..<index + needle.count].elementsEqual(needle) { return index }
            index += 1
        }
        return nil
    }

    /// A form field's text as the JSON value it stands for: text fields stay text; numbers and booleans are read.
    static func value(of name: String, text: String) -> JSONValue {
        if stringFields.contains(name) { return .string(text) }
        if text.isEmpty { return .null }
        if text == "true" || text == "false" { return .bool(text == "true") }
        if let integer = Int64(text) { return .integer(integer) }
        if let number = Double(text), number.isFinite { return .number(number) }
        return .string(text)
    }
}
