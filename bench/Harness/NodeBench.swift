import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A private containerd for the node measurements (shim memory, shim start, density): its own
/// config, root, state, sockets and log under `directory`, our shim's folder first on its PATH, the
/// node settings in `ZEROPOD_NODE_CONFIG`. Started with posix_spawn; ``stop()`` ends it by pid.
final class NodeContainerd: Sendable {
    let directory: String
    /// Folder holding `containerd` and `ctr` (Debian's containerd 1.6 is `/usr/bin`).
    let binDir: String
    let namespace: String
    let pid: pid_t
    var logFile: String { directory + "/containerd.log" }
    var socket: String { directory + "/c.sock" }

    /// Writes the config and node settings, starts containerd and waits until `ctr version` answers.
    init(directory: String, binDir: String, shimDir: String, criu: String, stateDir: String, namespace: String) throws {
        self.directory = directory
        self.binDir = binDir
        self.namespace = namespace
        runIgnoringFailure(["rm", "-rf", directory])
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try """
        version = 2
        root = "\(directory)/root"
        state = "\(directory)/state"
        disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.cri.v1.runtime", "io.containerd.cri.v1.images"]
        [grpc]
          address = "\(directory)/c.sock"
        [ttrpc]
          address = "\(directory)/c.sock.ttrpc"

        """.write(toFile: directory + "/config.toml", atomically: true, encoding: .utf8)
        try "state-dir = \(stateDir)\ncriu-path = \(criu)\nlazy-restore = auto\ncriu-log-level = 2\n"
            .write(toFile: directory + "/node.conf", atomically: true, encoding: .utf8)
        var env = ProcessInfo.processInfo.environment
        env["PATH"] = "\(shimDir):\(binDir):/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        env["ZEROPOD_NODE_CONFIG"] = directory + "/node.conf"
        pid = try spawnDetached(
            [binDir + "/containerd", "--config", directory + "/config.toml"],
            environment: env,
            output: directory + "/containerd.log"
        )
        let deadline = ContinuousClock.now + .seconds(30)
        while ContinuousClock.now < deadline {
            if (try? spawnAndWait(ctrArgv(["version"])).0.status) == 0 { return }
            usleep(100_000)
        }
        stop()
        throw BenchError(
            "private containerd in \(directory) did not answer within 30 s\(tail(directory + "/containerd.log"))"
        )
    }

    func ctrArgv(_ args: [String]) -> [String] { [binDir + "/ctr", "-a", socket, "-n", namespace] + args }

    /// `ctr run -d`: a container from a plain rootfs folder in the network namespace `netns`.
    func run(
        id: String,
        runtime: String,
        rootfs: String,
        netns: String,
        annotations: [String: String],
        args: [String]
    ) throws {
        // `--rootfs` is a flag: the first argument is then the folder instead of an image.
        var argv = [
            "run", "-d", "--runtime", runtime, "--rootfs", "--with-ns", "network:/var/run/netns/\(netns)",
            "--log-uri", "file://\(directory)/\(id).log",
        ]
        for (k, v) in annotations.sorted(by: { $0.key < $1.key }) { argv += ["--annotation", "\(k)=\(v)"] }
        let (r, _) = try spawnAndWait(ctrArgv(argv + [rootfs, id] + args))
        guard r.status == 0 else {
            throw BenchError("ctr run \(id) (\(runtime)) exited \(r.status): \(r.stderr)\(tail(logFile))")
        }
    }

    /// Kills the task (SIGKILL), removes it and the container; ignores what is already gone.
    func remove(id: String) {
        runIgnoringFailure(ctrArgv(["task", "kill", "-a", "-s", "SIGKILL", id]))
        let deadline = ContinuousClock.now + .seconds(30)
        while ContinuousClock.now < deadline {
            if (try? spawnAndWait(ctrArgv(["task", "rm", "-f", id])).0.status) == 0 { break }
            let list = (try? runChecked(ctrArgv(["task", "ls", "-q"]))) ?? ""
            if !list.split(separator: "\n").contains(Substring(id)) { break }
            usleep(100_000)
        }
        runIgnoringFailure(ctrArgv(["container", "rm", id]))
    }

