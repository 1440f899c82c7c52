import Foundation

/// A runtime whose cold start, checkpoint and restore the harness times. Every runtime in a run
/// measures the same workloads with the same bundles, probes and CRIU binary, cycle by cycle.
///
/// `ZeropodRuntime` (ZeropodRuntime.swift) runs the same bundles through a private containerd with
/// our shim: its `checkpoint` waits for the shim's own scale-down and `restoresOnConnection` makes
/// the harness time "first request sent → correct response" (the restore through the activator).
protocol BenchRuntime {
    /// Column label (`runc`, `zeropod-swift`).
    var name: String { get }
    /// True when a connection alone restores a checkpointed container (no explicit restore call).
    var restoresOnConnection: Bool { get }
    /// Starts the container; returns when the start command returned (not when it serves).
    func start(_ w: Workload, bundle: Bundle) throws -> RunningContainer
    /// Checkpoints the container, stopping it; returns when done, with where the images went.
    func checkpoint(_ w: Workload, bundle: Bundle, container: inout RunningContainer) throws -> CheckpointResult
    /// Restores the container from `bundle.imageDir`; returns when the restore command returned.
    func restore(_ w: Workload, bundle: Bundle, container: inout RunningContainer) throws
    /// Stops and deletes the container, ignoring errors (cleanup).
    func remove(_ w: Workload, container: RunningContainer?)
    /// The memory of the workload's container while it runs.
    func memory(of w: Workload) -> ContainerMemory?
    /// Starts the container for the steady-state load.
    func startForLoad(_ w: Workload, bundle: Bundle) throws -> RunningContainer
    /// The runtime's own report of the last restore.
    func restoreReport(_ w: Workload) -> ShimRestoreReport?
    /// The memory of the shim process serving the container.
    func shimMemory(_ w: Workload) -> ProcessMemory?
    /// Where CRIU wrote `stats-restore` for the last restore.
    func restoreStatsDir(_ w: Workload, bundle: Bundle) -> String
    /// Waits until the runtime watches the started container's activity, so that its idle time
    /// counts from the harness's last request (the shim arms its scale-down once it has found the
    /// container's ports: seconds after a slow start such as the JVM's).
    func waitUntilWatching(_ w: Workload) throws
}

/// What a checkpoint left behind and, for a runtime that times itself, how long it took.
struct CheckpointResult: Sendable {
    /// The runtime's own duration of the checkpoint (nil: the harness's wall time counts).
    var reportedMs: Double?
    /// The folder holding the images (its `du` is the image size).
    var imageDir: String
    /// The folder where CRIU wrote `stats-dump`.
    var statsDir: String
    /// Per-phase timings as the runtime reported them (zeropod-swift: CRIU's phases from the shim log).
    var detail: String?
    /// When the harness first saw no process of the container left on the host (runtimes that
    /// scale down by themselves; the checkpoint then counts from their scale-down decision).
    var goneAt: ContinuousClock.Instant? = nil
    /// The runtime's own preparation of the coming restore, done while scaled down (ms; the
    /// shim's "restore prepared in X ms").
    var restorePreparationMs: Double? = nil
}

/// Memory charged to a container's cgroup (cgroup v1 memory controller), in bytes.
struct ContainerMemory: Sendable {
    /// `memory.usage_in_bytes`: everything charged, page cache included.
    var usage: UInt64
    /// `total_rss` from `memory.stat`: anonymous memory of the container's processes.
    var rss: UInt64

    /// Reads the memory of the cgroup at `cgroupsPath`; nil when it does not exist.
    static func read(cgroupsPath: String) -> ContainerMemory? {
        let dir = "/sys/fs/cgroup/memory" + cgroupsPath
        guard let usageText = try? String(contentsOfFile: dir + "/memory.usage_in_bytes", encoding: .utf8),
            let usage = UInt64(usageText.trimmingCharacters(in: .whitespacesAndNewlines)),
            let stat = try? String(contentsOfFile: dir + "/memory.stat", encoding: .utf8)
        else { return nil }
        let rss =
            stat.split(separator: "\n").first { $0.hasPrefix("total_rss ") }
            .flatMap { UInt64($0.split(separator: " ")[1]) } ?? 0
        return ContainerMemory(usage: usage, rss: rss)
    }
}

