import ArgumentParser
import Foundation

/// `zpbench`: cold start, checkpoint and restore of realistic workloads, side by side per runtime,
/// with medians over several cycles. Prints a markdown table and writes CSV files (and, through
/// bench/plot.py, a PNG chart) into the results folder. Timings are printed, never asserted.
@main
struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "zpbench",
        abstract: "Benchmarks cold start, checkpoint and restore → first correct response per workload."
    )

    @Option(help: "Comma-separated workloads (\(Workload.all.map(\.name).joined(separator: ","))).")
    var workloads = Workload.all.map(\.name).joined(separator: ",")

    @Option(help: "Measured cycles per workload and runtime (≥ 5 for the report).")
    var cycles = 5

    @Option(help: "Folder for the table, CSV files and chart.")
    var results = "bench-results"

    @Option(help: "Scratch folder for bundles, rootfs copies and checkpoint images.")
    var workDir = "/var/lib/zeropod-swift-bench"

    @Option(help: "The script that builds and prints cached root filesystems.")
    var rootfsScript = "scripts/rootfs.sh"

    @Option(help: "The CRIU binary runc uses.")
    var criu = "/usr/local/sbin/criu"

    @Option(help: "Idle time between the first response and the checkpoint, in milliseconds.")
    var settleMs = 1000

    @Option(
        help:
            "Requests sent after the cold start's first answer, one after the other, before the idle pause: a container that has served some traffic before it scales down (0: only the first answer, as before 2026-12-07). Both runtimes, cycles and cascade."
    )
    var warmRequests = 0

    @Flag(
        help:
            "Checkpoint each container a second time after its first restore's answer (the same warm requests and idle pause), and restore it again; reported in a section of their own. Both runtimes, cycles only."
    )
    var secondCheckpoint = false

    @Option(help: "Seconds of wrk load per HTTP workload and runtime for the steady-state table (0: none).")
    var wrkSeconds = 10

    @Option(
        name: .customLong("runtimes"),
        help: "Comma-separated runtimes to measure (runc is always the baseline): runc, zeropod-swift."
    )
    var runtimeList = "runc,zeropod-swift"

    @Option(help: "The folder holding containerd-shim-zeropod-v2 (a release build is preferred for the figures).")
    var shimDir = ".build/release"

    @Option(help: "The folder holding containerd 2.x, ctr and containerd-shim-runc-v2 for the private containerd.")
    var containerdBin =
        (ProcessInfo.processInfo.environment["ZP_CACHE"].flatMap { $0.isEmpty ? nil : $0 }
            ?? "/var/cache/zeropod-swift") + "/containerd2/usr/bin"

    @Option(
        help: "The shim's state folder (its node config default); images go to <state>/i/<containerd namespace>/<id>."
    )
    var shimState = "/var/lib/zeropod-swift"

    @Option(help: "zeropod-swift: the shim's lazy-restore node setting (auto, on, off; docs/configuration.md).")
    var shimLazyRestore = "auto"

    @Option(help: "Comma-separated workloads whose lazy vs full restore ZPCheckpoint measures directly (empty: none).")
    var lazyWorkloads = "jvm"

    @Option(help: "Cycles of the lazy vs full restore comparison per lazy workload.")
    var lazyCycles = 5

    @Flag(help: "Lazy bench: checkpoint with the cgroup freezer (as runc) instead of ptrace seizing.")
    var lazyFreezer = false

    @Option(help: "wrk rounds per HTTP workload and runtime, interleaved; the median round is reported.")
    var wrkRounds = 5

    @Flag(
        inversion: .prefixedNo,
        help:
            "zeropod-swift: keep the activator's probe detection on for MySQL workloads (their first connection then waits the 50 ms silent-client window)."
    )
    var mysqlProbeDetection = true

    @Option(
        name: .customLong("zeropod-annotation"),
        help:
            "zeropod-swift: one more annotation key=value on every measured container (repeatable), e.g. zeropod-swift/listener-handover=false for the activator's proxy path."
    )
    var zeropodAnnotations: [String] = []

    @Option(
        name: .customLong("zeropod-variant"),
        help:
            "zeropod-swift: one more runtime, measured in the same interleaved cycles, as NAME:key=value[+key=value...] (repeatable; separated by +): a key with a '/' is an annotation, one without a node.conf setting, e.g. 'proxy:zeropod-swift/listener-handover=false' or 'lazy:lazy-restore=on'. Its own private containerd; the report compares it with runc and the default."
    )
    var zeropodVariants: [String] = []

    @Flag(
        inversion: .prefixedNo,
        help:
            "zeropod-swift cascade: put the workload and its sidecar in one wake group (zeropod-swift/wake-group), so one request restores both in parallel."
    )
    var wakeGroup = true

    @Flag(help: "Keep bundles, rootfs copies and images in the work folder afterwards.")
    var keepWork = false

    @Flag(
        inversion: .prefixedNo,
        help:
            "Checkpoint runc at the idle age the shim scales down at (the settle time + 1.5 s), so that on both sides the first request after the restore comes as long after the last one (time-based caches, such as PHP's opcache.revalidate_freq, then behave alike). --no-same-idle-age: runc right after the settle time, as before 2026-12-07."
    )
    var sameIdleAge = true

    @Flag(
        help:
            "zeropod-swift: set zeropod.ctrox.dev/pre-dump=true (pre-dump halfway to the scale-down; the checkpoint then writes only what changed, where the kernel tracks dirty memory)."
    )
    var zeropodPreDump = false

    @Option(
        help:
            "CRIU's log level for both sides: runc's criu.conf (verbosity=N) and the shim's criu-log-level; also ZPCheckpoint's direct runs."
    )
    var criuLogLevel = 2

    @Option(
        help:
            "Before each checkpoint of either side, touch this many MiB of fresh memory and free it just before the dump starts, so that both dumps write their images into page-cache pages the VM's host still backs (0: off; see docs/benchmarks.md, free page reporting)."
    )
    var warmFreeMemoryMib = 0

    @Option(
        help:
            "Node measurements: the folder holding containerd, ctr and containerd-shim-runc-v2 (Debian's containerd 1.6: /usr/bin)."
    )
    var nodeContainerdBin = "/usr/bin"

    @Option(
        help:
            "Shim memory: busybox pods under each runtime (ours scaled down, containerd-shim-runc-v2 running); 0: skip."
    )
    var memoryPods = 10

    @Option(help: "Shim start: interleaved trials of `ctr run -d` and of the `start` command per runtime; 0: skip.")
    var shimStartTrials = 10

    @Option(
        help:
            "Density: busybox pods scaled down at once (`make bench-density`: 60; a node holds at most 64 scale-down pods, docs/benchmarks.md); 0: skip."
    )
    var densityPods = 0

    @Option(help: "Density: the pods' scale-down duration in seconds (they all start before it passes).")
    var densityIdleSeconds = 60

    @Option(help: "Density: pods woken by requests sent at the same moment.")
    var densityWake = 20

    @Option(
        help:
            "Comma-separated workloads whose restore variants ZPCheckpoint measures directly on the same images (empty: none)."
    )
    var variantWorkloads = ""

    @Option(help: "Restore variants: full|lazy[-vN][@criu], e.g. full-v4,full-v2,lazy-v2,full-v2@/path/to/criu.")
    var restoreVariants = "full-v4,full-v2"

    @Option(help: "Cycles of the restore variants per workload (one checkpoint per cycle).")
    var variantCycles = 5

    @Option(help: "Record each restore variant's CRIU worker with perf record -g into this folder (diagnostics).")
    var variantPerf: String?

    func validate() throws {
        guard warmRequests >= 0 else { throw ValidationError("--warm-requests \(warmRequests): must be 0 or more") }
    }

    mutating func run() throws {
        guard getuid() == 0 else { throw BenchError("zpbench must run as root (runc, CRIU, netns)") }
        let names = workloads.split(separator: ",").map { String($0).trimmingCharacters(in: .whitespaces) }.filter {
            !$0.isEmpty
        }
        let selected = try names.map { n in
            guard let w = Workload.all.first(where: { $0.name == n }) else {
                throw BenchError("unknown workload '\(n)' (known: \(Workload.all.map(\.name).joined(separator: ", ")))")
            }
            return w
        }
        let wanted = runtimeList.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        var zeropod: ZeropodRuntime?
        if wanted.contains(Report.zeropod) {
            // The shim scales down once the container was idle for the settle time plus 1.5 s, so
            // the memory read after the settle time still sees the running container.
            zeropod = try ZeropodRuntime(
                directory: "/run/zpbench-containerd",
                containerdBin: containerdBin,
                shimDir: URL(fileURLWithPath: shimDir).standardizedFileURL.path,
                shimState: shimState,
                scaleDownMs: scaleDownMs,
                probeDetectionForMySQL: mysqlProbeDetection,
                lazyRestore: shimLazyRestore,
                preDump: zeropodPreDump,
                criu: criu,
                criuLogLevel: criuLogLevel
            )
            for pair in zeropodAnnotations {
                guard let eq = pair.firstIndex(of: "="), eq != pair.startIndex else {
                    throw BenchError("--zeropod-annotation \(pair): expected key=value")
                }
                zeropod?.extraAnnotations[String(pair[..<eq])] = String(pair[pair.index(after: eq)...])
            }
        }
        defer { zeropod?.stop() }
        var variants: [ZeropodRuntime] = []
        defer { for v in variants { v.stop() } }
        for spec in zeropodVariants {
            let (name, annotations) = try Self.parseVariant(spec)
            let v = try ZeropodRuntime(
                directory: "/run/zpbench-containerd-\(name)",
                containerdBin: containerdBin,
                shimDir: URL(fileURLWithPath: shimDir).standardizedFileURL.path,
                shimState: shimState,
                scaleDownMs: scaleDownMs,
                probeDetectionForMySQL: mysqlProbeDetection,
                lazyRestore: shimLazyRestore,
                preDump: zeropodPreDump,
                criu: criu,
                criuLogLevel: criuLogLevel,
                nodeSettings: annotations.filter { !$0.key.contains("/") }
            )
            v.variant = name
            v.extraAnnotations = (zeropod?.extraAnnotations ?? [:])
                .merging(annotations.filter { $0.key.contains("/") }) { $1 }
            variants.append(v)
        }
        let runtimes: [any BenchRuntime] =
            [RuncRuntime(stateRoot: "/run/zpbench-runc", criu: criu)] + (zeropod.map { [$0] } ?? []) + variants
        try FileManager.default.createDirectory(atPath: results, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: workDir, withIntermediateDirectories: true)

        var samples: [Sample] = []
        var steady: [SteadyState] = []
        var failures: [String] = []
        let node = measureNode(failures: &failures)
        var shims: [ShimMemoryRow] = []
        var lazy: [String: [LazySample]] = [:]
        var variantLines: [String] = []
        for w in selected {
            do {
                try measure(
                    w,
                    runtimes: runtimes,
                    samples: &samples,
                    steady: &steady,
                    failures: &failures,
                    shims: &shims,
                    lazy: &lazy,
                    variantLines: &variantLines
                )
            } catch {
                failures.append("\(w.name): \(error)")
                print("[zpbench] \(w.name) FAILED: \(error)")
            }
        }
        // The parent cgroup `/zpbench` that runc created below each v1 controller (empty by now).
        for controller in (try? FileManager.default.contentsOfDirectory(atPath: "/sys/fs/cgroup")) ?? [] {
            _ = rmdir("/sys/fs/cgroup/\(controller)/zpbench")
        }
        let report = Report(
            samples: samples,
            steady: steady,
            failures: failures,
            cycles: cycles,
            runtimes: runtimes.map(\.name),
            warmRequests: warmRequests,
            secondCheckpoint: secondCheckpoint,
            machine: Self.machine(criu: criu),
            shims: shims,
            lazy: lazy,
            extra: node + variantLines
        )
        try report.write(to: results)
        print(report.markdown())
        if !failures.isEmpty { throw ExitCode(1) }
    }

    /// The node measurements (issue 17): shim memory, shim start and density on busybox pods in a
    /// private containerd (Debian's 1.6 by default). Returns their markdown; failures are recorded.
    private func measureNode(failures: inout [String]) -> [String] {
        guard memoryPods > 0 || shimStartTrials > 0 || densityPods > 0 else { return [] }
        var lines: [String] = []
        do {
            let out = try runChecked(["bash", rootfsScript, "busybox"])
            guard let rootfs = out.split(separator: "\n").last.map(String.init) else {
                throw BenchError("no busybox rootfs")
            }
            let runs = NodeRuns(
                containerdBin: nodeContainerdBin,
                shimDir: URL(fileURLWithPath: shimDir).standardizedFileURL.path,
                criu: criu,
                rootfs: rootfs
            )
            if memoryPods > 0 {
                print("[zpbench] node: shim memory, \(memoryPods) pods per runtime")
                do {
                    let m = try runs.memory(pods: memoryPods)
                    lines += NodeReport.memory(m)
                    print(NodeReport.memory(m).joined(separator: "\n"))
                } catch {
                    failures.append("shim memory: \(error)")
                    print("[zpbench] shim memory FAILED: \(error)")
                }
            }
            if shimStartTrials > 0 {
                print("[zpbench] node: shim start, \(shimStartTrials) trials")
                do {
                    let s = try runs.shimStart(trials: shimStartTrials)
                    lines += NodeReport.start(s)
                    print(NodeReport.start(s).joined(separator: "\n"))
                } catch {
                    failures.append("shim start: \(error)")
                    print("[zpbench] shim start FAILED: \(error)")
                }
            }
            if densityPods > 0 {
                print("[zpbench] node: density, \(densityPods) pods")
                do {
                    let d = try runs.density(pods: densityPods, idle: .seconds(densityIdleSeconds), wake: densityWake)
                    lines += NodeReport.density(d)
                    print(NodeReport.density(d).joined(separator: "\n"))
                    failures += d.failures.map { "density: \($0)" }
                } catch {
                    failures.append("density: \(error)")
                    print("[zpbench] density FAILED: \(error)")
                }
            }
        } catch {
            failures.append("node measurements: \(error)")
        }
        return lines
    }

    /// `--zeropod-variant NAME:key=value[+key=value...]` → the name and its annotations.
    static func parseVariant(_ spec: String) throws -> (String, [String: String]) {
        guard let colon = spec.firstIndex(of: ":"), colon != spec.startIndex else {
            throw BenchError("--zeropod-variant \(spec): expected NAME:key=value[+key=value...]")
        }
        let name = String(spec[..<colon])
        guard name.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "-" }) else {
            throw BenchError("--zeropod-variant \(spec): the name \"\(name)\" may hold only letters, digits and '-'")
        }
        var annotations: [String: String] = [:]
        for pair in spec[spec.index(after: colon)...].split(separator: "+") {
            guard let eq = pair.firstIndex(of: "="), eq != pair.startIndex else {
                throw BenchError("--zeropod-variant \(spec): \"\(pair)\" is not key=value")
            }
            annotations[String(pair[..<eq])] = String(pair[pair.index(after: eq)...])
        }
        guard !annotations.isEmpty else {
            throw BenchError("--zeropod-variant \(spec): no annotation after \"\(name):\"")
        }
        return (name, annotations)
    }

    /// All cycles of one workload for every runtime, interleaved (cycle 1 of each runtime, then 2, ...),
    /// then the steady-state load of each runtime. A failing cycle ends the workload's cycles but
    /// keeps the samples taken so far; a failing wrk run is recorded and does not discard them.
    private func measure(
        _ w: Workload,
        runtimes: [any BenchRuntime],
        samples: inout [Sample],
        steady: inout [SteadyState],
        failures: inout [String],
        shims: inout [ShimMemoryRow],
        lazy: inout [String: [LazySample]],
        variantLines: inout [String]
    ) throws {
        print("[zpbench] \(w.name): preparing rootfs and bundle")
        let bundle = try prepare(w)
        var sidecarBundle: Bundle?
        var sidecarContainer: RunningContainer?
        let baseline = runtimes[0]
        defer {
            for rt in runtimes { rt.remove(w, container: nil) }
            if let s = w.sidecar {
                baseline.remove(s.workload, container: sidecarContainer)
                BenchNetwork.remove(for: s.workload)
            }
            BenchNetwork.remove(for: w)
            if !keepWork {
                runIgnoringFailure(["rm", "-rf", bundle.path])
                if let sb = sidecarBundle { runIgnoringFailure(["rm", "-rf", sb.path]) }
            }
        }
        if let s = w.sidecar {
            let sb = try prepare(s.workload)
            sidecarBundle = sb
            try BenchNetwork.link(w, s)
            sidecarContainer = try baseline.start(s.workload, bundle: sb)
            var why = ""
            guard
                s.workload.probe.poll(
                    address: s.workload.address,
                    port: s.workload.port,
                    deadline: .now + s.workload.startDeadline,
                    lastError: &why
                )
            else {
                throw BenchError("sidecar \(s.workload.name) did not answer: \(why)\(tail(sb.logFile))")
            }
        }
        cycles: for cycle in (0..<cycles).map({ $0 + 1 }) {
            for rt in runtimes {
                do {
                    let s = try measureCycle(w, bundle: bundle, runtime: rt, cycle: cycle)
                    print("[zpbench] \(w.name) \(rt.name) #\(cycle): " + s.summaryLine)
                    samples.append(s)
                } catch {
                    failures.append("\(w.name) \(rt.name) cycle \(cycle): \(error)")
                    print("[zpbench] \(w.name) \(rt.name) cycle \(cycle) FAILED: \(error)")
                    break cycles
                }
            }
        }
        let lazyNames = lazyWorkloads.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        if lazyCycles > 0, lazyNames.contains(w.name), let runc = baseline as? RuncRuntime {
            do {
                lazy[w.name] = try LazyRestoreBench(
                    runcRoot: runc.stateRoot,
                    criu: criu,
                    settleMs: settleMs,
                    keepImages: keepWork,
                    freezer: lazyFreezer,
                    logLevel: Int32(criuLogLevel)
                )
                .run(w, bundle: bundle, runtime: runc, cycles: lazyCycles)
            } catch {
                failures.append("\(w.name) lazy restore: \(error)")
                print("[zpbench] \(w.name) lazy restore FAILED: \(error)")
            }
        }
        let variantNames = variantWorkloads.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        if variantCycles > 0, variantNames.contains(w.name), let runc = baseline as? RuncRuntime {
            do {
                let variants = try restoreVariants.split(separator: ",").map { try RestoreVariant(parsing: String($0)) }
                let r = try RestoreVariantsBench(
                    runcRoot: runc.stateRoot,
                    criu: criu,
                    settleMs: settleMs,
                    perfDir: variantPerf
                )
                .run(w, bundle: bundle, runtime: runc, cycles: variantCycles, variants: variants)
                let lines = RestoreVariantsBench.markdown(w.name, r, variants: variants)
                print(lines.joined(separator: "\n"))
                variantLines += lines
            } catch {
                failures.append("\(w.name) restore variants: \(error)")
                print("[zpbench] \(w.name) restore variants FAILED: \(error)")
            }
        }
        if let zp = runtimes.compactMap({ $0 as? ZeropodRuntime }).first {
            // Shim memory per pod: ours while the container runs and while it is scaled down (from
            // the cycles), Go's containerd-shim-runc-v2 for the same container in the same containerd.
            let ours = samples.filter { $0.workload == w.name && $0.runtime == Report.zeropod }
            do {
                let go = try zp.goShimMemory(w, bundle: bundle)
                shims.append(
                    ShimMemoryRow(
                        workload: w.name,
                        running: ours.compactMap(\.shimRunning),
                        scaledDown: ours.compactMap(\.shimScaledDown),
                        goShim: go
                    )
                )
                print(
                    "[zpbench] \(w.name) shim memory: ours running \(ours.compactMap(\.shimRunning).map(\.rssKiB)) KiB RSS, "
                        + "scaled down \(ours.compactMap(\.shimScaledDown).map(\.rssKiB)) KiB; containerd-shim-runc-v2 \(go.map { "\($0.rssKiB)" } ?? "?") KiB RSS"
                )
            } catch {
                failures.append("\(w.name) Go shim memory: \(error)")
                print("[zpbench] \(w.name) Go shim memory FAILED: \(error)")
            }
        }
        if wrkSeconds > 0, let url = w.httpURL {
            // Rounds interleave the runtimes (runc, zeropod-swift, runc, ...); the table keeps the
            // round with the median throughput per runtime, since single wrk runs vary by ±20 % here.
            var rounds: [String: [SteadyState]] = [:]
            for round in 1...max(1, wrkRounds) {
                for rt in runtimes {
                    let l: SteadyState
                    do {
                        l = try steadyState(w, url: url, bundle: bundle, runtime: rt)
                    } catch {
                        failures.append("\(w.name) \(rt.name) steady state: \(error)")
                        print("[zpbench] \(w.name) \(rt.name) steady state FAILED: \(error)")
                        continue
                    }
                    print(
                        "[zpbench] \(w.name) \(rt.name) steady state #\(round): \(l.requestsPerSecond) req/s, p50 \(l.p50) ms, p99 \(l.p99) ms"
                            + (l.errorDetail.isEmpty ? "" : ", wrk: \(l.errorDetail)")
                    )
                    rounds[rt.name, default: []].append(l)
                }
            }
            for rt in runtimes {
                let xs = (rounds[rt.name] ?? []).sorted { $0.requestsPerSecond < $1.requestsPerSecond }
                if !xs.isEmpty { steady.append(xs[(xs.count - 1) / 2]) }
            }
        }
        if let side = w.sidecar, let sb = sidecarBundle, w.measuresCascade {
            // The cascade needs the sidecar under the measured runtime: stop the long-running one.
            baseline.remove(side.workload, container: sidecarContainer)
            sidecarContainer = nil
            let zp = runtimes.compactMap { $0 as? ZeropodRuntime }.first
            if wakeGroup { zp?.wakeGroups = [w.containerID: w.name, side.workload.containerID: w.name] }
            defer { zp?.wakeGroups = [:] }
            cascade: for cycle in (0..<cycles).map({ $0 + 1 }) {
                for rt in runtimes {
                    do {
                        let s = try measureCascade(
                            w,
                            side,
                            bundle: bundle,
                            sidecarBundle: sb,
                            runtime: rt,
                            cycle: cycle
                        )
                        print("[zpbench] \(s.workload) \(rt.name) #\(cycle): " + s.summaryLine)
                        samples.append(s)
                    } catch {
                        failures.append("\(w.name) cascade \(rt.name) cycle \(cycle): \(error)")
                        print("[zpbench] \(w.name) cascade \(rt.name) cycle \(cycle) FAILED: \(error)")
                        break cascade
                    }
                }
            }
        }
    }

    /// The cascade: the workload and its sidecar both checkpointed, then one request must wake both.
    /// Recorded as workload "<name>+<sidecar>": checkpoint = both checkpoints, image = both images,
    /// restore = both `restore` calls (sidecar first; none for runtimes that restore on connection),
    /// restore → 1st response = from the first restore (or the request) to the correct page.
    private func measureCascade(
        _ w: Workload,
        _ side: Sidecar,
        bundle: Bundle,
        sidecarBundle sb: Bundle,
        runtime rt: any BenchRuntime,
        cycle: Int
    ) throws -> Sample {
        var sample = Sample(workload: "\(w.name)+\(side.workload.name)", runtime: rt.name, cycle: cycle)
        defer {
            rt.remove(w, container: nil)
            rt.remove(side.workload, container: nil)
        }
        var why = ""
        var db = try rt.start(side.workload, bundle: sb)
        guard
            side.workload.probe.poll(
                address: side.workload.address,
                port: side.workload.port,
                deadline: .now + side.workload.startDeadline,
                lastError: &why
            )
        else {
            throw BenchError("\(side.workload.name) (\(rt.name)) did not answer: \(why)\(tail(sb.logFile))")
        }
        let t0 = ContinuousClock.now
        var web = try rt.start(w, bundle: bundle)
        guard w.probe.poll(address: w.address, port: w.port, deadline: t0 + w.startDeadline, lastError: &why) else {
            throw BenchError("\(w.name) (\(rt.name)) did not answer: \(why)\(tail(bundle.logFile))")
        }
        sample.coldStartMs = millis(since: t0)
        try rt.waitUntilWatching(w)
        try warmUp(w, runtime: rt)
        let lastActivity = ContinuousClock.now
        usleep(useconds_t(settleMs * 1000))
        if let a = rt.memory(of: w), let b = rt.memory(of: side.workload) {
            sample.memory = ContainerMemory(usage: a.usage + b.usage, rss: a.rss + b.rss)
        }
        waitForScaleDownAge(since: lastActivity, runtime: rt)

        let t1 = ContinuousClock.now
        let webCk = try rt.checkpoint(w, bundle: bundle, container: &web)
        let dbCk = try rt.checkpoint(side.workload, bundle: sb, container: &db)
        if let a = webCk.reportedMs, let b = dbCk.reportedMs {
            sample.checkpointMs = a + b
        } else {
            sample.checkpointMs = millis(since: t1)
        }
        sample.imageKiB = try diskUsageKiB(webCk.imageDir) + diskUsageKiB(dbCk.imageDir)
        if let a = rt.memory(of: w), let b = rt.memory(of: side.workload) {
            sample.memoryAfter = ContainerMemory(usage: a.usage + b.usage, rss: a.rss + b.rss)
        }

        let t2 = ContinuousClock.now
        if !rt.restoresOnConnection {
            try rt.restore(side.workload, bundle: sb, container: &db)
            try rt.restore(w, bundle: bundle, container: &web)
            sample.restoreMs = millis(since: t2)
        }
        guard w.probe.poll(address: w.address, port: w.port, deadline: t2 + w.startDeadline, lastError: &why) else {
            throw BenchError(
                "\(w.name) (\(rt.name)) did not answer after the cascade restore: \(why)\(tail(bundle.logFile))"
            )
        }
        sample.restoreFirstResponseMs = millis(since: t2)
        if let web = rt.restoreReport(w), let db = rt.restoreReport(side.workload) {
            sample.shimRestoreMs = web.ms + db.ms
            sample.shimRestoreDetail = "web: \(web.criu); db: \(db.criu)"
        }
        return sample
    }

    /// Starts the container, waits for a correct answer, then loads it with wrk (2 threads, 16
    /// connections) for `wrkSeconds` seconds and reads throughput and latency percentiles.
    private func steadyState(
        _ w: Workload,
        url: String,
        bundle: Bundle,
        runtime rt: any BenchRuntime
    ) throws -> SteadyState {
        defer { rt.remove(w, container: nil) }
        var why = ""
        let t0 = ContinuousClock.now
        let c = try rt.startForLoad(w, bundle: bundle)
        guard w.probe.poll(address: w.address, port: w.port, deadline: t0 + w.startDeadline, lastError: &why) else {
            throw BenchError("\(w.name) (\(rt.name)) did not answer before the wrk run: \(why)\(tail(bundle.logFile))")
        }
        let out = try runChecked(["wrk", "-t2", "-c16", "-d\(wrkSeconds)s", "--latency", url])
        _ = c
        return try SteadyState(workload: w.name, runtime: rt.name, wrkOutput: out)
    }

    /// The idle time after which the shim scales a container down during the measured cycles.
    private var scaleDownMs: Int { settleMs + 1500 }

    /// For a runtime the harness checkpoints itself (runc): waits until the container has been
    /// idle as long as the shim waits before its own scale-down (`--same-idle-age`).
    private func waitForScaleDownAge(since lastActivity: ContinuousClock.Instant, runtime rt: any BenchRuntime) {
        guard sameIdleAge, !rt.restoresOnConnection else { return }
        sleep(until: lastActivity + .milliseconds(scaleDownMs))
    }

    /// `--warm-requests` more answers of the workload's probe, one after the other (30 s each at most).
    /// - Throws: ``BenchError`` when one does not come.
    private func warmUp(_ w: Workload, runtime rt: any BenchRuntime) throws {
        var why = ""
        for n in 0..<warmRequests {
            guard w.probe.poll(address: w.address, port: w.port, deadline: .now + .seconds(30), lastError: &why) else {
                throw BenchError("\(w.name) (\(rt.name)) did not answer warm-up request \(n + 1): \(why)")
            }
        }
    }

    /// Cold start → first correct answer, checkpoint, restore → first correct answer, image size.
    private func measureCycle(_ w: Workload, bundle: Bundle, runtime rt: any BenchRuntime, cycle: Int) throws -> Sample
    {
        var sample = Sample(workload: w.name, runtime: rt.name, cycle: cycle)
        var why = ""
        defer { rt.remove(w, container: nil) }

        let t0 = ContinuousClock.now
        var c = try rt.start(w, bundle: bundle)
        guard w.probe.poll(address: w.address, port: w.port, deadline: t0 + w.startDeadline, lastError: &why) else {
            throw BenchError("\(w.name) (\(rt.name)) did not answer after a cold start: \(why)\(tail(bundle.logFile))")
        }
        sample.coldStartMs = millis(since: t0)
        try warmUp(w, runtime: rt)
        // The container's last client activity: the shim's idle deadline is this + its duration.
        let lastActivity = ContinuousClock.now

        // An idle pause before scaling down, as a real idle timeout would give.
        usleep(useconds_t(settleMs * 1000))
        sample.memory = rt.memory(of: w)
        sample.shimRunning = rt.shimMemory(w)

        if warmFreeMemoryMib > 0 {
            // The shim decides at its idle deadline (runc is checkpointed then too with
            // --same-idle-age): free the warm pages just before it.
            let deadline =
                (rt as? ZeropodRuntime)?.scaleDownMs ?? (sameIdleAge ? scaleDownMs : nil)
            warmFreeMemory(
                mib: warmFreeMemoryMib,
                until: deadline.map { lastActivity + .milliseconds($0) - .milliseconds(30) }
            )
        }
        waitForScaleDownAge(since: lastActivity, runtime: rt)
        let (ck, checkpointMs, deadlineToGoneMs) = try measureCheckpoint(
            w,
            bundle: bundle,
            runtime: rt,
            container: &c,
            lastActivity: lastActivity
        )
        sample.checkpointMs = checkpointMs
        sample.deadlineToGoneMs = deadlineToGoneMs
        if rt is ZeropodRuntime { sample.shimCheckpointMs = ck.reportedMs }
        sample.restorePreparationMs = ck.restorePreparationMs
        sample.checkpointDetail = ck.detail
        sample.imageKiB = try diskUsageKiB(ck.imageDir)
        sample.criuDump = CRIUStats.read(ck.statsDir + "/stats-dump")
        sample.memoryAfter = rt.memory(of: w)
        sample.shimScaledDown = rt.shimMemory(w)

        let t2 = ContinuousClock.now
        if !rt.restoresOnConnection {
            try rt.restore(w, bundle: bundle, container: &c)
            sample.restoreMs = millis(since: t2)
        }
        guard w.probe.poll(address: w.address, port: w.port, deadline: t2 + w.startDeadline, lastError: &why) else {
            throw BenchError("\(w.name) (\(rt.name)) did not answer after restore: \(why)\(tail(bundle.logFile))")
        }
        sample.restoreFirstResponseMs = millis(since: t2)
        sample.criuRestore = CRIUStats.read(rt.restoreStatsDir(w, bundle: bundle) + "/stats-restore")
        if let r = rt.restoreReport(w) {
            sample.shimRestoreMs = r.ms
            sample.shimRestoreDetail = r.criu
        }
        // The images go as soon as the restore is done, as the shim deletes its own: removing them
        // only before the next checkpoint handed that dump 300+ MiB of just-freed page-cache pages
        // to write into, 7× faster on this VM than pages freed earlier (docs/benchmarks.md, the JVM
        // checkpoint), which made runc's JVM dumps look 2× faster than ours.
        if !rt.restoresOnConnection { runIgnoringFailure(["rm", "-rf", ck.imageDir]) }
        if secondCheckpoint {
            try measureSecondCheckpoint(w, bundle: bundle, runtime: rt, container: &c, into: &sample)
        }
        return sample
    }

    /// One checkpoint, both sides from the decision to scale down to the process gone from the
    /// host: runc's call, or the shim's own time from its idle decision to CRIU's return (CRIU kills
    /// the dumped tasks before it answers). The harness's own view (idle deadline → no process seen
    /// in the netns) is kept beside it; it comes early when the tasks are held by CRIU.
    /// - Returns: the runtime's result, the checkpoint time, and the harness's own view (zeropod-swift).
    private func measureCheckpoint(
        _ w: Workload,
        bundle: Bundle,
        runtime rt: any BenchRuntime,
        container c: inout RunningContainer,
        lastActivity: ContinuousClock.Instant
    ) throws -> (CheckpointResult, Double?, Double?) {
        let t1 = ContinuousClock.now
        let ck = try rt.checkpoint(w, bundle: bundle, container: &c)
        if let gone = ck.goneAt, let zp = rt as? ZeropodRuntime {
            let deadlineToGone = millis(since: lastActivity + .milliseconds(zp.scaleDownMs)) - millis(since: gone)
            return (ck, ck.reportedMs ?? deadlineToGone, deadlineToGone)
        }
        return (ck, ck.reportedMs ?? millis(since: t1), nil)
    }

    /// `--second-checkpoint`: after the first restore's answer, the same warm requests and idle
    /// pause, a second checkpoint measured as the first, and a second restore → first answer.
    private func measureSecondCheckpoint(
        _ w: Workload,
        bundle: Bundle,
        runtime rt: any BenchRuntime,
        container c: inout RunningContainer,
        into sample: inout Sample
    ) throws {
        var why = ""
        try warmUp(w, runtime: rt)
        let lastActivity = ContinuousClock.now
        usleep(useconds_t(settleMs * 1000))
        waitForScaleDownAge(since: lastActivity, runtime: rt)
        let (ck, checkpointMs, _) = try measureCheckpoint(
            w,
            bundle: bundle,
            runtime: rt,
            container: &c,
            lastActivity: lastActivity
        )
        sample.secondCheckpointMs = checkpointMs
        sample.secondCheckpointDetail = ck.detail
        sample.secondCriuDump = CRIUStats.read(ck.statsDir + "/stats-dump")
        let t2 = ContinuousClock.now
        if !rt.restoresOnConnection { try rt.restore(w, bundle: bundle, container: &c) }
        guard w.probe.poll(address: w.address, port: w.port, deadline: t2 + w.startDeadline, lastError: &why) else {
            throw BenchError(
                "\(w.name) (\(rt.name)) did not answer after its second restore: \(why)\(tail(bundle.logFile))"
            )
        }
        sample.secondRestoreFirstResponseMs = millis(since: t2)
        if !rt.restoresOnConnection { runIgnoringFailure(["rm", "-rf", ck.imageDir]) }
    }

    /// Builds (or reuses) the cached rootfs, copies it into a fresh bundle and sets up the netns.
    private func prepare(_ w: Workload) throws -> Bundle {
        let out = try runChecked(["bash", rootfsScript, w.recipe])
        guard let cached = out.split(separator: "\n").last.map(String.init), !cached.isEmpty else {
            throw BenchError("\(rootfsScript) \(w.recipe) printed no path")
        }
        let rootfs = w.rootfsSubdir.map { cached + "/" + $0 } ?? cached
        let bundle = try Bundle.create(
            at: workDir + "/" + w.name,
            rootfs: rootfs,
            workload: w,
            criuLogLevel: criuLogLevel
        )
        try BenchNetwork.create(for: w)
        return bundle
    }

    /// nproc, kernel, CPU model, runc and CRIU versions, for the report.
    static func machine(criu: String) -> String {
        let cpu =
            (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8))?
            .split(separator: "\n").first { $0.hasPrefix("model name") }
            .map { $0.split(separator: ":", maxSplits: 1)[1].trimmingCharacters(in: .whitespaces) } ?? "unknown"
        let first = { (argv: [String]) -> String in
            ((try? runChecked(argv)) ?? "unknown").split(separator: "\n").first.map(String.init) ?? "unknown"
        }
        return "nproc \(ProcessInfo.processInfo.activeProcessorCount), kernel \(first(["uname", "-r"])), CPU \(cpu), "
            + "memory \(ProcessInfo.processInfo.physicalMemory >> 30) GiB, \(first(["runc", "--version"])), "
            + "CRIU \(first([criu, "--version"]))"
    }

    private func diskUsageKiB(_ path: String) throws -> Int {
        let out = try runChecked(["du", "-sk", path])
        guard let kib = out.split(separator: "\t").first.flatMap({ Int($0) }) else {
            throw BenchError("du -sk \(path) printed '\(out)'")
        }
        return kib
    }
}

/// Touches `mib` MiB of fresh anonymous memory and frees it (at `until`, when given), so that the
/// next page-cache allocations reuse pages the VM's host backs. On this machine kind the guest
/// reports free memory to the host (virtio-balloon free page reporting) and the host drops it;
/// the first write into such a page then costs a host page fault: writing 334 MiB into new
/// page-cache pages took 0.52 s of system time against 0.07 s into pages freed a moment before.
func warmFreeMemory(mib: Int, until: ContinuousClock.Instant?) {
    let size = mib << 20
    guard let p = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0), p != MAP_FAILED else {
        return
    }
    let bytes = p.assumingMemoryBound(to: UInt8.self)
    for offset in stride(from: 0, to: size, by: 4096) { bytes[offset] = 1 }
    if let until { sleep(until: until) }
    munmap(p, size)
}

/// Blocks the calling thread until `instant` (returns at once when it has passed).
func sleep(until instant: ContinuousClock.Instant) {
    let wait = instant - ContinuousClock.now
    guard wait > .zero else { return }
    usleep(useconds_t(wait.components.seconds * 1_000_000 + wait.components.attoseconds / 1_000_000_000_000))
}
