import Foundation
import Testing
import ZPSystem
@testable import ZPShim
import ZPCore

/// The result of a command run by the tests.
struct CommandResult {
    var status: Int32
    var stdout: String
    var stderr: String
}

/// Runs `arguments[0]` with a time limit (coreutils `timeout`), capturing output through files.
@discardableResult
func run(_ arguments: [String], timeout: Int = 60, environment: [String: String]? = nil) throws -> CommandResult {
    let dir = FileManager.default.temporaryDirectory
    let outURL = dir.appendingPathComponent("zpshim-out-\(UUID().uuidString)")
    let errURL = dir.appendingPathComponent("zpshim-err-\(UUID().uuidString)")
    _ = FileManager.default.createFile(atPath: outURL.path, contents: nil)
    _ = FileManager.default.createFile(atPath: errURL.path, contents: nil)
    defer { try? FileManager.default.removeItem(at: outURL); try? FileManager.default.removeItem(at: errURL) }
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/timeout")
    process.arguments = ["-k", "5", "\(timeout)"] + arguments
    if let environment { process.environment = environment }
    process.standardInput = FileHandle.nullDevice
    process.standardOutput = try FileHandle(forWritingTo: outURL)
    process.standardError = try FileHandle(forWritingTo: errURL)
    let started = Date()
    try process.run()
    process.waitUntilExit()
    if ProcessInfo.processInfo.environment["ZPSHIM_TRACE"] != nil {
        print("[zpshim-trace] \(String(format: "%.2f", Date().timeIntervalSince(started)))s \(arguments.prefix(6).joined(separator: " "))")
    }
    return CommandResult(status: process.terminationStatus,
                         stdout: (try? String(contentsOf: outURL, encoding: .utf8)) ?? "",
                         stderr: (try? String(contentsOf: errURL, encoding: .utf8)) ?? "")
}

/// Polls `condition` every 100 ms until it holds or `seconds` pass. - Returns: whether it held.
func eventually(within seconds: Double = 30, _ condition: () throws -> Bool) rethrows -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if try condition() { return true }
        Thread.sleep(forTimeInterval: 0.1)
    }
    return try condition()
}

/// Where the package's files and the built shim are.
enum TestPaths {
    /// The package root (from this file's path).
    static let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path

    /// The directory holding the test binary, where SwiftPM also puts `containerd-shim-zeropod-v2`;
    /// `ZPSHIM_SHIM_DIR` overrides it (e.g. `.build/release` to measure a release build).
    static var buildDirectory: String {
        if let dir = ProcessInfo.processInfo.environment["ZPSHIM_SHIM_DIR"] { return dir }
        var url = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
        while url.path != "/" {
            if FileManager.default.isExecutableFile(atPath: url.appendingPathComponent("containerd-shim-zeropod-v2").path) {
                return url.path
            }
            url.deleteLastPathComponent()
        }
        return packageRoot + "/.build/debug"
    }

    /// The busybox rootfs folder (built and cached by scripts/rootfs.sh).
    static func busyboxRootfs() throws -> String {
        let r = try run([packageRoot + "/scripts/rootfs.sh", "busybox"], timeout: 300)
        guard r.status == 0 else { throw ShimError.failedPrecondition("scripts/rootfs.sh busybox failed: \(r.stderr)") }
        return r.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }
}

/// One containerd version under test.
/// The cache that scripts/setup.sh fills (`ZP_CACHE`, default /var/cache/zeropod-swift).
let zpCache = ProcessInfo.processInfo.environment["ZP_CACHE"].flatMap { $0.isEmpty ? nil : $0 } ?? "/var/cache/zeropod-swift"

struct ContainerdFlavor: CustomTestStringConvertible, Sendable {
    var name: String
    var binDirectory: String
    var testDescription: String { name }

    static let all = [
        ContainerdFlavor(name: "containerd 1.6 (Debian)", binDirectory: "/usr/bin"),
        ContainerdFlavor(name: "containerd 2.x", binDirectory: zpCache + "/containerd2/usr/bin"),
    ]
}

/// A containerd of our own: config, root, state and sockets in a temporary folder, CRI disabled,
/// the built shim first on its PATH. Stopped (by pid) and removed by ``stop()``.
final class PrivateContainerd {
    let flavor: ContainerdFlavor
    let directory: String
    let namespace: String
    let socket: String
    let shimDirectory: String
    private var process: Process
    private let environment: [String: String]

