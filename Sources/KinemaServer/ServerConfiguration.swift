import Foundation
import KinemaJobs

/// The device a worker runs generations on. A plain enum so that each backend adds its case (`cuda:N`, ...).
public enum ComputeDevice: Sendable, Equatable, CustomStringConvertible {
    /// The CPU backend (OpenBLAS).
    case cpu

    /// The devices this build can run on, as `--device` spells them.
    public static let supported = ["cpu"]

    /// Reads a `--device` value.
    public init(parsing text: String) throws {
        switch text.lowercased() {
        case "cpu": self = .cpu
        default: throw ServerError("--device \(text) is not a device this build can run on; use one of: \(Self.supported.joined(separator: ", "))")
        }
    }

    public var description: String {
        switch self {
        case .cpu: return "cpu"
        }
    }
}

/// Everything `kinema serve` and `kinema worker` are told on their command lines.
public struct ServerConfiguration: Sendable {
    /// The address to bind; anything but loopback needs `apiToken` or `insecure`.
    public var host = "127.0.0.1"
    public var port = 7860
    /// The models offered, by name; the first is the default.
    public var models: [ServedModel]
    /// Jobs database, uploads and outputs live here.
    public var dataDirectory: String
    /// The most memory a generation may plan for ("6GiB", "auto"), nil for no limit.
    public var memoryBudget: String?
    /// What `auto` leaves free.
    public var memoryHeadroom = "512MiB"
    /// When set, every API request needs `Authorization: Bearer <token>`.
    public var apiToken: String?
    /// Allows binding beyond loopback without a token.
    public var insecure = false
    /// Largest accepted upload.
    public var uploadLimitBytes = 20 * 1024 * 1024
    /// Queued jobs allowed before submissions get 429.
    public var queueLimit = 100
    /// How long a worker's claim on a job lasts without a heartbeat.
    public var leaseSeconds = 30.0
    /// CPU threads for generation (nil: one per core).
    public var threads: Int?
    /// Whether this process runs a worker (a server with no worker only queues).
    public var runsWorker = true
    /// Whether this process serves the WebUI and the API (`kinema worker` does not).
    public var servesAPI = true
    /// The shared job store, a PostgreSQL URL; nil for the SQLite database in the data directory. With a
    /// URL, uploads and outputs are kept in the database too, so nodes need no shared file system.
    public var storeURL: String?
    /// The device the worker generates on.
    public var device = ComputeDevice.cpu
    /// The worker's name in leases; two processes on one database need different ones (default host/device/pid).
    public var workerID: String?

    /// The worker's name in leases.
    public var resolvedWorkerID: String { workerID ?? "\(ProcessInfo.processInfo.hostName)/\(device)/\(getpid())" }

    public init(models: [ServedModel], dataDirectory: String) {
        self.models = models
        self.dataDirectory = dataDirectory
    }

    /// Whether `host` is a loopback address.
    public var bindsLoopbackOnly: Bool {
        ["127.0.0.1", "localhost", "::1", "[::1]"].contains(host) || host.hasPrefix("127.")
    }

    /// Refuses a configuration that would expose the API without a token.
    public func validate() throws {
        guard !models.isEmpty else { throw ServerError("no model to serve: pass --model DIR") }
        guard (0...65535).contains(port) else { throw ServerError("--port must be between 0 (any free port) and 65535") }
        if !bindsLoopbackOnly && apiToken == nil && !insecure {
            throw ServerError("binding \(host) exposes the API beyond this machine: pass --api-token TOKEN "
                + "(clients send 'Authorization: Bearer TOKEN'), or --insecure to allow anyone on the network")
        }
        if let apiToken, apiToken.count < 8 { throw ServerError("--api-token must be at least 8 characters") }
        guard leaseSeconds >= 1 else { throw ServerError("--lease-seconds must be at least 1") }
        guard uploadLimitBytes > 0, queueLimit > 0 else { throw ServerError("limits must be positive") }
        if let storeURL, !PostgresURL.looksLikeURL(storeURL) {
            throw ServerError("--store takes a PostgreSQL URL such as postgres://kinema@db-host:5432/kinema?sslmode=disable, not '\(storeURL)'; "
                + "leave it out to keep jobs in the SQLite database of the data directory")
        }
        guard servesAPI || runsWorker else { throw ServerError("this process would neither serve the API nor run jobs") }
    }
}

/// A model folder offered under a name.
public struct ServedModel: Sendable, Equatable {
    public var name: String
    public var folder: String

    public init(name: String, folder: String) {
        self.name = name
        self.folder = folder
    }

    /// A model named after its folder.
    public init(folder: String) {
        let url = URL(fileURLWithPath: folder).standardizedFileURL
        self.init(name: url.lastPathComponent, folder: url.path)
    }
}

/// A configuration or start-up problem, shown to the operator as is.
public struct ServerError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// The pieces of a running server that the API routes and the worker share.
struct ServerParts: Sendable {
    let store: any JobStore
    let catalog: ModelCatalog
    let uploads: UploadStore
    let outputs: OutputStore
    let planner: PlanService
    let timing: TimingModel
    let metrics: ServerMetrics
    let configuration: ServerConfiguration
}
