import Foundation
import Synchronization
import ZPCore

#if canImport(Glibc)
import Glibc
#endif

/// The node-scale measurements (issue 17), all on busybox httpd pods in one private containerd:
/// shim memory (ours scaled down beside containerd-shim-runc-v2 running the same container), shim
/// start, and density (many pods scaled down at once). Figures only, never assertions.
struct NodeRuns {
    /// The private containerd's binaries (Debian's 1.6: `/usr/bin`, with its containerd-shim-runc-v2).
    var containerdBin: String
    /// The folder holding our shim.
    var shimDir: String
    /// The CRIU both sides use.
    var criu: String
    /// The busybox root filesystem (shared read-only by every pod: httpd writes nothing).
    var rootfs: String
    /// The shims' state folder (images).
    var stateDir = "/var/lib/zeropod-swift-node"
    var directory = "/run/zpbench-node"

    static let zeropodRuntime = "io.containerd.zeropod.v2"
    static let runcRuntime = "io.containerd.runc.v2"

    private func startContainerd(_ namespace: String) throws -> NodeContainerd {
        try NodeContainerd(
            directory: directory,
            binDir: containerdBin,
            shimDir: shimDir,
            criu: criu,
            stateDir: stateDir,
            namespace: namespace
        )
    }

    private func annotations(idle: String) -> [String: String] { ["zeropod.ctrox.dev/scaledown-duration": idle] }

    /// Waits until every pod's shim logged its checkpoint and its prepared restore and no process
    /// is left in its network namespace. Returns when that happened (or nil at the deadline) and
    /// the pods still missing.
    private func waitScaledDown(
        _ pods: [NodePod],
        containerd: NodeContainerd,
        since offset: UInt64,
        deadline: Duration
    ) -> (at: ContinuousClock.Instant?, missing: [String]) {
        let end = ContinuousClock.now + deadline
        let inodes = Dictionary(uniqueKeysWithValues: pods.map { ($0.id, netnsName($0.netns) ?? "?") })
        var missing = pods.map(\.id)
        while ContinuousClock.now < end {
            let seen = containerd.idsWithLines(
                containing: ["checkpointing done", "restore prepared", "restore not prepared"],
                from: offset
            )
            let busy = busyNetworkNamespaces()
            missing = pods.map(\.id).filter { id in
                !(seen["checkpointing done"]?.contains(id) ?? false)
                    || !((seen["restore prepared"]?.contains(id) ?? false)
                        || (seen["restore not prepared"]?.contains(id) ?? false))
                    || busy.contains(inodes[id] ?? "?")
            }
            if missing.isEmpty { return (ContinuousClock.now, []) }
            usleep(100_000)
        }
        return (nil, missing)
    }

    // MARK: shim memory (ours scaled down, runc's running)

    /// Results of the memory run.
    struct MemoryResult: Sendable {
        var ours: [PodFootprint]
        var runc: [PodFootprint]
        var pods: Int
        var containerd: String
        var shimDir: String
        var criu: String
    }