    /// - Parameter environment: extra environment for containerd (and so for the shims it starts).
    init(flavor: ContainerdFlavor, tag: String, environment: [String: String] = [:]) throws {
        self.environment = environment
        self.flavor = flavor
        let suffix = String(UUID().uuidString.prefix(8)).lowercased()
        directory = "/tmp/zpshim-\(tag)-\(suffix)"
        namespace = "zpshim-\(tag)-\(suffix)"
        socket = directory + "/c.sock"
        shimDirectory = TestPaths.buildDirectory
        guard FileManager.default.isExecutableFile(atPath: shimDirectory + "/containerd-shim-zeropod-v2") else {
            throw ShimError.failedPrecondition("no containerd-shim-zeropod-v2 in \(shimDirectory): run `swift build --product containerd-shim-zeropod-v2` first")
        }
        guard FileManager.default.isExecutableFile(atPath: flavor.binDirectory + "/containerd") else {
            throw ShimError.failedPrecondition("\(flavor.name) is not installed at \(flavor.binDirectory) (make setup installs it)")
        }
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let config = """
            version = 2
            root = "\(directory)/root"
            state = "\(directory)/state"
            disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.cri.v1.runtime", "io.containerd.cri.v1.images"]
            [grpc]
              address = "\(socket)"
            [ttrpc]
              address = "\(socket).ttrpc"
            """
        try Data(config.utf8).write(to: URL(fileURLWithPath: directory + "/config.toml"))
        process = try Self.launch(flavor: flavor, directory: directory, shimDirectory: shimDirectory,
                                  environment: environment)
        try waitUntilUp()
    }

    private static func launch(flavor: ContainerdFlavor, directory: String, shimDirectory: String,
                               environment: [String: String]) throws -> Process {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: flavor.binDirectory + "/containerd")
        process.arguments = ["--config", directory + "/config.toml"]
        var env = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        env["PATH"] = "\(shimDirectory):\(flavor.binDirectory):/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        process.environment = env
        if !FileManager.default.fileExists(atPath: directory + "/containerd.log") {
            _ = FileManager.default.createFile(atPath: directory + "/containerd.log", contents: nil)
        }
        let logHandle = try FileHandle(forWritingTo: URL(fileURLWithPath: directory + "/containerd.log"))
        logHandle.seekToEndOfFile()
        process.standardOutput = logHandle
        process.standardError = logHandle
        process.standardInput = FileHandle.nullDevice
        try process.run()
        return process
    }

    private func waitUntilUp() throws {
        let up = try eventually(within: 30) { try ctr(["version"], timeout: 10).status == 0 }
        guard up else {
            stop()
            throw ShimError.failedPrecondition("\(flavor.name) did not come up; log: \(log(tail: 20))")
        }
    }

    /// Stops containerd (SIGTERM, by pid) and starts it again on the same root, state and sockets;
    /// shims keep running and containerd must reconnect to them.
    func restart() throws {
        terminate()
        process = try Self.launch(flavor: flavor, directory: directory, shimDirectory: shimDirectory,
                                  environment: environment)
        try waitUntilUp()
    }

    /// SIGTERM, then SIGKILL after 10 s, by pid; waits until the process is gone and reaps it with
    /// waitpid. (Not `Process.waitUntilExit()`: it was seen hanging with the child already a zombie.)
    private func terminate() {
        let pid = process.processIdentifier
        guard pid > 0, isAlive(pid) else { return }
        kill(pid, SIGTERM)
        if !eventually(within: 10, { !isAlive(pid) }) {
            kill(pid, SIGKILL)
            _ = eventually(within: 10) { !isAlive(pid) }
        }
        var status: Int32 = 0
        _ = waitpid(pid, &status, WNOHANG)
    }

    /// Runs `ctr -a SOCK -n NS ARGS...` of the same containerd version.
    @discardableResult
    func ctr(_ arguments: [String], timeout: Int = 60) throws -> CommandResult {
        try run([flavor.binDirectory + "/ctr", "-a", socket, "-n", namespace] + arguments, timeout: timeout)
    }

    /// Starts `ctr events` writing to `file`; the caller terminates it.
    func startEvents(into file: String) throws -> Process {
        _ = FileManager.default.createFile(atPath: file, contents: nil)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: flavor.binDirectory + "/ctr")
        p.arguments = ["-a", socket, "events"]
        p.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: file))
        p.standardError = FileHandle.nullDevice
        p.standardInput = FileHandle.nullDevice
        try p.run()
        Thread.sleep(forTimeInterval: 0.5)  // let ctr subscribe; the checks below poll anyway
        return p
    }

    /// The last lines of containerd's log (with the shims' logs, which containerd copies in).
    func log(tail lines: Int) -> String {
        let text = (try? String(contentsOfFile: directory + "/containerd.log", encoding: .utf8)) ?? ""
        return text.split(separator: "\n").suffix(lines).joined(separator: "\n")
    }

    /// The zeropod shim socket serving container (group) `id`.
    func shimSocket(group id: String) -> String {
        StartCommand.socketPath(containerdAddress: socket, namespace: namespace, group: id)
    }

    /// Stops containerd (SIGTERM, then SIGKILL, by pid) and removes its folder and runc state.
    func stop() {
        terminate()
        _ = try? run(["/bin/sh", "-c", "grep -o ' \(directory)[^ ]*' /proc/self/mounts | xargs -r -n1 umount -l"], timeout: 20)
        try? FileManager.default.removeItem(atPath: directory)
        // A shim killed with containerd may leave a prepared restore's mounts (tmpfs copies, the
        // rootfs bind) in runc's state folder; containerd's own `delete` would remove them.
        for mountPoint in MountPoints.under("/run/containerd/runc/\(namespace)/") { try? MountPoints.unmount(mountPoint) }
        try? FileManager.default.removeItem(atPath: "/run/containerd/runc/\(namespace)")
        // ...and its images, and a `criu lazy-pages` daemon still serving them.
        let images = NodeLayout().imageDirectory(containerdNamespace: namespace)
        for pid in processes(matching: ["lazy-pages"]) {
            let args = (FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") ?? Data()).split(separator: 0)
                .map { String(decoding: $0, as: UTF8.self) }
            if args.contains(where: { $0.hasPrefix(images + "/") }) { kill(pid, SIGKILL) }
        }
        try? FileManager.default.removeItem(atPath: images)
        // ctr puts containers under the cgroup /<namespace>/<id>: runc removes <id>, the
        // namespace's own (empty by now) cgroup in every hierarchy is ours to remove.
        let hierarchies = (try? FileManager.default.contentsOfDirectory(atPath: "/sys/fs/cgroup")) ?? []
        for h in hierarchies { _ = rmdir("/sys/fs/cgroup/\(h)/\(namespace)") }
        _ = rmdir("/sys/fs/cgroup/\(namespace)")
    }
}

