// A containerd of the test's own (Debian's 1.6 and the cached 2.x), with our shim on its PATH.
import Foundation
import Glibc
import ZPCore
import ZPSystem

/// Where the package's files, the built shim and the setup cache are.
public enum TestPaths {
    /// The package root (from this file's path: Sources/ZPTestSupport/<file>).
    public static let packageRoot = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path

    /// The cache that scripts/setup.sh fills (`ZP_CACHE`, default /var/cache/zeropod-swift).
    public static let cache =
        ProcessInfo.processInfo.environment["ZP_CACHE"].flatMap { $0.isEmpty ? nil : $0 } ?? "/var/cache/zeropod-swift"

    /// The directory holding the test binary, where SwiftPM also puts `containerd-shim-zeropod-v2`;
    /// `ZPSHIM_SHIM_DIR` overrides it (e.g. `.build/release` to measure a release build).
    public static var buildDirectory: String {
        if let dir = ProcessInfo.processInfo.environment["ZPSHIM_SHIM_DIR"] { return dir }
        var url = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
        while url.path != "/" {
            if FileManager.default.isExecutableFile(
                atPath: url.appendingPathComponent("containerd-shim-zeropod-v2").path
            ) {
                return url.path
            }
            url.deleteLastPathComponent()
        }
        return packageRoot + "/.build/debug"
    }

    /// A root filesystem folder built and cached by `scripts/rootfs.sh NAME` (busybox, nginx, ...).
    /// - Throws: ``LabError`` with the script's output when it fails.
    public static func rootfs(_ name: String) throws -> String {
        let result = try run([packageRoot + "/scripts/rootfs.sh", name], timeout: 900)
        guard result.status == 0 else { throw LabError("scripts/rootfs.sh \(name) failed: \(result.stderr)") }
        return result.trimmed
    }

    /// The busybox rootfs folder (`scripts/rootfs.sh busybox`).
    /// - Throws: ``LabError`` when the script fails.
    public static func busyboxRootfs() throws -> String { try rootfs("busybox") }
}

/// One containerd version under test.
public struct ContainerdFlavor: CustomStringConvertible, Sendable, Hashable {
    /// A name for test output, e.g. "containerd 1.6 (Debian)".
    public var name: String
    /// The folder holding `containerd` and `ctr`.
    public var binDirectory: String
    /// The major version (1 or 2): the config schema and plugin names differ.
    public var majorVersion: Int

    /// The name, for test output.
    public var description: String { name }

    /// Debian 12's containerd 1.6.
    public static let debian = ContainerdFlavor(
        name: "containerd 1.6 (Debian)",
        binDirectory: "/usr/bin",
        majorVersion: 1
    )
    /// The containerd 2.x that scripts/setup.sh unpacks into the cache.
    public static let containerd2 = ContainerdFlavor(
        name: "containerd 2.x",
        binDirectory: TestPaths.cache + "/containerd2/usr/bin",
        majorVersion: 2
    )
    /// Both, for parameterized tests.
    public static let all = [debian, containerd2]

    /// The CRI plugins' ids in this version (disabled unless a test asks for CRI).
    public var criPlugins: [String] {
        majorVersion == 1
            ? ["io.containerd.grpc.v1.cri"]
            : ["io.containerd.grpc.v1.cri", "io.containerd.cri.v1.runtime", "io.containerd.cri.v1.images"]
    }
}

/// A containerd of our own: config, root, state and sockets in a folder under /tmp, the built
/// shim first on its PATH, the CRI plugin off unless ``Configuration/cri`` is set. Stopped (by
/// pid) and its leftovers removed by ``stop()``.
public final class PrivateContainerd {
    /// What to put into the config beyond the private paths.
    public struct Configuration {
        /// Extra environment for containerd (and so for the shims it starts).
        public var environment: [String: String]
        /// The CRI plugin's configuration as TOML (given containerd's folder), or nil to disable
        /// the CRI plugins. With it, the config is written in the flavor's own schema (version 2
        /// for 1.6, 3 for 2.x).
        public var cri: (@Sendable (_ directory: String) -> String)?
        /// containerd's log level `debug`, which also starts the shims with `-debug`.
        public var debug: Bool
        /// The config file's folder, relative to containerd's folder ("": the folder itself). The
        /// installer tests mount it into a pod, without containerd's root and state.
        public var configSubfolder = ""
        /// Turns the config text into the one written (given containerd's folder): e.g. the test's
        /// own whole config, as an installer will find it.
        public var rewrite: (@Sendable (_ config: String, _ directory: String) -> String)? = nil
        /// Whether the build folder's shim is first on containerd's PATH (containerd 1.6 finds a
        /// shim there by its runtime type). False for a node before an installer ran: then only
        /// ``path`` and the system folders are.
        public var shimOnPath = true
        /// Folders put first on containerd's PATH (before the build folder, when that is on it),
        /// e.g. a test's stand-in for `/usr/local/bin`.
        public var path: [String] = []

