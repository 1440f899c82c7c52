import Testing
import ZPAPI
import ZPCore

// The status API's hand-written codec (decision 0008): golden bytes from `protoc --encode` on
// Fixtures/shim_status.proto, decoding of mutated bytes, and the text renderings.

@Suite(.enabled(if: Protoc.isInstalled, Protoc.missingReason))
struct StatusGoldenTests {
    @Test func containerStatus_matchesProtoc_bothWays() throws {
        let status = StatusAPI.ContainerStatus(
            id: "c1",
            name: "web",
            podName: "nginx-0",
            podNamespace: "default",
            podUID: "u-1",
            lifecyclePhase: .checkpointing,
            pid: 4242,
            phaseSince: ProtobufTimestamp(seconds: 1_700_000_000, nanos: 5),
            lastCheckpoint: StatusAPI.Operation(
                finishedAt: ProtobufTimestamp(seconds: 1_700_000_001, nanos: 0),
                duration: .milliseconds(85)
            ),
            lastRestore: StatusAPI.Operation(
                finishedAt: ProtobufTimestamp(seconds: 1_700_000_002, nanos: 7),
                duration: .nanoseconds(41_000_123)
            ),
            checkpointErrors: 2,
            restoreErrors: 1,
            lastError: "restore: criu said no"
        )
        let golden = try protocStatus(
            "ContainerStatus",
            """
            id: "c1" name: "web" pod_name: "nginx-0" pod_namespace: "default" phase: RUNNING
            lifecycle_phase: PHASE_CHECKPOINTING pid: 4242 phase_since { seconds: 1700000000 nanos: 5 }
            last_checkpoint { finished_at { seconds: 1700000001 } duration_nanos: 85000000 }
            last_restore { finished_at { seconds: 1700000002 nanos: 7 } duration_nanos: 41000123 }
            checkpoint_errors: 2 restore_errors: 1 last_error: "restore: criu said no" pod_uid: "u-1"
            """
        )
        #expect(status.encoded() == golden)
        #expect(try StatusAPI.ContainerStatus(decoding: golden) == status)
        #expect(status.phase == .running)
    }

