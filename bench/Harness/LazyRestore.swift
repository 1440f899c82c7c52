import Foundation
import SystemPackage
import ZPCheckpoint
import ZPSystem

#if canImport(Glibc)
import Glibc
#endif

/// One cycle of the lazy-restore comparison: full and lazy restore → first correct response of the
/// same checkpoint images (milliseconds).
struct LazySample: Sendable {
    var cycle: Int
    /// Full restore (every page copied before the process resumes) → correct response.
    var fullMs: Double
    /// Lazy restore (pages on demand through userfaultfd) → correct response.
    var lazyMs: Double
    /// Starting `criu lazy-pages` before the lazy restore (off the clock: a shim does it while scaled down).
    var daemonStartMs: Double
    /// The checkpoint (ZPCheckpoint, no freezer) and its image size.
    var checkpointMs: Double
    var imageKiB: Int
    /// Whether the lazy-pages daemon finished fetching every page on its own afterwards.
    var daemonFinished: Bool
}

/// Lazy vs full restore of a workload with ZPCheckpoint directly (the shim's scale-down driver has
/// no lazy mode): the container runs under runc (the harness's runc root), is checkpointed once per
/// cycle, restored fully and lazily from the same images (order alternating per cycle), killed
/// between the two; each time from the restore call to the first correct response.
struct LazyRestoreBench {
    /// runc's state root of the harness (RuncRuntime's).
    var runcRoot: String
    /// The CRIU binary.
    var criu: String
    /// Idle time before the checkpoint, as in the other cycles.
    var settleMs: Int
    /// Keep the last cycle's images and CRIU logs (`<bundle>/lazy-images`).
    var keepImages = false
    /// Checkpoint with the cgroup freezer (as runc does) instead of ptrace seizing.
    var freezer = false
    /// CRIU's log level for the checkpoint and both restores.
    var logLevel: Int32 = 2

    func run(_ w: Workload, bundle: Bundle, runtime: RuncRuntime, cycles: Int) throws -> [LazySample] {
        let cc = ContainerCheckpointer(checkpointer: Checkpointer(criuPath: FilePath(criu)))
        let container = RuncContainer(id: w.containerID, runcRoot: FilePath(runcRoot))
        var out: [LazySample] = []
        for cycle in 1...cycles {
            defer { runtime.remove(w, container: nil) }
            var why = ""
            let t0 = ContinuousClock.now
            var held = try runtime.start(w, bundle: bundle)
            guard w.probe.poll(address: w.address, port: w.port, deadline: t0 + w.startDeadline, lastError: &why) else {
                throw BenchError("\(w.name) did not answer after a cold start (lazy bench): \(why)")
            }
            usleep(useconds_t(settleMs * 1000))
            let images = bundle.path + "/lazy-images"
            runIgnoringFailure(["rm", "-rf", images])
            try FileManager.default.createDirectory(atPath: images, withIntermediateDirectories: true)
            let t1 = ContinuousClock.now
            do {
                var co = ContainerCheckpointOptions()
                co.freezeWithCgroup = freezer
                co.criu.logLevel = logLevel
                _ = try cc.checkpoint(container, imagesDir: FilePath(images), options: co)
            } catch {
                throw BenchError("ZPCheckpoint checkpoint of \(w.containerID): \(error)")
            }
            let checkpointMs = millis(since: t1)
            held.stdin = nil
            let kib = Int(try runChecked(["du", "-sk", images]).split(separator: "\t").first ?? "") ?? 0

            var full = 0.0
            var lazy = 0.0
            var daemonStart = 0.0
            var finished = false
            for lazyMode in cycle % 2 == 1 ? [false, true] : [true, false] {
                var daemon: LazyPagesDaemon?
                var o = ContainerRestoreOptions()
                // The container's stdio was pipes held by the harness; it gets /dev/null now.
                let devnull = SharedDescriptor(try OwnedDescriptor.open("/dev/null", O_RDWR))
                o.stdio = [devnull, devnull, devnull]
                o.criu.logLevel = logLevel
                if lazyMode {
                    let d0 = ContinuousClock.now
                    do {
                        daemon = try LazyPagesDaemon(criuPath: FilePath(criu), imagesDir: FilePath(images))
                    } catch {
                        throw BenchError("criu lazy-pages for \(images): \(error)")
                    }
                    daemonStart = millis(since: d0)
                    o.criu.lazyPages = true
                    o.criu.workDir = FilePath(images)
                }
                let t2 = ContinuousClock.now
                let r: ContainerRestoreResult
                do {
                    r = try cc.restore(container, imagesDir: FilePath(images), options: o)
                } catch {
                    throw BenchError("ZPCheckpoint \(lazyMode ? "lazy" : "full") restore of \(w.containerID): \(error)")
                }
                guard w.probe.poll(address: w.address, port: w.port, deadline: t2 + .seconds(60), lastError: &why)
                else {
                    throw BenchError("\(w.name) did not answer after the \(lazyMode ? "lazy" : "full") restore: \(why)")
                }
                let ms = millis(since: t2)
                if lazyMode {
                    lazy = ms
                    finished = daemon?.waitForExit(timeout: .seconds(60)) ?? false
                    daemon?.stop()
                } else {
                    full = ms
                }
                // Kill the restored tree (its pid namespace goes with its init) before the next restore.
                _ = kill(r.pid, SIGKILL)
                let gone = ContinuousClock.now + .seconds(30)
                while ContinuousClock.now < gone && Self.alive(r.pid) { usleep(5_000) }
                guard !Self.alive(r.pid) else {
                    throw BenchError("restored init \(r.pid) of \(w.containerID) did not die")
                }
                usleep(200_000)
            }
            if !keepImages { runIgnoringFailure(["rm", "-rf", images]) }
            let s = LazySample(
                cycle: cycle,
                fullMs: full,
                lazyMs: lazy,
                daemonStartMs: daemonStart,
                checkpointMs: checkpointMs,
                imageKiB: kib,
                daemonFinished: finished
            )
            print(
                String(
                    format:
                        "[zpbench] %@ lazy #%d: full restore → 1st %.1f ms, lazy %.1f ms (lazy-pages daemon start %.1f ms "
                        + "beforehand, finished: %@), checkpoint %.1f ms, image %d MiB",
                    w.name,
                    cycle,
                    full,
                    lazy,
                    daemonStart,
                    finished ? "yes" : "no",
                    checkpointMs,
                    kib / 1024
                )
            )
            out.append(s)
        }
        return out
    }

    /// True while `pid` exists and is not a zombie.
    static func alive(_ pid: Int32) -> Bool {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let close = stat.lastIndex(of: ")")
        else { return false }
        let state = stat[stat.index(close, offsetBy: 2)...].first
        return state != "Z" && state != "X"
    }
}
