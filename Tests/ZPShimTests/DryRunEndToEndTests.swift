import Foundation
import KubeAPIDouble
import NIOPosix
import Synchronization
import Testing
import ZPAPI
import ZPCore
import ZPKube
import ZPTestSupport

#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// A pod network namespace with a client namespace on a veth pair: real traffic comes from
/// `clientAddress`, kubelet-like probes from `probeAddress`, which the node settings name as a
/// probe source (loopback inside the pod is not activity either, by default). The veth exists
/// before the container, so the pod's redirector tracks it.
private struct DryRunLab {
    let scratch: String
    let runDirectory: String
    let stateDirectory: String
    let pod: TestNetns
    let client: TestNetns
    static let podAddress = "10.77.31.1"
    static let clientAddress = "10.77.31.2"
    static let probeAddress = "10.77.31.3"

    init(tag: String) throws {
        scratch = "/tmp/zpdr-\(UUID().uuidString.prefix(8))"
        runDirectory = scratch + "/run"
        stateDirectory = scratch + "/state"
        try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
        try Data(
            """
            run-dir = \(runDirectory)
            state-dir = \(stateDirectory)
            probe-source-addresses = \(Self.probeAddress)

            """.utf8
        ).write(to: URL(fileURLWithPath: scratch + "/node.conf"))
        pod = try TestNetns("zpshim-\(tag)")
        client = try TestNetns("zpshim-\(tag)c")
        let suffix = String(UInt32.random(in: 0..<0xFFFF), radix: 16)
        try connectVeth(
            pod,
            "zpdp\(suffix)",
            addresses: ["\(Self.podAddress)/24"],
            to: client,
            "zpdc\(suffix)",
            addresses: ["\(Self.clientAddress)/24", "\(Self.probeAddress)/24"]
        )
    }

    var nodeConfig: String { scratch + "/node.conf" }

    /// A GET from the client namespace, sent from `source`: the body, or nil (3 s timeout). The
    /// counter server listens for one connection at a time, so callers retry.
    func get(from source: String, agent: String? = nil) -> String? {
        let agentArguments = agent.map { ["-A", $0] } ?? []
        guard
            let r = try? client.exec(
                ["curl", "-s", "--max-time", "3", "--interface", source] + agentArguments
                    + ["http://\(Self.podAddress):8080/"],
                timeout: 10
            ),
            r.status == 0, r.stdout.hasPrefix("count=")
        else { return nil }
        return r.stdout
    }

    /// The counter's value in a GET from `source`, retried for up to 20 s.
    func count(from source: String, agent: String? = nil) -> Int? {
        var body: String?
        _ = eventually(within: 20) {
            body = get(from: source, agent: agent)
            return body != nil
        }
        return body.flatMap { Int($0.dropFirst(6).trimmingCharacters(in: .whitespacesAndNewlines)) }
    }

    func remove() {
        client.delete()
        pod.delete()
        try? FileManager.default.removeItem(atPath: scratch)
    }
}

/// `starttime` of `/proc/PID/stat` (field 22, clock ticks since boot): the same pid with the same
/// start time is the same process, not a restored or restarted one.
private func startTime(of pid: Int32) -> String? {
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
        let end = stat.range(of: ")", options: .backwards)
    else { return nil }
    let fields = stat[end.upperBound...].split(separator: " ")
    return fields.count > 19 ? String(fields[19]) : nil
}

