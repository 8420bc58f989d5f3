import ArgumentParser
import Foundation
import KinemaServer

struct Worker: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run jobs from a shared PostgreSQL queue on one device.",
        discussion: """
            A worker claims jobs from the PostgreSQL store that `kinema serve --store URL` API nodes \
            submit to, runs them on its device and stores the outputs in the same database, so it \
            needs no file system shared with the API nodes. Run one worker per device, on any \
            number of machines. A worker holds a lease on its job and renews it; when a worker dies, \
            another takes the job up once the lease lapses (--lease-seconds). SIGTERM or SIGINT stops \
            the running job at its next step and hands it back to the queue.

            On each heartbeat the worker advertises its device and the memory it offers one \
            generation (--memory-budget, else the free memory less --memory-headroom); it claims \
            only jobs whose plan fits, leaving bigger ones to workers with more memory. \
            GET /api/v1/system on any API node lists the workers alive now.

            Examples:
              kinema worker --store postgres://kinema@db:5432/kinema --device cpu
              kinema worker --store "$KINEMA_STORE" --model ~/i2vgen-xl --memory-budget 20GiB
            """
    )

    @Option(help: ArgumentHelp("The PostgreSQL URL the API nodes use (default: $KINEMA_STORE).", valueName: "url"))
    var store: String?

    @Option(help: "The device to run on: \(ComputeDevice.supported.joined(separator: ", ")).")
    var device = "cpu"

    @Option(help: "A diffusers model folder; it must be the model the API nodes serve, under the same folder name (default: as for generate).")
    var model: String?

    @Option(help: "A local folder for cached images and partial outputs (default: $KINEMA_DATA, else ~/.local/share/kinema).")
    var dataDir: String?

    @Option(help: "Most memory one generation may plan for, e.g. 6GiB or auto; advertised for placement (default: the free memory less the headroom).")
    var memoryBudget: String?

    @Option(help: "What --memory-budget auto leaves free.")
    var memoryHeadroom = "512MiB"

    @Option(help: "Seconds this worker's claim on a job lasts without a heartbeat.")
    var leaseSeconds = 30.0

    @Option(help: "CPU worker threads for generation (default: one per core).")
    var threads: Int?

    @Option(help: "This worker's name in job leases (default: host/device/pid).")
    var workerID: String?

    @Option(help: "Log level: trace, debug, info, notice, warning, error.")
    var logLevel = "info"

    func run() throws {
        guard let url = sharedStoreURL(store) else {
            throw CLIError("a worker needs the shared store: pass --store postgres://user@host:5432/db (or set KINEMA_STORE)")
        }
        let folder = try ModelLocator.resolve(model)
        var configuration = ServerConfiguration(models: [ServedModel(folder: folder)], dataDirectory: DataDirectory.resolve(dataDir))
        configuration.storeURL = url
        configuration.device = try ComputeDevice(parsing: device)
        configuration.servesAPI = false
        configuration.runsWorker = true
        configuration.memoryBudget = memoryBudget
        configuration.memoryHeadroom = memoryHeadroom
        configuration.leaseSeconds = leaseSeconds
        configuration.threads = threads
        configuration.workerID = workerID
        if let threads, threads < 1 { throw CLIError("--threads must be at least 1") }
        try runServer(configuration, logLevel: logLevel)
    }
}