/// Processes whose command line (NUL-separated) contains every one of `parts`.
func processes(matching parts: [String]) -> [Int32] {
    guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return [] }
    return entries.compactMap { Int32($0) }.filter { pid in
        guard let data = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else { return false }
        let args = data.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
        return parts.allSatisfy { part in args.contains(part) || args.contains { $0.hasSuffix("/" + part) } }
    }
}

/// Memory of a process in KiB from `/proc/PID/smaps_rollup`: `Rss`, `Pss` (shared pages divided
/// among their users) and `Anonymous`, as "rss/pss/anon", or "?" when unreadable.
func memoryKiB(_ pid: Int32?) -> String {
    guard let pid, let text = try? String(contentsOfFile: "/proc/\(pid)/smaps_rollup", encoding: .utf8) else { return "?" }
    func field(_ name: String) -> String {
        text.split(separator: "\n").first { $0.hasPrefix(name + ":") }?.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first.map(String.init) ?? "?"
    }
    return "\(field("Rss"))/\(field("Pss"))/\(field("Anonymous"))"
}

/// A network namespace of the test's own, deleted by ``delete()``.
struct TestNetns {
    let name: String

    init(tag: String) throws {
        name = "zpshim-\(tag)-\(String(UUID().uuidString.prefix(6)).lowercased())"
        try #require(try run(["ip", "netns", "add", name]).status == 0)
        try #require(try run(["ip", "-n", name, "link", "set", "lo", "up"]).status == 0)
    }

    /// `/var/run/netns/NAME`, for `ctr run --with-ns network:`.
    var path: String { "/var/run/netns/\(name)" }

    /// A real TCP client in the namespace (curl; the host's static busybox wget crashes): the body, or nil.
    func httpGet(port: Int) -> String? {
        guard let r = try? run(["ip", "netns", "exec", name, "curl", "-s", "--max-time", "3", "http://127.0.0.1:\(port)/"], timeout: 10),
              r.status == 0 else { return nil }
        return r.stdout
    }

    func delete() {
        _ = try? run(["ip", "netns", "del", name])
    }
}

/// Whether `pid` names a live process: exists and is not a zombie (an orphan whose new parent,
/// e.g. this VM's pid 1, has not reaped it yet counts as dead).
func isAlive(_ pid: Int32) -> Bool {
    guard pid > 0, let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
          let close = stat.lastIndex(of: ")") else { return false }
    let state = stat[stat.index(close, offsetBy: 2)]
    return state != "Z" && state != "X"
}
