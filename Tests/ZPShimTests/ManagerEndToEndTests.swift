import Foundation
import KubeAPIDouble
import NIOPosix
import Testing
import ZPAPI
import ZPCore
import ZPKube
import ZPTestSupport

#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// A GET with a short timeout: body and status, nil when nothing answered.
func httpGetText(_ url: String) async -> (status: Int, body: String)? {
    var request = URLRequest(url: URL(string: url)!)
    request.timeoutInterval = 5
    guard let (data, response) = try? await URLSession.shared.data(for: request),
        let http = response as? HTTPURLResponse
    else { return nil }
    return (http.statusCode, String(decoding: data, as: UTF8.self))
}

/// Debian's Prometheus (installed by setup), started on a free loopback port with a temporary
/// configuration and storage folder, stopped by its pid.
struct TestPrometheus {
    let process: Process
    let port: Int
    let directory: String

    static var isInstalled: Bool { FileManager.default.isExecutableFile(atPath: "/usr/bin/prometheus") }

    init(scraping target: String, directory: String) throws {
        self.directory = directory
        try FileManager.default.createDirectory(atPath: directory + "/data", withIntermediateDirectories: true)
        try """
        global: {scrape_interval: 1s, evaluation_interval: 1s}
        scrape_configs:
          - job_name: zeropod-manager
            static_configs: [{targets: ["\(target)"]}]
        """.write(toFile: directory + "/prometheus.yml", atomically: true, encoding: .utf8)
        port = freeLoopbackPort()
        process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/prometheus")
        process.arguments = [
            "--config.file=\(directory)/prometheus.yml", "--storage.tsdb.path=\(directory)/data",
            "--web.listen-address=127.0.0.1:\(port)", "--log.level=warn",
        ]
        process.standardOutput = FileHandle(forWritingAtPath: "/dev/null")
        process.standardError = FileHandle(forWritingAtPath: "/dev/null")
        try process.run()
    }

    /// The value of the first sample of an instant query, nil if none.
    func query(_ promql: String) async -> Double? {
        let encoded = promql.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? promql
        guard let (status, body) = await httpGetText("http://127.0.0.1:\(port)/api/v1/query?query=\(encoded)"),
            status == 200,
            let json = try? JSON(parsing: Data(body.utf8)),
            let value = json[path: ["data", "result"]]?.arrayValue?.first?["value"]?.arrayValue?.last?.stringValue
        else { return nil }
        return Double(value)
    }

    func stop() {
        kill(process.processIdentifier, SIGTERM)
        process.waitUntilExit()
        try? FileManager.default.removeItem(atPath: directory)
    }
}

/// The manager end to end: a real containerd (1.6 and 2.x) starts our shim, the real
/// `zeropod-manager` process follows it and writes to the Kubernetes API double; the container
/// scales down and back; label, events and requests follow; a real Prometheus scrapes the manager.
@Suite(.serialized) struct ManagerEndToEndTests {
    @Test(
        .enabled(if: TestPrometheus.isInstalled, "Debian's prometheus is not installed (make setup installs it)"),
        arguments: ContainerdFlavor.all
    )
    func scaleDownAndBack_labelEventsRequestsAndPrometheus(flavor: ContainerdFlavor) async throws {
        let rootfs = try TestPaths.busyboxRootfs()
        let scratch = "/tmp/zpme-\(UUID().uuidString.prefix(8))"
        let runDirectory = scratch + "/run"
        try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        try Data("run-dir = \(runDirectory)\n".utf8).write(to: URL(fileURLWithPath: scratch + "/node.conf"))

        var settings = KubeAPIDouble.Settings()
        settings.tokens = ["token": "system:serviceaccount:zeropod-system:zeropod-node"]
        let double = try await KubeAPIDouble.start(settings: settings)
        do {
            try await scenario(
                flavor: flavor,
                double: double,
                scratch: scratch,
                runDirectory: runDirectory,
                rootfs: rootfs
            )
        } catch {
            await double.stop()
            throw error
        }
        await double.stop()
    }

