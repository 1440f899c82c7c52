import Foundation
import SystemPackage
import ZPCheckpoint
import ZPCheckpointTestKit
import ZPTestSupport

/// Figures of one workload, in milliseconds per trial.
struct WorkloadFigures {
    var coldStart: [Double] = []
    var oursCheckpoint: [Double] = []
    var oursCheckpointFreezer: [Double] = []
    var oursCheckpointPrestarted: [Double] = []
    var runcCheckpoint: [Double] = []
    var oursRestore: [Double] = []
    var oursRestorePrestarted: [Double] = []
    var runcRestore: [Double] = []
    var criuRestoreRequest: [Double] = []
    var stateUpdate: [Double] = []
    var restoreCall: [Double] = []
    var restorePrepare: [Double] = []
}

func ms(_ d: Duration) -> Double {
    Double(d.components.seconds) * 1000 + Double(d.components.attoseconds) / 1e15
}

func median(_ v: [Double]) -> Double {
    guard !v.isEmpty else { return .nan }
    let s = v.sorted()
    return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
}

func fmt(_ v: [Double]) -> String {
    guard !v.isEmpty else { return "-" }
    return String(format: "%.1f [%.0f-%.0f]", median(v), v.min()!, v.max()!)
}

/// The side-by-side benchmark: our container checkpoint/restore against runc's, interleaved.
struct CheckpointBench {
    var trials: Int
    var workloads: [TestWorkload]
    var repoRoot: String
    var keepImages: Bool
    let cc = ContainerCheckpointer()

    func log(_ s: String) {
        FileHandle.standardError.write(Data((s + "\n").utf8))
    }

    /// Starts a container and returns it with its cold start → first response time.
    func startContainer(_ w: TestWorkload, annotations: [String: String] = [:]) throws -> (TestContainer, Double) {
        let c = try TestContainer(w, repoRoot: repoRoot, annotations: annotations)
        let start = ContinuousClock.now
        try c.start()
        guard c.waitForResponse(path: "/") != nil else { throw LabError("\(w) did not answer after runc run") }
        return (c, ms(.now - start))
    }

    func firstResponse(_ c: TestContainer, since start: ContinuousClock.Instant) throws -> Double {
        // The first response is GET / (a static file for both servers).
        guard c.waitForResponse(path: "/", timeout: .seconds(30)) != nil else {
            throw LabError("\(c.id) did not answer after restore")
        }
        return ms(.now - start)
    }

    var restoreOverrides: (inout ContainerRestoreOptions) -> Void = { _ in }

    func restoreOptions(_ c: TestContainer, _ x: Void = ()) -> ContainerRestoreOptions {
        var o = ContainerRestoreOptions()
        o.stdio = c.stdio.containerSide.map { Optional($0) }
        restoreOverrides(&o)
        return o
    }

    /// One trial of our path, three checkpoint/restore cycles on one container:
    /// 1. checkpoint and restore each with a freshly spawned CRIU worker;
    /// 2. both with a worker started ahead of time (what a shim does while idle / scaled down);
    /// 3. checkpoint with the cgroup freezer (as runc does), restore with a fresh worker.
    func oursTrial(_ w: TestWorkload, _ f: inout WorkloadFigures) throws {
        let (c, cold) = try startContainer(w)
        defer { c.destroy() }
        f.coldStart.append(cold)
        let img1 = FilePath("\(c.bundle)/img-ours-1")
        let cp = try cc.checkpoint(c.container, imagesDir: img1)
        f.oursCheckpoint.append(ms(cp.total))
        var start = ContinuousClock.now
        let r = try cc.restore(c.container, imagesDir: img1, options: restoreOptions(c))
        f.oursRestore.append(try firstResponse(c, since: start))
        f.criuRestoreRequest.append(ms(r.restore.timings.request))
        f.stateUpdate.append(ms(r.stateUpdate))
        f.restoreCall.append(ms(r.total))
        f.restorePrepare.append(ms(r.prepare))

        let img2 = FilePath("\(c.bundle)/img-ours-2")
        let worker = try cc.checkpointer.startWorker()
        start = .now
        _ = try cc.checkpoint(c.container, imagesDir: img2, worker: worker)
        f.oursCheckpointPrestarted.append(ms(.now - start))
        let prepared = try cc.prepareRestore(c.container, imagesDir: img2, options: restoreOptions(c))
        start = .now
        _ = try prepared.run()
        f.oursRestorePrestarted.append(try firstResponse(c, since: start))
        guard c.status() == "running" else { throw LabError("runc does not see \(c.id) running after our restore") }

        var freeze = ContainerCheckpointOptions()
        freeze.freezeWithCgroup = true
        let img3 = FilePath("\(c.bundle)/img-ours-3")
        let cp3 = try cc.checkpoint(c.container, imagesDir: img3, options: freeze)
        f.oursCheckpointFreezer.append(ms(cp3.total))
        start = .now
        _ = try cc.restore(c.container, imagesDir: img3, options: restoreOptions(c))
        f.oursRestore.append(try firstResponse(c, since: start))
    }

