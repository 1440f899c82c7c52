import Foundation
import KubeAPIDouble
import Synchronization
import Testing
import ZPKube
import ZPTestSupport

/// Real kubectl (Debian sid's 1.36.4, from the cache `make setup` fills) against ``KubeAPIDouble``,
/// a test double of the Kubernetes API server (there is no kube-apiserver on these machines). The
/// double serves HTTPS with a CA made in-process and authenticates bearer tokens; it enforces
/// resourceVersions, watches, the patch types and their merge rules, pod update rules, field
/// validation and `Status` error bodies, and answers kubectl's server-side Table requests. When
/// kubectl accepts its answers, prints what a real cluster would print, and the double's state
/// changes the way kubectl asked, the double speaks the API server's wire protocol for these calls.
@Suite(.enabled(if: kubectlAvailable, "kubectl 1.36.4 is not in the cache (make setup installs it)"))
struct KubectlTests {
    static let token = "kubectl-test-token"

    func withDouble(_ body: (KubeAPIDouble, String) async throws -> Void) async throws {
        var settings = KubeAPIDouble.Settings()
        settings.tokens = [KubectlTests.token: "tester"]
        let double = try await KubeAPIDouble.start(settings: settings)
        let folder = try TemporaryDirectory("zpkube")
        do {
            let config = try folder.write("kubeconfig", double.kubeconfig(token: KubectlTests.token))
            try await body(double, config)
        } catch {
            folder.remove()
            await double.stop()
            throw error
        }
        folder.remove()
        await double.stop()
    }

