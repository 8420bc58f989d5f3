import Foundation
import PostgresNIO

/// A PostgreSQL connection URL as libpq writes it: `postgres://user:password@host:5432/db?sslmode=disable`.
/// A `host` query parameter that starts with `/` names a Unix socket folder instead of a TCP host.
public struct PostgresURL: Sendable, Equatable, CustomStringConvertible {
    /// TLS as libpq's `sslmode` says: `disable`, `prefer` (the default) or `require`.
    public enum TLSMode: String, Sendable { case disable, prefer, require }

    public var host: String
    public var port: Int
    public var username: String
    public var password: String?
    public var database: String
    public var tls: TLSMode
    /// The folder of the server's Unix socket, when connecting through one.
    public var socketFolder: String?

    /// Whether `text` is meant as a PostgreSQL URL (rather than a file path).
    public static func looksLikeURL(_ text: String) -> Bool {
        text.hasPrefix("postgres://") || text.hasPrefix("postgresql://")
    }

    /// Parses `text`, or says what is wrong with it.
    public init(_ text: String) throws {
        guard Self.looksLikeURL(text), let components = URLComponents(string: text) else {
            throw JobStoreError.invalidStoreURL(text: Self.redacted(text), reason: "expected postgres://user[:password]@host[:port]/database[?sslmode=disable]")
        }
        let query = Dictionary((components.queryItems ?? []).map { ($0.name, $0.value ?? "") }, uniquingKeysWith: { $1 })
        for name in query.keys where !["sslmode", "host"].contains(name) {
            throw JobStoreError.invalidStoreURL(text: Self.redacted(text), reason: "unknown parameter '\(name)' (known: sslmode, host)")
        }
        let mode = query["sslmode"] ?? "prefer"
        switch mode {
        case "disable", "allow": tls = .disable
        case "prefer": tls = .prefer
        case "require", "verify-ca", "verify-full": tls = .require
        default: throw JobStoreError.invalidStoreURL(text: Self.redacted(text), reason: "sslmode must be disable, prefer or require, not '\(mode)'")
        }
        socketFolder = query["host"].flatMap { $0.hasPrefix("/") ? $0 : nil }
        host = components.host.flatMap { $0.isEmpty ? nil : $0 } ?? "localhost"
        port = components.port ?? 5432
        username = components.user.flatMap { $0.removingPercentEncoding } ?? ProcessInfo.processInfo.environment["USER"] ?? "postgres"
        password = components.password.flatMap { $0.removingPercentEncoding }
        let path = components.path.hasPrefix("/") ? String(components.path.dropFirst()) : components.path
        database = path.isEmpty ? username : (path.removingPercentEncoding ?? path)
    }

    /// The URL without its password, for messages and logs.
    public var description: String {
        let user = username.addingPercentEncoding(withAllowedCharacters: .urlUserAllowed) ?? username
        var text = "postgres://\(user)@\(host):\(port)/\(database)?sslmode=\(tls.rawValue)"
        if let socketFolder { text += "&host=\(socketFolder)" }
        return text
    }

    /// The same server with another database (tests make a database per test).
    public func with(database: String) -> PostgresURL {
        var copy = self
        copy.database = database
        return copy
    }

    /// The pool configuration postgres-nio needs.
    var clientConfiguration: PostgresClient.Configuration {
        var configuration: PostgresClient.Configuration
        if let socketFolder {
            configuration = .init(unixSocketPath: "\(socketFolder)/.s.PGSQL.\(port)", username: username, password: password, database: database)
        } else {
            let tls: PostgresClient.Configuration.TLS
            switch self.tls {
            case .disable: tls = .disable
            case .prefer: tls = .prefer(.makeClientConfiguration())
            case .require: tls = .require(.makeClientConfiguration())
            }
            configuration = .init(host: host, port: port, username: username, password: password, database: database, tls: tls)
        }
        configuration.options.connectTimeout = .seconds(5)
        configuration.options.keepAliveBehavior = .init(frequency: .seconds(10))
        return configuration
    }

    /// `text` with any password replaced by `***`.
    static func redacted(_ text: String) -> String {
        guard var components = URLComponents(string: text), components.password != nil else { return text }
        components.password = "***"
        return components.string ?? text
    }
}