/// Dry run end to end (`zeropod.ctrox.dev/dry-run: "true"`, decision 0031): a real containerd
/// (1.6 and 2.x) starts our shim; the container is never checkpointed or redirected, the shim
/// reports "would scale down" / "would restore" on its status stream and in its metrics, and the
/// manager turns them into Kubernetes events and counters.
@Suite(.serialized) struct DryRunEndToEndTests {
    @Test(arguments: ContainerdFlavor.all)
    func dryRun_reportsWouldScaleDownAndWouldRestore_theProcessKeepsRunningUntouched(
        flavor: ContainerdFlavor
    ) async throws {
        let rootfs = try TestPaths.busyboxRootfs()
        let lab = try DryRunLab(tag: "dr")
        defer { lab.remove() }
        let containerd = try PrivateContainerd(
            flavor: flavor,
            tag: "dr",
            environment: ["ZEROPOD_NODE_CONFIG": lab.nodeConfig]
        )
        defer { containerd.stop() }
        let id = "dry1"
        try startCounter(
            containerd,
            netns: lab.pod,
            id: id,
            rootfs: rootfs,
            extra: [
                "--annotation", "zeropod.ctrox.dev/dry-run=true", "--annotation",
                "io.kubernetes.cri.container-name=app",
            ]
        )
        defer { removeTask(containerd, id) }

        let statusSocket = NodeLayout(runDirectory: lab.runDirectory).statusSocket(
            forShimSocket: containerd.shimSocket(group: id)
        )
        #expect(await eventuallyAsync { FileManager.default.fileExists(atPath: statusSocket) }, "no status socket")
        let client = try await ShimStatusClient.connect(
            socketPath: statusSocket,
            group: MultiThreadedEventLoopGroup.singleton
        )
        let changes = EventLog<StatusAPI.StatusChange>()
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                do {
                    for try await change in client.subscribe() { changes.sink(change) }
                } catch {}  // the connection closes at the end of the test
            }
            do {
                try await scenario(containerd: containerd, lab: lab, id: id, client: client, changes: changes)
            } catch {
                await client.close()
                group.cancelAll()
                throw error
            }
            await client.close()
            group.cancelAll()
        }
    }

    private func scenario(
        containerd: PrivateContainerd,
        lab: DryRunLab,
        id: String,
        client: ShimStatusClient,
        changes: EventLog<StatusAPI.StatusChange>
    ) async throws {
        let initial = try await client.status(id: id)
        let pid = initial.pid
        let started = try #require(startTime(of: pid), "no /proc/\(pid)/stat")
        #expect(initial.lifecyclePhase == .running && pid > 0)
        func dryRunEvents() -> [StatusAPI.Event] {
            changes.all.compactMap(\.event).filter { $0 == .wouldScaleDown || $0 == .wouldRestore }
        }
        func metrics() async -> StatusAPI.ContainerMetrics? { try? await client.metrics().first { $0.id == id } }
        func logTail() -> String { containerd.log(tail: 30) }

        // 1. Idle for the scale-down duration (2 s): "would scale down", and nothing else happens.
        let waitStart = ContinuousClock.now
        #expect(
            await eventuallyAsync(within: 60) { dryRunEvents() == [.wouldScaleDown] },
            "no would-scale-down: \(logTail())"
        )
        let firstDecision = ContinuousClock.now - waitStart
        let down = try #require(changes.all.last { $0.event == .wouldScaleDown })
        #expect(
            down.status.lifecyclePhase == .running && down.status.phase == .running && down.status.pid == pid,
            "the would-scale-down change must keep the running phase and pid: \(down.status)"
        )
        #expect(containerd.logLines(containing: "dry run: would have scaled down after 2s of inactivity").count == 1)
        #expect(
            containerd.logLines(containing: "dryRun=true").contains { $0.contains("scale-down armed") },
            "\(logTail())"
        )

        // 2. Probes from the node's probe source, answered by the application itself (no
        //    activator in the path), over several polls: no would-restore.
        var lastCount = 1
        for probe in 1...3 {
            let value = lab.count(from: DryRunLab.probeAddress, agent: "kube-probe/1.30")
            #expect(value == lastCount + 1, "probe \(probe) answered \(String(describing: value)) after \(lastCount)")
            lastCount = value ?? lastCount
        }
        let probesCounted = await eventuallyAsync(within: 4) { dryRunEvents().count > 1 }
        #expect(!probesCounted, "a probe counted as traffic: \(dryRunEvents())\n\(logTail())")
        #expect(await metrics().map { $0.dryRunScaleDownsTotal == 1 && $0.dryRunWouldRestoresTotal == 0 } == true)

        // 3. A real request: served by the same process from its own memory (the counter goes on),
        //    and reported as the restore that would have happened.
        let real = lab.count(from: DryRunLab.clientAddress)
        #expect(real == lastCount + 1, "the real request got \(String(describing: real)) after \(lastCount)")
        lastCount = real ?? lastCount
        // (A prefix: the next would-scale-down follows 2 s after the restore, maybe before we look.)
        #expect(
            await eventuallyAsync(within: 30) { dryRunEvents().starts(with: [.wouldScaleDown, .wouldRestore]) },
            "no would-restore: \(dryRunEvents())\n\(logTail())"
        )
        #expect(containerd.logLines(containing: "dry run: would have restored (traffic").count == 1, "\(logTail())")

        // 4. The cycle starts over: idle again, the next would-scale-down.
        #expect(
            await eventuallyAsync(within: 60) { dryRunEvents() == [.wouldScaleDown, .wouldRestore, .wouldScaleDown] },
            "no second would-scale-down: \(dryRunEvents())\n\(logTail())"
        )
        let countersReached = await eventuallyAsync(within: 30) {
            await metrics().map { $0.dryRunScaleDownsTotal == 2 && $0.dryRunWouldRestoresTotal == 1 } == true
        }
        let lastMetrics = await metrics()
        #expect(countersReached, "metrics: \(String(describing: lastMetrics))")
        let metricsText = try await runOffThePool(
            [
                "/usr/bin/env", "ZEROPOD_NODE_CONFIG=\(lab.nodeConfig)",
                TestPaths.buildDirectory + "/zeropod", "status", "--metrics", "--socket",
                NodeLayout(runDirectory: lab.runDirectory).statusSocket(
                    forShimSocket: containerd.shimSocket(group: id)
                ),
            ],
            timeout: 30
        )
        let cliLines = metricsText.stdout.split(separator: "\n").map(String.init)
        let cliLabels = #"{container="app",pod="",namespace=""}"#
        #expect(
            cliLines.contains("zeropod_dry_run_scale_downs_total\(cliLabels) 2")
                && cliLines.contains("zeropod_dry_run_would_restores_total\(cliLabels) 1")
                && cliLines.contains("zeropod_running\(cliLabels) 1"),
            "zeropod status --metrics:\n\(metricsText.stdout)"
        )
        print(
            "[zpshim-dryrun] zeropod status --metrics: "
                + cliLines.filter { $0.hasPrefix("zeropod_dry_run") || $0.hasPrefix("zeropod_running") }.joined(
                    separator: " | "
                )
        )

        // 5. Untouched: the same process (pid and start time), still running and counting; no
        //    checkpoint, no restore, no image; containerd sees the same task.
        #expect(isAlive(pid) && startTime(of: pid) == started, "the init process changed: pid \(pid)")
        let status = try await client.status(id: id)
        #expect(
            status.pid == pid && status.lifecyclePhase == .running && status.lastCheckpoint == nil
                && status.lastRestore == nil
        )
        #expect(
            taskRow(containerd, id).map { $0.pid == pid && $0.status == "RUNNING" } == true,
            "\(String(describing: taskRow(containerd, id)))"
        )
        #expect(
            containerd.logLines(containing: "checkpointing done").isEmpty
                && containerd.logLines(containing: "restored process:").isEmpty
        )
        #expect(containerd.logLines(containing: "pre-dump").isEmpty)
        let images = NodeLayout(stateDirectory: lab.stateDirectory).imageDirectory(
            containerdNamespace: containerd.namespace,
            containerID: id
        )
        #expect(!FileManager.default.fileExists(atPath: images), "checkpoint images at \(images)")
        #expect(lab.count(from: DryRunLab.clientAddress) == lastCount + 1, "the process lost its memory")
        print(
            "[zpshim-dryrun] first would-scale-down \(firstDecision) after start (scale-down 2 s, poll 1 s); "
                + "events: \(dryRunEvents()); pid \(pid) start time \(started) unchanged"
        )
    }
    @Test(
        .enabled(
            if: TestPrometheus.isInstalled,
            "Debian's prometheus (and promtool) is not installed (make setup installs it)"
        ),
        arguments: ContainerdFlavor.all
    )
    func dryRun_throughTheManager_eventsAndCountersAppear_labelAndRequestsStay(flavor: ContainerdFlavor) async throws {
        let rootfs = try TestPaths.busyboxRootfs()
        let lab = try DryRunLab(tag: "drm")
        defer { lab.remove() }
        var settings = KubeAPIDouble.Settings()
        settings.tokens = ["token": "system:serviceaccount:zeropod-system:zeropod-node"]
        let double = try await KubeAPIDouble.start(settings: settings)
        do {
            try await managerScenario(flavor: flavor, double: double, lab: lab, rootfs: rootfs)
        } catch {
            await double.stop()
            throw error
        }
        await double.stop()
    }

    private func managerScenario(
        flavor: ContainerdFlavor,
        double: KubeAPIDouble,
        lab: DryRunLab,
        rootfs: String
    ) async throws {
        let created = try double.create(
            "pods",
            namespace: "default",
            [
                "apiVersion": "v1", "kind": "Pod", "metadata": ["name": "web", "namespace": "default"],
                "spec": [
                    "nodeName": "node-a",
                    "containers": [
                        [
                            "name": "app", "image": "busybox",
                            "resources": ["requests": ["cpu": "250m", "memory": "64Mi"]],
                        ]
                    ],
                ],
            ]
        )
        let uid = created[path: ["metadata", "uid"]]!.stringValue!
        try double.kubeconfig(token: "token").write(
            toFile: lab.scratch + "/kubeconfig",
            atomically: true,
            encoding: .utf8
        )
        let containerd = try PrivateContainerd(
            flavor: flavor,
            tag: "drm",
            environment: ["ZEROPOD_NODE_CONFIG": lab.nodeConfig]
        )
        defer { containerd.stop() }
        let id = "drm1"
        try startCounter(
            containerd,
            netns: lab.pod,
            id: id,
            rootfs: rootfs,
            extra: [
                "--annotation", "zeropod.ctrox.dev/dry-run=true",
                "--annotation", "io.kubernetes.cri.container-name=app", "--annotation",
                "io.kubernetes.cri.sandbox-name=web",
                "--annotation", "io.kubernetes.cri.sandbox-namespace=default", "--annotation",
                "io.kubernetes.cri.sandbox-uid=\(uid)",
            ]
        )
        defer { removeTask(containerd, id) }

        // The manager process, as the DaemonSet runs it (flags of the original, NODE_NAME).
        let metricsPort = freeLoopbackPort()
        let manager = Process()
        manager.executableURL = URL(fileURLWithPath: TestPaths.buildDirectory + "/zeropod-manager")
        manager.arguments = [
            "-metrics-addr=127.0.0.1:\(metricsPort)", "-status-labels", "-status-events", "-in-place-scaling",
            "-kubeconfig=\(lab.scratch)/kubeconfig", "-node-config=\(lab.nodeConfig)",
        ]
        manager.environment = ["NODE_NAME": "node-a", "PATH": "/usr/bin:/bin"]
        let managerLog = lab.scratch + "/manager.log"
        _ = FileManager.default.createFile(atPath: managerLog, contents: nil)
        manager.standardOutput = FileHandle(forWritingAtPath: managerLog)
        manager.standardError = FileHandle(forWritingAtPath: managerLog)
        try manager.run()
        defer {
            kill(manager.processIdentifier, SIGTERM)
            manager.waitUntilExit()
        }
        func pod() -> JSON? { double.object("pods", namespace: "default", name: "web") }
        func label() -> String? { pod()?[path: ["metadata", "labels", "status.zeropod.ctrox.dev/app"]]?.stringValue }
        func requests() -> [String: String] {
            pod()?[path: ["spec", "containers"]]?.arrayValue?.first?[path: ["resources", "requests"]]?.objectValue?
                .compactMapValues(\.stringValue) ?? [:]
        }
        func events(_ reason: String) -> [JSON] {
            double.objects("events").filter { $0["reason"]?.stringValue == reason }
        }
        func managerLogTail() -> String {
            ((try? String(contentsOfFile: managerLog, encoding: .utf8)) ?? "").split(separator: "\n").suffix(30).joined(
                separator: "\n"
            )
        }
        let labels = #"{container="app",pod="web",namespace="default"}"#
        func counter(_ name: String) async -> Double? {
            guard let text = await httpGetText("http://127.0.0.1:\(metricsPort)/metrics")?.body,
                let line = text.split(separator: "\n").first(where: { $0.hasPrefix(name + labels + " ") })
            else { return nil }
            return Double(line.split(separator: " ").last ?? "")
        }
        #expect(
            await eventuallyAsync(within: 60) { label() == "RUNNING" },
            "no RUNNING label; manager log:\n\(managerLogTail())"
        )

        // Idle for 2 s: the shim reports the would-be scale-down; the manager makes an event and
        // counts it, and leaves the label and the requests alone.
        #expect(
            await eventuallyAsync(within: 60) { events("Would scale down").count == 1 },
            "no event; manager log:\n\(managerLogTail())\nshim:\n\(containerd.log(tail: 20))"
        )
        let event = events("Would scale down").first
        #expect(event?[path: ["involvedObject", "uid"]]?.stringValue == uid)
        #expect(
            event?["message"]?.stringValue == "Dry run: container app would have been scaled down",
            "\(String(describing: event))"
        )
        #expect(event?["reportingComponent"] == "zeropod.ctrox.dev/manager")
        #expect(await eventuallyAsync(within: 30) { await counter("zeropod_dry_run_scale_downs_total") == 1 })
        #expect(await counter("zeropod_dry_run_would_restores_total") == 0)
        #expect(
            label() == "RUNNING" && requests() == ["cpu": "250m", "memory": "64Mi"],
            "label \(String(describing: label())), requests \(requests())"
        )

        // Probes from the node's probe source do not count; a real request does.
        #expect(lab.count(from: DryRunLab.probeAddress, agent: "kube-probe/1.30") == 2)
        #expect(lab.count(from: DryRunLab.clientAddress) == 3)
        #expect(
            await eventuallyAsync(within: 60) { events("Would restore").count == 1 },
            "no would-restore event: \(managerLogTail())"
        )
        #expect(
            events("Would restore").first?["message"]?.stringValue == "Dry run: container app would have been restored"
        )
        #expect(await eventuallyAsync(within: 30) { await counter("zeropod_dry_run_would_restores_total") == 1 })
        // The cycle starts over: 2 s after the restore, the next would-be scale-down.
        #expect(
            await eventuallyAsync(within: 60) { events("Would scale down").count == 2 },
            "no second event: \(managerLogTail())"
        )
        #expect(await eventuallyAsync(within: 30) { await counter("zeropod_dry_run_scale_downs_total") == 2 })
        #expect(await counter("zeropod_dry_run_would_restores_total") == 1)

        // Never a real scale-down: no such event, label, request change or checkpoint.
        #expect(
            events("Scaled down").isEmpty && label() == "RUNNING" && requests() == ["cpu": "250m", "memory": "64Mi"]
        )
        #expect(containerd.logLines(containing: "checkpointing done").isEmpty)
        #expect(await counter("zeropod_running") == 1)
        let exposition = await httpGetText("http://127.0.0.1:\(metricsPort)/metrics")
        try exposition?.body.write(toFile: lab.scratch + "/metrics.txt", atomically: true, encoding: .utf8)
        let check = try run(["/bin/sh", "-c", "promtool check metrics < \(lab.scratch)/metrics.txt"], timeout: 30)
        #expect(check.status == 0, "promtool: \(check.stdout) \(check.stderr)")
        print(
            "[zpshim-dryrun] manager \(flavor.name): events \(double.objects("events").compactMap { $0["reason"]?.stringValue }); "
                + (exposition?.body.split(separator: "\n").filter { $0.hasPrefix("zeropod_dry_run") }.joined(
                    separator: " | "
                ) ?? "no /metrics")
        )
    }
}