    private func scenario(
        flavor: ContainerdFlavor,
        double: KubeAPIDouble,
        scratch: String,
        runDirectory: String,
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
        try double.kubeconfig(token: "token").write(toFile: scratch + "/kubeconfig", atomically: true, encoding: .utf8)

        let containerd = try PrivateContainerd(
            flavor: flavor,
            tag: "mg",
            environment: ["ZEROPOD_NODE_CONFIG": scratch + "/node.conf"]
        )
        defer { containerd.stop() }
        let netns = try TestNetns("zpshim-mg")
        defer { netns.delete() }
        let id = "mg1"
        try startCounter(
            containerd,
            netns: netns,
            id: id,
            rootfs: rootfs,
            extra: [
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
            "-kubeconfig=\(scratch)/kubeconfig", "-node-config=\(scratch)/node.conf",
        ]
        manager.environment = ["NODE_NAME": "node-a", "PATH": "/usr/bin:/bin"]
        let managerLog = scratch + "/manager.log"
        _ = FileManager.default.createFile(atPath: managerLog, contents: nil)
        manager.standardOutput = FileHandle(forWritingAtPath: managerLog)
        manager.standardError = FileHandle(forWritingAtPath: managerLog)
        try manager.run()
        defer {
            kill(manager.processIdentifier, SIGTERM)
            manager.waitUntilExit()
        }
        let prometheus = try TestPrometheus(scraping: "127.0.0.1:\(metricsPort)", directory: scratch + "/prometheus")
        defer { prometheus.stop() }

        func label() -> String? {
            double.object("pods", namespace: "default", name: "web")?[path: [
                "metadata", "labels", "status.zeropod.ctrox.dev/app",
            ]]?.stringValue
        }
        func requests() -> [String: String] {
            double.object("pods", namespace: "default", name: "web")?[path: ["spec", "containers"]]?.arrayValue?.first?[
                path: ["resources", "requests"]]?
                .objectValue?.compactMapValues(\.stringValue) ?? [:]
        }
        func managerLogTail() -> String {
            ((try? String(contentsOfFile: managerLog, encoding: .utf8)) ?? "").split(separator: "\n").suffix(30).joined(
                separator: "\n"
            )
        }
        /// Waits for the label to become `value`; returns the wall-clock time it was seen (5 ms polls).
        func waitLabel(_ value: String) async -> Date? {
            let deadline = ContinuousClock.now + .seconds(90)
            while ContinuousClock.now < deadline {
                if label() == value { return Date() }
                try? await Task.sleep(for: .milliseconds(5))
            }
            return nil
        }
        let running = await waitLabel("RUNNING")
        try #require(running != nil, "no RUNNING label; manager log:\n\(managerLogTail())")

        // The shim's own account of each phase change (its stream), to measure the write delay.
        let statusSocket = NodeLayout(runDirectory: runDirectory).statusSocket(
            forShimSocket: containerd.shimSocket(group: id)
        )
        let client = try await ShimStatusClient.connect(
            socketPath: statusSocket,
            group: MultiThreadedEventLoopGroup.singleton
        )
        do {
            try await measure(
                flavor: flavor,
                double: double,
                client: client,
                netns: netns,
                metricsPort: metricsPort,
                prometheus: prometheus,
                scratch: scratch,
                uid: uid,
                label: label,
                requests: requests,
                waitLabel: waitLabel,
                managerLogTail: managerLogTail
            )
            await client.close()
            // A shim killed: containerd runs its `delete`, which removes the status socket; the
            // manager stays up, drops the container's series, and keeps serving.
            let shimPid = try #require(
                processes(matching: ["containerd-shim-zeropod-v2", "-socket", containerd.shimSocket(group: id)]).first
            )
            kill(shimPid, SIGKILL)
            #expect(
                await eventuallyAsync(within: 60) { !FileManager.default.fileExists(atPath: statusSocket) },
                "status socket left behind"
            )
            #expect(
                await eventuallyAsync(within: 60) {
                    guard let text = await httpGetText("http://127.0.0.1:\(metricsPort)/metrics")?.body else {
                        return false
                    }
                    return !text.contains(#"pod="web""#)
                },
                "series of the killed shim's container still exported"
            )
            try await Task.sleep(for: .seconds(1))
            #expect(manager.isRunning, "the manager died with the shim; log:\n\(managerLogTail())")
            #expect(await httpGetText("http://127.0.0.1:\(metricsPort)/healthz")?.status == 200)
        } catch {
            await client.close()
            throw error
        }
    }

    private func measure(
        flavor: ContainerdFlavor,
        double: KubeAPIDouble,
        client: ShimStatusClient,
        netns: TestNetns,
        metricsPort: Int,
        prometheus: TestPrometheus,
        scratch: String,
        uid: String,
        label: () -> String?,
        requests: () -> [String: String],
        waitLabel: (String) async -> Date?,
        managerLogTail: () -> String
    ) async throws {
        var delays: [Double] = []
        var iterator = client.subscribe().makeAsyncIterator()
        func nextPhaseChange(to phase: ContainerLifecycle.StatusPhase) async throws -> Date? {
            while let change = try await iterator.next() {
                if change.status.phase == phase, change.event != nil {
                    return Date(timeIntervalSince1970: Double(change.time.unixNanoseconds) / 1e9)
                }
            }
            return nil
        }
        for cycle in 1...3 {
            let down = try await nextPhaseChange(to: .scaledDown)
            try #require(down != nil)
            let seenDown = await waitLabel("SCALED_DOWN")
            try #require(seenDown != nil, "cycle \(cycle): no SCALED_DOWN label; manager log:\n\(managerLogTail())")
            delays.append(seenDown!.timeIntervalSince(down!) * 1000)
            #expect(
                await eventuallyAsync(within: 60) { requests() == ["cpu": "1m", "memory": "1Ki"] },
                "cycle \(cycle): requests \(requests())"
            )
            #expect(netns.httpGet(port: 8080) != nil, "cycle \(cycle): no answer after the restore")
            let up = try await nextPhaseChange(to: .running)
            try #require(up != nil)
            let seenUp = await waitLabel("RUNNING")
            try #require(seenUp != nil, "cycle \(cycle): no RUNNING label")
            delays.append(seenUp!.timeIntervalSince(up!) * 1000)
            #expect(
                await eventuallyAsync(within: 60) { requests() == ["cpu": "250m", "memory": "64Mi"] },
                "cycle \(cycle): requests \(requests())"
            )
        }
        let sorted = delays.sorted()
        print(
            "manager e2e \(flavor.name): phase change → label write seen: median \(String(format: "%.1f", sorted[sorted.count / 2])) ms, "
                + "max \(String(format: "%.1f", sorted.last!)) ms over \(sorted.count) changes (5 ms polls): \(delays.map { String(format: "%.1f", $0) })"
        )
        #expect(
            await eventuallyAsync(within: 60) {
                double.objects("events").filter { $0["reason"] == "Scaled down" }.count == 3
            }
        )
        #expect(
            await eventuallyAsync(within: 60) {
                double.objects("events").filter { $0["reason"] == "Running" }.count == 3
            }
        )
        let event = double.objects("events").first { $0["reason"] == "Scaled down" }
        #expect(event?[path: ["involvedObject", "uid"]]?.stringValue == uid)
        #expect(event?["reportingComponent"] == "zeropod.ctrox.dev/manager")

        // /metrics passes promtool, and Prometheus scraped the values.
        let exposition = await httpGetText("http://127.0.0.1:\(metricsPort)/metrics")
        #expect(exposition?.status == 200)
        try exposition?.body.write(toFile: scratch + "/metrics.txt", atomically: true, encoding: .utf8)
        let check = try run(["/bin/sh", "-c", "promtool check metrics < \(scratch)/metrics.txt"], timeout: 30)
        #expect(check.status == 0, "promtool: \(check.stdout) \(check.stderr)")
        print("promtool check metrics: exit \(check.status) \(check.stdout)\(check.stderr)")
        let labels = #"{container="app",pod="web",namespace="default"}"#
        // Waits for the last restore's figures too: a scrape between the third checkpoint and the
        // third restore saw the checkpoints only (once, 2.x).
        #expect(
            await eventuallyAsync(within: 30) {
                let checkpoints = await prometheus.query("zeropod_checkpoint_duration_seconds_count\(labels)")
                let restores = await prometheus.query("zeropod_restore_duration_seconds_count\(labels)")
                let running = await prometheus.query("zeropod_running\(labels)")
                return checkpoints == 3 && restores == 3 && running == 1
            }
        )
        let queries = [
            "zeropod_running\(labels)", "zeropod_checkpoint_duration_seconds_count\(labels)",
            "zeropod_restore_duration_seconds_count\(labels)", "zeropod_checkpoint_errors_total\(labels)",
            "histogram_quantile(0.5, zeropod_restore_duration_seconds_bucket\(labels))",
            "zeropod_last_restore_time\(labels)",
        ]
        for q in queries {
            print("prometheus \(flavor.name): \(q) = \(await prometheus.query(q).map { String($0) } ?? "none")")
        }
        #expect(await prometheus.query("zeropod_running\(labels)") == 1)
        #expect(await prometheus.query("zeropod_restore_duration_seconds_count\(labels)") == 3)
        #expect(await prometheus.query("zeropod_checkpoint_errors_total\(labels)") == 0)
    }
}