    /// Ends containerd (SIGTERM, SIGKILL after 10 s) and removes the namespace's leftovers.
    func stop() {
        kill(pid, SIGTERM)
        let deadline = ContinuousClock.now + .seconds(10)
        var status: Int32 = 0
        while ContinuousClock.now < deadline {
            if waitpid(pid, &status, WNOHANG) == pid { break }
            usleep(50_000)
        }
        if kill(pid, 0) == 0 {
            kill(pid, SIGKILL)
            _ = waitpid(pid, &status, 0)
        }
        _ = rmdir("/run/containerd/runc/" + namespace)
        for controller in (try? FileManager.default.contentsOfDirectory(atPath: "/sys/fs/cgroup")) ?? [] {
            _ = rmdir("/sys/fs/cgroup/\(controller)/\(namespace)")
        }
    }

    /// Per container id, the shim log lines (with `container=<id>`) that contain each of `texts`,
    /// from `offset` on; one read of the log.
    func idsWithLines(containing texts: [String], from offset: UInt64 = 0) -> [String: Set<String>] {
        guard let h = FileHandle(forReadingAtPath: logFile) else { return [:] }
        defer { try? h.close() }
        try? h.seek(toOffset: offset)
        let data = (try? h.readToEnd()) ?? Data()
        var out: [String: Set<String>] = [:]
        for line in String(decoding: data, as: UTF8.self).split(separator: "\n") {
            guard let text = texts.first(where: { line.contains($0) }), let r = line.range(of: "container=") else {
                continue
            }
            let id = line[r.upperBound...].prefix { $0 != " " && $0 != "\"" && $0 != "\\" }
            out[text, default: []].insert(String(id))
        }
        return out
    }

    /// Log lines of container `id` containing `text`.
    func lines(of id: String, containing text: String) -> [String] {
        guard let data = FileManager.default.contents(atPath: logFile) else { return [] }
        return String(decoding: data, as: UTF8.self).split(separator: "\n")
            .filter { $0.contains(text) && $0.contains("container=\(id) ") }.map(String.init)
    }

    /// The size of the log now (for reading only what comes after).
    var logSize: UInt64 {
        ((try? FileManager.default.attributesOfItem(atPath: logFile))?[.size] as? NSNumber)?.uint64Value ?? 0
    }
}

/// Starts `argv` without waiting for it: stdin from /dev/null, stdout and stderr appended to
/// `output`. Returns its pid; the caller reaps it.
func spawnDetached(_ argv: [String], environment: [String: String], output: String) throws -> pid_t {
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
    posix_spawn_file_actions_addopen(&actions, 1, output, O_WRONLY | O_CREAT | O_APPEND, 0o644)
    posix_spawn_file_actions_adddup2(&actions, 1, 2)
    let cArgs = argv.map { strdup($0) } + [nil]
    let cEnv = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
    defer { for p in cArgs + cEnv { free(p) } }
    var pid: pid_t = 0
    let rc = posix_spawn(&pid, argv[0], &actions, nil, cArgs, cEnv)
    guard rc == 0 else { throw BenchError("spawning \(argv[0]): \(String(cString: strerror(rc)))") }
    return pid
}

/// One pod of the node measurements: a busybox httpd container in its own network namespace
/// `zpn-<index>`, joined to the host by a veth pair carrying a /30 of 10.81.0.0/16.
struct NodePod: Sendable {
    var index: Int
    /// Container id prefix (`zpnode-` for zeropod pods, `zprunc-` for runc ones).
    var prefix: String
    var id: String { "\(prefix)\(index)" }
    /// `n` for zeropod pods, `r` for runc ones.
    private var tag: String { prefix == "zprunc-" ? "r" : "n" }
    var netns: String { "zpn-\(tag)\(index)" }
    /// Host side of the veth pair (≤ 15 characters).
    var hostLink: String { "zpv\(tag)\(index)" }
    private var base: Int { (prefix == "zprunc-" ? 32768 : 0) + index * 4 }
    var hostAddress: String { "10.81.\(base / 256).\(base % 256 + 1)" }
    var address: String { "10.81.\(base / 256).\(base % 256 + 2)" }

    static let probe = Probe.http(path: "/", host: "busybox", expect: "zeropod busybox")
    static let args = ["/bin/httpd", "-f", "-p", "80", "-h", "/www"]