        /// A configuration; the defaults give a plain containerd without CRI. `debug` defaults to
        /// the environment variable `ZPTEST_CONTAINERD_DEBUG` being set.
        public init(
            environment: [String: String] = [:],
            cri: (@Sendable (_ directory: String) -> String)? = nil,
            debug: Bool = ProcessInfo.processInfo.environment["ZPTEST_CONTAINERD_DEBUG"] != nil
        ) {
            self.environment = environment
            self.cri = cri
            self.debug = debug
        }
    }

    /// The containerd version.
    public let flavor: ContainerdFlavor
    /// Its folder (config, root, state, sockets, log).
    public let directory: String
    /// The containerd namespace tests use with `ctr` (the CRI plugin uses `k8s.io` regardless).
    public let namespace: String
    /// Its gRPC socket.
    public let socket: String
    /// The folder that holds `containerd-shim-zeropod-v2`, first on containerd's PATH.
    public let shimDirectory: String
    /// containerd's config file (`--config`).
    public let configPath: String
    private var process: Process? = nil
    private let configuration: Configuration

    /// Writes the config and starts containerd; returns once `ctr version` answers (30 s).
    /// - Parameters:
    ///   - tag: a short word for the folder and namespace names (`zpshim-<tag>-<random>`).
    ///   - environment: extra environment for containerd and its shims.
    /// - Throws: ``LabError`` when the shim is not built, this containerd is not installed, or it
    ///   does not come up (with its log's tail).
    public convenience init(flavor: ContainerdFlavor, tag: String, environment: [String: String] = [:]) throws {
        try self.init(flavor: flavor, tag: tag, configuration: Configuration(environment: environment))
    }

    /// Writes the config for `configuration` and starts containerd (see ``init(flavor:tag:environment:)``).
    /// - Throws: ``LabError`` as ``init(flavor:tag:environment:)`` does.
    public init(flavor: ContainerdFlavor, tag: String, configuration: Configuration) throws {
        self.configuration = configuration
        self.flavor = flavor
        let suffix = String(UUID().uuidString.prefix(8)).lowercased()
        directory = "/tmp/zpshim-\(tag)-\(suffix)"
        namespace = "zpshim-\(tag)-\(suffix)"
        socket = directory + "/c.sock"
        configPath =
            directory + (configuration.configSubfolder.isEmpty ? "" : "/" + configuration.configSubfolder)
            + "/config.toml"
        shimDirectory = TestPaths.buildDirectory
        guard FileManager.default.isExecutableFile(atPath: shimDirectory + "/containerd-shim-zeropod-v2") else {
            throw LabError(
                "no containerd-shim-zeropod-v2 in \(shimDirectory): run `swift build --product containerd-shim-zeropod-v2` first"
            )
        }
        guard FileManager.default.isExecutableFile(atPath: flavor.binDirectory + "/containerd") else {
            throw LabError("\(flavor.name) is not installed at \(flavor.binDirectory) (make setup installs it)")
        }
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let plain = """
            root = "\(directory)/root"
            state = "\(directory)/state"
            [grpc]
              address = "\(socket)"
            [ttrpc]
              address = "\(socket).ttrpc"
            """ + (configuration.debug ? "\n[debug]\n  level = \"debug\"" : "")
        var config: String
        if let cri = configuration.cri {
            config = "version = \(flavor.majorVersion == 1 ? 2 : 3)\n\(plain)\n\(cri(directory))\n"
        } else {
            let disabled = flavor.criPlugins.map { "\"\($0)\"" }.joined(separator: ", ")
            config = "version = 2\n\(plain)\ndisabled_plugins = [\(disabled)]\n"
        }
        if let rewrite = configuration.rewrite { config = rewrite(config, directory) }
        try FileManager.default.createDirectory(
            atPath: String(configPath[..<configPath.lastIndex(of: "/")!]),
            withIntermediateDirectories: true
        )
        try Data(config.utf8).write(to: URL(fileURLWithPath: configPath))
        process = try launch()
        try waitUntilUp()
    }

