import Foundation
import KinemaJobs
import Metrics
import Prometheus

/// The server's Prometheus metrics: its own job counters and gauges, plus Hummingbird's request metrics
/// (through swift-metrics, bootstrapped once per process onto the same registry).
final class ServerMetrics: @unchecked Sendable {
    let registry: PrometheusCollectorRegistry
    let jobsSubmitted: Prometheus.Counter
    let queueDepth: Prometheus.Gauge
    let running: Prometheus.Gauge
    let generationSeconds: Prometheus.ValueHistogram
    private let finishedLock = NSLock()
    private var finished: [String: Prometheus.Counter] = [:]

    private static let bootstrapLock = NSLock()
    private static var shared: PrometheusCollectorRegistry?

    init() {
        registry = Self.bootstrapLock.withLock {
            if let shared = Self.shared { return shared }
            let registry = PrometheusCollectorRegistry()
            MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
            Self.shared = registry
            return registry
        }
        func name(_ metric: String, _ unit: String, _ help: String) -> MetricNameDescriptor {
            MetricNameDescriptor(namespace: "kinema", metricName: metric, unitName: unit, helpText: help)
        }
        jobsSubmitted = registry.makeCounter(descriptor: name("jobs_submitted", "total", "Jobs accepted (202), retries included."))
        queueDepth = registry.makeGauge(descriptor: name("queue", "depth", "Jobs waiting in the queue."))
        running = registry.makeGauge(descriptor: name("jobs", "running", "Jobs this process's worker is running (0 or 1)."))
        generationSeconds = registry.makeValueHistogram(
            descriptor: name("generation", "seconds", "Wall time of successful generations, from claim to outputs in place."),
            buckets: [1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 3600])
    }

    func jobFinished(_ status: String) {
        let counter = finishedLock.withLock { () -> Prometheus.Counter in
            if let counter = finished[status] { return counter }
            let counter = registry.makeCounter(
                descriptor: MetricNameDescriptor(namespace: "kinema", metricName: "jobs_finished", unitName: "total",
                                                 helpText: "Jobs this process's worker finished, by final status."),
                labels: [("status", status)])
            finished[status] = counter
            return counter
        }
        counter.increment()
    }

    func text() -> String { registry.emitToString() }

    /// Per-worker gauges of the workers alive now, read from the store at each scrape (so a worker that
    /// stops disappears from them): free memory, whether it runs a job, and seconds since its last advert.
    static func workerText(_ workers: [WorkerRecord], now: Date) -> String {
        func label(_ value: String) -> String {
            value.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
                .replacingOccurrences(of: "\n", with: "\\n")
        }
        var lines = [
            "# HELP kinema_workers_alive Workers that advertised themselves within their lease.",
            "# TYPE kinema_workers_alive gauge",
            "kinema_workers_alive \(workers.count)",
        ]
        let gauges: [(String, String, (WorkerRecord) -> String)] = [
            ("kinema_worker_free_memory_bytes", "Memory the worker offers one generation (its budget, or free memory less the headroom).",
             { "\($0.advert.freeMemoryBytes)" }),
            ("kinema_worker_busy", "1 while the worker holds a job, else 0.", { $0.currentJob == nil ? "0" : "1" }),
            ("kinema_worker_heartbeat_age_seconds", "Seconds since the worker last advertised itself.",
             { String(format: "%.3f", max(0, now.timeIntervalSince($0.lastHeartbeat))) }),
        ]
        for (name, help, value) in gauges where !workers.isEmpty {
            lines.append("# HELP \(name) \(help)")
            lines.append("# TYPE \(name) gauge")
            for worker in workers {
                let labels = "worker=\"\(label(worker.advert.id))\",host=\"\(label(worker.advert.host))\",device=\"\(label(worker.advert.device))\""
                lines.append("\(name){\(labels)} \(value(worker))")
            }
        }
        return lines.joined(separator: "\n") + "\n"
    }
}
