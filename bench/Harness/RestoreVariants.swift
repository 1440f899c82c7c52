import Foundation
import SystemPackage
import ZPCheckpoint
import ZPSystem

#if canImport(Glibc)
import Glibc
#endif

/// One way of restoring the same images, for ``RestoreVariantsBench``: `full` or `lazy`, CRIU's
/// log level (`-v2`, `-v4`), optionally another CRIU binary (`@/path/to/criu`), e.g. `full-v4`,
/// `lazy-v2`, `full-v2@/opt/criu-patched`.
struct RestoreVariant: Sendable, CustomStringConvertible {
    var name: String
    var lazy: Bool
    var logLevel: Int32
    var criu: String?
    /// `-ws`: a lazy restore whose daemon copies in, before the tasks run, the working set a
    /// plain lazy restore of the same images recorded earlier in the cycle (`ZEROPOD_WORKING_SET`;
    /// needs a CRIU built with bench/criu/0003-working-set-prefetch.patch, decision 0036).
    var workingSet = false

    var description: String { name }

    /// Parses `full|lazy[-vN][@criu]`.
    init(parsing text: String) throws {
        name = text
        var spec = Substring(text)
        if let at = spec.firstIndex(of: "@") {
            criu = String(spec[spec.index(after: at)...])
            spec = spec[..<at]
        }
        let parts = spec.split(separator: "-")
        guard let mode = parts.first, mode == "full" || mode == "lazy" else {
            throw BenchError("restore variant '\(text)': expected full or lazy, then -vN and @criu (e.g. full-v2)")
        }
        lazy = mode == "lazy"
        logLevel = 4
        for p in parts.dropFirst() {
            if p == "ws" {
                workingSet = true
                continue
            }
            guard p.hasPrefix("v"), let l = Int32(p.dropFirst()), (0...4).contains(l) else {
                throw BenchError("restore variant '\(text)': '\(p)' is not a log level v0-v4 or ws")
            }
            logLevel = l
        }
        guard !workingSet || lazy else { throw BenchError("restore variant '\(text)': ws needs a lazy restore") }
    }
}

/// Restores of the same checkpoint images done several ways, each timed from the RESTORE request
/// (the worker, and for lazy restores the `criu lazy-pages` daemon, prepared beforehand, as the
/// shim does while scaled down) to the first correct response. The container runs under runc,
/// ZPCheckpoint checkpoints it once per cycle; the variants run in a rotating order, the restored
/// tree killed after each.
struct RestoreVariantsBench {
    var runcRoot: String
    var criu: String
    var settleMs: Int
    /// When set, every variant's CRIU worker is recorded with `perf record -g` into this folder
    /// (`<workload>-<variant>-<cycle>.data`), from before the RESTORE request to the first response.
    var perfDir: String?

    /// Per variant, restore → first response (ms) and the RESTORE call alone (ms), per cycle.
    struct Result: Sendable {
        var firstResponse: [String: [Double]] = [:]
        var restoreCall: [String: [Double]] = [:]
        var imageKiB = 0
    }

