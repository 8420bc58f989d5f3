import Foundation
import Hummingbird
import KinemaCPU
import KinemaCore
import KinemaJobs
import KinemaPipeline
import Logging
import ServiceLifecycle

/// `kinema serve` and `kinema worker`: the WebUI at `/`, the API under `/api/v1`, and a worker running the
/// queue, in one process (the single-machine default) or split into API nodes and workers sharing a
/// PostgreSQL store.
public enum KinemaServer {
    public static var version: String { kinemaVersion }

    /// Runs until SIGINT or SIGTERM; the running job then stops at its next step and is re-queued.
    public static func run(_ configuration: ServerConfiguration, logger: Logger) async throws {
        try configuration.validate()
        let data = URL(fileURLWithPath: configuration.dataDirectory).standardizedFileURL
        do { try FileManager.default.createDirectory(at: data, withIntermediateDirectories: true) } catch {
            throw ServerError("cannot use the data directory \(data.path): \(error.localizedDescription)")
        }
        let catalog = try ModelCatalog(configuration.models)
        let (store, blobs) = try await openStore(configuration, data: data, logger: logger)
        do {
            try await serve(configuration, data: data, catalog: catalog, store: store, blobs: blobs, logger: logger)
        } catch {
            try? await store.close()
            throw error
        }
        try? await store.close()
    }

    /// The SQLite database in the data directory, or the PostgreSQL server of `--store` with its blob store.
    static func openStore(_ configuration: ServerConfiguration, data: URL, logger: Logger) async throws -> (any JobStore, (any BlobStore)?) {
        guard let text = configuration.storeURL else {
            let store = try await SQLiteJobStore.open(path: data.appendingPathComponent("jobs.sqlite3").path, queueLimit: configuration.queueLimit)
            return (store, nil)
        }
        var postgresLogger = logger
        postgresLogger.logLevel = max(logger.logLevel, .warning)  // the pool logs every reconnection attempt at info
        let store = try await PostgresJobStore.open(url: try PostgresURL(text), queueLimit: configuration.queueLimit, logger: postgresLogger)
        return (store, store.blobs)
    }

