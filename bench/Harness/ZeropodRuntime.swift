import Foundation
import ZPCore

#if canImport(Glibc)
import Glibc
#endif

/// Memory of one process (a shim), from `/proc/<pid>/status` and `/proc/<pid>/smaps_rollup`, in KiB.
struct ProcessMemory: Sendable {
    /// `VmRSS`: resident pages, shared libraries counted in full.
    var rssKiB: Int
    /// `Pss`: resident pages with shared ones divided among their users.
    var pssKiB: Int?

    /// Reads the memory of `pid`; nil when the process is gone.
    static func read(pid: Int32) -> ProcessMemory? {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return nil }
        func field(_ text: String, _ name: String) -> Int? {
            text.split(separator: "\n").first { $0.hasPrefix(name + ":") }
                .flatMap { $0.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first }
                .flatMap { Int($0) }
        }
        guard let rss = field(status, "VmRSS") else { return nil }
        let rollup = (try? String(contentsOfFile: "/proc/\(pid)/smaps_rollup", encoding: .utf8)) ?? ""
        return ProcessMemory(rssKiB: rss, pssKiB: field(rollup, "Pss"))
    }
}

/// The shim's own report of a restore, read from containerd's log.
struct ShimRestoreReport: Sendable {
    /// "restored process: PID in X ms": the shim's whole restore (CRIU request, stdio, adoption).
    var ms: Double
    /// CRIU's timings as the shim logged them (spawn, request, phases).
    var criu: String
}

/// zeropod-swift: a private containerd 2.x whose PATH holds our `containerd-shim-zeropod-v2`; each
/// container runs with runtime `io.containerd.zeropod.v2` and the scale-down annotation. The shim
/// checkpoints the container by itself once it was idle for the annotation's duration; the harness
/// waits for that ("checkpointing done in X ms" in containerd's log, no process left in the
/// container's netns) and takes X as the checkpoint time. The next client connection goes to the
/// activator, which restores the container: the harness times "first request → correct response".
///
/// The containerd and its shims are this runtime's children; ``stop()`` ends them by pid.
final class ZeropodRuntime: BenchRuntime {
    /// The runtime name the table columns use: `zeropod-swift`, or `zeropod-swift/<variant>` for a
    /// variant (`--zeropod-variant`), which the report compares with both runc and the default.
    var name: String { variant.map { Report.zeropod + "/" + $0 } ?? Report.zeropod }
    /// The variant's name (nil: the default configuration).
    var variant: String?
    var restoresOnConnection: Bool { true }

    /// containerd's folder: config, root, state, sockets and log.
    let directory: String
    /// containerd's binaries (containerd, ctr, containerd-shim-runc-v2).
    let containerdBin: String
    /// The folder that holds `containerd-shim-zeropod-v2`.
    let shimDir: String
    /// The shim's state folder (node config default): images go to `<state>/i/<containerd namespace>/<id>`.
    let shimState: String
    /// The idle time after which the shim scales a container down during the measured cycles.
    let scaleDownMs: Int
    private let containerd: Process
    private let namespace = "zpbench"
    /// Per container id: the size of containerd's log when it was started (log lines before are not its).
    private var logOffsets: [String: Int] = [:]
    /// The runtime `start` uses next (`io.containerd.runc.v2` for the Go shim's memory figure).
    private var runtimeName = "io.containerd.zeropod.v2"
    /// The scale-down annotation `start` sets next (long for the steady-state load).
    private var scaleDownAnnotation: String
    /// Wake group (`zeropod-swift/wake-group`) per container id that `start` sets; the cascade
    /// groups the workload with its sidecar.
    var wakeGroups: [String: String] = [:]
    /// Keep the activator's probe detection on for MySQL workloads too (see `start`).
    let probeDetectionForMySQL: Bool
    /// Set `zeropod.ctrox.dev/pre-dump=true` on the containers (`--zeropod-pre-dump`).
    let preDump: Bool
    /// More annotations for every measured container (`--zeropod-annotation key=value`), e.g.
    /// `zeropod-swift/listener-handover=false` to measure the activator's proxy path.
    var extraAnnotations: [String: String] = [:]

