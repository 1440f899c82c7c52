// The original's metrics (kubernetes.md §3.1) on swift-prometheus, from the shims' cumulative
// values (decision 0008): every exported series equals what the shim reports for its container,
// so a reconnect or a manager restart neither loses nor double counts an observation.
import Prometheus
import Synchronization

/// One container's cumulative metrics as its shim reports them.
public struct ContainerMetricsSample: Sendable, Hashable {
    /// The containerd id.
    public var id: String
    /// Label `container`.
    public var container: String
    /// Label `pod`.
    public var pod: String
    /// Label `namespace`.
    public var namespace: String
    /// `zeropod_running`.
    public var running: Bool
    /// `zeropod_last_checkpoint_time` (unix nanoseconds), nil before the first checkpoint.
    public var lastCheckpointNanos: Int64?
    /// `zeropod_last_restore_time` (unix nanoseconds), nil before the first restore.
    public var lastRestoreNanos: Int64?
    /// `zeropod_checkpoint_duration_seconds`.
    public var checkpointDuration: CumulativeHistogram
    /// `zeropod_restore_duration_seconds`.
    public var restoreDuration: CumulativeHistogram
    /// `zeropod_checkpoint_errors_total`.
    public var checkpointErrors: UInt64
    /// `zeropod_restore_errors_total`.
    public var restoreErrors: UInt64
    /// `zeropod_dry_run_scale_downs_total`.
    public var dryRunScaleDowns: UInt64
    /// `zeropod_dry_run_would_restores_total`.
    public var dryRunWouldRestores: UInt64

    /// A sample from its fields.
    public init(
        id: String,
        container: String,
        pod: String,
        namespace: String,
        running: Bool,
        lastCheckpointNanos: Int64? = nil,
        lastRestoreNanos: Int64? = nil,
        checkpointDuration: CumulativeHistogram = CumulativeHistogram(empty: ZeropodMetrics.buckets),
        restoreDuration: CumulativeHistogram = CumulativeHistogram(empty: ZeropodMetrics.buckets),
        checkpointErrors: UInt64 = 0,
        restoreErrors: UInt64 = 0,
        dryRunScaleDowns: UInt64 = 0,
        dryRunWouldRestores: UInt64 = 0
    ) {
        self.id = id
        self.container = container
        self.pod = pod
        self.namespace = namespace
        self.running = running
        self.lastCheckpointNanos = lastCheckpointNanos
        self.lastRestoreNanos = lastRestoreNanos
        self.checkpointDuration = checkpointDuration
        self.restoreDuration = restoreDuration
        self.checkpointErrors = checkpointErrors
        self.restoreErrors = restoreErrors
        self.dryRunScaleDowns = dryRunScaleDowns
        self.dryRunWouldRestores = dryRunWouldRestores
    }

    /// The label values in the original's order: container, pod, namespace.
    public var labels: [(String, String)] { [("container", container), ("pod", pod), ("namespace", namespace)] }

    struct LabelKey: Hashable {
        var container: String
        var pod: String
        var namespace: String
    }

    var labelKey: LabelKey { LabelKey(container: container, pod: pod, namespace: namespace) }
}

/// The manager's Prometheus metrics: the original's families with their names, help texts, types,
/// label order and buckets, plus the dry-run counters.
///
/// Built on swift-prometheus's `PrometheusCollectorRegistry` (not through swift-metrics' global
/// factory, which has no help texts): each container's series are created on its first sample,
/// set from the shim's cumulative values (counters and histograms advance by the difference to
/// what was exported; see ``HistogramReplay``), and unregistered when the container stops or its
/// shim goes away.
public final class ZeropodMetrics: Sendable {
    /// The original's duration buckets (seconds).
    public static let buckets: [Double] = [0.025, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1, 2.5, 5, 10]

    /// The family names, help texts and types (kubernetes.md §3.1; dry-run from upstream PR #197).
    public enum Family: String, CaseIterable, Sendable {
        /// Gauge.
        case running = "zeropod_running"
        /// Histogram.
        case checkpointDuration = "zeropod_checkpoint_duration_seconds"
        /// Histogram.
        case restoreDuration = "zeropod_restore_duration_seconds"
        /// Gauge (unix nanoseconds).
        case lastCheckpointTime = "zeropod_last_checkpoint_time"
        /// Gauge (unix nanoseconds).
        case lastRestoreTime = "zeropod_last_restore_time"
        /// Counter.
        case checkpointErrors = "zeropod_checkpoint_errors_total"
        /// Counter.
        case restoreErrors = "zeropod_restore_errors_total"
        /// Counter.
        case dryRunScaleDowns = "zeropod_dry_run_scale_downs_total"
        /// Counter.
        case dryRunWouldRestores = "zeropod_dry_run_would_restores_total"

        /// The name and help text for the registry (the whole name as `metricName`, no unit suffix
        /// added: the names are the original's).
        public var descriptor: MetricNameDescriptor {
            MetricNameDescriptor(metricName: rawValue, unitName: "", helpText: help)
        }

