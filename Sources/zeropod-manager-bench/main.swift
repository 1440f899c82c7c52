// `make bench-manager`: the real zeropod-manager process against N fake shims (ZPManagerTestKit:
// ZPTTRPC's server with ZPAPI's messages, one unix socket each, no containers) and the Kubernetes
// API double (HTTPS) with N pods. Prints the manager's RSS and CPU while the shims are idle, and
// the time until every label converged after a burst of N phase changes. Figures only.
import Foundation
import KubeAPIDouble
import Logging
import ZPAPI
import ZPCore
import ZPKube
import ZPManagerTestKit

let arguments = CommandLine.arguments
let count = arguments.count > 1 ? Int(arguments[1]) ?? 200 : 200
let idleSeconds = arguments.count > 2 ? Int(arguments[2]) ?? 10 : 10
// The manager next to this benchmark, or the one named by ZPM_MANAGER_BINARY (a release manager
// measured by a debug harness: only the manager's process is measured).
let managerBinary =
    ProcessInfo.processInfo.environment["ZPM_MANAGER_BINARY"]
    ?? URL(fileURLWithPath: arguments[0]).deletingLastPathComponent().appendingPathComponent("zeropod-manager").path

func say(_ text: String) { FileHandle.standardOutput.write(Data((text + "\n").utf8)) }

/// utime+stime (clock ticks) and VmRSS (KiB) of a process.
func usage(_ pid: Int32) -> (ticks: Int, rssKiB: Int) {
    let stat = (try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)) ?? ""
    let fields = stat.split(separator: ")").last?.split(separator: " ") ?? []
    let ticks = fields.count > 13 ? (Int(fields[11]) ?? 0) + (Int(fields[12]) ?? 0) : 0
    let status = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
    let rss =
        status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") }.map { Int($0.split(separator: " ")[1]) ?? 0 }
        ?? 0
    return (ticks, rss)
}

let ticksPerSecond = Double(sysconf(Int32(_SC_CLK_TCK)))

func freePort() -> Int {
    let s = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    _ = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(s, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(s, $0, &length) }
    }
    close(s)
    return Int(UInt16(bigEndian: address.sin_port))
}

guard FileManager.default.isExecutableFile(atPath: managerBinary) else {
    say("zeropod-manager not found next to the benchmark (\(managerBinary)): build it first")
    exit(2)
}

let run = "/tmp/zpmb-\(getpid())"
try FileManager.default.createDirectory(atPath: run + "/s", withIntermediateDirectories: true)

var settings = KubeAPIDouble.Settings()
settings.tokens = ["token": "zeropod-node"]
let double = try await KubeAPIDouble.start(settings: settings)
var uids: [String] = []
for i in 0..<count {
    let pod: JSON = [
        "apiVersion": "v1", "kind": "Pod", "metadata": ["name": .string("web-\(i)"), "namespace": "default"],
        "spec": [
            "nodeName": "node-a",
            "containers": [
                ["name": "app", "image": "busybox", "resources": ["requests": ["cpu": "100m", "memory": "32Mi"]]]
            ],
        ],
    ]
    uids.append(try double.create("pods", namespace: "default", pod)[path: ["metadata", "uid"]]!.stringValue!)
}
let kubeconfig = run + "/kubeconfig"
try double.kubeconfig(token: "token").write(toFile: kubeconfig, atomically: true, encoding: .utf8)