    func run(
        _ w: Workload,
        bundle: Bundle,
        runtime: RuncRuntime,
        cycles: Int,
        variants: [RestoreVariant]
    ) throws -> Result {
        let container = RuncContainer(id: w.containerID, runcRoot: FilePath(runcRoot))
        var result = Result()
        for cycle in 1...cycles {
            defer { runtime.remove(w, container: nil) }
            var why = ""
            let t0 = ContinuousClock.now
            var held = try runtime.start(w, bundle: bundle)
            guard w.probe.poll(address: w.address, port: w.port, deadline: t0 + w.startDeadline, lastError: &why) else {
                throw BenchError("\(w.name) did not answer after a cold start (restore variants): \(why)")
            }
            usleep(useconds_t(settleMs * 1000))
            let images = bundle.path + "/variant-images"
            runIgnoringFailure(["rm", "-rf", images])
            try FileManager.default.createDirectory(atPath: images, withIntermediateDirectories: true)
            let cc = ContainerCheckpointer(checkpointer: Checkpointer(criuPath: FilePath(criu)))
            do {
                _ = try cc.checkpoint(container, imagesDir: FilePath(images))
            } catch {
                throw BenchError("ZPCheckpoint checkpoint of \(w.containerID): \(error)")
            }
            held.stdin = nil
            result.imageKiB = Int(try runChecked(["du", "-sk", images]).split(separator: "\t").first ?? "") ?? 0
            // The order rotates per cycle; working-set variants come last, after a plain lazy
            // restore of the same images recorded what the first request touched.
            let plain = variants.filter { !$0.workingSet }
            let shift = (cycle - 1) % max(1, plain.count)
            let ordered = Array(plain[shift...] + plain[..<shift]) + variants.filter(\.workingSet)
            let workingSetFile = bundle.path + "/working-set-\(cycle).txt"
            for v in ordered {
                let binary = v.criu ?? criu
                let vc = ContainerCheckpointer(checkpointer: Checkpointer(criuPath: FilePath(binary)))
                var o = ContainerRestoreOptions()
                let devnull = SharedDescriptor(try OwnedDescriptor.open("/dev/null", O_RDWR))
                o.stdio = [devnull, devnull, devnull]
                o.criu.logLevel = v.logLevel
                var daemon: LazyPagesDaemon?
                if v.lazy {
                    if v.workingSet {
                        guard FileManager.default.fileExists(atPath: workingSetFile) else {
                            throw BenchError("\(v): no working set recorded (list a plain lazy variant before it)")
                        }
                        setenv("ZEROPOD_WORKING_SET", workingSetFile, 1)
                    }
                    defer { unsetenv("ZEROPOD_WORKING_SET") }
                    do {
                        daemon = try LazyPagesDaemon(criuPath: FilePath(binary), imagesDir: FilePath(images))
                    } catch {
                        throw BenchError("criu lazy-pages for \(images): \(error)")
                    }
                    o.criu.lazyPages = true
                    o.criu.workDir = FilePath(images)
                }
                let prepared: PreparedContainerRestore
                do {
                    prepared = try vc.prepareRestore(container, imagesDir: FilePath(images), options: o)
                } catch {
                    throw BenchError("preparing the \(v) restore of \(w.containerID): \(error)")
                }
                var recorder: pid_t?
                if let perfDir,
                    let worker = children(of: getpid()).last(where: { child in
                        (readProcFile("/proc/\(child)/cmdline") ?? "").contains("swrk")
                    })
                {
                    let file = "\(perfDir)/\(w.name)-\(v.name.replacingOccurrences(of: "/", with: "_"))-\(cycle).data"
                    recorder = try? spawnDetached(
                        ["/usr/bin/perf", "record", "-g", "-p", "\(worker)", "-o", file],
                        environment: ProcessInfo.processInfo.environment,
                        output: "/dev/null"
                    )
                }
                usleep(300_000)  // the preparation is done long before a first connection (and perf is attached)
                let t2 = ContinuousClock.now
                let r: ContainerRestoreResult
                do {
                    r = try prepared.run()
                } catch {
                    throw BenchError("\(v) restore of \(w.containerID): \(error)")
                }
                let call = millis(since: t2)
                guard w.probe.poll(address: w.address, port: w.port, deadline: t2 + .seconds(60), lastError: &why)
                else {
                    throw BenchError("\(w.name) did not answer after the \(v) restore: \(why)")
                }
                let ms = millis(since: t2)
                if let recorder {
                    kill(recorder, SIGINT)
                    var status: Int32 = 0
                    _ = waitpid(recorder, &status, 0)
                }
                result.firstResponse[v.name, default: []].append(ms)
                result.restoreCall[v.name, default: []].append(call)
                print(
                    String(
                        format: "[zpbench] %@ variant %@ #%d: restore call %.1f ms, restore → 1st %.1f ms",
                        w.name,
                        v.name,
                        cycle,
                        call,
                        ms
                    )
                )
                if let daemon {
                    _ = daemon.waitForExit(timeout: .seconds(60))
                    daemon.stop()
                    if !v.workingSet, let log = readProcFile(images + "/lazy-pages.log") {
                        let ws = Self.workingSet(fromLazyPagesLog: log)
                        try ws.text.write(toFile: workingSetFile, atomically: true, encoding: .utf8)
                        print("[zpbench] \(w.name) working set recorded: \(ws.pages) pages faulted, \(ws.runs) runs")
                    }
                    if let perfDir {
                        runIgnoringFailure([
                            "cp", images + "/lazy-pages.log",
                            "\(perfDir)/\(w.name)-\(v.name.replacingOccurrences(of: "/", with: "_"))-\(cycle)-lazy-pages.log",
                        ])
                    }
                }
                _ = kill(r.pid, SIGKILL)
                let gone = ContinuousClock.now + .seconds(30)
                while ContinuousClock.now < gone && LazyRestoreBench.alive(r.pid) { usleep(5_000) }
                guard !LazyRestoreBench.alive(r.pid) else {
                    throw BenchError("restored init \(r.pid) of \(w.containerID) did not die")
                }
                usleep(200_000)
            }
            runIgnoringFailure(["rm", "-rf", images, workingSetFile])
        }
        return result
    }