        /// The `# HELP` text.
        public var help: String {
            switch self {
            case .running: return "Reports if the process is currently running or checkpointed."
            case .checkpointDuration: return "The duration of the last checkpoint in seconds."
            case .restoreDuration: return "The duration of the last restore in seconds."
            case .lastCheckpointTime: return "A unix timestamp in nanoseconds of the last checkpoint."
            case .lastRestoreTime: return "A unix timestamp in nanoseconds of the last restore."
            case .checkpointErrors: return "Total number of checkpoint errors."
            case .restoreErrors: return "Total number of restore errors."
            case .dryRunScaleDowns: return "Total number of scale downs that dry-run mode would have done."
            case .dryRunWouldRestores: return "Total number of restores that dry-run mode would have done."
            }
        }
    }

    private struct Series {
        var owner: String
        var running: Gauge
        var lastCheckpoint: Gauge?
        var lastRestore: Gauge?
        var checkpointDuration: ValueHistogram
        var restoreDuration: ValueHistogram
        var checkpointErrors: Counter
        var restoreErrors: Counter
        var dryRunScaleDowns: Counter
        var dryRunWouldRestores: Counter
        var exported: ContainerMetricsSample
    }

    /// The registry the metrics live in (render it with ``exposition()``).
    public let registry: PrometheusCollectorRegistry
    private let series = Mutex<[ContainerMetricsSample.LabelKey: Series]>([:])

    /// Metrics in a registry of their own.
    public init(registry: PrometheusCollectorRegistry = PrometheusCollectorRegistry()) {
        self.registry = registry
    }

    /// The containers that have series, by containerd id.
    public var exportedContainers: Set<String> { series.withLock { Set($0.values.map(\.owner)) } }

    /// Sets a container's series from its shim's cumulative sample (creating them on first use).
    /// - Returns: false when another live container already owns the same labels (the sample is
    ///   ignored: two series with one label set cannot exist).
    @discardableResult
    public func update(_ sample: ContainerMetricsSample) -> Bool {
        series.withLock { table -> Bool in
            let key = sample.labelKey
            if var existing = table[key] {
                guard existing.owner == sample.id else { return false }
                apply(sample, to: &existing)
                table[key] = existing
                return true
            }
            var created = makeSeries(sample)
            apply(sample, to: &created)
            table[key] = created
            return true
        }
    }

    /// Removes every series of container `id` (it stopped, was deleted, or its shim went away).
    public func remove(containerID id: String) {
        series.withLock { table in
            for (key, value) in table where value.owner == id {
                unregister(value)
                table[key] = nil
            }
        }
    }

    /// Removes every series whose container is not in `ids` (a shim's complete list).
    public func retain(containerIDs ids: Set<String>, among candidates: Set<String>) {
        series.withLock { table in
            for (key, value) in table where candidates.contains(value.owner) && !ids.contains(value.owner) {
                unregister(value)
                table[key] = nil
            }
        }
    }

    /// The Prometheus text exposition (format 0.0.4) of every family, with bucket bounds written
    /// as Go writes them (`le="1"`, not `le="1.0"`), so queries written for the original match.
    public func exposition() -> String {
        MetricsText.goStyleBucketBounds(registry.emitToString())
    }

    // MARK: - internals (called under the lock; the registry has its own)

    private func makeSeries(_ sample: ContainerMetricsSample) -> Series {
        let labels = sample.labels
        let empty = ContainerMetricsSample(
            id: sample.id,
            container: sample.container,
            pod: sample.pod,
            namespace: sample.namespace,
            running: false,
            checkpointDuration: CumulativeHistogram(empty: sample.checkpointDuration.upperBounds),
            restoreDuration: CumulativeHistogram(empty: sample.restoreDuration.upperBounds)
        )
        return Series(
            owner: sample.id,
            running: registry.makeGauge(descriptor: Family.running.descriptor, labels: labels),
            lastCheckpoint: nil,
            lastRestore: nil,
            checkpointDuration: makeHistogram(.checkpointDuration, labels, sample.checkpointDuration.upperBounds),
            restoreDuration: makeHistogram(.restoreDuration, labels, sample.restoreDuration.upperBounds),
            checkpointErrors: registry.makeCounter(descriptor: Family.checkpointErrors.descriptor, labels: labels),
            restoreErrors: registry.makeCounter(descriptor: Family.restoreErrors.descriptor, labels: labels),
            dryRunScaleDowns: registry.makeCounter(descriptor: Family.dryRunScaleDowns.descriptor, labels: labels),
            dryRunWouldRestores: registry.makeCounter(
                descriptor: Family.dryRunWouldRestores.descriptor,
                labels: labels
            ),
            exported: empty
        )
    }

    private func makeHistogram(_ family: Family, _ labels: [(String, String)], _ bounds: [Double]) -> ValueHistogram {
        registry.makeValueHistogram(
            descriptor: family.descriptor,
            labels: labels,
            buckets: bounds.isEmpty ? Self.buckets : bounds
        )
    }