    @Test func scaledDownStatus_omitsPhaseZero_likeProtoc() throws {
        let status = StatusAPI.ContainerStatus(id: "c2", lifecyclePhase: .scaledDown, pid: 7)
        #expect(status.phase == .scaledDown)
        #expect(
            status.encoded()
                == (try protocStatus(
                    "ContainerStatus",
                    #"id: "c2" phase: SCALED_DOWN lifecycle_phase: PHASE_SCALED_DOWN pid: 7"#
                ))
        )
        // Every lifecycle phase keeps its wire number through a round trip; unknown numbers decode to nil.
        for phase in ContainerLifecycle.Phase.allCases {
            let s = StatusAPI.ContainerStatus(id: "x", lifecyclePhase: phase)
            #expect(try StatusAPI.ContainerStatus(decoding: s.encoded()).lifecyclePhase == phase)
        }
        #expect(
            try StatusAPI.ContainerStatus(decoding: protocStatus("ContainerStatus", "lifecycle_phase: 99"))
                .lifecyclePhase == nil
        )
    }

    @Test func statusChange_withEachEvent_matchesProtoc() throws {
        let time = ProtobufTimestamp(seconds: 1_700_000_003, nanos: 9)
        let cases: [(StatusAPI.Event, String)] = [
            (
                .checkpointFinished(duration: .milliseconds(120)),
                "kind: EVENT_CHECKPOINT_FINISHED duration_nanos: 120000000"
            ),
            (.checkpointFailed(reason: "dump failed"), #"kind: EVENT_CHECKPOINT_FAILED reason: "dump failed""#),
            (.restoreFinished(duration: .milliseconds(30)), "kind: EVENT_RESTORE_FINISHED duration_nanos: 30000000"),
            (.restoreFailed(reason: "no image"), #"kind: EVENT_RESTORE_FAILED reason: "no image""#),
            (.wouldScaleDown, "kind: EVENT_WOULD_SCALE_DOWN"),
            (.wouldRestore, "kind: EVENT_WOULD_RESTORE"),
        ]
        for (event, text) in cases {
            let change = StatusAPI.StatusChange(
                sequence: 12,
                missed: 3,
                time: time,
                status: StatusAPI.ContainerStatus(id: "c1", lifecyclePhase: .running, pid: 5),
                event: event,
                removed: true,
                snapshot: false
            )
            let golden = try protocStatus(
                "StatusChange",
                """
                sequence: 12 missed: 3 time { seconds: 1700000003 nanos: 9 }
                status { id: "c1" phase: RUNNING lifecycle_phase: PHASE_RUNNING pid: 5 } event { \(text) } removed: true
                """
            )
            #expect(change.encoded() == golden, "\(event)")
            #expect(try StatusAPI.StatusChange(decoding: golden) == change)
        }
        let snapshot = StatusAPI.StatusChange(
            sequence: 4,
            time: time,
            status: StatusAPI.ContainerStatus(id: "c9"),
            snapshot: true
        )
        #expect(
            snapshot.encoded()
                == (try protocStatus(
                    "StatusChange",
                    """
                    sequence: 4 time { seconds: 1700000003 nanos: 9 } status { id: "c9" lifecycle_phase: PHASE_CREATED } snapshot: true
                    """
                ))
        )
        // An event kind this version does not know is an error naming the message and the value.
        #expect(throws: ProtobufError.invalidValue(message: "zeropod.shim.v1.StatusEvent", field: 1, value: 9)) {
            try StatusAPI.StatusChange(decoding: protocStatus("StatusChange", "event { kind: 9 }"))
        }
    }

    @Test func metrics_matchProtoc_bothWays() throws {
        var histogram = StatusAPI.Histogram()
        histogram.observe(.milliseconds(40))  // <= 0.05 and up
        histogram.observe(.milliseconds(350))  // <= 0.4 and up
        histogram.observe(.seconds(20))  // only +Inf
        #expect(histogram.cumulativeCounts == [0, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2])
        #expect(histogram.count == 3)
        let metrics = StatusAPI.ContainerMetrics(
            id: "c1",
            name: "web",
            podName: "p",
            podNamespace: "ns",
            running: true,
            lastCheckpointTime: ProtobufTimestamp(seconds: 10, nanos: 1),
            lastRestoreTime: ProtobufTimestamp(seconds: 11, nanos: 2),
            checkpointDuration: histogram,
            restoreDuration: StatusAPI.Histogram(),
            checkpointErrorsTotal: 4,
            restoreErrorsTotal: 5,
            dryRunScaleDownsTotal: 6,
            dryRunWouldRestoresTotal: 7
        )
        let bounds = StatusAPI.durationBucketBounds.map { "upper_bounds: \($0)" }.joined(separator: " ")
        let counts = histogram.cumulativeCounts.map { "cumulative_counts: \($0)" }.joined(separator: " ")
        let golden = try protocStatus(
            "MetricsResponse",
            """
            containers { id: "c1" name: "web" pod_name: "p" pod_namespace: "ns" running: true
              last_checkpoint_time { seconds: 10 nanos: 1 } last_restore_time { seconds: 11 nanos: 2 }
              checkpoint_duration { \(bounds) \(counts) count: 3 sum: \(histogram.sum) }
              restore_duration { \(bounds) \(StatusAPI.durationBucketBounds.map { _ in "cumulative_counts: 0" }.joined(separator: " ")) }
              checkpoint_errors_total: 4 restore_errors_total: 5
              dry_run_scale_downs_total: 6 dry_run_would_restores_total: 7 }
            """
        )
        let response = StatusAPI.MetricsResponse(containers: [metrics])
        #expect(response.encoded() == golden)
        #expect(try StatusAPI.MetricsResponse(decoding: golden) == response)
    }

    @Test func requests_andList_matchProtoc() throws {
        #expect(
            StatusAPI.ContainerRequest(id: "abc").encoded() == (try protocStatus("ContainerRequest", #"id: "abc""#))
        )
        #expect(
            StatusAPI.SubscribeStatusRequest(initialSnapshot: true).encoded()
                == (try protocStatus("SubscribeStatusRequest", "initial_snapshot: true"))
        )
        #expect(StatusAPI.SubscribeStatusRequest().encoded().isEmpty)
        let list = StatusAPI.ListContainersResponse(containers: [
            StatusAPI.ContainerStatus(id: "a", lifecyclePhase: .running),
            StatusAPI.ContainerStatus(id: "b", lifecyclePhase: .stopped),
        ])
        let golden = try protocStatus(
            "ListContainersResponse",
            """
            containers { id: "a" phase: RUNNING lifecycle_phase: PHASE_RUNNING }
            containers { id: "b" phase: STOPPING lifecycle_phase: PHASE_STOPPED }
            """
        )
        #expect(list.encoded() == golden)
        #expect(try StatusAPI.ListContainersResponse(decoding: golden) == list)
    }
}

