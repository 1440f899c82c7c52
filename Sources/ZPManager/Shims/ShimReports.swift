// ZPAPI's status messages → the manager's own values (ContainerReport, occurrences with their
// identities, metrics samples). The only file of the model that knows the wire types.
import ZPAPI
import ZPCore

/// Converts status messages of the shim API into the manager's values (pure).
public enum ShimReports {
    /// The report of a container status.
    public static func report(_ status: StatusAPI.ContainerStatus) -> ContainerReport {
        let pod: PodReference? =
            status.podName.isEmpty && status.podNamespace.isEmpty
            ? nil : PodReference(namespace: status.podNamespace, name: status.podName, uid: status.podUID)
        let phase: ContainerLifecycle.StatusPhase = status.lifecyclePhase == .stopped ? .stopping : status.phase
        return ContainerReport(
            id: status.id,
            name: status.name,
            pod: pod,
            phase: phase,
            lifecyclePhase: status.lifecyclePhase?.name ?? "UNKNOWN",
            checkpointErrors: status.checkpointErrors,
            restoreErrors: status.restoreErrors
        )
    }

    /// The occurrence a status event stands for.
    public static func occurrence(_ event: StatusAPI.Event) -> StatusOccurrence {
        switch event {
        case .checkpointFinished(let d): return .scaledDown(duration: d)
        case .restoreFinished(let d): return .restored(duration: d)
        case .checkpointFailed(let reason): return .checkpointFailed(reason: reason)
        case .restoreFailed(let reason): return .restoreFailed(reason: reason)
        case .wouldScaleDown: return .wouldScaleDown
        case .wouldRestore: return .wouldRestore
        }
    }

    /// The identity of a status's last operations per occurrence kind: the end time of the last
    /// checkpoint and restore, the error counts. The same whether read from a change or from a
    /// snapshot, so an operation is reported once.
    public static func identities(_ status: StatusAPI.ContainerStatus) -> [String: String] {
        var result: [String: String] = [:]
        if let c = status.lastCheckpoint {
            result[StatusOccurrence.scaledDown(duration: .zero).kindName] = "\(c.finishedAt.unixNanoseconds)"
        }
        if let r = status.lastRestore {
            result[StatusOccurrence.restored(duration: .zero).kindName] = "\(r.finishedAt.unixNanoseconds)"
        }
        if status.checkpointErrors > 0 {
            result[StatusOccurrence.checkpointFailed(reason: "").kindName] = "errors=\(status.checkpointErrors)"
        }
        if status.restoreErrors > 0 {
            result[StatusOccurrence.restoreFailed(reason: "").kindName] = "errors=\(status.restoreErrors)"
        }
        return result
    }

    /// The occurrences a live change reports, with identities.
    public static func occurrences(of change: StatusAPI.StatusChange) -> [(StatusOccurrence, String)] {
        guard let event = change.event else { return [] }
        let occurrence = occurrence(event)
        let identity =
            identities(change.status)[occurrence.kindName] ?? "seq=\(change.sequence)@\(change.time.unixNanoseconds)"
        return [(occurrence, identity)]
    }

    /// The occurrences a snapshot of a container implies that were not reported yet: the last
    /// checkpoint, restore and failures whose identity differs from the one reported (`reported`),
    /// for a container the manager knew before (a reconnect). Empty for a container seen for the
    /// first time: what happened before the manager started is history.
    public static func missedOccurrences(
        _ status: StatusAPI.ContainerStatus,
        known: Bool,
        reported: (String) -> String?
    ) -> [(StatusOccurrence, String)] {
        guard known else { return [] }
        var result: [(StatusOccurrence, String)] = []
        let ids = identities(status)
        if let c = status.lastCheckpoint, let id = ids["scaled-down"], reported("scaled-down") != id {
            result.append((.scaledDown(duration: c.duration), id))
        }
        if let r = status.lastRestore, let id = ids["running"], reported("running") != id {
            result.append((.restored(duration: r.duration), id))
        }
        if let id = ids["checkpoint-failed"], reported("checkpoint-failed") != id {
            result.append((.checkpointFailed(reason: status.lastError), id))
        }
        if let id = ids["restore-failed"], reported("restore-failed") != id {
            result.append((.restoreFailed(reason: status.lastError), id))
        }
        // Oldest first, so the newest phase's event is the last one written.
        let order: (StatusOccurrence) -> Int64 = { occurrence in
            switch occurrence {
            case .scaledDown: return status.lastCheckpoint?.finishedAt.unixNanoseconds ?? 0
            case .restored: return status.lastRestore?.finishedAt.unixNanoseconds ?? 0
            case .checkpointFailed, .restoreFailed, .wouldScaleDown, .wouldRestore: return 0
            }
        }
        return result.sorted { order($0.0) < order($1.0) }
    }

    /// The metrics sample of a container; nil for a pod sandbox (a pod but no container name).
    public static func sample(_ m: StatusAPI.ContainerMetrics) -> ContainerMetricsSample? {
        if m.name.isEmpty, !m.podName.isEmpty { return nil }
        func histogram(_ h: StatusAPI.Histogram) -> CumulativeHistogram {
            CumulativeHistogram(
                upperBounds: h.upperBounds,
                cumulativeCounts: h.cumulativeCounts,
                count: h.count,
                sum: h.sum
            )
        }
        return ContainerMetricsSample(
            id: m.id,
            container: m.name.isEmpty ? m.id : m.name,
            pod: m.podName,
            namespace: m.podNamespace,
            running: m.running,
            lastCheckpointNanos: m.lastCheckpointTime?.unixNanoseconds,
            lastRestoreNanos: m.lastRestoreTime?.unixNanoseconds,
            checkpointDuration: histogram(m.checkpointDuration),
            restoreDuration: histogram(m.restoreDuration),
            checkpointErrors: m.checkpointErrorsTotal,
            restoreErrors: m.restoreErrorsTotal,
            dryRunScaleDowns: m.dryRunScaleDownsTotal,
            dryRunWouldRestores: m.dryRunWouldRestoresTotal
        )
    }
}
