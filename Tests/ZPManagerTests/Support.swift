// Helpers of the manager's tests: a fake shim on a short socket path, a double with pods, a
// manager wired to both.
import Foundation
import KubeAPIDouble
import Logging
import Synchronization
import Testing
import ZPAPI
import ZPCore
import ZPKube
import ZPManagerTestKit
import ZPTestSupport

@testable import ZPManager

/// A fresh short folder (`/tmp/zpm-…`) used as run-dir; removed by `remove()`.
struct RunDirectory {
    let path: String

    init() throws {
        path = "/tmp/zpm-\(getpid())-\(String(UInt32.random(in: 0...UInt32.max), radix: 16))"
        try FileManager.default.createDirectory(atPath: path + "/s", withIntermediateDirectories: true)
    }

    var layout: NodeLayout { NodeLayout(runDirectory: path, stateDirectory: path + "/state") }

    func socket(_ name: String) -> String { path + "/s/" + name + ".sock" }

    func remove() { try? FileManager.default.removeItem(atPath: path) }
}

/// A logger for tests (warnings and up, so failures show why).
func testLogger(_ label: String = "test") -> Logger {
    var logger = Logger(label: label)
    logger.logLevel = ProcessInfo.processInfo.environment["ZPM_DEBUG"] != nil ? .debug : .warning
    return logger
}

/// A container status for the fake shim.
func containerStatus(
    _ id: String,
    name: String = "app",
    pod: String = "web",
    namespace: String = "default",
    uid: String,
    phase: ContainerLifecycle.Phase = .running
) -> StatusAPI.ContainerStatus {
    StatusAPI.ContainerStatus(
        id: id,
        name: name,
        podName: pod,
        podNamespace: namespace,
        podUID: uid,
        lifecyclePhase: phase,
        pid: 42
    )
}

/// A pod document on node-a with one container `app` (requests 250m / 64Mi unless given).
func podDocument(
    _ name: String,
    namespace: String = "default",
    node: String = "node-a",
    requests: [String: String] = ["cpu": "250m", "memory": "64Mi"],
    limits: [String: String] = [:]
) -> JSON {
    var resources: JSON = [:]
    if !requests.isEmpty { resources["requests"] = .object(requests.mapValues(JSON.string)) }
    if !limits.isEmpty { resources["limits"] = .object(limits.mapValues(JSON.string)) }
    return [
        "apiVersion": "v1", "kind": "Pod",
        "metadata": ["name": .string(name), "namespace": .string(namespace)],
        "spec": [
            "nodeName": .string(node), "containers": [["name": "app", "image": "busybox", "resources": resources]],
        ],
    ]
}

/// A running fake shim: its board, socket and the task group child serving it.
final class ShimHandle: Sendable {
    let shim = FakeStatusShim()
    let socket: String
    init(socket: String) { self.socket = socket }
}

/// Runs `body` with fake shims served on `sockets` (one child task each), then stops them.
func withFakeShims(_ sockets: [String], _ body: @Sendable ([ShimHandle]) async throws -> Void) async throws {
    let handles = sockets.map(ShimHandle.init(socket:))
    try await withThrowingTaskGroup(of: Void.self) { group in
        for handle in handles {
            let (ready, continuation) = AsyncStream.makeStream(of: Void.self)
            group.addTask { try await handle.shim.serve(at: handle.socket) { continuation.yield() } }
            for await _ in ready { break }
        }
        do {
            try await body(handles)
        } catch {
            group.cancelAll()
            throw error
        }
        group.cancelAll()
        try? await group.waitForAll()
    }
    for socket in sockets { unlink(socket) }
}

/// A manager configuration for tests: a free metrics port on loopback, node-a.
func testConfiguration(
    layout: NodeLayout,
    labels: Bool = true,
    events: Bool = true,
    resize: Bool = true
) -> ManagerConfiguration {
    ManagerConfiguration(
        metricsAddress: ListenAddress(host: "127.0.0.1", port: 0),
        nodeServerAddress: ListenAddress(host: "127.0.0.1", port: 0),
        features: PodFeatures(statusLabels: labels, inPlaceScaling: resize),
        statusEvents: events,
        kubeconfig: nil,
        layout: layout,
        nodeName: "node-a",
        podIP: nil,
        reportingInstance: "test-host"
    )
}

extension ListenAddress {
    init(host: String, port: Int) {
        self = try! ListenAddress(parsing: "\(host):\(port)", flag: "test")
    }
}

/// Starts a double with a token, runs `body`, stops it.
func withDouble(
    version: KubeAPIDouble.ServerVersion = .v1_36,
    _ body: (KubeAPIDouble) async throws -> Void
) async throws {
    var settings = KubeAPIDouble.Settings()
    settings.tokens = ["token": "zeropod-node"]
    settings.serverVersion = version
    settings.bookmarkInterval = .seconds(1)
    let double = try await KubeAPIDouble.start(settings: settings)
    do {
        try await body(double)
    } catch {
        await double.stop()
        throw error
    }
    await double.stop()
}

/// Runs a manager (its services in a child task) while `body` runs, then cancels it.
func withManager(
    _ manager: Manager,
    _ body: @Sendable (Manager) async throws -> Void
) async throws {
    try await withThrowingTaskGroup(of: Void.self) { group in
        group.addTask { try await manager.run(signals: []) }
        do {
            try await body(manager)
        } catch {
            group.cancelAll()
            throw error
        }
        group.cancelAll()
        try? await group.waitForAll()
    }
}

/// A manager for the double, with fast reconnects and retries.
func makeManager(
    _ double: KubeAPIDouble,
    layout: NodeLayout,
    labels: Bool = true,
    events: Bool = true,
    resize: Bool = true,
    requestTimeout: Duration = .seconds(5)
) throws -> Manager {
    var kube = double.clientConfiguration(token: "token")
    kube.requestTimeout = requestTimeout
    var fleet = ShimFleet.Options()
    fleet.initialBackoff = .milliseconds(50)
    fleet.maximumBackoff = .milliseconds(500)
    return try Manager(
        configuration: testConfiguration(layout: layout, labels: labels, events: events, resize: resize),
        kube: kube,
        fleetOptions: fleet,
        directoryTick: .milliseconds(50),
        writerOptions: { options in
            options.retryDelay = .milliseconds(50)
            options.maximumRetryDelay = .seconds(1)
            options.informer.backoff = Backoff(initial: .milliseconds(50), maximum: .milliseconds(500))
            options.informer.minimumWatchDuration = .milliseconds(100)
        },
        logger: testLogger()
    )
}

/// The pod's label / annotation / request.
func label(_ double: KubeAPIDouble, _ pod: String, _ container: String = "app") -> String? {
    double.object("pods", namespace: "default", name: pod)?[path: [
        "metadata", "labels", "status.zeropod.ctrox.dev/" + container,
    ]]?.stringValue
}

func requests(_ double: KubeAPIDouble, _ pod: String) -> [String: String] {
    let containers =
        double.object("pods", namespace: "default", name: pod)?[path: ["spec", "containers"]]?.arrayValue ?? []
    let app = containers.first { $0["name"]?.stringValue == "app" }
    return app?[path: ["resources", "requests"]]?.objectValue?.compactMapValues(\.stringValue) ?? [:]
}

func events(_ double: KubeAPIDouble, reason: String? = nil) -> [JSON] {
    double.objects("events").filter { reason == nil || $0["reason"]?.stringValue == reason }
}