    /// `pods` busybox pods under our shim (scaled down, restore prepared) and `pods` under
    /// containerd-shim-runc-v2 (running), in one private containerd; every shim's footprint.
    func memory(pods n: Int) throws -> MemoryResult {
        let ns = "zpnode-mem"
        let containerd = try startContainerd(ns)
        let ours = (0..<n).map { NodePod(index: $0, prefix: "zpnode-") }
        let runc = (0..<n).map { NodePod(index: $0, prefix: "zprunc-") }
        defer {
            for p in ours + runc { containerd.remove(id: p.id) }
            containerd.stop()
            for p in ours + runc { p.removeNetwork() }
        }
        let offset = containerd.logSize
        for (a, b) in zip(ours, runc) {
            try a.createNetwork()
            try b.createNetwork()
            try containerd.run(
                id: a.id,
                runtime: Self.zeropodRuntime,
                rootfs: rootfs,
                netns: a.netns,
                annotations: annotations(idle: "2500ms"),
                args: NodePod.args
            )
            try containerd.run(
                id: b.id,
                runtime: Self.runcRuntime,
                rootfs: rootfs,
                netns: b.netns,
                annotations: [:],
                args: NodePod.args
            )
        }
        for p in ours + runc {
            let r = p.firstResponse()
            guard r.ms != nil else { throw BenchError("\(p.id) did not answer: \(r.error)\(tail(containerd.logFile))") }
        }
        let (at, missing) = waitScaledDown(ours, containerd: containerd, since: offset, deadline: .seconds(120))
        guard at != nil else {
            throw BenchError(
                "not scaled down within 120 s: \(missing.joined(separator: ", "))\(tail(containerd.logFile))"
            )
        }
        usleep(500_000)
        let bpf = BPFTable.read()
        let pids = shimPIDs()
        let read = { (pods: [NodePod]) -> [PodFootprint] in
            pods.compactMap { p in pids[p.id].flatMap { PodFootprint.read(shimPID: $0, bpf: bpf) } }
        }
        return MemoryResult(
            ours: read(ours),
            runc: read(runc),
            pods: n,
            containerd: containerdBin,
            shimDir: shimDir,
            criu: criu
        )
    }

    // MARK: shim start

    /// Results of the shim start run (ms per trial).
    struct StartResult: Sendable {
        /// `ctr run -d` → returned (containerd ran `shim start`, connected, Create, Start).
        var runOurs: [Double] = []
        var runRunc: [Double] = []
        /// The `start` command alone: exec → exit with the address printed (it starts the daemon).
        var startOurs: [Double] = []
        var startRunc: [Double] = []
    }

    /// Per trial, alternating which goes first: `ctr run -d` of the same busybox pod with each
    /// runtime, and each shim binary's `start` command run by hand in a bundle.
    func shimStart(trials: Int) throws -> StartResult {
        let ns = "zpnode-start"
        let containerd = try startContainerd(ns)
        let pod = NodePod(index: 250, prefix: "zpnode-")
        let bundle = directory + "/start-bundle"
        defer {
            containerd.remove(id: pod.id)
            containerd.stop()
            pod.removeNetwork()
        }
        try pod.createNetwork()
        try runChecked(["mkdir", "-p", bundle])
        try runChecked(["runc", "spec", "--bundle", bundle])
        var result = StartResult()
        let binaries = [
            (Self.zeropodRuntime, shimDir + "/containerd-shim-zeropod-v2"),
            (Self.runcRuntime, containerdBin + "/containerd-shim-runc-v2"),
        ]
        for trial in 0..<trials {
            let order = trial % 2 == 0 ? binaries : binaries.reversed()
            for (runtime, binary) in order {
                let t0 = ContinuousClock.now
                try containerd.run(
                    id: pod.id,
                    runtime: runtime,
                    rootfs: rootfs,
                    netns: pod.netns,
                    annotations: annotations(idle: "1h"),
                    args: NodePod.args
                )
                let ms = millis(since: t0)
                containerd.remove(id: pod.id)
                let start = try startCommand(
                    binary,
                    id: "zpnode-start-\(trial)",
                    bundle: bundle,
                    containerd: containerd
                )
                if runtime == Self.zeropodRuntime {
                    result.runOurs.append(ms)
                    result.startOurs.append(start)
                } else {
                    result.runRunc.append(ms)
                    result.startRunc.append(start)
                }
            }
        }
        return result
    }