    /// The pages a lazy restore's tasks faulted ("PID-FD: #PF at 0xADDR" in `criu lazy-pages`'s
    /// log at -v4), as "pid address pages" runs sorted by pid and address.
    static func workingSet(fromLazyPagesLog log: String) -> (text: String, pages: Int, runs: Int) {
        var faults: [Int: Set<UInt64>] = [:]
        for line in log.split(separator: "\n") {
            guard let r = line.range(of: ": #PF at 0x") else { continue }
            let head = line[..<r.lowerBound]
            let pidText = head.split(separator: " ").last?.split(separator: "-").first ?? ""
            guard let pid = Int(pidText), let addr = UInt64(line[r.upperBound...].prefix { $0.isHexDigit }, radix: 16)
            else { continue }
            faults[pid, default: []].insert(addr & ~4095)
        }
        var lines: [String] = []
        var pages = 0
        for (pid, set) in faults.sorted(by: { $0.key < $1.key }) {
            var run: (start: UInt64, count: Int)?
            for a in set.sorted() {
                pages += 1
                if let r = run, r.start + UInt64(r.count) * 4096 == a {
                    run = (r.start, r.count + 1)
                } else {
                    if let r = run { lines.append("\(pid) \(String(r.start, radix: 16)) \(r.count)") }
                    run = (a, 1)
                }
            }
            if let r = run { lines.append("\(pid) \(String(r.start, radix: 16)) \(r.count)") }
        }
        return (lines.joined(separator: "\n") + "\n", pages, lines.count)
    }

    /// The result as a markdown table.
    static func markdown(_ w: String, _ r: Result, variants: [RestoreVariant]) -> [String] {
        var lines = [
            "",
            "Restore variants of \(w) (same images per cycle, \(r.imageKiB / 1024) MiB; worker prepared beforehand; ms, median [min–max]):",
            "",
            "| variant | RESTORE call | restore → 1st response | cycles |", "|---|---|---|---|",
        ]
        for v in variants {
            let cell = { (xs: [Double]) -> String in
                guard let m = Report.median(xs), let lo = xs.min(), let hi = xs.max() else { return "n/a" }
                return String(format: "%.1f [%.1f–%.1f]", m, lo, hi)
            }
            lines.append(
                "| \(v.name) | \(cell(r.restoreCall[v.name] ?? [])) | \(cell(r.firstResponse[v.name] ?? [])) | \(r.firstResponse[v.name]?.count ?? 0) |"
            )
        }
        return lines
    }
}
