import Hummingbird
import HTTPTypes

/// The server's routes as path templates with their methods, so that a request whose path exists
/// under other methods gets 405 and an `Allow` header instead of the router's 404.
struct RouteTable: Sendable {
    private struct Entry: Sendable {
        /// nil = a captured parameter, else the literal segment
        let segments: [String?]
        var methods: [HTTPRequest.Method]
    }

    private let entries: [Entry]

    /// The routes registered on `router`.
    init(_ router: Router<BasicRequestContext>) {
        var entries: [Entry] = []
        for route in router.routes {
            // Hummingbird writes a captured parameter as `{id}`
            let segments: [String?] = route.path.description.split(separator: "/").map {
                $0.hasPrefix("{") && $0.hasSuffix("}") || $0.hasPrefix(":") ? nil : String($0)
            }
            if let index = entries.firstIndex(where: { $0.segments == segments }) {
                entries[index].methods.append(route.method)
            } else {
                entries.append(Entry(segments: segments, methods: [route.method]))
            }
        }
        self.entries = entries
    }

    /// The methods the route matching `path` answers, or nil when no route matches it. Like the
    /// router's trie, a literal segment wins over a parameter at the first place they differ.
    func methods(for path: String) -> [HTTPRequest.Method]? {
        let parts = path.split(separator: "/").map(String.init)
        let matching = entries.filter { entry in
            entry.segments.count == parts.count && zip(entry.segments, parts).allSatisfy { $0 == nil || $0 == $1 }
        }
        let best = matching.max { a, b in
            // a ranks below b where a has the parameter and b the literal
            for (x, y) in zip(a.segments, b.segments) where (x == nil) != (y == nil) { return x == nil }
            return false
        }
        return best?.methods.sorted { $0.rawValue < $1.rawValue }
    }
}

/// Added to the router after every route: Hummingbird then applies it only to requests no route
/// answered (its not-found responder is built from the middlewares present at the end). A path
/// that exists under other methods answers 405 with `Allow`; anything else goes on to the 404.
struct MethodNotAllowedMiddleware<Context: RequestContext>: RouterMiddleware {
    let routes: RouteTable

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard let allowed = routes.methods(for: request.uri.path), !allowed.contains(request.method) else {
            return try await next(request, context)
        }
        let list = allowed.map(\.rawValue).joined(separator: ", ")
        var response = APIError(.methodNotAllowed, "method_not_allowed",
                                "\(request.method.rawValue) is not allowed on \(request.uri.path); it answers \(list)").response()
        response.headers[.allow] = list
        return response
    }
}