extension BenchRuntime {
    /// A runtime the harness checkpoints itself watches nothing (default).
    func waitUntilWatching(_ w: Workload) throws {}
    /// The memory of the workload's container while it runs (default: the cgroup the harness's
    /// bundle names; a runtime that places containers elsewhere overrides this).
    func memory(of w: Workload) -> ContainerMemory? { ContainerMemory.read(cgroupsPath: w.cgroupsPath) }
    /// Starts the container for the steady-state load (default: as `start`).
    func startForLoad(_ w: Workload, bundle: Bundle) throws -> RunningContainer { try start(w, bundle: bundle) }
    /// The runtime's own report of the last restore (default: none).
    func restoreReport(_ w: Workload) -> ShimRestoreReport? { nil }
    /// The memory of the shim process serving the container (default: none, runc has no shim).
    func shimMemory(_ w: Workload) -> ProcessMemory? { nil }
    /// CRIU's work folder in the bundle (runc's `--work-path`).
    func restoreStatsDir(_ w: Workload, bundle: Bundle) -> String { bundle.workDir }
}

/// What the harness keeps for a running container: the stdin pipe ends it holds.
struct RunningContainer {
    /// Write end of the container's stdin pipe, held open until the container goes.
    var stdin: HeldStdin?
    /// Checkpoints taken of this container so far (zeropod-swift finds the shim's line of each).
    var checkpoints = 0
}

/// Plain runc 1.1.5 with CRIU, as a baseline: `runc run -d`, `runc checkpoint`, `runc restore -d`,
/// each with stdio on pipes that the harness holds (CRIU cannot dump host file descriptors).
struct RuncRuntime: BenchRuntime {
    /// runc's state root, private to the harness.
    var stateRoot: String
    /// The CRIU binary runc runs.
    var criu: String

    var name: String { "runc" }
    var restoresOnConnection: Bool { false }

    private var runc: [String] { ["runc", "--root", stateRoot, "--criu", criu] }
    private static let criuFlags = ["--file-locks", "--ext-unix-sk", "--manage-cgroups-mode", "soft"]

    func start(_ w: Workload, bundle: Bundle) throws -> RunningContainer {
        remove(w, container: nil)
        let (r, stdin) = try spawnAndWait(
            runc + ["run", "-d", "--bundle", bundle.path, w.containerID],
            stdio: .containerPipes(log: bundle.logFile)
        )
        guard r.status == 0 else {
            throw BenchError("runc run \(w.containerID) exited \(r.status)\(tail(bundle.logFile))")
        }
        return RunningContainer(stdin: stdin)
    }

    func checkpoint(_ w: Workload, bundle: Bundle, container: inout RunningContainer) throws -> CheckpointResult {
        runIgnoringFailure(["rm", "-rf", bundle.imageDir, bundle.workDir])
        try runChecked(["mkdir", "-p", bundle.imageDir, bundle.workDir])
        try bundle.useCgroupYard(true)
        let argv =
            runc + ["checkpoint", "--image-path", bundle.imageDir, "--work-path", bundle.workDir]
            + Self.criuFlags + [w.containerID]
        let (r, _) = try spawnAndWait(argv)
        guard r.status == 0 else {
            throw BenchError(
                "runc checkpoint \(w.containerID) exited \(r.status): \(r.stderr)\(tail(bundle.workDir + "/dump.log"))"
            )
        }
        container.stdin = nil
        return CheckpointResult(reportedMs: nil, imageDir: bundle.imageDir, statsDir: bundle.workDir)
    }

    func restore(_ w: Workload, bundle: Bundle, container: inout RunningContainer) throws {
        try bundle.useCgroupYard(false)
        let argv =
            runc + [
                "restore", "-d", "--image-path", bundle.imageDir, "--work-path", bundle.workDir,
                "--bundle", bundle.path,
            ] + Self.criuFlags + [w.containerID]
        let (r, stdin) = try spawnAndWait(argv, stdio: .containerPipes(log: bundle.logFile))
        guard r.status == 0 else {
            throw BenchError(
                "runc restore \(w.containerID) exited \(r.status)\(tail(bundle.logFile))\(tail(bundle.workDir + "/restore.log"))"
            )
        }
        container.stdin = stdin
    }

    func remove(_ w: Workload, container: RunningContainer?) {
        runIgnoringFailure(runc + ["delete", "--force", w.containerID])
    }
}

/// The last lines of a log file, prefixed for an error message (empty when unreadable).
func tail(_ path: String, lines: Int = 12) -> String {
    guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return "" }
    return "\n--- \(path):\n" + text.split(separator: "\n").suffix(lines).joined(separator: "\n")
}