    private static func serve(_ configuration: ServerConfiguration, data: URL, catalog: ModelCatalog, store: any JobStore,
                              blobs: (any BlobStore)?, logger: Logger) async throws {
        let uploads = try UploadStore(dataDirectory: data, limitBytes: configuration.uploadLimitBytes, shared: blobs)
        let outputs = try OutputStore(dataDirectory: data, shared: blobs)
        try await dropFinishedPartials(outputs, store: store)
        let backend = CPUBackend(threads: configuration.threads)
        let planner = try PlanService(catalog: catalog, serverBudget: configuration.memoryBudget, headroom: configuration.memoryHeadroom,
                                      workspacePolicy: backend.workspacePolicy, threads: backend.threads)
        let timing = TimingModel(dataDirectory: data)
        let metrics = ServerMetrics()
        let parts = ServerParts(store: store, catalog: catalog, uploads: uploads, outputs: outputs, planner: planner,
                                timing: timing, metrics: metrics, configuration: configuration)
        let storeName = configuration.storeURL.flatMap { try? PostgresURL($0).description } ?? "the SQLite database in \(data.path)"

        var services: [any Service] = []
        if configuration.runsWorker {
            services.append(JobWorker(parts: parts, backend: backend, logger: logger))
        }
        guard configuration.servesAPI else {
            logger.notice("Kinema \(version) worker \(configuration.resolvedWorkerID) is running jobs from \(storeName) on the \(configuration.device) with \(catalog.models.map(\.name).joined(separator: ", "))")
            let group = ServiceGroup(configuration: .init(services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
            try await group.run()
            return
        }

        let routes = APIRoutes(parts: parts)
        let router = Router()
        router.add(middleware: ErrorMiddleware())
        router.add(middleware: MetricsMiddleware())
        if let token = configuration.apiToken { router.add(middleware: TokenMiddleware(token: token)) }
        routes.register(on: router)
        Site(routes: routes, logger: logger).register(on: router)
        router.add(middleware: MethodNotAllowedMiddleware(routes: RouteTable(router)))

        let host = configuration.host, port = configuration.port
        let role = configuration.runsWorker ? "" : " (API only: workers run the jobs)"
        let app = Application(
            router: router,
            configuration: .init(address: .hostname(host, port: port), serverName: "Kinema"),
            services: services,
            onServerRunning: { channel in
                let shown = host == "0.0.0.0" || host == "::" ? "127.0.0.1" : host
                logger.notice("Kinema \(version) is serving \(catalog.models.map(\.name).joined(separator: ", ")) at http://\(shown):\(channel.localAddress?.port ?? port)/ with jobs in \(storeName)\(role)")
            },
            logger: logger)
        try await app.runService()
    }

    /// Partial folders of runs that are over (the job finished, was deleted, or is queued again) are removed
    /// at start; a running job's folder goes when its next attempt starts.
    static func dropFinishedPartials(_ outputs: OutputStore, store: any JobStore) async throws {
        for partial in outputs.partials() {
            let job = try await store.get(id: partial.id)
            if job == nil || job!.status != .running || job!.attempt != partial.attempt {
                try? FileManager.default.removeItem(at: partial.url)
            }
        }
    }
}

/// The WebUI's files, the OpenAPI document, health, readiness and metrics.
struct Site: Sendable {
    let routes: APIRoutes
    let logger: Logger

    static let types = ["html": "text/html; charset=utf-8", "js": "text/javascript; charset=utf-8", "css": "text/css; charset=utf-8",
                        "svg": "image/svg+xml", "png": "image/png", "ico": "image/x-icon", "json": "application/json",
                        "yaml": "application/yaml; charset=utf-8"]

    /// The WebUI's folder in this build's resources, nil when it or its index.html is missing.
    static var webui: URL? {
        guard let folder = Bundle.module.url(forResource: "webui", withExtension: nil),
              FileManager.default.fileExists(atPath: folder.appendingPathComponent("index.html").path) else { return nil }
        return folder
    }

    func register(on router: Router<BasicRequestContext>) {
        router.get("/") { request, _ in try staticFile("index.html", request: request) }
        router.get("ui/:file") { request, context in try staticFile(context.parameters.get("file") ?? "", request: request) }
        router.get("openapi.yaml") { request, _ in
            guard let url = Bundle.module.url(forResource: "openapi", withExtension: "yaml") else { throw APIError.notFound("OpenAPI document in this build") }
            return try FileResponse.make(url, contentType: Self.types["yaml"]!, request: request, cacheControl: "no-cache")
        }
        router.get("healthz") { _, _ in JSONBody.response(["status": "ok"]) }
        router.get("readyz") { _, _ in await readiness() }
        router.get("metrics") { _, _ in
            if let depth = try? await routes.parts.store.queueDepth() { routes.parts.metrics.queueDepth.set(Double(depth)) }
            let workers = (try? await routes.parts.store.workers()) ?? []
            let text = routes.parts.metrics.text() + ServerMetrics.workerText(workers, now: Date())
            return Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                            body: ResponseBody(byteBuffer: ByteBuffer(string: text)))
        }
    }

    func staticFile(_ name: String, request: Request) throws -> Response {
        let allowed = CharacterSet(charactersIn: "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")
        guard !name.isEmpty, !name.hasPrefix("."), name.unicodeScalars.allSatisfy(allowed.contains),
              let folder = Self.webui, let type = Self.types[(name as NSString).pathExtension.lowercased()] else {
            throw APIError.notFound("file named \(name)")
        }
        let url = folder.appendingPathComponent(name)
        guard FileManager.default.fileExists(atPath: url.path) else { throw APIError.notFound("file named \(name)") }
        return try FileResponse.make(url, contentType: type, request: request, cacheControl: "no-cache")
    }

    /// Ready when the store answers, ffmpeg is installed and every model folder is readable.
    func readiness() async -> Response {
        var checks: [String: Any] = [:]
        do { _ = try await routes.parts.store.queueDepth(); checks["store"] = "ok" } catch { checks["store"] = "\(error)" }
        do { _ = try FFmpeg.executable(); checks["ffmpeg"] = "ok" } catch { checks["ffmpeg"] = "\(error)" }
        for model in routes.parts.catalog.models {
            let index = (model.folder as NSString).appendingPathComponent("model_index.json")
            checks["model:\(model.name)"] = FileManager.default.isReadableFile(atPath: index) ? "ok" : "cannot read \(index)"
        }
        checks["webui"] = Self.webui != nil ? "ok" : "the WebUI files are missing from this build"
        let ready = checks.values.allSatisfy { ($0 as? String) == "ok" }
        return JSONBody.response(["status": ready ? "ready" : "not_ready", "checks": checks], status: ready ? .ok : .serviceUnavailable)
    }
}