    /// One trial of runc's path with the same CRIU options (config file via org.criu.config).
    func runcTrial(_ w: TestWorkload, _ f: inout WorkloadFigures) throws {
        let conf = "/tmp/\(uniqueName("zpck-criu-conf")).conf"
        try "tcp-close\nskip-in-flight\nnetwork-lock skip\n".write(toFile: conf, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: conf) }
        let (c, cold) = try startContainer(w, annotations: ["org.criu.config": conf])
        defer { c.destroy() }
        f.coldStart.append(cold)
        let img = "\(c.bundle)/img-runc"
        var start = ContinuousClock.now
        try c.spawnRunc([
            "checkpoint", "--image-path", img, "--work-path", img, "--ext-unix-sk", "--file-locks",
            "--manage-cgroups-mode", "soft", c.id,
        ])
        f.runcCheckpoint.append(ms(.now - start))
        start = .now
        try c.spawnRunc([
            "restore", "-d", "--image-path", img, "--work-path", img, "--ext-unix-sk", "--file-locks",
            "--manage-cgroups-mode", "soft", "--bundle", c.bundle.string, c.id,
        ])
        f.runcRestore.append(try firstResponse(c, since: start))
    }

    func run() throws -> String {
        var results: [(TestWorkload, WorkloadFigures)] = []
        for w in workloads {
            var f = WorkloadFigures()
            for t in 1...trials {
                // Interleave, alternating which path goes first.
                if t % 2 == 1 {
                    try oursTrial(w, &f)
                    try runcTrial(w, &f)
                } else {
                    try runcTrial(w, &f)
                    try oursTrial(w, &f)
                }
                log(
                    "\(w) trial \(t)/\(trials): ours ckpt \(String(format: "%.1f", f.oursCheckpoint.last!)) "
                        + "runc ckpt \(String(format: "%.1f", f.runcCheckpoint.last!)) ours restore "
                        + "\(String(format: "%.1f", f.oursRestore.last!))/\(String(format: "%.1f", f.oursRestorePrestarted.last!)) "
                        + "runc restore \(String(format: "%.1f", f.runcRestore.last!))"
                )
            }
            results.append((w, f))
        }
        return report(results)
    }

    func report(_ results: [(TestWorkload, WorkloadFigures)]) -> String {
        var out =
            "| workload | measure | ours, median [min-max] ms | runc, median [min-max] ms | ours / runc | target |\n"
        out += "|---|---|---|---|---|---|\n"
        for (w, f) in results {
            let ckRatio = median(f.oursCheckpoint) / median(f.runcCheckpoint)
            let ckfRatio = median(f.oursCheckpointFreezer) / median(f.runcCheckpoint)
            let rsRatio = median(f.oursRestore) / median(f.runcRestore)
            let rspRatio = median(f.oursRestorePrestarted) / median(f.runcRestore)
            out +=
                "| \(w) | checkpoint (no freezer) | \(fmt(f.oursCheckpoint)) | \(fmt(f.runcCheckpoint)) | "
                + String(format: "%.2f", ckRatio) + " | ≤ 0.6 |\n"
            out +=
                "| \(w) | checkpoint (no freezer), pre-started CRIU worker | \(fmt(f.oursCheckpointPrestarted)) | "
                + "\(fmt(f.runcCheckpoint)) | "
                + String(format: "%.2f", median(f.oursCheckpointPrestarted) / median(f.runcCheckpoint))
                + " | ≤ 0.6 |\n"
            out +=
                "| \(w) | checkpoint (cgroup freezer, as runc) | \(fmt(f.oursCheckpointFreezer)) | \(fmt(f.runcCheckpoint)) | "
                + String(format: "%.2f", ckfRatio) + " | - |\n"
            out +=
                "| \(w) | restore → first response | \(fmt(f.oursRestore)) | \(fmt(f.runcRestore)) | "
                + String(format: "%.2f", rsRatio) + " | ≤ 0.7 |\n"
            out +=
                "| \(w) | restore → first response, pre-started CRIU worker | \(fmt(f.oursRestorePrestarted)) | "
                + "\(fmt(f.runcRestore)) | " + String(format: "%.2f", rspRatio) + " | ≤ 0.7 |\n"
            out += "| \(w) | (ours, fresh worker: whole restore call) | \(fmt(f.restoreCall)) | | | |\n"
            out += "| \(w) | (ours, fresh worker: preparing it, before the call) | \(fmt(f.restorePrepare)) | | | |\n"
            out += "| \(w) | (ours: CRIU RESTORE request alone) | \(fmt(f.criuRestoreRequest)) | | | |\n"
            out += "| \(w) | (ours: runc state.json rewrite) | \(fmt(f.stateUpdate)) | | | |\n"
            out += "| \(w) | (cold start → first response, runc run) | \(fmt(f.coldStart)) | | | |\n"
        }
        return out
    }
}