    @Test func getPodsWide_printsTheServerTable() async throws {
        try await withDouble { double, config in
            var running = podJSON("web", node: "node-a")
            running[path: ["status"]] = [
                "phase": "Running", "podIP": "10.1.0.7",
                "containerStatuses": [
                    [
                        "name": "app", "ready": true, "restartCount": 2, "image": "busybox", "imageID": "",
                        "started": true,
                    ]
                ],
            ]
            try double.create("pods", namespace: "default", running)
            try double.create("pods", namespace: "default", podJSON("db", node: "node-b"))
            // Status is the kubelet's: set it through the status subresource like a kubelet does.
            let status = double.call(
                "PATCH",
                "/api/v1/namespaces/default/pods/web/status",
                body: ["status": running["status"]!],
                contentType: "application/merge-patch+json"
            )
            #expect(status.status == 200)

            let result = try await kubectl(["get", "pods", "-o", "wide"], kubeconfig: config)
            #expect(result.status == 0, "\(result.stderr)")
            let lines = result.stdout.split(separator: "\n").map {
                $0.split(separator: " ", omittingEmptySubsequences: true).map(String.init)
            }
            #expect(
                lines.first == [
                    "NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE", "NOMINATED", "NODE", "READINESS",
                    "GATES",
                ]
            )
            #expect(lines.count == 3)
            let web = lines.first { $0.first == "web" } ?? []
            #expect(web.count == 9)
            #expect(Array(web.prefix(4)) == ["web", "1/1", "Running", "2"])
            #expect(Array(web.suffix(4)) == ["10.1.0.7", "node-a", "<none>", "<none>"])
            let db = lines.first { $0.first == "db" } ?? []
            #expect(Array(db.prefix(3)) == ["db", "0/1", "Pending"])
            #expect(db.contains("node-b"))

            let list = try #require(double.requests.last { $0.path == "/api/v1/namespaces/default/pods" })
            #expect(list.accept.hasPrefix("application/json;as=Table;v=v1;g=meta.k8s.io"))
            #expect(list.user == "tester")
        }
    }

    @Test func getPodsWatch_printsEveryChange() async throws {
        try await withDouble { double, config in
            try double.create("pods", namespace: "default", podJSON("web"))
            let process = Process()
            process.executableURL = URL(fileURLWithPath: kubectlPath)
            process.arguments = ["--kubeconfig", config, "get", "pods", "--watch", "--output-watch-events"]
            let out = Pipe()
            process.standardOutput = out
            process.standardError = Pipe()
            try process.run()
            let pid = process.processIdentifier
            defer {
                // Stop kubectl by its pid (it would watch for ever).
                kill(pid, SIGTERM)
                process.waitUntilExit()
            }
            let collected = LineCollector()
            let reader = out.fileHandleForReading
            reader.readabilityHandler = { handle in collected.append(handle.availableData) }
            defer { reader.readabilityHandler = nil }

            #expect(await eventuallyAsync { collected.lines.contains { $0.hasPrefix("ADDED") && $0.contains("web") } })
            #expect(await eventuallyAsync { double.openWatches == 1 })
            try double.create("pods", namespace: "default", podJSON("api"))
            double.call(
                "PATCH",
                "/api/v1/namespaces/default/pods/web/status",
                body: ["status": ["phase": "Running"]],
                contentType: "application/merge-patch+json"
            )
            double.call("DELETE", "/api/v1/namespaces/default/pods/api")
            #expect(
                await eventuallyAsync { collected.lines.contains { $0.hasPrefix("DELETED") && $0.contains("api") } }
            )
            let events = collected.lines.filter { !$0.hasPrefix("EVENT") }.map {
                $0.split(separator: " ").prefix(2).joined(separator: " ")
            }
            #expect(events == ["ADDED web", "ADDED api", "MODIFIED web", "DELETED api"])
            #expect(collected.lines.contains { $0.hasPrefix("MODIFIED") && $0.contains("Running") })

            let watch = try #require(double.requests.last { $0.query["watch"] == "true" })
            #expect(watch.accept.hasPrefix("application/json;as=Table"))
            #expect(watch.query["resourceVersion"] != nil)
        }
    }

    @Test func label_sendsAMergePatchAndTheLabelIsStored() async throws {
        try await withDouble { double, config in
            try double.create("pods", namespace: "default", podJSON("web"))
            let before = try #require(double.object("pods", namespace: "default", name: "web"))
            let result = try await kubectl(
                ["label", "pod", "web", "status.zeropod.ctrox.dev/app=SCALED_DOWN"],
                kubeconfig: config
            )
            #expect(result.status == 0, "\(result.stderr)")
            #expect(result.stdout == "pod/web labeled\n")
            let after = try #require(double.object("pods", namespace: "default", name: "web"))
            #expect(after[path: ["metadata", "labels", "status.zeropod.ctrox.dev/app"]] == "SCALED_DOWN")
            #expect(after[path: ["metadata", "resourceVersion"]] != before[path: ["metadata", "resourceVersion"]])
            let patch = try #require(double.requests.last { $0.verb == "PATCH" })
            #expect(patch.contentType == "application/merge-patch+json")
            #expect(patch.query["fieldManager"] == "kubectl-label")

            // kubectl checks label values itself; sent in a patch, the double refuses one with a 422
            // Status whose message kubectl prints.
            let bad = try await kubectl(
                ["patch", "pod", "web", "--type=merge", "-p", #"{"metadata":{"labels":{"x":"not valid!"}}}"#],
                kubeconfig: config
            )
            #expect(bad.status != 0)
            #expect(
                bad.stderr.contains(#"The Pod "web" is invalid: metadata.labels: Invalid value: "not valid!""#),
                "\(bad.stderr)"
            )
        }
    }

    @Test func patch_mergeAndStrategic() async throws {
        try await withDouble { double, config in
            try double.create(
                "pods",
                namespace: "default",
                podJSON("web", containers: [("app", ["cpu": "100m"], [:]), ("sidecar", ["cpu": "10m"], [:])])
            )
            let merge = try await kubectl(
                [
                    "patch", "pod", "web", "--type=merge", "-p",
                    #"{"metadata":{"annotations":{"zeropod.ctrox.dev/cpu-requests":"{\"app\":\"100m\"}"}}}"#,
                ],
                kubeconfig: config
            )
            #expect(merge.status == 0, "\(merge.stderr)")
            #expect(merge.stdout == "pod/web patched\n")
            var pod = try #require(double.object("pods", namespace: "default", name: "web"))
            #expect(pod[path: ["metadata", "annotations", "zeropod.ctrox.dev/cpu-requests"]] == #"{"app":"100m"}"#)

            // Strategic: containers merge by name, so only `app` changes and `sidecar` stays.
            let strategic = try await kubectl(
                [
                    "patch", "pod", "web", "--type=strategic", "-p",
                    #"{"spec":{"containers":[{"name":"app","image":"busybox:1.37"}]}}"#,
                ],
                kubeconfig: config
            )
            #expect(strategic.status == 0, "\(strategic.stderr)")
            pod = try #require(double.object("pods", namespace: "default", name: "web"))
            let containers = pod[path: ["spec", "containers"]]?.arrayValue ?? []
            #expect(containers.map { $0["name"]?.stringValue } == ["app", "sidecar"])
            #expect(containers.first?["image"] == "busybox:1.37")

            // The same list as a merge patch replaces the list: a pod update may not drop a container.
            let replace = try await kubectl(
                [
                    "patch", "pod", "web", "--type=merge", "-p",
                    #"{"spec":{"containers":[{"name":"app","image":"busybox:1.37"}]}}"#,
                ],
                kubeconfig: config
            )
            #expect(replace.status != 0)
            #expect(replace.stderr.contains("pod updates may not change fields other than"), "\(replace.stderr)")

            // A patch that changes nothing leaves the resourceVersion alone; kubectl says so.
            let version = pod[path: ["metadata", "resourceVersion"]]
            let noChange = try await kubectl(
                [
                    "patch", "pod", "web", "--type=strategic", "-p",
                    #"{"spec":{"containers":[{"name":"app","image":"busybox:1.37"}]}}"#,
                ],
                kubeconfig: config
            )
            #expect(noChange.stdout == "pod/web patched (no change)\n", "\(noChange.stderr)")
            #expect(
                double.object("pods", namespace: "default", name: "web")?[path: ["metadata", "resourceVersion"]]
                    == version
            )
        }
    }

    @Test func getEvents_showsAnEventCreatedByTheClient() async throws {
        try await withDouble { double, config in
            let pod = try double.create("pods", namespace: "default", podJSON("web"))
            let client = try KubeClient(configuration: double.clientConfiguration(token: KubectlTests.token))
            do {
                let now = Date()
                let event = Event(
                    metadata: ObjectMeta(generateName: "zeropod-status-event-", namespace: "default"),
                    involvedObject: ObjectReference(
                        apiVersion: "v1",
                        kind: "Pod",
                        name: "web",
                        namespace: "default",
                        uid: pod[path: ["metadata", "uid"]]?.stringValue,
                        fieldPath: "spec.containers{app}"
                    ),
                    reason: "Scaled down",
                    message: "Scaled down container app in 120ms",
                    source: EventSource(component: "zeropod.ctrox.dev/manager", host: "node-a"),
                    firstTimestamp: KubeTime.time(now),
                    lastTimestamp: KubeTime.time(now),
                    type: "Normal",
                    eventTime: KubeTime.microTime(now),
                    action: "Scaled down",
                    reportingComponent: "zeropod.ctrox.dev/manager",
                    reportingInstance: "node-a"
                )
                let created = try await client.create(event, .events, namespace: "default")
                #expect(created.metadata.name?.hasPrefix("zeropod-status-event-") == true)
            } catch {
                try? await client.shutdown()
                throw error
            }
            try await client.shutdown()

            let result = try await kubectl(["get", "events"], kubeconfig: config)
            #expect(result.status == 0, "\(result.stderr)")
            let lines = result.stdout.split(separator: "\n").map(String.init)
            #expect(
                lines.first?.split(separator: " ", omittingEmptySubsequences: true) == [
                    "LAST", "SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE",
                ]
            )
            #expect(lines.count == 2)
            #expect(
                lines.last?.contains("Normal   Scaled down   pod/web   Scaled down container app in 120ms") == true,
                "\(lines)"
            )
        }
    }

    @Test func wrongToken_isUnauthorized() async throws {
        try await withDouble { double, _ in
            let folder = try TemporaryDirectory("zpkube")
            defer { folder.remove() }
            let config = try folder.write("kubeconfig", double.kubeconfig(token: "wrong"))
            let result = try await kubectl(["get", "pods"], kubeconfig: config)
            #expect(result.status != 0)
            #expect(result.stderr.contains("error: You must be logged in to the server"), "\(result.stderr)")
            #expect(double.requests.allSatisfy { $0.user == nil })
        }
    }

    @Test func requestTimeout_addsTheTimeoutParameter() async throws {
        try await withDouble { double, config in
            let result = try await kubectl(["get", "pods", "--request-timeout=7s"], kubeconfig: config)
            #expect(result.status == 0, "\(result.stderr)")
            let list = try #require(double.requests.last { $0.path == "/api/v1/namespaces/default/pods" })
            #expect(list.query["timeout"] == "7s")
        }
    }

    @Test func plainHTTP_kubectlSendsNoToken() async throws {
        var settings = KubeAPIDouble.Settings()
        settings.tls = false
        settings.allowAnonymous = true
        settings.tokens = [KubectlTests.token: "tester"]
        let double = try await KubeAPIDouble.start(settings: settings)
        let folder = try TemporaryDirectory("zpkube")
        defer { folder.remove() }
        let config = try folder.write(
            "kubeconfig",
            """
            apiVersion: v1
            kind: Config
            clusters:
            - {name: plain, cluster: {server: "\(double.url)"}}
            contexts:
            - {name: plain, context: {cluster: plain, user: u}}
            current-context: plain
            users:
            - {name: u, user: {token: \(KubectlTests.token)}}
            """
        )
        try double.create("pods", namespace: "default", podJSON("web"))
        let result = try await kubectl(["get", "pods"], kubeconfig: config)
        await double.stop()
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout.contains("web"))
        let fromKubectl = double.requests.filter { $0.user != "system:admin" }
        #expect(!fromKubectl.isEmpty)
        #expect(fromKubectl.allSatisfy { $0.user == nil })
    }
}

/// Lines written by a child process, collected from a readability handler.
final class LineCollector: Sendable {
    private let state = Mutex<(buffer: String, lines: [String])>(("", []))

    func append(_ data: Data) {
        state.withLock { state in
            state.buffer += String(decoding: data, as: UTF8.self)
            while let newline = state.buffer.firstIndex(of: "\n") {
                state.lines.append(String(state.buffer[..<newline]))
                state.buffer = String(state.buffer[state.buffer.index(after: newline)...])
            }
        }
    }

    var lines: [String] { state.withLock { $0.lines } }
}
