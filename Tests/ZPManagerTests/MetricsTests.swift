// The metrics mapping: cumulative shim values → Prometheus series (no I/O, no root).
import Foundation
import Testing

@testable import ZPManager

private let bounds = ZeropodMetrics.buckets

private func histogram(_ values: [Double]) -> CumulativeHistogram {
    values.reduce(CumulativeHistogram(empty: bounds)) { $0.adding($1) }
}

private func sample(
    id: String = "c1",
    running: Bool = true,
    checkpoints: [Double] = [],
    restores: [Double] = [],
    checkpointErrors: UInt64 = 0,
    restoreErrors: UInt64 = 0,
    lastCheckpoint: Int64? = nil,
    dryRun: UInt64 = 0
) -> ContainerMetricsSample {
    ContainerMetricsSample(
        id: id,
        container: "app",
        pod: "web",
        namespace: "default",
        running: running,
        lastCheckpointNanos: lastCheckpoint,
        checkpointDuration: histogram(checkpoints),
        restoreDuration: histogram(restores),
        checkpointErrors: checkpointErrors,
        restoreErrors: restoreErrors,
        dryRunScaleDowns: dryRun
    )
}

/// The value of one sample line (`name{labels} value`), nil when absent.
func value(_ text: String, _ series: String) -> Double? {
    for line in text.split(separator: "\n") where line.hasPrefix(series + " ") {
        return Double(line.dropFirst(series.count + 1))
    }
    return nil
}

private let labels = #"container="app",pod="web",namespace="default""#

@Suite struct HistogramReplayTests {
    @Test func oneNewObservation_isRecordedExactly() {
        let before = histogram([0.12])
        let after = before.adding(0.35)
        #expect(HistogramReplay.plan(exported: before, reported: after) == .record([0.35]))
    }

    @Test func severalObservations_keepBucketsCountAndSum() {
        let before = histogram([0.01])
        let after = histogram([0.01, 0.03, 0.04, 0.7, 12])
        guard case .record(let values) = HistogramReplay.plan(exported: before, reported: after) else {
            Issue.record("expected record")
            return
        }
        let replayed = values.reduce(before) { $0.adding($1) }
        #expect(replayed.cumulativeCounts == after.cumulativeCounts)
        #expect(replayed.count == after.count)
        #expect(abs(replayed.sum - after.sum) < 1e-9)
    }

    @Test func fewerObservations_restartTheSeries() {
        let exported = histogram([0.1, 0.2])
        let reported = histogram([0.3])
        #expect(HistogramReplay.plan(exported: exported, reported: reported) == .restart([0.3]))
    }

    @Test func nothingNew_recordsNothing() {
        #expect(HistogramReplay.plan(exported: histogram([0.1]), reported: histogram([0.1])) == .record([]))
    }

    @Test func randomSequences_alwaysReproduceTheReport() {
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<200 {
            var exported = CumulativeHistogram(empty: bounds)
            var reported = exported
            for _ in 0..<Int.random(in: 1...6, using: &generator) {
                for _ in 0..<Int.random(in: 0...5, using: &generator) {
                    reported = reported.adding(Double.random(in: 0...15, using: &generator))
                }
                guard case .record(let values) = HistogramReplay.plan(exported: exported, reported: reported) else {
                    Issue.record("a continuation must replay")
                    return
                }
                exported = values.reduce(exported) { $0.adding($1) }
                #expect(exported.cumulativeCounts == reported.cumulativeCounts)
                #expect(exported.count == reported.count)
                #expect(abs(exported.sum - reported.sum) < 1e-6)
            }
        }
    }
}