    private func apply(_ sample: ContainerMetricsSample, to s: inout Series) {
        let labels = sample.labels
        s.running.set(sample.running ? 1.0 : 0.0)
        if let t = sample.lastCheckpointNanos {
            if s.lastCheckpoint == nil {
                s.lastCheckpoint = registry.makeGauge(descriptor: Family.lastCheckpointTime.descriptor, labels: labels)
            }
            s.lastCheckpoint?.set(Double(t))
        }
        if let t = sample.lastRestoreNanos {
            if s.lastRestore == nil {
                s.lastRestore = registry.makeGauge(descriptor: Family.lastRestoreTime.descriptor, labels: labels)
            }
            s.lastRestore?.set(Double(t))
        }
        s.checkpointDuration = replay(
            .checkpointDuration,
            s.checkpointDuration,
            exported: &s.exported.checkpointDuration,
            reported: sample.checkpointDuration,
            labels
        )
        s.restoreDuration = replay(
            .restoreDuration,
            s.restoreDuration,
            exported: &s.exported.restoreDuration,
            reported: sample.restoreDuration,
            labels
        )
        s.checkpointErrors = advance(
            .checkpointErrors,
            s.checkpointErrors,
            exported: &s.exported.checkpointErrors,
            reported: sample.checkpointErrors,
            labels
        )
        s.restoreErrors = advance(
            .restoreErrors,
            s.restoreErrors,
            exported: &s.exported.restoreErrors,
            reported: sample.restoreErrors,
            labels
        )
        s.dryRunScaleDowns = advance(
            .dryRunScaleDowns,
            s.dryRunScaleDowns,
            exported: &s.exported.dryRunScaleDowns,
            reported: sample.dryRunScaleDowns,
            labels
        )
        s.dryRunWouldRestores = advance(
            .dryRunWouldRestores,
            s.dryRunWouldRestores,
            exported: &s.exported.dryRunWouldRestores,
            reported: sample.dryRunWouldRestores,
            labels
        )
    }

    /// A counter advanced by the difference to what it exported; a smaller report (the shim
    /// started over) starts the series again at the reported value.
    private func advance(
        _ family: Family,
        _ counter: Counter,
        exported: inout UInt64,
        reported: UInt64,
        _ labels: [(String, String)]
    ) -> Counter {
        if reported >= exported {
            if reported > exported { counter.increment(by: Int64(clamping: reported - exported)) }
            exported = reported
            return counter
        }
        registry.unregisterCounter(counter)
        let fresh = registry.makeCounter(descriptor: family.descriptor, labels: labels)
        if reported > 0 { fresh.increment(by: Int64(clamping: reported)) }
        exported = reported
        return fresh
    }

    private func replay(
        _ family: Family,
        _ histogram: ValueHistogram,
        exported: inout CumulativeHistogram,
        reported: CumulativeHistogram,
        _ labels: [(String, String)]
    ) -> ValueHistogram {
        switch HistogramReplay.plan(exported: exported, reported: reported) {
        case .record(let values):
            for v in values { histogram.record(v) }
            for v in values { exported = exported.adding(v) }
            return histogram
        case .restart(let values):
            registry.unregisterValueHistogram(histogram)
            let fresh = makeHistogram(family, labels, reported.upperBounds)
            exported = CumulativeHistogram(empty: reported.upperBounds.isEmpty ? Self.buckets : reported.upperBounds)
            for v in values {
                fresh.record(v)
                exported = exported.adding(v)
            }
            return fresh
        }
    }

    private func unregister(_ s: Series) {
        registry.unregisterGauge(s.running)
        if let g = s.lastCheckpoint { registry.unregisterGauge(g) }
        if let g = s.lastRestore { registry.unregisterGauge(g) }
        registry.unregisterValueHistogram(s.checkpointDuration)
        registry.unregisterValueHistogram(s.restoreDuration)
        registry.unregisterCounter(s.checkpointErrors)
        registry.unregisterCounter(s.restoreErrors)
        registry.unregisterCounter(s.dryRunScaleDowns)
        registry.unregisterCounter(s.dryRunWouldRestores)
    }
}

/// Text fixes on the exposition.
enum MetricsText {
    /// Rewrites every `le="<number>"` label value the way Go's `strconv.FormatFloat(v, 'g', -1, 64)`
    /// writes it (integral values without `.0`), as the original's client library does.
    static func goStyleBucketBounds(_ text: String) -> String {
        guard text.contains("le=\"") else { return text }
        return text.split(separator: "\n", omittingEmptySubsequences: false).map { line -> String in
            guard let range = line.range(of: "le=\""), let end = line[range.upperBound...].firstIndex(of: "\"") else {
                return String(line)
            }
            return String(line[..<range.upperBound]) + goFloat(String(line[range.upperBound..<end]))
                + String(line[end...])
        }.joined(separator: "\n")
    }

    /// `1.0` → `1`, `10.0` → `10`, `0.025` stays, `+Inf` stays.
    static func goFloat(_ text: String) -> String {
        guard let value = Double(text), value.isFinite else { return text }
        if value == value.rounded(), abs(value) < 1e21 { return String(Int64(value)) }
        return text
    }
}