    /// Runs `binary -namespace NS -address SOCK -publish-binary CONTAINERD -id ID start` in
    /// `bundle` as containerd would; returns exec → exit in ms, then ends the daemon it started
    /// (by pid) and removes its socket.
    private func startCommand(_ binary: String, id: String, bundle: String, containerd: NodeContainerd) throws -> Double
    {
        let argv = [
            binary, "-namespace", containerd.namespace, "-address", containerd.socket,
            "-publish-binary", containerd.binDir + "/containerd", "-id", id, "start",
        ]
        let t0 = ContinuousClock.now
        let (r, _) = try spawnAndWait(
            [
                "env", "--chdir=\(bundle)", "TTRPC_ADDRESS=\(containerd.socket).ttrpc",
                "ZEROPOD_NODE_CONFIG=\(containerd.directory)/node.conf",
            ] + argv
        )
        let ms = millis(since: t0)
        guard r.status == 0, r.stdout.contains("unix://") else {
            throw BenchError("\(binary) start exited \(r.status): \(r.stdout) \(r.stderr)")
        }
        // The daemon is not our child (it started a session of its own): end it by pid, wait until
        // it is gone, and remove its sockets (ours also has a status socket under the run folder).
        if let daemon = shimPIDs()[id] {
            kill(daemon, SIGKILL)
            let gone = ContinuousClock.now + .seconds(10)
            while kill(daemon, 0) == 0 && ContinuousClock.now < gone { usleep(10_000) }
        }
        let address = r.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        if let range = address.range(of: "unix://") {
            let socket = String(address[range.upperBound...])
            unlink(socket)
            unlink(NodeLayout().statusSocket(forShimSocket: socket))
        }
        return ms
    }

    // MARK: density

    /// Results of the density run.
    struct DensityResult: Sendable {
        var pods: Int
        /// A lone pod (no other pod on the containerd): restore → first response per cycle.
        var loneFirstResponse: [Double] = []
        /// Restores that are the first of their shim, alone on the containerd: the lone pod's first
        /// cycle, then one restore each of further lone pods. Every restore among the scaled-down
        /// pods is the first of its shim too; a shim's later restores are faster (its code and the
        /// runtime's caches are warm), so the density ratio compares these.
        var loneShimFirst: [Double] = []
        /// Seconds from the first idle deadline to the moment every pod was scaled down, and the
        /// spread of the deadlines (the one-request-per-pod wake-up took this long).
        var scaleAllDownSeconds: Double?
        var deadlineSpreadSeconds: Double = 0
        /// Per pod, the shim's own checkpoint time (ms, from its log).
        var checkpointMs: [Double] = []
        /// Footprint of every pod while all are scaled down.
        var footprints: [PodFootprint] = []
        /// MemTotal − MemAvailable before the pods and with all of them scaled down (KiB; noisy:
        /// the whole machine).
        var nodeInUseBefore = 0
        var nodeInUseScaledDown = 0
        /// Images on disk per pod (KiB; in the page cache until reclaimed).
        var imageKiB: [Int] = []
        /// One pod restored while the others stay scaled down, one after another.
        var oneOfMany: [Double] = []
        /// `wake` pods woken by requests sent at the same moment.
        var simultaneous: [Double] = []
        /// How long the node took to settle (CPU and writeback quiet) before each lone measurement,
        /// and before each restore among the scaled-down pods (`NodeQuiet`): the first of those
        /// waits for the writeback of every pod's images, the others for the previous restore's
        /// aftermath, as the lone pod's later cycles do.
        var loneSettling: [NodeQuiet.Settling] = []
        var oneOfManySettling: [NodeQuiet.Settling] = []
        var failures: [String] = []
    }

    /// Starts `pod` (its network, then the container with a 2.5 s idle time) and waits for its
    /// first answer (a cold start).
    /// - Returns: the containerd log's size before the start, from where its scale-downs are read.
    private func startLonePod(_ pod: NodePod, containerd: NodeContainerd) throws -> UInt64 {
        try pod.createNetwork()
        let since = containerd.logSize
        try containerd.run(
            id: pod.id,
            runtime: Self.zeropodRuntime,
            rootfs: rootfs,
            netns: pod.netns,
            annotations: annotations(idle: "2500ms"),
            args: NodePod.args
        )
        guard pod.firstResponse().ms != nil else {
            throw BenchError("\(pod.id) did not answer\(tail(containerd.logFile))")
        }
        return since
    }

