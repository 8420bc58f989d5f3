import Foundation
import Hummingbird
import KinemaJobs
import HTTPTypes
import NIOCore
import ServiceLifecycle

/// `GET /api/v1/jobs/{id}/events`: server-sent events from the job store, so that any API process can
/// serve them. Event ids are derived from the job's state (attempt, phase, step), so they only grow and
/// `Last-Event-ID` resumes after the last event a client saw, even on another process. A stream ends
/// when the server begins a graceful shutdown (clients reconnect to the next server).
enum EventStream {
    static let pollSeconds = 0.2
    /// A stream ends after this long (clients reconnect with Last-Event-ID), so no request lives forever.
    static let maximumSeconds: Double = 600

    static func response(for job: Job, request: Request, routes: APIRoutes) async throws -> Response {
        let lastSeen = (request.headers[HTTPTypes.HTTPField.Name("Last-Event-ID")!]).flatMap { Int64($0) } ?? -1
        let id = job.id
        let headers: HTTPFields = [.contentType: "text/event-stream", .cacheControl: "no-store", HTTPTypes.HTTPField.Name("X-Accel-Buffering")!: "no"]
        let body = ResponseBody { writer in
            var last = lastSeen
            var lastStatus: JobStatus?
            let started = Date()
            var current: Job? = job
            while let job = current, Date().timeIntervalSince(started) < maximumSeconds, !Task.isShuttingDownGracefully {
                for (eventID, name, payload) in events(job, routes: routes, lastStatus: lastStatus) where eventID > last {
                    try await writer.write(ByteBuffer(string: "id: \(eventID)\nevent: \(name)\ndata: \(payload)\n\n"))
                    last = eventID
                }
                lastStatus = job.status
                if job.status.isFinished { break }
                // A store that announces changes (PostgreSQL: whichever node wrote them) wakes the stream at
                // once, and the cached status is then stale; otherwise this is a poll.
                if await routes.parts.store.waitForChange(of: id, timeout: routes.parts.store.announcesChanges ? 2 : pollSeconds) {
                    routes.statusCache.remove(id)
                }
                try Task.checkCancellation()
                current = try await routes.recentJob(id)?.job
                if current == nil {
                    let gone = String(decoding: JSONBody.data(APIError.notFound("job with id \(id) (it was deleted)").body), as: UTF8.self)
                    try await writer.write(ByteBuffer(string: "id: \(Int64.max)\nevent: error\ndata: \(gone)\n\n"))
                }
            }
            try await writer.finish(nil)
        }
        return Response(status: .ok, headers: headers, body: body)
    }

    /// The events that describe `job` now, each with its id.
    static func events(_ job: Job, routes: APIRoutes, lastStatus: JobStatus?) -> [(Int64, String, String)] {
        func text(_ object: Any) -> String { String(decoding: JSONBody.data(object), as: UTF8.self) }
        let base = Int64(job.attempt) * 10_000_000
        switch job.status {
        case .queued:
            return [(base + 1, "status", text(routes.jobJSON(job)))]
        case .running:
            var events = [(base + 2, "status", text(routes.jobJSON(job)))]
            if let phase = job.progress.phase {
                let phases = JobPhase.allCases
                let rank = Int64(phases.firstIndex(of: phase) ?? 0) + 1
                let position = base + 10 + rank * 1_000_000 / Int64(phases.count + 1) + Int64(min(job.progress.step ?? 0, 99_999))
                let progress: [String: Any] = [
                    "phase": phase.rawValue, "step": job.progress.step as Any? ?? NSNull(),
                    "total_steps": job.progress.totalSteps as Any? ?? NSNull(),
                    "progress": job.progress.progress as Any? ?? NSNull(), "eta_s": job.progress.etaSeconds as Any? ?? NSNull(),
                ]
                events.append((position, "progress", text(progress)))
            }
            return events
        case .succeeded, .failed, .cancelled:
            return [(base + 9_999_999, "done", text(routes.jobJSON(job)))]
        }
    }
}
