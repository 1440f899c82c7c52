// The manager against fake shims (real ttrpc on unix sockets, real ZPAPI messages) and the
// Kubernetes API double (HTTPS, bearer token): labels, events and resize converge on both server
// emulations, through lost streams, a manager restart, API faults. No root needed.
import Foundation
import KubeAPIDouble
import Testing
import Yams
import ZPAPI
import ZPCore
import ZPKube
import ZPManagerTestKit
import ZPTestSupport

@testable import ZPManager

@Suite(.serialized) struct ManagerTests {
    @Test(arguments: [KubeAPIDouble.ServerVersion.v1_36, .v1_31])
    func scaleDownAndBack_labelsEventsAndRequests(version: KubeAPIDouble.ServerVersion) async throws {
        let run = try RunDirectory()
        defer { run.remove() }
        try await withDouble(version: version) { double in
            let created = try double.create("pods", namespace: "default", podDocument("web"))
            let uid = created[path: ["metadata", "uid"]]!.stringValue!
            let manager = try makeManager(double, layout: run.layout)
            try await withFakeShims([run.socket("a1")]) { shims in
                let shim = shims[0].shim
                shim.set(containerStatus("c1", uid: uid))
                try await withManager(manager) { manager in
                    #expect(await eventuallyAsync { label(double, "web") == "RUNNING" })
                    shim.transition("c1", to: .scaledDown, event: .checkpointFinished(duration: .milliseconds(120)))
                    #expect(await eventuallyAsync { label(double, "web") == "SCALED_DOWN" })
                    #expect(await eventuallyAsync { requests(double, "web") == ["cpu": "1m", "memory": "1Ki"] })
                    let pod = double.object("pods", namespace: "default", name: "web")!
                    #expect(
                        pod[path: ["metadata", "annotations", "zeropod.ctrox.dev/cpu-requests"]] == #"{"app":"250m"}"#
                    )
                    #expect(
                        pod[path: ["metadata", "annotations", "zeropod.ctrox.dev/memory-requests"]]
                            == #"{"app":"64Mi"}"#
                    )
                    #expect(await eventuallyAsync { events(double, reason: "Scaled down").count == 1 })
                    let event = events(double, reason: "Scaled down")[0]
                    #expect(event["type"] == "Normal")
                    #expect(event[path: ["involvedObject", "fieldPath"]] == "spec.containers{app}")
                    #expect(event[path: ["involvedObject", "uid"]]?.stringValue == uid)
                    #expect(event["reportingComponent"] == "zeropod.ctrox.dev/manager")
                    #expect(event["message"] == "Scaled down container app in 120ms")

                    shim.transition("c1", to: .running, event: .restoreFinished(duration: .milliseconds(35)))
                    #expect(await eventuallyAsync { label(double, "web") == "RUNNING" })
                    #expect(await eventuallyAsync { requests(double, "web") == ["cpu": "250m", "memory": "64Mi"] })
                    #expect(await eventuallyAsync { events(double, reason: "Running").count == 1 })
                    // The writes were patches of our own fields only; the resize went the server's way.
                    let writes = double.requests.filter { $0.verb != "GET" }
                    #expect(!writes.contains { $0.verb == "PUT" })
                    let resizes = writes.filter { $0.path.hasSuffix("/resize") }
                    switch version {
                    case .v1_36: #expect(resizes.count == 2)
                    case .v1_31: #expect(resizes.isEmpty)
                    }
                    #expect(manager.writer?.statistics.route == (version == .v1_36 ? .subresource : .pod))
                    // Metrics followed the shim.
                    let text = manager.state.metrics.exposition()
                    #expect(text.contains(#"zeropod_running{container="app",pod="web",namespace="default"} 1"#))
                    #expect(
                        text.contains(
                            #"zeropod_checkpoint_duration_seconds_count{container="app",pod="web",namespace="default"} 1"#
                        )
                    )
                    #expect(
                        text.contains(
                            #"zeropod_restore_duration_seconds_count{container="app",pod="web",namespace="default"} 1"#
                        )
                    )
                }
            }
        }
    }

    @Test func lostStream_reconnects_andTheMissedChangeConverges_withOneEvent() async throws {
        let run = try RunDirectory()
        defer { run.remove() }
        try await withDouble { double in
            let uid = try double.create("pods", namespace: "default", podDocument("web"))[path: ["metadata", "uid"]]!
                .stringValue!
            let manager = try makeManager(double, layout: run.layout, resize: false)
            try await withFakeShims([run.socket("b1")]) { shims in
                let shim = shims[0].shim
                shim.set(containerStatus("c1", uid: uid))
                try await withManager(manager) { manager in
                    #expect(await eventuallyAsync { label(double, "web") == "RUNNING" })
                    #expect(await eventuallyAsync { shim.subscriberCount == 1 })
                    // The change happens while no stream is open: the manager must find it in the snapshot.
                    shim.endSubscriptions()
                    shim.setSilently("c1", phase: .scaledDown, event: .checkpointFinished(duration: .milliseconds(90)))
                    #expect(await eventuallyAsync { label(double, "web") == "SCALED_DOWN" })
                    #expect(await eventuallyAsync { events(double, reason: "Scaled down").count == 1 })
                    #expect(manager.fleet.statistics.subscriptions >= 2)
                    // Another reconnect with nothing new reports nothing again.
                    shim.endSubscriptions()
                    #expect(
                        await eventuallyAsync {
                            manager.fleet.statistics.subscriptions >= 3 && shim.subscriberCount == 1
                        }
                    )
                    try await Task.sleep(for: .milliseconds(300))
                    #expect(events(double, reason: "Scaled down").count == 1)
                }
            }
        }
    }

    @Test func managerRestarted_midStream_labelsConverge_noOldEvents() async throws {
        let run = try RunDirectory()
        defer { run.remove() }
        try await withDouble { double in
            let uid = try double.create("pods", namespace: "default", podDocument("web"))[path: ["metadata", "uid"]]!
                .stringValue!
            try await withFakeShims([run.socket("c1")]) { shims in
                let shim = shims[0].shim
                shim.set(containerStatus("c1", uid: uid))
                try await withManager(try makeManager(double, layout: run.layout)) { _ in
                    #expect(await eventuallyAsync { label(double, "web") == "RUNNING" })
                }
                // Down: the container scales down and back and down again.
                shim.transition("c1", to: .scaledDown, event: .checkpointFinished(duration: .milliseconds(50)))
                shim.transition("c1", to: .running, event: .restoreFinished(duration: .milliseconds(20)))
                shim.transition("c1", to: .scaledDown, event: .checkpointFinished(duration: .milliseconds(60)))
                try await withManager(try makeManager(double, layout: run.layout)) { _ in
                    #expect(await eventuallyAsync { label(double, "web") == "SCALED_DOWN" })
                    #expect(await eventuallyAsync { requests(double, "web") == ["cpu": "1m", "memory": "1Ki"] })
                    try await Task.sleep(for: .milliseconds(300))
                }
                #expect(events(double).isEmpty, "what happened while no manager ran is history, not news")
            }
        }
    }

    @Test func apiFaults_500_429_unreachable_thenLabelsConverge() async throws {
        let run = try RunDirectory()
        defer { run.remove() }
        try await withDouble { double in
            let uid = try double.create("pods", namespace: "default", podDocument("web"))[path: ["metadata", "uid"]]!
                .stringValue!
            let manager = try makeManager(double, layout: run.layout, events: false, requestTimeout: .seconds(2))
            try await withFakeShims([run.socket("d1")]) { shims in
                let shim = shims[0].shim
                shim.set(containerStatus("c1", uid: uid))
                try await withManager(manager) { manager in
                    #expect(await eventuallyAsync { label(double, "web") == "RUNNING" })
                    double.failNext(3, status: 500, verb: "PATCH")
                    double.failNext(2, status: 429, retryAfterSeconds: 1, verb: "PATCH")
                    shim.transition("c1", to: .scaledDown, event: .checkpointFinished(duration: .milliseconds(10)))
                    #expect(await eventuallyAsync { label(double, "web") == "SCALED_DOWN" })
                    #expect(manager.writer!.statistics.failures >= 1)
                    // Unreachable, the phase changes, the server comes back (watches were cut too).
                    await double.stopListening()
                    shim.transition("c1", to: .running, event: .restoreFinished(duration: .milliseconds(10)))
                    try await Task.sleep(for: .milliseconds(500))
                    try await double.startListening()
                    #expect(await eventuallyAsync { label(double, "web") == "RUNNING" })
                    #expect(await eventuallyAsync { requests(double, "web") == ["cpu": "250m", "memory": "64Mi"] })
                    // Compaction and closed watches: the informer relists, later changes still converge.
                    double.compact()
                    double.closeWatches()
                    shim.transition("c1", to: .scaledDown, event: .checkpointFinished(duration: .milliseconds(10)))
                    #expect(await eventuallyAsync { label(double, "web") == "SCALED_DOWN" })
                    let (dirty, processing, _) = manager.state.queue.pendingPods
                    #expect(dirty + processing <= 1)
                }
            }
        }
    }

    @Test func eventCreateTimedOut_isRetried_withoutADuplicate() async throws {
        let run = try RunDirectory()
        defer { run.remove() }
        try await withDouble { double in
            let uid = try double.create("pods", namespace: "default", podDocument("web"))[path: ["metadata", "uid"]]!
                .stringValue!
            let manager = try makeManager(
                double,
                layout: run.layout,
                labels: false,
                resize: false,
                requestTimeout: .milliseconds(400)
            )
            try await withFakeShims([run.socket("e1")]) { shims in
                let shim = shims[0].shim
                shim.set(containerStatus("c1", uid: uid))
                try await withManager(manager) { manager in
                    #expect(await eventuallyAsync { manager.writer?.informer.hasSynced == true })
                    double.update { $0.responseDelay = .milliseconds(700) }
                    shim.transition("c1", to: .scaledDown, event: .checkpointFinished(duration: .milliseconds(10)))
                    #expect(await eventuallyAsync { events(double, reason: "Scaled down").count == 1 })
                    try await Task.sleep(for: .milliseconds(900))
                    double.update { $0.responseDelay = .zero }
                    #expect(await eventuallyAsync { (manager.writer?.statistics.eventsAlreadyExisting ?? 0) >= 1 })
                    #expect(events(double, reason: "Scaled down").count == 1)
                }
            }
        }
    }

    @Test func dryRunDecisions_becomeEventsAndCounters_labelsStay() async throws {
        let run = try RunDirectory()
        defer { run.remove() }
        try await withDouble { double in
            let uid = try double.create("pods", namespace: "default", podDocument("web"))[path: ["metadata", "uid"]]!
                .stringValue!
            let manager = try makeManager(double, layout: run.layout)
            try await withFakeShims([run.socket("k1")]) { shims in
                let shim = shims[0].shim
                shim.set(containerStatus("c1", uid: uid))
                try await withManager(manager) { manager in
                    #expect(await eventuallyAsync { label(double, "web") == "RUNNING" })
                    shim.transition("c1", to: .running, event: .wouldScaleDown)
                    shim.transition("c1", to: .running, event: .wouldRestore)
                    shim.transition("c1", to: .running, event: .wouldScaleDown)
                    #expect(await eventuallyAsync { events(double, reason: "Would scale down").count == 2 })
                    #expect(await eventuallyAsync { events(double, reason: "Would restore").count == 1 })
                    let text = manager.state.metrics.exposition()
                    #expect(
                        text.contains(
                            #"zeropod_dry_run_scale_downs_total{container="app",pod="web",namespace="default"} 2"#
                        )
                    )
                    #expect(
                        text.contains(
                            #"zeropod_dry_run_would_restores_total{container="app",pod="web",namespace="default"} 1"#
                        )
                    )
                    #expect(label(double, "web") == "RUNNING")
                    #expect(requests(double, "web") == ["cpu": "250m", "memory": "64Mi"])
                    #expect(
                        events(double, reason: "Would scale down").first?["message"]
                            == "Dry run: container app would have been scaled down"
                    )
                }
            }
        }
    }

    @Test func guaranteedPod_labelled_butNotResized() async throws {
        let run = try RunDirectory()
        defer { run.remove() }
        try await withDouble { double in
            let doc = podDocument(
                "gp",
                requests: ["cpu": "1", "memory": "1Gi"],
                limits: ["cpu": "1", "memory": "1Gi"]
            )
            let uid = try double.create("pods", namespace: "default", doc)[path: ["metadata", "uid"]]!.stringValue!
            let manager = try makeManager(double, layout: run.layout, events: false)
            try await withFakeShims([run.socket("f1")]) { shims in
                shims[0].shim.set(containerStatus("c1", pod: "gp", uid: uid, phase: .scaledDown))
                try await withManager(manager) { manager in
                    #expect(await eventuallyAsync { label(double, "gp") == "SCALED_DOWN" })
                    try await Task.sleep(for: .milliseconds(200))
                    #expect(requests(double, "gp") == ["cpu": "1", "memory": "1Gi"])
                    #expect(manager.writer?.statistics.resizesRefused == 0)
                }
            }
        }
    }

    @Test func shimKilled_andGone_noCrash_seriesRemoved() async throws {
        let run = try RunDirectory()
        defer { run.remove() }
        let manager = try Manager(
            configuration: testConfiguration(layout: run.layout, labels: false, events: false, resize: false),
            fleetOptions: {
                var o = ShimFleet.Options()
                o.initialBackoff = .milliseconds(20)
                o.maximumBackoff = .milliseconds(200)
                return o
            }(),
            directoryTick: .milliseconds(50),
            logger: testLogger()
        )
        try await withManager(manager) { manager in
            let socket = run.socket("g1")
            try await withFakeShims([socket]) { shims in
                shims[0].shim.set(containerStatus("c1", uid: "u"))
                #expect(await eventuallyAsync { manager.state.metrics.exportedContainers == ["c1"] })
            }
            // The server is gone and its socket removed (withFakeShims unlinks it): the containers go.
            #expect(await eventuallyAsync { manager.state.metrics.exportedContainers.isEmpty })
            #expect(await eventuallyAsync { manager.fleet.shims.isEmpty })
            // A dead socket file (a SIGKILLed shim) is retried without crashing.
            let fd = socket.withCString { path -> Int32 in
                let s = Glibc.socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
                var address = sockaddr_un()
                address.sun_family = sa_family_t(AF_UNIX)
                withUnsafeMutableBytes(of: &address.sun_path) { raw in
                    _ = strncpy(raw.baseAddress!.assumingMemoryBound(to: CChar.self), path, raw.count - 1)
                }
                _ = withUnsafePointer(to: &address) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                        bind(s, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
                    }
                }
                return s
            }
            defer {
                close(fd)
                unlink(socket)
            }
            #expect(await eventuallyAsync { manager.fleet.statistics.failures >= 3 })
            #expect(manager.fleet.shims == [socket])
        }
    }
}