    var logFile: String { directory + "/containerd.log" }
    private var socket: String { directory + "/c.sock" }

    /// Writes the config and starts containerd; returns once `ctr version` answers.
    /// - Parameter lazyRestore: the shims' `lazy-restore` node setting (auto, on, off), written
    ///   with `state-dir` to `<directory>/node.conf` and handed over in `ZEROPOD_NODE_CONFIG`.
    /// - Parameter criu: the shims' `criu-path` (the runc side's CRIU, so both run the same binary).
    /// - Parameter criuLogLevel: the shims' `criu-log-level` (the runc side's `verbosity`).
    /// - Parameter nodeSettings: more node.conf settings (a variant's), replacing the ones above of the same name.
    init(
        directory: String,
        containerdBin: String,
        shimDir: String,
        shimState: String,
        scaleDownMs: Int,
        probeDetectionForMySQL: Bool = true,
        lazyRestore: String = "auto",
        preDump: Bool = false,
        criu: String = "/usr/local/sbin/criu",
        criuLogLevel: Int = 2,
        nodeSettings: [String: String] = [:]
    ) throws {
        self.directory = directory
        self.probeDetectionForMySQL = probeDetectionForMySQL
        self.preDump = preDump
        self.containerdBin = containerdBin
        self.shimDir = shimDir
        self.shimState = shimState
        self.scaleDownMs = scaleDownMs
        scaleDownAnnotation = "\(scaleDownMs)ms"
        guard FileManager.default.isExecutableFile(atPath: shimDir + "/containerd-shim-zeropod-v2") else {
            throw BenchError(
                "\(shimDir)/containerd-shim-zeropod-v2: not found (swift build -c release --product containerd-shim-zeropod-v2)"
            )
        }
        guard FileManager.default.isExecutableFile(atPath: containerdBin + "/containerd") else {
            throw BenchError("\(containerdBin)/containerd: not found (make setup installs containerd 2.x)")
        }
        runIgnoringFailure(["rm", "-rf", directory])
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let config = """
            version = 2
            root = "\(directory)/root"
            state = "\(directory)/state"
            disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.cri.v1.runtime", "io.containerd.cri.v1.images"]
            [grpc]
              address = "\(directory)/c.sock"
            [ttrpc]
              address = "\(directory)/c.sock.ttrpc"

            """
        try config.write(toFile: directory + "/config.toml", atomically: true, encoding: .utf8)
        // The same CRIU binary as the runc side (`criu-path`).
        try [
            "state-dir": shimState, "lazy-restore": lazyRestore, "criu-path": criu,
            "criu-log-level": "\(criuLogLevel)",
        ].merging(nodeSettings) { $1 }.sorted { $0.key < $1.key }.map { "\($0.key) = \($0.value)\n" }.joined()
            .write(toFile: directory + "/node.conf", atomically: true, encoding: .utf8)
        _ = FileManager.default.createFile(atPath: directory + "/containerd.log", contents: nil)
        let log = try FileHandle(forWritingTo: URL(fileURLWithPath: directory + "/containerd.log"))
        let p = Process()
        p.executableURL = URL(fileURLWithPath: containerdBin + "/containerd")
        p.arguments = ["--config", directory + "/config.toml"]
        var env = ProcessInfo.processInfo.environment
        env["PATH"] = "\(shimDir):\(containerdBin):/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        env["ZEROPOD_NODE_CONFIG"] = directory + "/node.conf"
        p.environment = env
        p.standardOutput = log
        p.standardError = log
        try p.run()
        containerd = p
        let deadline = ContinuousClock.now + .seconds(30)
        while ContinuousClock.now < deadline {
            if (try? spawnAndWait(ctrArgv(["version"])).0.status) == 0 { return }
            usleep(100_000)
        }
        stop()
        throw BenchError("private containerd in \(directory) did not answer within 30 s\(tail(logFile))")
    }