    /// Starts containerd on this instance's config, its output appended to `containerd.log`.
    private func launch() throws -> Process {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: flavor.binDirectory + "/containerd")
        process.arguments = ["--config", configPath]
        var env = ProcessInfo.processInfo.environment.merging(configuration.environment) { $1 }
        let front = configuration.path + (configuration.shimOnPath ? [shimDirectory] : [])
        env["PATH"] = (front + [flavor.binDirectory, "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"])
            .joined(separator: ":")
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
        let up = try eventually(within: 90, every: 0.1) { try ctr(["version"], timeout: 10).status == 0 }
        guard up else {
            let tail = log(tail: 20)  // before stop() removes the folder with the log
            stop()
            throw LabError("\(flavor.name) did not come up; log: \(tail)")
        }
    }

    /// containerd's pid.
    public var pid: Int32 { process?.processIdentifier ?? 0 }

    /// Stops containerd (SIGTERM, by pid) and starts it again on the same root, state and sockets;
    /// shims keep running and containerd must reconnect to them.
    /// - Throws: ``LabError`` when it does not come back.
    public func restart() throws {
        terminate()
        process = try launch()
        try waitUntilUp()
    }

    /// SIGTERM, then SIGKILL after 10 s, by pid; waits until the process is gone and reaps it with
    /// waitpid. (Not `Process.waitUntilExit()`: it was seen hanging with the child already a zombie.)
    private func terminate() {
        let pid = process?.processIdentifier ?? 0
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
    public func ctr(_ arguments: [String], timeout: Int = 60, namespace: String? = nil) throws -> CommandResult {
        try run(
            [flavor.binDirectory + "/ctr", "-a", socket, "-n", namespace ?? self.namespace] + arguments,
            timeout: timeout
        )
    }

    /// Ends a `ctr events` process ``startEvents(into:)`` started (SIGTERM, then waits up to 10 s).
    public func stopEvents(_ events: Process) {
        let pid = events.processIdentifier
        kill(pid, SIGTERM)
        _ = eventually(within: 10) { !isAlive(pid) }
    }

    /// Starts `ctr events` writing to `file`; the caller ends it with ``stopEvents(_:)``.
    /// - Throws: when ctr cannot be started.
    public func startEvents(into file: String) throws -> Process {
        _ = FileManager.default.createFile(atPath: file, contents: nil)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: flavor.binDirectory + "/ctr")
        p.arguments = ["-a", socket, "events"]
        p.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: file))
        p.standardError = FileHandle.nullDevice
        p.standardInput = FileHandle.nullDevice
        try p.run()
        // Let ctr subscribe before the caller acts; the caller's checks poll anyway.
        _ = eventually(within: 0.5) { false }
        return p
    }

    /// containerd's log (with the shims' logs, which containerd copies in).
    public var logText: String { (try? String(contentsOfFile: directory + "/containerd.log", encoding: .utf8)) ?? "" }

    /// The last lines of containerd's log.
    public func log(tail lines: Int) -> String {
        logText.split(separator: "\n").suffix(lines).joined(separator: "\n")
    }

    /// Lines of containerd's log that contain `text`.
    public func logLines(containing text: String) -> [String] {
        logText.split(separator: "\n").filter { $0.contains(text) }.map(String.init)
    }

    /// Stops containerd (SIGTERM, then SIGKILL, by pid) and removes its folder and, for the test's
    /// own namespace, the runc state, checkpoint images and cgroups that shims killed with it
    /// may have left. (The CRI plugin's shared `k8s.io` namespace is left to the CRI test bed,
    /// which removes what its pods made.)
    public func stop() {
        terminate()
        for mountPoint in MountPoints.under(directory + "/") { try? MountPoints.unmount(mountPoint) }
        try? FileManager.default.removeItem(atPath: directory)
        Self.removeLeftovers(namespace: namespace)
    }

    /// Removes what shims of containerd namespace `namespace` left when they were killed: a
    /// prepared restore's mounts in runc's state folder, checkpoint images and a `criu lazy-pages`
    /// daemon serving them (containerd's own `delete` would remove those), and the namespace's
    /// (empty) cgroups that `ctr` made.
    public static func removeLeftovers(namespace: String) {
        precondition(!namespace.isEmpty && !namespace.contains("/"))
        for mountPoint in MountPoints.under("/run/containerd/runc/\(namespace)/") {
            try? MountPoints.unmount(mountPoint)
        }
        try? FileManager.default.removeItem(atPath: "/run/containerd/runc/\(namespace)")
        let images = NodeLayout().imageDirectory(containerdNamespace: namespace)
        for pid in processes(matching: ["lazy-pages"])
        where commandLine(of: pid).contains(where: { $0.hasPrefix(images + "/") }) {
            kill(pid, SIGKILL)
        }
        try? FileManager.default.removeItem(atPath: images)
        // ctr puts containers under the cgroup /<namespace>/<id>: runc removes <id>, the
        // namespace's own (empty by now) cgroup in every hierarchy is ours to remove.
        let hierarchies = (try? FileManager.default.contentsOfDirectory(atPath: "/sys/fs/cgroup")) ?? []
        for h in hierarchies { _ = rmdir("/sys/fs/cgroup/\(h)/\(namespace)") }
        _ = rmdir("/sys/fs/cgroup/\(namespace)")
    }
}