/// The RBAC rules of config/ (base + the three manager components), read from the YAML files.
func configRules() throws -> [KubeAPIDouble.PolicyRule] {
    let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()
    var rules: [KubeAPIDouble.PolicyRule] = []
    for file in [
        "config/base/rbac.yaml", "config/components/status-labels/rbac.yaml",
        "config/components/status-events/rbac.yaml",
        "config/components/in-place-scaling/rbac.yaml",
    ] {
        let text = try String(contentsOf: root.appendingPathComponent(file), encoding: .utf8)
        for document in try Yams.load_all(yaml: text) {
            guard let object = document as? [String: Any], object["kind"] as? String == "ClusterRole",
                let list = object["rules"] as? [[String: Any]]
            else { continue }
            for rule in list where (rule["apiGroups"] as? [String]) == [""] {
                rules.append(
                    KubeAPIDouble.PolicyRule(
                        verbs: Set(rule["verbs"] as? [String] ?? []),
                        resources: Set(rule["resources"] as? [String] ?? [])
                    )
                )
            }
        }
    }
    return rules
}

@Suite(.serialized) struct RBACTests {
    @Test func configRBAC_isEnoughForEveryWrite_andNoMore() async throws {
        let rules = try configRules()
        #expect(!rules.isEmpty)
        // No update anywhere: the manager never PUTs.
        #expect(!rules.contains { $0.verbs.contains("update") || $0.verbs.contains("*") })
        let run = try RunDirectory()
        defer { run.remove() }
        try await withDouble { double in
            double.update { $0.authorization = ["zeropod-node": rules] }
            let uid = try double.create("pods", namespace: "default", podDocument("web"))[path: ["metadata", "uid"]]!
                .stringValue!
            let manager = try makeManager(double, layout: run.layout)
            try await withFakeShims([run.socket("h1")]) { shims in
                let shim = shims[0].shim
                shim.set(containerStatus("c1", uid: uid))
                try await withManager(manager) { manager in
                    #expect(await eventuallyAsync { label(double, "web") == "RUNNING" })
                    shim.transition("c1", to: .scaledDown, event: .checkpointFinished(duration: .milliseconds(10)))
                    #expect(
                        await eventuallyAsync {
                            requests(double, "web") == ["cpu": "1m", "memory": "1Ki"]
                                && label(double, "web") == "SCALED_DOWN"
                        }
                    )
                    shim.transition("c1", to: .running, event: .restoreFinished(duration: .milliseconds(10)))
                    #expect(
                        await eventuallyAsync {
                            requests(double, "web") == ["cpu": "250m", "memory": "64Mi"]
                                && label(double, "web") == "RUNNING"
                        }
                    )
                    #expect(await eventuallyAsync { events(double).count == 2 })
                    let stats = manager.writer!.statistics
                    #expect(stats.failures == 0 && stats.eventsDropped == 0 && stats.resizesRefused == 0, "\(stats)")
                }
            }
            // And without the resize rule, the resize is forbidden (the rules are what is needed).
            double.update {
                $0.authorization = ["zeropod-node": rules.filter { !$0.resources.contains("pods/resize") }]
            }
            let (status, _) = await forbiddenResize(double)
            #expect(status == 403)
        }
    }

    private func forbiddenResize(_ double: KubeAPIDouble) async -> (Int, String) {
        var kube = double.clientConfiguration(token: "token")
        kube.requestTimeout = .seconds(5)
        guard let client = try? KubeClient(configuration: kube) else { return (0, "") }
        let patch: JSON = ["spec": ["containers": [["name": "app", "resources": ["requests": ["cpu": "2m"]]]]]]
        var result = (200, "")
        do {
            _ = try await client.patch(
                Pod.self,
                .pods,
                namespace: "default",
                name: "web",
                patch: .strategicMerge(patch),
                subresource: "resize"
            )
        } catch {
            result = (error.httpStatus ?? 0, error.message)
        }
        try? await client.shutdown()
        return result
    }
}