@Suite struct ZeropodMetricsTests {
    @Test func exposition_hasTheOriginalsNamesHelpTypesAndBuckets() {
        let metrics = ZeropodMetrics()
        metrics.update(
            sample(running: false, checkpoints: [0.12], checkpointErrors: 1, lastCheckpoint: 1_790_000_000_000_000_000)
        )
        let text = metrics.exposition()
        #expect(
            text.contains(
                "# HELP zeropod_running Reports if the process is currently running or checkpointed.\n# TYPE zeropod_running gauge"
            )
        )
        #expect(
            text.contains(
                "# HELP zeropod_checkpoint_duration_seconds The duration of the last checkpoint in seconds.\n# TYPE zeropod_checkpoint_duration_seconds histogram"
            )
        )
        #expect(text.contains("# TYPE zeropod_checkpoint_errors_total counter"))
        #expect(
            text.contains("# HELP zeropod_last_checkpoint_time A unix timestamp in nanoseconds of the last checkpoint.")
        )
        #expect(value(text, "zeropod_running{\(labels)}") == 0)
        #expect(value(text, "zeropod_checkpoint_errors_total{\(labels)}") == 1)
        #expect(value(text, "zeropod_last_checkpoint_time{\(labels)}") == 1.79e18)
        // Go's bucket bounds: le="1", not le="1.0"; the original's 15 bounds and +Inf.
        for bound in [
            "0.025", "0.05", "0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7", "0.8", "0.9", "1", "2.5", "5", "10",
            "+Inf",
        ] {
            #expect(
                text.contains("zeropod_checkpoint_duration_seconds_bucket{\(labels),le=\"\(bound)\"}"),
                "le=\(bound)"
            )
        }
        #expect(!text.contains("le=\"1.0\""))
        #expect(value(text, "zeropod_checkpoint_duration_seconds_bucket{\(labels),le=\"0.1\"}") == 0)
        #expect(value(text, "zeropod_checkpoint_duration_seconds_bucket{\(labels),le=\"0.2\"}") == 1)
        #expect(value(text, "zeropod_checkpoint_duration_seconds_count{\(labels)}") == 1)
        #expect(value(text, "zeropod_checkpoint_duration_seconds_sum{\(labels)}") == 0.12)
        #expect(value(text, "zeropod_last_restore_time{\(labels)}") == nil)
    }

    @Test func repeatedReports_doNotDoubleCount() {
        let metrics = ZeropodMetrics()
        let s = sample(checkpoints: [0.1, 0.4], restores: [0.05], checkpointErrors: 2, restoreErrors: 1)
        metrics.update(s)
        metrics.update(s)  // a reconnect reports the same totals
        metrics.update(s)
        let text = metrics.exposition()
        #expect(value(text, "zeropod_checkpoint_errors_total{\(labels)}") == 2)
        #expect(value(text, "zeropod_restore_errors_total{\(labels)}") == 1)
        #expect(value(text, "zeropod_checkpoint_duration_seconds_count{\(labels)}") == 2)
        #expect(value(text, "zeropod_restore_duration_seconds_count{\(labels)}") == 1)
    }

    @Test func growingReports_advanceByTheDifference() {
        let metrics = ZeropodMetrics()
        metrics.update(sample(checkpoints: [0.1], checkpointErrors: 1, dryRun: 1))
        metrics.update(sample(checkpoints: [0.1, 0.3, 0.6], checkpointErrors: 3, dryRun: 4))
        let text = metrics.exposition()
        #expect(value(text, "zeropod_checkpoint_errors_total{\(labels)}") == 3)
        #expect(value(text, "zeropod_dry_run_scale_downs_total{\(labels)}") == 4)
        #expect(value(text, "zeropod_checkpoint_duration_seconds_count{\(labels)}") == 3)
        #expect(abs(value(text, "zeropod_checkpoint_duration_seconds_sum{\(labels)}")! - 1.0) < 1e-9)
        #expect(value(text, "zeropod_checkpoint_duration_seconds_bucket{\(labels),le=\"0.3\"}") == 2)
    }

    @Test func aNewManager_exportsTheSameTotals() {
        // A restarted manager sees the shim's totals again and exports exactly them.
        let s = sample(checkpoints: [0.1, 0.3], checkpointErrors: 5)
        let first = ZeropodMetrics()
        first.update(s)
        let second = ZeropodMetrics()
        second.update(s)
        // (The families come in the registry's dictionary order, so compare the lines as a set.)
        #expect(Set(first.exposition().split(separator: "\n")) == Set(second.exposition().split(separator: "\n")))
        #expect(value(second.exposition(), "zeropod_checkpoint_errors_total{\(labels)}") == 5)
    }

    @Test func removedContainer_losesEverySeries() {
        let metrics = ZeropodMetrics()
        metrics.update(sample(id: "c1", checkpoints: [0.1], lastCheckpoint: 5))
        metrics.remove(containerID: "c1")
        let text = metrics.exposition()
        #expect(!text.contains("pod=\"web\""))
        #expect(metrics.exportedContainers.isEmpty)
    }

    @Test func sameLabels_secondContainerIsRefused_untilTheFirstGoes() {
        let metrics = ZeropodMetrics()
        #expect(metrics.update(sample(id: "old", checkpointErrors: 1)))
        #expect(!metrics.update(sample(id: "new", checkpointErrors: 7)))
        metrics.remove(containerID: "old")
        #expect(metrics.update(sample(id: "new", checkpointErrors: 7)))
        #expect(value(metrics.exposition(), "zeropod_checkpoint_errors_total{\(labels)}") == 7)
    }

    @Test func goFloat_bounds() {
        #expect(MetricsText.goFloat("1.0") == "1")
        #expect(MetricsText.goFloat("10.0") == "10")
        #expect(MetricsText.goFloat("0.025") == "0.025")
        #expect(MetricsText.goFloat("+Inf") == "+Inf")
        #expect(MetricsText.goStyleBucketBounds("a{x=\"y\",le=\"5.0\"} 3\nb 1.0\n") == "a{x=\"y\",le=\"5\"} 3\nb 1.0\n")
    }
}