@Suite struct StatusCodecTests {
    @Test func mutatedBytes_decodeOrThrowProtobufError_neverTrap() throws {
        // Deterministic mutations of a full StatusChange and MetricsResponse (a cheap stand-in for
        // the libFuzzer targets, which cover ZPCore's codec itself).
        var h = StatusAPI.Histogram()
        h.observe(.milliseconds(75))
        let seeds: [[UInt8]] = [
            StatusAPI.StatusChange(
                sequence: 9,
                missed: 2,
                time: ProtobufTimestamp(seconds: 5, nanos: 6),
                status: StatusAPI.ContainerStatus(
                    id: "c1",
                    name: "n",
                    podName: "p",
                    lifecyclePhase: .restoring,
                    pid: 4,
                    lastCheckpoint: StatusAPI.Operation(
                        finishedAt: ProtobufTimestamp(seconds: 1, nanos: 0),
                        duration: .seconds(1)
                    )
                ),
                event: .restoreFailed(reason: "x")
            ).encoded(),
            StatusAPI.MetricsResponse(containers: [
                StatusAPI.ContainerMetrics(id: "c1", running: true, checkpointDuration: h)
            ]).encoded(),
        ]
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15
        func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        var decoded = 0
        var rejected = 0
        for round in 0..<4000 {
            var bytes = seeds[round % seeds.count]
            for _ in 0..<(1 + Int(next() % 4)) {
                let i = Int(next() % UInt64(bytes.count))
                switch next() % 3 {
                case 0: bytes[i] = UInt8(truncatingIfNeeded: next())
                case 1: bytes.remove(at: i)
                default: bytes.insert(UInt8(truncatingIfNeeded: next()), at: i)
                }
                if bytes.isEmpty { bytes = [0] }
            }
            do {
                if round % 2 == 0 {
                    _ = try StatusAPI.StatusChange(decoding: bytes)
                } else {
                    _ = try StatusAPI.MetricsResponse(decoding: bytes)
                }
                decoded += 1
            } catch {  // typed throws: always a ProtobufError
                rejected += 1
            }
        }
        #expect(decoded + rejected == 4000 && rejected > 0)
    }

    @Test func histogram_decodesUnpackedRepeatedFields() throws {
        // proto3 parsers must accept unpacked repeated scalars too.
        var w = ProtobufWriter()
        w.writeDouble(field: 1, 0.5)
        w.writeDouble(field: 1, 1)
        w.writeUInt64(field: 2, 3)
        w.writeUInt64(field: 2, 4)
        w.writeUInt64(field: 3, 4)
        let h = try StatusAPI.Histogram(decoding: w.bytes)
        #expect(h.upperBounds == [0.5, 1] && h.cumulativeCounts == [3, 4] && h.count == 4)
    }

    @Test func prometheusText_usesTheOriginalNamesAndLabels() {
        var h = StatusAPI.Histogram()
        h.observe(.milliseconds(80))
        let text = StatusText.prometheus([
            StatusAPI.ContainerMetrics(
                id: "c1",
                name: "web",
                podName: "p",
                podNamespace: "ns",
                running: false,
                lastCheckpointTime: ProtobufTimestamp(seconds: 2, nanos: 5),
                checkpointDuration: h,
                checkpointErrorsTotal: 1,
                dryRunScaleDownsTotal: 3,
                dryRunWouldRestoresTotal: 2
            )
        ])
        let labels = #"container="web",pod="p",namespace="ns""#
        #expect(text.contains("zeropod_running{\(labels)} 0\n"))
        #expect(text.contains("zeropod_last_checkpoint_time{\(labels)} 2000000005\n"))
        #expect(!text.contains("zeropod_last_restore_time{"))
        #expect(text.contains(#"zeropod_checkpoint_duration_seconds_bucket{\#(labels),le="0.05"} 0"#))
        #expect(text.contains(#"zeropod_checkpoint_duration_seconds_bucket{\#(labels),le="0.1"} 1"#))
        #expect(text.contains(#"zeropod_checkpoint_duration_seconds_bucket{\#(labels),le="10"} 1"#))
        #expect(text.contains(#"zeropod_checkpoint_duration_seconds_bucket{\#(labels),le="+Inf"} 1"#))
        #expect(text.contains("zeropod_checkpoint_duration_seconds_count{\(labels)} 1\n"))
        #expect(text.contains("zeropod_restore_duration_seconds_count{\(labels)} 0\n"))
        #expect(text.contains("zeropod_checkpoint_errors_total{\(labels)} 1\n"))
        #expect(text.contains("zeropod_restore_errors_total{\(labels)} 0\n"))
        #expect(
            text.contains(
                "# TYPE zeropod_dry_run_scale_downs_total counter\nzeropod_dry_run_scale_downs_total{\(labels)} 3\n"
            )
        )
        #expect(
            text.contains(
                "# TYPE zeropod_dry_run_would_restores_total counter\nzeropod_dry_run_would_restores_total{\(labels)} 2\n"
            )
        )
    }
}