    private func ctrArgv(_ args: [String]) -> [String] {
        [containerdBin + "/ctr", "-a", socket, "-n", namespace] + args
    }

    @discardableResult
    private func ctr(_ args: [String]) throws -> String { try runChecked(ctrArgv(args)) }

    /// Ends containerd (SIGTERM, by pid, then SIGKILL after 10 s).
    func stop() {
        guard containerd.isRunning else { return }
        kill(containerd.processIdentifier, SIGTERM)
        let deadline = ContinuousClock.now + .seconds(10)
        while containerd.isRunning && ContinuousClock.now < deadline { usleep(50_000) }
        if containerd.isRunning { kill(containerd.processIdentifier, SIGKILL) }
        containerd.waitUntilExit()
        // The shims' runc root and image folder for the namespace: empty once every container is gone.
        _ = rmdir("/run/containerd/runc/" + namespace)
        _ = rmdir(NodeLayout(stateDirectory: shimState).imageDirectory(containerdNamespace: namespace))
    }

    /// Where the shim writes the images of container `id`.
    func imageDir(_ id: String) -> String {
        NodeLayout(stateDirectory: shimState).imageDirectory(containerdNamespace: namespace, containerID: id)
    }

    func start(_ w: Workload, bundle: Bundle) throws -> RunningContainer {
        remove(w, container: nil)
        // The harness's OCI spec, with the rootfs by absolute path (ctr --config takes the spec as
        // it is) and the scale-down annotation.
        let data = try Data(contentsOf: URL(fileURLWithPath: bundle.path + "/config.json"))
        guard var spec = try JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw BenchError("\(bundle.path)/config.json is not a JSON object")
        }
        spec["root"] = ["path": bundle.path + "/rootfs", "readonly": false]
        var annotations = spec["annotations"] as? [String: String] ?? [:]
        annotations["zeropod.ctrox.dev/scaledown-duration"] = scaleDownAnnotation
        // MySQL clients wait for the server's greeting and send nothing first. The activator now
        // wakes the application after a 50 ms silent-client window (it waited the whole 500 ms
        // inspection timeout before); `--no-mysql-probe-detection` turns detection off for them to
        // measure that window.
        if case .mysql = w.probe, !probeDetectionForMySQL {
            annotations["zeropod.ctrox.dev/disable-probe-detection"] = "true"
        }
        if let group = wakeGroups[w.containerID] { annotations["zeropod-swift/wake-group"] = group }
        if preDump { annotations["zeropod.ctrox.dev/pre-dump"] = "true" }
        annotations.merge(extraAnnotations) { $1 }
        spec["annotations"] = annotations
        let specPath = bundle.path + "/zeropod-spec.json"
        try JSONSerialization.data(withJSONObject: spec, options: [.sortedKeys]).write(
            to: URL(fileURLWithPath: specPath)
        )
        logOffsets[w.containerID] = fileSize(logFile)
        let (r, _) = try spawnAndWait(
            ctrArgv([
                "run", "-d", "--runtime", runtimeName, "--config", specPath,
                "--log-uri", "file://" + bundle.logFile, w.containerID,
            ])
        )
        guard r.status == 0 else {
            throw BenchError(
                "ctr run \(w.containerID) (\(runtimeName)) exited \(r.status): \(r.stderr)\(tail(logFile))"
            )
        }
        return RunningContainer(stdin: nil)
    }

    /// Starts with a one-hour scale-down duration: the eBPF activity tracking is attached, the
    /// redirect is off and no proxy is in the path, as for a busy container.
    func startForLoad(_ w: Workload, bundle: Bundle) throws -> RunningContainer {
        scaleDownAnnotation = "1h"
        defer { scaleDownAnnotation = "\(scaleDownMs)ms" }
        return try start(w, bundle: bundle)
    }

    /// Waits for the shim's "scale-down armed" line for the container started last (its ports
    /// found, the activity tracking attached): before it, requests do not reach the idle timer, and
    /// a scale-down deadline already past when it arms comes at once, leaving no time for a
    /// pre-dump.
    func waitUntilWatching(_ w: Workload) throws {
        let deadline = ContinuousClock.now + .seconds(60)
        while logLines(of: w.containerID, containing: "scale-down armed").isEmpty {
            guard ContinuousClock.now < deadline else {
                throw BenchError(
                    "\(w.containerID): the shim did not arm its scale-down within 60 s\(tail(logFile, lines: 20))"
                )
            }
            usleep(10_000)
        }
    }

    /// Waits for the shim's scale-down: its "checkpointing done in X ms" line for this container
    /// and no process left in the container's network namespace. Returns X.
    func checkpoint(_ w: Workload, bundle: Bundle, container: inout RunningContainer) throws -> CheckpointResult {
        let deadline = ContinuousClock.now + .seconds(120)
        // The shim's line of this checkpoint: the container's n-th.
        let n = container.checkpoints + 1
        var line: String?
        var goneAt: ContinuousClock.Instant?
        while ContinuousClock.now < deadline {
            if line == nil {
                let lines = logLines(of: w.containerID, containing: "checkpointing done in ")
                line = lines.count >= n ? lines[n - 1] : nil
            }
            if goneAt == nil && processes(inNetns: "/var/run/netns/" + w.netns).isEmpty { goneAt = ContinuousClock.now }
            if line != nil && goneAt != nil { break }
            if let failed = logLines(of: w.containerID, containing: "checkpoint failed").first {
                throw BenchError("shim: \(failed)")
            }
            usleep(5_000)
        }
        guard let line, let ms = Self.number(after: "checkpointing done in ", in: line) else {
            throw BenchError("\(w.containerID) was not scaled down within 120 s\(tail(logFile, lines: 20))")
        }
        guard processes(inNetns: "/var/run/netns/" + w.netns).isEmpty else {
            throw BenchError("\(w.containerID): checkpoint logged but processes remain in \(w.netns)")
        }
        // The shim prepares the restore (CRIU worker, criu lazy-pages) right after the checkpoint;
        // a real first connection comes later than that, so the clock starts once it is ready.
        let prepared = ContinuousClock.now + .seconds(20)
        while ContinuousClock.now < prepared
            && logLines(of: w.containerID, containing: "restore prepared").count
                + logLines(of: w.containerID, containing: "restore not prepared").count < n
        {
            usleep(5_000)
        }
        container.checkpoints = n
        let preparation = logLines(of: w.containerID, containing: "restore prepared in ").last
            .flatMap { Self.number(after: "restore prepared in ", in: $0) }
        return CheckpointResult(
            reportedMs: ms,
            imageDir: imageDir(w.containerID),
            statsDir: imageDir(w.containerID),
            detail: Self.metadata("criu", in: line),
            goneAt: goneAt,
            restorePreparationMs: preparation
        )
    }

    func restore(_ w: Workload, bundle: Bundle, container: inout RunningContainer) throws {
        throw BenchError("zeropod-swift restores on connection; restore() must not be called")
    }

    /// The shim's "restored process: PID in X ms" line for this container (waits up to 5 s).
    func restoreReport(_ w: Workload) -> ShimRestoreReport? {
        let deadline = ContinuousClock.now + .seconds(5)
        repeat {
            if let line = logLines(of: w.containerID, containing: "restored process: ").last,
                let ms = Self.number(
                    after: " in ",
                    in: String(line[line.range(of: "restored process: ")!.upperBound...])
                )
            {
                return ShimRestoreReport(ms: ms, criu: Self.metadata("criu", in: line) ?? "")
            }
            usleep(10_000)
        } while ContinuousClock.now < deadline
        return nil
    }

    /// The shim restores from (and CRIU writes its stats into) the images folder.
    func restoreStatsDir(_ w: Workload, bundle: Bundle) -> String { imageDir(w.containerID) }

    /// The memory of the shim process serving `w`'s container.
    func shimMemory(_ w: Workload) -> ProcessMemory? {
        shimPid(of: w.containerID).flatMap { ProcessMemory.read(pid: $0) }
    }

    /// Runs `w` once under Go's `containerd-shim-runc-v2` in the same containerd (same spec, no
    /// scale-down) and returns that shim's memory once the workload answered.
    func goShimMemory(_ w: Workload, bundle: Bundle) throws -> ProcessMemory? {
        runtimeName = "io.containerd.runc.v2"
        defer {
            runtimeName = "io.containerd.zeropod.v2"
            remove(w, container: nil)
        }
        let t0 = ContinuousClock.now
        _ = try start(w, bundle: bundle)
        var why = ""
        guard w.probe.poll(address: w.address, port: w.port, deadline: t0 + w.startDeadline, lastError: &why) else {
            throw BenchError("\(w.name) under io.containerd.runc.v2 did not answer: \(why)")
        }
        usleep(500_000)
        return shimMemory(w)
    }

    func remove(_ w: Workload, container: RunningContainer?) {
        let id = w.containerID
        runIgnoringFailure(ctrArgv(["task", "kill", "-a", "-s", "SIGKILL", id]))
        let deadline = ContinuousClock.now + .seconds(30)
        while ContinuousClock.now < deadline {
            if (try? spawnAndWait(ctrArgv(["task", "rm", "-f", id])).0.status) == 0 { break }
            let list = (try? ctr(["task", "ls", "-q"])) ?? ""
            if !list.split(separator: "\n").contains(Substring(id)) { break }
            usleep(100_000)
        }
        runIgnoringFailure(ctrArgv(["container", "rm", id]))
    }

    /// The pid of the shim whose command line names `-id <id>` (containerd starts one per container).
    private func shimPid(of id: String) -> Int32? {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        for pid in entries.compactMap({ Int32($0) }) {
            guard let raw = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else { continue }
            let argv = raw.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
            guard let exe = argv.first,
                exe.hasSuffix("containerd-shim-zeropod-v2") || exe.hasSuffix("containerd-shim-runc-v2"),
                let i = argv.firstIndex(of: "-id"), i + 1 < argv.count, argv[i + 1] == id,
                !argv.contains("start")
            else { continue }
            return pid
        }
        return nil
    }

    /// containerd's log lines, written since `id` was started, that carry `container=<id>` and `text`.
    private func logLines(of id: String, containing text: String) -> [String] {
        guard let h = FileHandle(forReadingAtPath: logFile) else { return [] }
        defer { try? h.close() }
        try? h.seek(toOffset: UInt64(logOffsets[id] ?? 0))
        let data = (try? h.readToEnd()) ?? Data()
        let tag = "container=\(id)"
        return String(decoding: data, as: UTF8.self).split(separator: "\n").filter { l in
            l.contains(text)
                && l.split(whereSeparator: { $0 == " " || $0 == "\"" || $0 == "\\" }).contains { $0 == tag }
        }.map(String.init)
    }

    private func fileSize(_ path: String) -> Int {
        ((try? FileManager.default.attributesOfItem(atPath: path))?[.size] as? NSNumber)?.intValue ?? 0
    }

    /// The number right after `prefix` in `line` ("... in 123.4 ms" → 123.4).
    static func number(after prefix: String, in line: String) -> Double? {
        guard let r = line.range(of: prefix) else { return nil }
        let digits = line[r.upperBound...].prefix { $0.isNumber || $0 == "." }
        return Double(digits)
    }

    /// The value of logging metadata `key=...` in a log line (up to the next ` key=` or the message).
    static func metadata(_ key: String, in line: String) -> String? {
        guard let r = line.range(of: key + "=") else { return nil }
        var rest = line[r.upperBound...]
        if let end = rest.range(of: " [containerd-shim") ?? rest.range(of: " id=") { rest = rest[..<end.lowerBound] }
        return String(rest)
    }
}

/// Processes on the host whose network namespace is the one at `path`.
func processes(inNetns path: String) -> [Int32] {
    var st = stat()
    guard stat(path, &st) == 0 else { return [] }
    let inode = "net:[\(st.st_ino)]"
    let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
    return entries.compactMap { Int32($0) }.filter { pid in
        (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/ns/net")) == inode
    }
}