    /// Waits until `pod` is scaled down (its log lines after `since`) and the node settled
    /// (appended to `settling`), then measures its restore → first response (ms).
    private func restoreOnSettledNode(
        _ pod: NodePod,
        containerd: NodeContainerd,
        since: UInt64,
        settling: inout [NodeQuiet.Settling]
    ) throws -> Double {
        guard waitScaledDown([pod], containerd: containerd, since: since, deadline: .seconds(60)).at != nil else {
            throw BenchError("lone pod \(pod.id) not scaled down\(tail(containerd.logFile))")
        }
        settling.append(NodeQuiet.waitUntilQuiet())
        let r = pod.firstResponse()
        guard let ms = r.ms else { throw BenchError("lone pod \(pod.id) restore failed: \(r.error)") }
        return ms
    }

    /// A lone pod's restore → first response (`cycles` times), then `n` pods scaled down at once,
    /// one restore while the rest stay down, and `wake` pods woken at the same moment.
    func density(
        pods n: Int,
        idle: Duration,
        wake: Int,
        oneOfMany: Int = 8,
        loneCycles: Int = 8
    ) throws -> DensityResult {
        var result = DensityResult(pods: n)
        let ns = "zpnode-dense"
        result.nodeInUseBefore = nodeMemoryInUseKiB()
        let containerd = try startContainerd(ns)
        let pods = (0..<n).map { NodePod(index: $0, prefix: "zpnode-") }
        defer {
            print("[zpbench] density: removing \(n) pods")
            for p in pods { runIgnoringFailure(containerd.ctrArgv(["task", "kill", "-a", "-s", "SIGKILL", p.id])) }
            for p in pods { containerd.remove(id: p.id) }
            containerd.stop()
            for p in pods { p.removeNetwork() }
        }
        // The lone pod: the first of them, alone on the containerd, short idle time.
        let lone = pods[0]
        var offset = try startLonePod(lone, containerd: containerd)
        for cycle in 1...loneCycles {
            // Measured on a settled node, as the restores among the scaled-down pods are.
            let ms = try restoreOnSettledNode(
                lone,
                containerd: containerd,
                since: offset,
                settling: &result.loneSettling
            )
            offset = containerd.logSize
            result.loneFirstResponse.append(ms)
            if cycle == 1 { result.loneShimFirst.append(ms) }
            print("[zpbench] density: lone pod restore → 1st response \(String(format: "%.1f", ms)) ms")
        }
        containerd.remove(id: lone.id)
        // Further lone pods, one at a time, each restored once: first restores of their shims.
        for k in 1..<max(1, loneCycles) {
            let p = NodePod(index: n + k, prefix: "zpnode-")
            defer {
                containerd.remove(id: p.id)
                p.removeNetwork()
            }
            let since = try startLonePod(p, containerd: containerd)
            let ms = try restoreOnSettledNode(p, containerd: containerd, since: since, settling: &result.loneSettling)
            result.loneShimFirst.append(ms)
            print(
                "[zpbench] density: lone pod \(p.id), its shim's first restore → 1st response \(String(format: "%.1f", ms)) ms"
            )
        }

        // n pods with a long idle time: all started, then one request each, as fast as possible.
        let t0 = ContinuousClock.now
        for p in pods {
            if p.index > 0 { try p.createNetwork() }
            try containerd.run(
                id: p.id,
                runtime: Self.zeropodRuntime,
                rootfs: rootfs,
                netns: p.netns,
                annotations: annotations(idle: "\(Int(idle.components.seconds))s"),
                args: NodePod.args
            )
            if p.index % 20 == 19 {
                print("[zpbench] density: \(p.index + 1) pods started (\(Int(millis(since: t0) / 1000)) s)")
            }
        }
        offset = containerd.logSize
        let answered = parallelMap(pods, width: 16) { p -> (Double?, String, ContinuousClock.Instant) in
            let r = p.firstResponse(deadline: .seconds(120))
            return (r.ms, r.error, ContinuousClock.now)
        }
        let failed = zip(pods, answered).filter { $0.1.0 == nil }.map { "\($0.0.id): \($0.1.1)" }
        guard failed.isEmpty else {
            throw BenchError("pods did not answer: \(failed.prefix(5).joined(separator: "; "))")
        }
        let first = answered.map(\.2).min()!
        let last = answered.map(\.2).max()!
        result.deadlineSpreadSeconds = millis(since: first) / 1000 - millis(since: last) / 1000
        print(
            "[zpbench] density: \(n) pods answered in \(String(format: "%.1f", result.deadlineSpreadSeconds)) s; waiting for the scale-down"
        )
        let (at, missing) = waitScaledDown(pods, containerd: containerd, since: offset, deadline: idle + .seconds(600))
        guard let at else {
            throw BenchError("\(missing.count) pods not scaled down: \(missing.prefix(5))\(tail(containerd.logFile))")
        }
        result.scaleAllDownSeconds = seconds(at - (first + idle))
        for p in pods {
            if let line = containerd.lines(of: p.id, containing: "checkpointing done in ").last,
                let ms = ZeropodRuntime.number(after: "checkpointing done in ", in: line)
            {
                result.checkpointMs.append(ms)
            }
            let images = stateDir + "/i/\(ns)/\(p.id)"
            if let out = try? runChecked(["du", "-sk", images]), let k = Int(out.split(separator: "\t").first ?? "") {
                result.imageKiB.append(k)
            }
        }
        print(
            "[zpbench] density: all \(n) scaled down \(String(format: "%.1f", result.scaleAllDownSeconds ?? -1)) s after the first idle deadline"
        )
        usleep(1_000_000)
        let bpf = BPFTable.read()
        let pids = shimPIDs()
        result.footprints = pods.compactMap { p in pids[p.id].flatMap { PodFootprint.read(shimPID: $0, bpf: bpf) } }
        result.nodeInUseScaledDown = nodeMemoryInUseKiB()

        // One pod at a time while the others stay down, each once the node settled: the first from
        // the scale-down of all of them (the kernel writes their images back), the others from the
        // previous restore (its shim adopts the process and tears the worker down after the first
        // response), as the lone pod's cycles are measured.
        for p in pods[1...min(oneOfMany, n - 1)] {
            let settling = NodeQuiet.waitUntilQuiet()
            result.oneOfManySettling.append(settling)
            if p.index == 1 {
                print(
                    "[zpbench] density: node settled before the restores among \(n - 1) scaled-down pods: \(settling.description)"
                )
            }
            let r = p.firstResponse()
            guard let ms = r.ms else {
                result.failures.append("\(p.id): \(r.error)")
                continue
            }
            result.oneOfMany.append(ms)
            print(
                "[zpbench] density: \(p.id) restore → 1st response \(String(format: "%.1f", ms)) ms (\(n - 1) others scaled down)"
            )
        }
        // `wake` others at the same moment.
        let group = Array(pods.dropFirst(oneOfMany + 1).prefix(wake))
        for (p, r) in zip(group, simultaneousFirstResponses(group)) {
            if let ms = r.ms {
                result.simultaneous.append(ms)
            } else {
                result.failures.append("\(p.id) (simultaneous): \(r.error)")
            }
        }
        print(
            "[zpbench] density: \(group.count) woken at once, slowest \(String(format: "%.1f", result.simultaneous.max() ?? -1)) ms"
        )
        return result
    }
}

/// A duration in seconds.
func seconds(_ d: Duration) -> Double {
    Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
}
