import Foundation
import Synchronization
import Testing
import KubeAPIDouble
import ZPKube

/// The kubectl that scripts/setup.sh unpacks into the cache (Debian sid's 1.36.4).
let kubectlPath: String = {
    let cache = ProcessInfo.processInfo.environment["ZP_CACHE"] ?? "/var/cache/zeropod-swift"
    return cache + "/kubectl/usr/bin/kubectl"
}()

/// Whether that kubectl is installed (`make setup` installs it).
let kubectlAvailable = FileManager.default.isExecutableFile(atPath: kubectlPath)

/// A temporary folder removed when the value is dropped... by the test calling `remove()`.
struct TemporaryFolder {
    let path: String

    init() throws {
        path = FileManager.default.temporaryDirectory.appendingPathComponent("zpkube-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    func write(_ name: String, _ text: String) throws -> String {
        let file = path + "/" + name
        try text.write(toFile: file, atomically: true, encoding: .utf8)
        return file
    }

    func remove() { try? FileManager.default.removeItem(atPath: path) }
}

/// The outcome of a finished command.
struct CommandResult {
    var status: Int32
    var stdout: String
    var stderr: String
}

/// Runs kubectl with a kubeconfig and waits for it (30 s at most, then it is killed by its pid).
func kubectl(_ arguments: [String], kubeconfig: String, timeout: Duration = .seconds(30)) async throws -> CommandResult {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: kubectlPath)
    process.arguments = ["--kubeconfig", kubeconfig] + arguments
    var environment = ProcessInfo.processInfo.environment
    environment["KUBECACHEDIR"] = FileManager.default.temporaryDirectory.appendingPathComponent("zpkube-cache-\(UUID().uuidString)").path
    process.environment = environment
    let out = Pipe()
    let err = Pipe()
    process.standardOutput = out
    process.standardError = err
    // Collected by readability handlers (on Foundation's threads), so no task of the 2-thread
    // cooperative pool blocks in a read.
    let stdout = DataCollector(out.fileHandleForReading)
    let stderr = DataCollector(err.fileHandleForReading)
    try process.run()
    let pid = process.processIdentifier
    let deadline = ContinuousClock.now + timeout
    while process.isRunning {
        if ContinuousClock.now > deadline {
            kill(pid, SIGKILL)
            break
        }
        try await Task.sleep(for: .milliseconds(20))
    }
    process.waitUntilExit()
    try? FileManager.default.removeItem(atPath: environment["KUBECACHEDIR"]!)
    return CommandResult(
        status: process.terminationStatus, stdout: String(decoding: stdout.finish(), as: UTF8.self),
        stderr: String(decoding: stderr.finish(), as: UTF8.self))
}

/// Polls `condition` every 20 ms until it holds or `timeout` passes.
func eventually(_ timeout: Duration = .seconds(20), _ condition: () async throws -> Bool) async rethrows -> Bool {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if try await condition() { return true }
        try? await Task.sleep(for: .milliseconds(20))
    }
    return try await condition()
}

/// A pod document for tests.
func podJSON(
    _ name: String, namespace: String = "default", node: String? = "node-a", labels: [String: String] = [:],
    containers: [(name: String, requests: [String: String], limits: [String: String])] = [("app", ["cpu": "250m", "memory": "64Mi"], [:])]
) -> JSON {
    var pod: JSON = [
        "apiVersion": "v1", "kind": "Pod",
        "metadata": ["name": .string(name), "namespace": .string(namespace)],
        "spec": [
            "containers": .array(
                containers.map { container in
                    var resources: JSON = [:]
                    if !container.requests.isEmpty { resources["requests"] = .object(container.requests.mapValues(JSON.string)) }
                    if !container.limits.isEmpty { resources["limits"] = .object(container.limits.mapValues(JSON.string)) }
                    return ["name": .string(container.name), "image": "busybox", "resources": resources]
                })
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

/// Everything a pipe delivers, gathered by its readability handler.
final class DataCollector: Sendable {
    private final class Storage: Sendable {
        let data = Mutex(Data())
    }

    private let handle: FileHandle
    private let storage = Storage()

    init(_ handle: FileHandle) {
        self.handle = handle
        handle.readabilityHandler = { [storage] handle in
            let chunk = handle.availableData
            storage.data.withLock { $0.append(chunk) }
        }
    }

    /// Stops collecting and returns what came, plus whatever is still buffered in the pipe.
    func finish() -> Data {
        handle.readabilityHandler = nil
        let rest = handle.readDataToEndOfFile()
        return storage.data.withLock { $0 + rest }
    }
}
