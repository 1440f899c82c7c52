import Foundation
import KubeAPIDouble
import Synchronization
import Testing
import ZPKube
import ZPTestSupport

/// The kubectl that scripts/setup.sh unpacks into the cache (Debian sid's 1.36.4).
let kubectlPath = TestPaths.cache + "/kubectl/usr/bin/kubectl"

/// Whether that kubectl is installed (`make setup` installs it).
let kubectlAvailable = FileManager.default.isExecutableFile(atPath: kubectlPath)

/// Runs kubectl with a kubeconfig and its own cache folder, on a thread of its own (not the
/// 2-thread cooperative pool), killed after `timeout`.
func kubectl(_ arguments: [String], kubeconfig: String, timeout: Duration = .seconds(30)) async throws -> CommandResult
{
    let cache = try TemporaryDirectory("zpkube-cache")
    defer { cache.remove() }
    var environment = ProcessInfo.processInfo.environment
    environment["KUBECACHEDIR"] = cache.path
    return try await runOffThePool(
        [kubectlPath, "--kubeconfig", kubeconfig] + arguments,
        timeout: Int(timeout.components.seconds),
        environment: environment
    )
}

/// A pod document for tests.
func podJSON(
    _ name: String,
    namespace: String = "default",
    node: String? = "node-a",
    labels: [String: String] = [:],
    containers: [(name: String, requests: [String: String], limits: [String: String])] = [
        ("app", ["cpu": "250m", "memory": "64Mi"], [:])
    ]
) -> JSON {
    var pod: JSON = [
        "apiVersion": "v1", "kind": "Pod",
        "metadata": ["name": .string(name), "namespace": .string(namespace)],
        "spec": [
            "containers": .array(
                containers.map { container in
                    var resources: JSON = [:]
                    if !container.requests.isEmpty {
                        resources["requests"] = .object(container.requests.mapValues(JSON.string))
                    }
                    if !container.limits.isEmpty {
                        resources["limits"] = .object(container.limits.mapValues(JSON.string))
                    }
                    return ["name": .string(container.name), "image": "busybox", "resources": resources]
                }
            )
        ],
    ]
    if !labels.isEmpty { pod[path: ["metadata", "labels"]] = .object(labels.mapValues(JSON.string)) }
    if let node { pod[path: ["spec", "nodeName"]] = .string(node) }
    return pod
}

/// Records the waits a client asks for and waits only briefly (so tests assert the requested
/// Retry-After and backoff delays without waiting them out).
final class SleepRecorder: Sendable {
    private let recorded = Mutex<[Duration]>([])
    let cap: Duration

    init(cap: Duration = .milliseconds(20)) { self.cap = cap }

    var sleeps: [Duration] { recorded.withLock { $0 } }

    var sleep: @Sendable (Duration) async throws -> Void {
        { duration in
            self.recorded.withLock { $0.append(duration) }
            try await Task.sleep(for: min(duration, self.cap))
        }
    }
}

/// Starts a double (HTTPS, token `token` for user `tester`), a client for it, runs `body`, and
/// stops both.
func withDoubleAndClient(
    settings change: (inout KubeAPIDouble.Settings) -> Void = { _ in },
    client configure: (inout KubeConfiguration) -> Void = { _ in },
    sleeper: SleepRecorder = SleepRecorder(),
    _ body: (KubeAPIDouble, KubeClient) async throws -> Void
) async throws {
    var settings = KubeAPIDouble.Settings()
    settings.tokens = ["token": "tester"]
    change(&settings)
    let double = try await KubeAPIDouble.start(settings: settings)
    var configuration = double.clientConfiguration(token: "token")
    configure(&configuration)
    let client = try KubeClient(configuration: configuration, sleep: sleeper.sleep)
    do {
        try await body(double, client)
    } catch {
        try? await client.shutdown()
        await double.stop()
        throw error
    }
    try await client.shutdown()
    await double.stop()
}

/// The error a call threw, as a KubeError (nil if it succeeded or threw something else).
func kubeError(_ body: () async throws -> Void) async -> KubeError? {
    do {
        try await body()
        return nil
    } catch let error as KubeError {
        return error
    } catch {
        Issue.record("expected a KubeError, got \(error)")
        return nil
    }
}