    func createNetwork() throws {
        removeNetwork()
        try runChecked(["ip", "netns", "add", netns])
        try runChecked(["ip", "link", "add", hostLink, "type", "veth", "peer", "name", "eth0", "netns", netns])
        try runChecked(["ip", "addr", "add", "\(hostAddress)/30", "dev", hostLink])
        try runChecked(["ip", "link", "set", hostLink, "up"])
        try runChecked(["ip", "-n", netns, "addr", "add", "\(address)/30", "dev", "eth0"])
        try runChecked(["ip", "-n", netns, "link", "set", "eth0", "up"])
        try runChecked(["ip", "-n", netns, "link", "set", "lo", "up"])
    }

    func removeNetwork() {
        runIgnoringFailure(["ip", "netns", "del", netns])
        runIgnoringFailure(["ip", "link", "del", hostLink])
    }

    /// Time from the first connection attempt to the correct response (ms); nil on failure.
    func firstResponse(deadline: Duration = .seconds(60)) -> (ms: Double?, error: String) {
        let t0 = ContinuousClock.now
        var why = ""
        guard Self.probe.poll(address: address, port: 80, deadline: t0 + deadline, lastError: &why) else {
            return (nil, why)
        }
        return (millis(since: t0), "")
    }
}

/// The pids of the shims serving each container id (their command line names `-id <id>` and
/// is not the short-lived `start`).
func shimPIDs() -> [String: Int32] {
    var out: [String: Int32] = [:]
    for pid in ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).compactMap({ Int32($0) }) {
        guard let raw = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else { continue }
        let argv = raw.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
        guard let exe = argv.first,
            exe.hasSuffix("containerd-shim-zeropod-v2") || exe.hasSuffix("containerd-shim-runc-v2"),
            let i = argv.firstIndex(of: "-id"), i + 1 < argv.count, !argv.contains("start")
        else { continue }
        out[argv[i + 1]] = pid
    }
    return out
}

/// Network namespace inodes that have at least one process (one pass over /proc).
func busyNetworkNamespaces() -> Set<String> {
    var out = Set<String>()
    for pid in ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).compactMap({ Int32($0) }) {
        if let ns = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/ns/net") { out.insert(ns) }
    }
    return out
}

/// The `net:[inode]` name of a named network namespace.
func netnsName(_ name: String) -> String? {
    var st = stat()
    guard stat("/var/run/netns/\(name)", &st) == 0 else { return nil }
    return "net:[\(st.st_ino)]"
}

/// Runs `body` for every element on `width` threads at once and waits for all; results in order.
func parallelMap<T: Sendable, R: Sendable>(_ items: [T], width: Int, _ body: @escaping @Sendable (T) -> R) -> [R] {
    let results = Mutex<[Int: R]>([:])
    let next = Mutex(0)
    let done = DispatchSemaphore(value: 0)
    let threads = max(1, min(width, items.count))
    for _ in 0..<threads {
        Thread {
            while true {
                let i = next.withLock { n -> Int in
                    defer { n += 1 }
                    return n
                }
                guard i < items.count else { break }
                let r = body(items[i])
                results.withLock { $0[i] = r }
            }
            done.signal()
        }.start()
    }
    for _ in 0..<threads { done.wait() }
    return results.withLock { r in items.indices.map { r[$0]! } }
}

/// Sends one request to each pod at the same moment (a barrier releases all threads together)
/// and returns each pod's time to the correct response.
func simultaneousFirstResponses(_ pods: [NodePod]) -> [(ms: Double?, error: String)] {
    let ready = DispatchSemaphore(value: 0)
    let go = DispatchSemaphore(value: 0)
    let results = Mutex<[Int: (ms: Double?, error: String)]>([:])
    let done = DispatchSemaphore(value: 0)
    for (i, pod) in pods.enumerated() {
        Thread {
            ready.signal()
            go.wait()
            let r = pod.firstResponse()
            results.withLock { $0[i] = r }
            done.signal()
        }.start()
    }
    for _ in pods { ready.wait() }
    for _ in pods { go.signal() }
    for _ in pods { done.wait() }
    return results.withLock { r in pods.indices.map { r[$0]! } }
}
