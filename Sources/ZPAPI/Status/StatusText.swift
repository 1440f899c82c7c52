import ZPCore

/// Plain-text views of the status API for people and scrapers (`zeropod status`).
public enum StatusText {
    /// One line for a container: id, pod, container name, phases, pid, last operations, errors.
    ///
    /// - Parameters:
    ///   - status: The container.
    ///   - now: The wall clock in nanoseconds since the Unix epoch, for "… ago".
    public static func line(_ status: StatusAPI.ContainerStatus, now: Int64) -> String {
        var parts = [status.id]
        if !status.podName.isEmpty { parts.append("pod=\(status.podNamespace)/\(status.podName)") }
        if !status.name.isEmpty { parts.append("container=\(status.name)") }
        parts.append("phase=\(status.phase.name)")
        parts.append("lifecycle=\(status.lifecyclePhase?.name ?? "UNKNOWN")")
        if let since = status.phaseSince { parts.append("since=\(age(since, now: now))") }
        parts.append("pid=\(status.pid)")
        if let c = status.lastCheckpoint {
            parts.append("last-checkpoint=\(milliseconds(c.duration))@\(age(c.finishedAt, now: now))")
        }
        if let r = status.lastRestore {
            parts.append("last-restore=\(milliseconds(r.duration))@\(age(r.finishedAt, now: now))")
        }
        parts.append("checkpoint-errors=\(status.checkpointErrors)")
        parts.append("restore-errors=\(status.restoreErrors)")
        if !status.lastError.isEmpty { parts.append("last-error=\(quoted(status.lastError))") }
        return parts.joined(separator: " ")
    }

    /// One line for a subscription entry: sequence, loss, event, then ``line(_:now:)``.
    public static func line(_ change: StatusAPI.StatusChange, now: Int64) -> String {
        var prefix = change.snapshot ? "snapshot" : "#\(change.sequence)"
        if change.missed > 0 { prefix += " (missed \(change.missed))" }
        if change.removed { prefix += " removed" }
        if let event = change.event {
            switch event {
            case .checkpointFinished(let d): prefix += " checkpointed in \(milliseconds(d))"
            case .restoreFinished(let d): prefix += " restored in \(milliseconds(d))"
            case .checkpointFailed(let r): prefix += " checkpoint failed: \(quoted(r))"
            case .restoreFailed(let r): prefix += " restore failed: \(quoted(r))"
            case .wouldScaleDown: prefix += " would scale down (dry run)"
            case .wouldRestore: prefix += " would restore (dry run)"
            }
        }
        return prefix + " | " + line(change.status, now: now)
    }

    /// The metrics in the Prometheus text format, under the original zeropod's names and labels
    /// (`container`, `pod`, `namespace`). Times are unix nanoseconds, as the original exports them.
    public static func prometheus(_ metrics: [StatusAPI.ContainerMetrics]) -> String {
        var out = ""
        func labels(_ m: StatusAPI.ContainerMetrics, _ extra: String = "") -> String {
            let base =
                "container=\(quoted(m.name.isEmpty ? m.id : m.name)),pod=\(quoted(m.podName)),namespace=\(quoted(m.podNamespace))"
            return "{" + base + (extra.isEmpty ? "" : "," + extra) + "}"
        }
        func header(_ name: String, _ type: String, _ help: String) {
            out += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n"
        }
        header("zeropod_running", "gauge", "Whether the container is running (1) or scaled down (0).")
        for m in metrics { out += "zeropod_running\(labels(m)) \(m.running ? 1 : 0)\n" }
        header("zeropod_last_checkpoint_time", "gauge", "When the last checkpoint finished (unix nanoseconds).")
        for m in metrics {
            if let t = m.lastCheckpointTime { out += "zeropod_last_checkpoint_time\(labels(m)) \(t.unixNanoseconds)\n" }
        }
        header("zeropod_last_restore_time", "gauge", "When the last restore finished (unix nanoseconds).")
        for m in metrics {
            if let t = m.lastRestoreTime { out += "zeropod_last_restore_time\(labels(m)) \(t.unixNanoseconds)\n" }
        }
        for (name, help, pick) in [
            (
                "zeropod_checkpoint_duration_seconds", "The duration of checkpoints in seconds.",
                { (m: StatusAPI.ContainerMetrics) in m.checkpointDuration }
            ),
            (
                "zeropod_restore_duration_seconds", "The duration of restores in seconds.",
                { (m: StatusAPI.ContainerMetrics) in m.restoreDuration }
            ),
        ] {
            header(name, "histogram", help)
            for m in metrics {
                let h = pick(m)
                for (bound, count) in zip(h.upperBounds, h.cumulativeCounts) {
                    out += "\(name)_bucket\(labels(m, "le=\(quoted(number(bound)))")) \(count)\n"
                }
                out += "\(name)_bucket\(labels(m, "le=\"+Inf\"")) \(h.count)\n"
                out += "\(name)_sum\(labels(m)) \(number(h.sum))\n"
                out += "\(name)_count\(labels(m)) \(h.count)\n"
            }
        }
        header("zeropod_checkpoint_errors_total", "counter", "Failed checkpoints.")
        for m in metrics { out += "zeropod_checkpoint_errors_total\(labels(m)) \(m.checkpointErrorsTotal)\n" }
        header("zeropod_restore_errors_total", "counter", "Failed restores.")
        for m in metrics { out += "zeropod_restore_errors_total\(labels(m)) \(m.restoreErrorsTotal)\n" }
        header(
            "zeropod_dry_run_scale_downs_total",
            "counter",
            "Total number of scale downs that dry-run mode would have done."
        )
        for m in metrics { out += "zeropod_dry_run_scale_downs_total\(labels(m)) \(m.dryRunScaleDownsTotal)\n" }
        header(
            "zeropod_dry_run_would_restores_total",
            "counter",
            "Total number of restores that dry-run mode would have done."
        )
        for m in metrics { out += "zeropod_dry_run_would_restores_total\(labels(m)) \(m.dryRunWouldRestoresTotal)\n" }
        return out
    }

    /// A number as Go's `strconv.FormatFloat(v, 'g', -1, 64)` prints small values: integers
    /// without a fraction (`1`, `10`), others as Swift's shortest form (`0.025`).
    static func number(_ v: Double) -> String {
        if v == v.rounded(), abs(v) < 1e15 { return String(Int64(v)) }
        return "\(v)"
    }

    private static func milliseconds(_ d: Duration) -> String {
        let ms = Double(d.nanoseconds) / 1e6
        return ms < 10 ? "\((ms * 100).rounded() / 100)ms" : "\(Int64(ms.rounded()))ms"
    }

    private static func age(_ t: ProtobufTimestamp, now: Int64) -> String {
        let seconds = max(0, (now - t.unixNanoseconds) / 1_000_000_000)
        return "\(seconds)s-ago"
    }

    /// A quoted string with `\`, `"` and newlines escaped (Prometheus label rules).
    private static func quoted(_ s: String) -> String {
        var out = "\""
        for c in s {
            switch c {
            case "\\": out += "\\\\"
            case "\"": out += "\\\""
            case "\n": out += "\\n"
            default: out.append(c)
            }
        }
        return out + "\""
    }
}