let shims = (0..<count).map { _ in FakeStatusShim() }
try await withThrowingTaskGroup(of: Void.self) { group in
    for (i, shim) in shims.enumerated() {
        shim.set(
            StatusAPI.ContainerStatus(
                id: "c\(i)",
                name: "app",
                podName: "web-\(i)",
                podNamespace: "default",
                podUID: uids[i],
                lifecyclePhase: .running,
                pid: 1
            )
        )
        let (ready, continuation) = AsyncStream.makeStream(of: Void.self)
        group.addTask {
            try await shim.serve(at: run + "/s/" + String(format: "%064x", i) + ".sock") { continuation.yield() }
        }
        for await _ in ready { break }
    }
    say("zeropod-manager-bench: \(count) fake shims (one container each, no process), \(count) pods in the API double")

    let process = Process()
    process.executableURL = URL(fileURLWithPath: managerBinary)
    let port = freePort()
    process.arguments = [
        "-metrics-addr=127.0.0.1:\(port)", "-status-labels", "-status-events", "-in-place-scaling",
        "-kubeconfig=\(kubeconfig)",
        "-run-dir=\(run)",
    ]
    var environment = ProcessInfo.processInfo.environment
    environment["NODE_NAME"] = "node-a"
    environment["ZEROPOD_NODE_CONFIG"] = run + "/none.conf"
    process.environment = environment
    process.standardOutput = FileHandle.nullDevice
    process.standardError = FileHandle.nullDevice
    let started = ContinuousClock.now
    try process.run()
    let pid = process.processIdentifier

    @Sendable func labelled(_ value: String) -> Int {
        double.objects("pods").filter {
            $0[path: ["metadata", "labels", "status.zeropod.ctrox.dev/app"]]?.stringValue == value
        }.count
    }
    func wait(_ what: String, until condition: @Sendable () -> Bool) async -> Duration? {
        let t0 = ContinuousClock.now
        while ContinuousClock.now - t0 < .seconds(120) {
            if condition() { return ContinuousClock.now - t0 }
            try? await Task.sleep(for: .milliseconds(10))
        }
        say("  \(what): not converged within 120 s")
        return nil
    }
    func ms(_ d: Duration?) -> String {
        d.map {
            String(format: "%.0f ms", Double($0.components.seconds) * 1000 + Double($0.components.attoseconds) / 1e15)
        } ?? "-"
    }

    let initial = await wait("initial labels") { labelled("RUNNING") == count }
    say("startup: all \(count) RUNNING labels after \(ms(initial.map { _ in ContinuousClock.now - started }))")
    try await Task.sleep(for: .seconds(2))
    let idle0 = usage(pid)
    try await Task.sleep(for: .seconds(idleSeconds))
    let idle1 = usage(pid)
    let idleCPU = Double(idle1.ticks - idle0.ticks) / ticksPerSecond / Double(idleSeconds) * 100
    say(
        String(
            format: "idle (%d shims subscribed, %d s): RSS %.1f MiB, CPU %.2f %% of one core",
            count,
            idleSeconds,
            Double(idle1.rssKiB) / 1024,
            idleCPU
        )
    )

    double.clearRequests()
    let burst0 = usage(pid)
    for (i, shim) in shims.enumerated() {
        shim.transition("c\(i)", to: .scaledDown, event: .checkpointFinished(duration: .milliseconds(100)))
    }
    let down = await wait("burst labels") { labelled("SCALED_DOWN") == count }
    let resized = await wait("burst resize") {
        double.objects("pods").filter {
            $0[path: ["spec", "containers"]]?.arrayValue?.first?[path: ["resources", "requests", "cpu"]]?.stringValue
                == "1m"
        }.count == count
    }
    let evented = await wait("burst events") { double.objects("events").count >= count }
    let burst1 = usage(pid)
    say(
        "burst of \(count) SCALED_DOWN changes: every label after \(ms(down)), every resize after \(ms(resized)), every event after \(ms(evented))"
    )
    say(
        String(
            format: "  manager CPU during the burst: %.2f s; RSS after: %.1f MiB; API requests: %d",
            Double(burst1.ticks - burst0.ticks) / ticksPerSecond,
            Double(burst1.rssKiB) / 1024,
            double.requests.count
        )
    )

    double.clearRequests()
    for (i, shim) in shims.enumerated() {
        shim.transition("c\(i)", to: .running, event: .restoreFinished(duration: .milliseconds(30)))
    }
    let up = await wait("burst back") { labelled("RUNNING") == count }
    say(
        "burst of \(count) RUNNING changes: every label after \(ms(up)); RSS after: \(String(format: "%.1f", Double(usage(pid).rssKiB) / 1024)) MiB"
    )

    kill(pid, SIGTERM)
    let t0 = ContinuousClock.now
    while process.isRunning, ContinuousClock.now - t0 < .seconds(10) { try await Task.sleep(for: .milliseconds(20)) }
    say(
        "SIGTERM: exited \(process.isRunning ? "not within 10 s" : "with status \(process.terminationStatus) after \(ms(ContinuousClock.now - t0))")"
    )
    if process.isRunning { kill(pid, SIGKILL) }
    group.cancelAll()
}
await double.stop()
try? FileManager.default.removeItem(atPath: run)
