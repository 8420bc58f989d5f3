import Foundation
import Hummingbird
import NIOCore

/// An error answered to a client as `{"error": {"code", "message", "field"?}}` with its HTTP status.
struct APIError: Error, CustomStringConvertible {
    let status: HTTPResponse.Status
    let code: String
    let message: String
    var field: String?
    var headers: HTTPFields = [:]

    init(_ status: HTTPResponse.Status, _ code: String, _ message: String, field: String? = nil) {
        self.status = status
        self.code = code
        self.message = message
        self.field = field
    }

    var description: String { "\(status.code) \(code): \(message)" }

    static func notFound(_ what: String) -> APIError { APIError(.notFound, "not_found", "no \(what)") }

    static func invalid(_ field: String, _ message: String) -> APIError {
        APIError(.unprocessableContent, "invalid_value", message, field: field)
    }

    var body: [String: Any] {
        var error: [String: Any] = ["code": code, "message": message]
        if let field { error["field"] = field }
        return ["error": error]
    }

    func response() -> Response {
        var response = JSONBody.response(body, status: status)
        for field in headers { response.headers[field.name] = field.value }
        return response
    }
}

/// JSON responses from plain dictionaries (sorted keys, so answers are stable).
enum JSONBody {
    static func data(_ object: Any) -> Data {
        (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data("{}".utf8)
    }

    static func response(_ object: Any, status: HTTPResponse.Status = .ok, headers: HTTPFields = [:]) -> Response {
        response(bytes: data(object), status: status, headers: headers)
    }

    static func response(bytes: Data, status: HTTPResponse.Status = .ok, headers: HTTPFields = [:]) -> Response {
        var headers = headers
        headers[.contentType] = "application/json; charset=utf-8"
        headers[.cacheControl] = "no-store"
        return Response(status: status, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(data: bytes)))
    }
}

/// Turns every error a handler throws into the JSON error shape: `APIError`s as they are, Hummingbird's own
/// HTTP errors (unknown route, body too large) with their status, anything else as a logged 500.
struct ErrorMiddleware<Context: RequestContext>: RouterMiddleware {
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as APIError {
            return error.response()
        } catch let error as HTTPResponseError {
            let status = error.status
            let code: String
            switch status {
            case .notFound: code = "not_found"
            case .methodNotAllowed: code = "method_not_allowed"
            case .contentTooLarge: code = "too_large"
            default: code = status.code < 500 ? "bad_request" : "internal_error"
            }
            let message = status == .notFound ? "no such path: \(request.uri.path)" : status.reasonPhrase
            return APIError(status, code, message).response()
        } catch {
            context.logger.error("request \(request.method) \(request.uri.path) failed: \(error)")
            return APIError(.internalServerError, "internal_error", "the server failed to answer: \(error)").response()
        }
    }
}

/// Requires `Authorization: Bearer <token>` on the API when the server has a token. Server-sent event
/// streams may pass it as `?token=` instead, since browsers' EventSource cannot set headers.
struct TokenMiddleware<Context: RequestContext>: RouterMiddleware {
    let token: String

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let path = request.uri.path
        guard path.hasPrefix("/api/") || path == "/metrics" else { return try await next(request, context) }
        let header = request.headers[.authorization] ?? ""
        let given = header.hasPrefix("Bearer ") ? String(header.dropFirst("Bearer ".count))
            : (path.hasSuffix("/events") ? request.uri.queryParameters.get("token") : nil)
        guard let given, Self.constantTimeEqual(given, token) else {
            var error = APIError(.unauthorized, "unauthorized", "this server needs an API token: send 'Authorization: Bearer TOKEN'")
            error.headers[.wwwAuthenticate] = "Bearer"
            throw error
        }
        return try await next(request, context)
    }

    static func constantTimeEqual(_ a: String, _ b: String) -> Bool {
        let x = Array(a.utf8), y = Array(b.utf8)
        guard x.count == y.count else { return false }
        return zip(x, y).reduce(0) { $0 | ($1.0 ^ $1.1) } == 0
    }
}
