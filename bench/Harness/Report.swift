import Foundation
import ZPCore

/// CRIU's own timings from its `stats-dump` / `stats-restore` image (`stats.proto`: a
/// `stats_entry` with `dump` = 1 and `restore` = 2), in milliseconds.
struct CRIUStats: Sendable {
    /// Dump: time to freeze the tree (field 1, µs in the file).
    var freezingMs: Double?
    /// Dump: how long the tree stayed frozen (field 2).
    var frozenMs: Double?
    /// Dump: time to collect memory (field 3).
    var memdumpMs: Double?
    /// Dump: time to write pages (field 4).
    var memwriteMs: Double?
    /// Dump: pages written (field 7).
    var pagesWritten: UInt64?
    /// Restore: time to fork the tree (field 3 of restore_stats_entry).
    var forkingMs: Double?
    /// Restore: CRIU's whole restore (field 4).
    var restoreMs: Double?

    /// Reads a CRIU stats image: two magic words, then a 32-bit length and one `stats_entry`.
    /// Returns nil when the file is missing or does not parse (stats are informative only).
    static func read(_ path: String) -> CRIUStats? {
        guard let data = FileManager.default.contents(atPath: path), data.count > 12 else { return nil }
        let bytes = [UInt8](data)
        let len = Int(bytes[8]) | Int(bytes[9]) << 8 | Int(bytes[10]) << 16 | Int(bytes[11]) << 24
        guard 12 + len <= bytes.count else { return nil }
        var stats = CRIUStats()
        do {
            var entry = ProtobufReader(bytes[12..<12 + len])
            while let f = try entry.nextField() {
                var sub = try f.message(in: "stats_entry")
                while let g = try sub.nextField() {
                    let us = { () throws(ProtobufError) -> Double in Double(try g.uint64(in: "stats")) / 1000 }
                    switch (f.number, g.number) {
                    case (1, 1): stats.freezingMs = try us()
                    case (1, 2): stats.frozenMs = try us()
                    case (1, 3): stats.memdumpMs = try us()
                    case (1, 4): stats.memwriteMs = try us()
                    case (1, 7): stats.pagesWritten = try g.uint64(in: "dump_stats_entry")
                    case (2, 3): stats.forkingMs = try us()
                    case (2, 4): stats.restoreMs = try us()
                    default: break
                    }
                }
            }
        } catch {
            return nil
        }
        return stats
    }
}

/// One measured cycle of one workload under one runtime (milliseconds).
struct Sample: Sendable {
    var workload: String
    var runtime: String
    var cycle: Int
    var coldStartMs: Double?
    var checkpointMs: Double?
    var restoreMs: Double?
    var restoreFirstResponseMs: Double?
    var imageKiB: Int?
    var criuDump: CRIUStats?
    var criuRestore: CRIUStats?
    /// The container's memory just before the checkpoint (all of it is freed by the checkpoint).
    var memory: ContainerMemory?
    /// The container's cgroup memory right after the checkpoint (nil: no cgroup left).
    var memoryAfter: ContainerMemory?
    /// The runtime's per-phase checkpoint timings (zeropod-swift: from the shim's log).
    var checkpointDetail: String?
    /// The shim's own restore time ("restored process: PID in X ms"), zeropod-swift only.
    var shimRestoreMs: Double?
    /// The shim's own checkpoint time ("checkpointing done in X ms"); `checkpointMs` counts from
    /// its scale-down decision (idle deadline) to the last process gone (zeropod-swift only).
    var shimCheckpointMs: Double?
    /// zeropod-swift: the harness's estimate of the shim's idle deadline to the moment it saw no
    /// process left in the container's netns (early while CRIU holds the tasks).
    var deadlineToGoneMs: Double?
    /// The restore preparation done while scaled down (zeropod-swift: worker, cgroup join, lazy
    /// daemon; runc has none apart from its restore call).
    var restorePreparationMs: Double?
    /// CRIU's restore timings as the shim logged them.
    var shimRestoreDetail: String?
    /// The shim's memory while the container runs, and while it is scaled down (zeropod-swift only).
    var shimRunning: ProcessMemory?
    var shimScaledDown: ProcessMemory?
    /// `--second-checkpoint`: the same container checkpointed again after its restore, measured
    /// as the first (zeropod-swift: on the restored images as parent, decision 0077), its CRIU
    /// statistics, and its restore → first response.
    var secondCheckpointMs: Double?
    var secondCriuDump: CRIUStats?
    var secondCheckpointDetail: String?
    var secondRestoreFirstResponseMs: Double?

    /// One progress line for the console.
    var summaryLine: String {
        func f(_ v: Double?) -> String { v.map { String(format: "%.1f", $0) } ?? "-" }
        return "cold \(f(coldStartMs)) ms, checkpoint \(f(checkpointMs)) ms, restore \(f(restoreMs)) ms, "
            + "restore→1st \(f(restoreFirstResponseMs)) ms, image \(imageKiB.map { String($0 / 1024) } ?? "-") MiB"
            + ", CRIU frozen \(f(criuDump?.frozenMs)) ms, CRIU restore \(f(criuRestore?.restoreMs)) ms"
    }
}

/// Throughput and latency of a running container under wrk load.
struct SteadyState: Sendable {
    var workload: String
    var runtime: String
    var requestsPerSecond: Double
    /// Latency percentiles in milliseconds.
    var p50: Double
    var p99: Double
    /// Responses that were not 2xx/3xx, plus socket errors wrk counted.
    var errors: Int
    /// wrk's own lines about those errors ("Socket errors: ...", "Non-2xx or 3xx responses: N").
    var errorDetail: String

    /// Parses `wrk --latency` output.
    init(workload: String, runtime: String, wrkOutput: String) throws {
        self.workload = workload
        self.runtime = runtime
        var rps: Double?
        var p50: Double?
        var p99: Double?
        var errors = 0
        var detail: [String] = []
        for raw in wrkOutput.split(separator: "\n") {
            let f = raw.split(separator: " ", omittingEmptySubsequences: true)
            guard let key = f.first else { continue }
            switch key {
            case "Requests/sec:": rps = f.count > 1 ? Double(f[1]) : nil
            case "50%": p50 = f.count > 1 ? Self.milliseconds(String(f[1])) : nil
            case "99%": p99 = f.count > 1 ? Self.milliseconds(String(f[1])) : nil
            case "Non-2xx":
                errors += Int(f.last ?? "") ?? 0
                detail.append(raw.trimmingCharacters(in: .whitespaces))
            case "Socket":  // Socket errors: connect 0, read 0, write 0, timeout 0
                errors += f.compactMap { Int($0.trimmingCharacters(in: CharacterSet(charactersIn: ","))) }.reduce(0, +)
                detail.append(raw.trimmingCharacters(in: .whitespaces))
            default: break
            }
        }
        guard let rps, let p50, let p99 else {
            throw BenchError("wrk output without Requests/sec or percentiles:\n\(wrkOutput)")
        }
        self.requestsPerSecond = rps
        self.p50 = p50
        self.p99 = p99
        self.errors = errors
        self.errorDetail = detail.joined(separator: "; ")
    }

    /// "850.00us", "1.23ms", "2.00s" → milliseconds.
    static func milliseconds(_ s: String) -> Double? {
        for (unit, factor) in [("us", 0.001), ("ms", 1.0), ("s", 1000.0), ("m", 60000.0)] where s.hasSuffix(unit) {
            return Double(s.dropLast(unit.count)).map { $0 * factor }
        }
        return nil
    }
}

/// The shims' memory for one workload: ours per cycle (running, scaled down) and Go's
/// containerd-shim-runc-v2 serving the same container in the same containerd.
struct ShimMemoryRow: Sendable {
    var workload: String
    var running: [ProcessMemory]
    var scaledDown: [ProcessMemory]
    var goShim: ProcessMemory?
}

/// Medians per workload and runtime, written as markdown and CSV.
struct Report {
    var samples: [Sample]
    var steady: [SteadyState] = []
    var failures: [String]
    var cycles: Int
    var runtimes: [String]
    /// `--warm-requests`: answers served after the cold start's first one, before the idle pause.
    var warmRequests = 0
    /// `--second-checkpoint`: each container was checkpointed and restored a second time.
    var secondCheckpoint = false
    /// The machine the run was on (nproc, kernel, CPU, versions).
    var machine: String = ""
    /// Shim memory per workload (ours vs Go's containerd-shim-runc-v2).
    var shims: [ShimMemoryRow] = []
    /// Lazy vs full restore per workload (ZPCheckpoint directly).
    var lazy: [String: [LazySample]] = [:]
    /// Sections rendered elsewhere (node measurements, restore variants), appended as they are.
    var extra: [String] = []

    /// The runtime whose numbers the issue's targets compare against runc's.
    static let zeropod = "zeropod-swift"

    /// "a / b" with two decimals, or "n/a" when either is missing or b is not positive.
    static func ratioText(_ a: Double?, _ b: Double?) -> String {
        guard let a, let b, b > 0 else { return "n/a" }
        return String(format: "%.2f", a / b)
    }

    static func median(_ xs: [Double]) -> Double? {
        guard !xs.isEmpty else { return nil }
        let s = xs.sorted()
        return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
    }

    private var workloads: [String] {
        var seen: [String] = []
        for s in samples where !seen.contains(s.workload) { seen.append(s.workload) }
        return seen
    }

    private func med(_ w: String, _ rt: String, _ key: (Sample) -> Double?) -> Double? {
        Self.median(samples.filter { $0.workload == w && $0.runtime == rt }.compactMap(key))
    }

    private func fmt(_ v: Double?, digits: Int = 0) -> String {
        v.map { String(format: "%.\(digits)f", $0) } ?? "n/a"
    }

    /// Summary rows: one per workload with runc's medians and the zeropod-swift columns
    /// (`n/a` until that runtime takes part) and their ratios to runc. With `ranges`, the timing
    /// cells add the spread as "median [min–max]" (the machine is noisy).
    func summaryRows(ranges: Bool = false) -> [[String]] {
        workloads.map { w in
            let image = med(w, "runc") { $0.imageKiB.map { Double($0) / 1024 } }
            let cold = med(w, "runc") { $0.coldStartMs }
            let ck = med(w, "runc") { $0.checkpointMs }
            let rs = med(w, "runc") { $0.restoreMs }
            let rf = med(w, "runc") { $0.restoreFirstResponseMs }
            let zck = med(w, Self.zeropod) { $0.checkpointMs }
            let zrf = med(w, Self.zeropod) { $0.restoreFirstResponseMs }
            let cell = { (rt: String, median: Double?, key: (Sample) -> Double?) -> String in
                let xs = samples.filter { $0.workload == w && $0.runtime == rt }.compactMap(key)
                guard ranges, let lo = xs.min(), let hi = xs.max() else { return fmt(median) }
                return fmt(median) + String(format: " [%.0f–%.0f]", lo, hi)
            }
            let frozen = med(w, "runc") { $0.criuDump?.frozenMs }
            let mem = med(w, "runc") { $0.memory.map { Double($0.usage) / 1_048_576 } }
            let rss = med(w, "runc") { $0.memory.map { Double($0.rss) / 1_048_576 } }
            let criuRestore = med(w, "runc") { $0.criuRestore?.restoreMs }
            let ratio = Self.ratioText
            let n = samples.filter { $0.workload == w && $0.runtime == "runc" }.count
            return [
                w, fmt(image, digits: 1), fmt(mem, digits: 1), fmt(rss, digits: 1),
                cell("runc", cold) { $0.coldStartMs }, cell("runc", ck) { $0.checkpointMs }, fmt(rs),
                cell("runc", rf) { $0.restoreFirstResponseMs }, fmt(frozen), fmt(criuRestore),
                cell(Self.zeropod, zck) { $0.checkpointMs }, cell(Self.zeropod, zrf) { $0.restoreFirstResponseMs },
                ratio(zck, ck), ratio(zrf, rf), "\(n)",
            ]
        }
    }

    static let summaryHeader = [
        "workload", "image MiB", "memory MiB (cgroup)", "RSS MiB", "cold start → 1st response", "runc checkpoint",
        "runc restore -d",
        "runc restore → 1st response", "CRIU frozen (dump)", "CRIU restore_time",
        "zeropod-swift checkpoint", "zeropod-swift restore → 1st via activator",
        "checkpoint ratio zp/runc", "restore→1st ratio zp/runc", "cycles",
    ]

    /// The summary as a markdown table (milliseconds unless the header says otherwise).
    func markdown() -> String {
        var lines: [String] = []
        if !samples.isEmpty {
            lines = [
                "| " + Self.summaryHeader.joined(separator: " | ") + " |",
                "|" + String(repeating: "---|", count: Self.summaryHeader.count),
            ]
            for row in summaryRows(ranges: true) { lines.append("| " + row.joined(separator: " | ") + " |") }
            lines.append("")
            lines.append(
                "Medians [min–max] of \(cycles) cycles, milliseconds; runtimes measured: \(runtimes.joined(separator: ", "))"
                    + (warmRequests > 0
                        ? "; each container served \(warmRequests) more requests after the cold start's first answer before its idle pause."
                        : ".")
            )
        }
        if !machine.isEmpty { lines.append("Machine: \(machine).") }
        if !steady.isEmpty {
            lines += [
                "", "| workload | runtime | requests/s | p50 ms | p99 ms | errors | throughput ratio zp/runc |",
                "|---|---|---|---|---|---|---|",
            ]
            for l in steady {
                let base = steady.first { $0.workload == l.workload && $0.runtime == "runc" }
                let ratio =
                    l.runtime == Self.zeropod && base != nil
                    ? String(format: "%.3f", l.requestsPerSecond / base!.requestsPerSecond) : "n/a"
                lines.append(
                    "| \(l.workload) | \(l.runtime) | \(String(format: "%.0f", l.requestsPerSecond)) | "
                        + "\(String(format: "%.2f", l.p50)) | \(String(format: "%.2f", l.p99)) | \(l.errors) | \(ratio) |"
                )
            }
        }
        lines += zeropodMarkdown()
        lines += secondCheckpointMarkdown()
        lines += variantMarkdown()
        lines += lazyMarkdown()
        lines += extra
        for f in failures { lines.append("FAILED: \(f)") }
        return lines.joined(separator: "\n")
    }

    /// `--second-checkpoint`: the second checkpoint of each container (after its first restore)
    /// and the restore after it, side by side, with the ratios to runc (empty without the option).
    func secondCheckpointMarkdown() -> [String] {
        guard secondCheckpoint else { return [] }
        var lines = [
            "",
            "Checkpoint after a restore (`--second-checkpoint`: each container checkpointed again after its first "
                + "restore's answer, the same warm requests and idle pause, measured as the first; zeropod-swift's "
                + "dump is incremental on the restored images when it tracked the restore's writes, decision 0077). "
                + "Medians [min–max], ms:",
            "",
            "| workload | runc 2nd checkpoint | zeropod-swift 2nd checkpoint | ratio zp/runc | pages written runc / zp "
                + "| runc restore → 1st after it | zeropod-swift restore → 1st after it | ratio zp/runc | cycles |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        let ratio = Self.ratioText
        var targets: [String] = []
        for w in workloads {
            let cell = { (rt: String, key: (Sample) -> Double?) -> (String, Double?) in
                let v = samples.filter { $0.workload == w && $0.runtime == rt }.compactMap(key)
                guard let m = Self.median(v), let lo = v.min(), let hi = v.max() else { return ("n/a", nil) }
                return (String(format: "%.1f [%.0f–%.0f]", m, lo, hi), m)
            }
            let (rc, rcm) = cell("runc") { $0.secondCheckpointMs }
            let (zc, zcm) = cell(Self.zeropod) { $0.secondCheckpointMs }
            let (rr, rrm) = cell("runc") { $0.secondRestoreFirstResponseMs }
            let (zr, zrm) = cell(Self.zeropod) { $0.secondRestoreFirstResponseMs }
            guard rcm != nil || zcm != nil else { continue }
            let pages = { (rt: String) -> String in
                fmt(med(w, rt) { s in s.secondCriuDump?.pagesWritten.map { Double($0) } })
            }
            let n = samples.filter { $0.workload == w && $0.runtime == Self.zeropod && $0.secondCheckpointMs != nil }
                .count
            lines.append(
                "| \(w) | \(rc) | \(zc) | \(ratio(zcm, rcm)) | \(pages("runc")) / \(pages(Self.zeropod)) | \(rr) | \(zr) "
                    + "| \(ratio(zrm, rrm)) | \(n) |"
            )
            if let zcm, let rcm, rcm > 0 {
                let r = zcm / rcm
                targets.append(
                    "- \(w) checkpoint after a restore zp/runc: \(String(format: "%.2f", r)) (target ≤ 0.50) "
                        + (r <= 0.5 ? "met" : "MISSED")
                )
            }
        }
        return lines + [""] + targets
    }

    /// The `--zeropod-variant` runtimes beside runc and the default configuration, from the same
    /// interleaved cycles (empty without variants).
    func variantMarkdown() -> [String] {
        let variants = runtimes.filter { $0.hasPrefix(Self.zeropod + "/") }
        guard !variants.isEmpty else { return [] }
        var lines = [
            "", "zeropod-swift variants, measured in the same interleaved cycles (medians [min–max], ms):", "",
            "| workload | runtime | restore → 1st response | shim restore | checkpoint | restore ratio /runc | restore ratio /default "
                + "| checkpoint ratio /runc | cycles |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        let ratio = Self.ratioText
        for w in workloads {
            let runcRF = med(w, "runc") { $0.restoreFirstResponseMs }
            let runcCK = med(w, "runc") { $0.checkpointMs }
            let defaultRF = med(w, Self.zeropod) { $0.restoreFirstResponseMs }
            for rt in ["runc", Self.zeropod] + variants {
                let xs = samples.filter { $0.workload == w && $0.runtime == rt }
                guard !xs.isEmpty else { continue }
                let cell = { (key: (Sample) -> Double?) -> String in
                    let v = xs.compactMap(key)
                    guard let m = Self.median(v), let lo = v.min(), let hi = v.max() else { return "n/a" }
                    return String(format: "%.1f [%.0f–%.0f]", m, lo, hi)
                }
                let rf = Self.median(xs.compactMap(\.restoreFirstResponseMs))
                let ck = Self.median(xs.compactMap(\.checkpointMs))
                lines.append(
                    "| \(w) | \(rt) | \(cell { $0.restoreFirstResponseMs }) | \(cell { $0.shimRestoreMs }) | "
                        + "\(cell { $0.checkpointMs }) | \(ratio(rf, runcRF)) | \(ratio(rf, defaultRF)) | \(ratio(ck, runcCK)) | \(xs.count) |"
                )
            }
        }
        return lines
    }

    /// The lazy vs full restore table and its target (lazy ≤ 0.5 × full).
    func lazyMarkdown() -> [String] {
        guard !lazy.isEmpty else { return [] }
        var lines = [
            "",
            "Lazy vs full restore with ZPCheckpoint directly (both on the same images; the shim's own restores above are lazy for images ≥ 160 MiB), same images per cycle, "
                + "restore call → first correct response, medians [min–max] ms:", "",
            "| workload | image MiB | checkpoint | full restore → 1st | lazy restore → 1st | lazy-pages daemon start (before) "
                + "| daemon finished | lazy/full | target ≤ 0.5 | cycles |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for (w, xs) in lazy.sorted(by: { $0.key < $1.key }) where !xs.isEmpty {
            let cell = { (v: [Double]) -> String in
                guard let m = Self.median(v), let lo = v.min(), let hi = v.max() else { return "n/a" }
                return String(format: "%.0f [%.0f–%.0f]", m, lo, hi)
            }
            let full = Self.median(xs.map(\.fullMs))
            let lz = Self.median(xs.map(\.lazyMs))
            let ratio = full.flatMap { f in lz.map { $0 / f } }
            lines.append(
                "| \(w) | \(fmt(Self.median(xs.map { Double($0.imageKiB) / 1024 }), digits: 1)) | \(cell(xs.map(\.checkpointMs))) | "
                    + "\(cell(xs.map(\.fullMs))) | \(cell(xs.map(\.lazyMs))) | \(cell(xs.map(\.daemonStartMs))) | "
                    + "\(xs.filter(\.daemonFinished).count)/\(xs.count) | \(fmt(ratio, digits: 2)) | "
                    + "\(ratio.map { $0 <= 0.5 ? "met" : String(format: "MISSED by %.0f %%", ($0 / 0.5 - 1) * 100) } ?? "n/a") | \(xs.count) |"
            )
        }
        return lines
    }

    /// zeropod-swift's own breakdown, the shim memory and the issue's targets (empty without it).
    func zeropodMarkdown() -> [String] {
        let zp = Self.zeropod
        guard samples.contains(where: { $0.runtime == zp }) else { return [] }
        let mib = { (b: UInt64) -> Double in Double(b) / 1_048_576 }
        var lines = [
            "", "zeropod-swift per workload (medians, ms; memory in MiB of the container's cgroup):", "",
            "| workload | harness: idle deadline → no process seen | checkpoint (shim log: decision → CRIU done) | shim restore (CRIU + adoption, shim log) | restore → 1st via activator "
                + "| 1st response − shim restore (activator, connect, app) | restore preparation while scaled down (shim log) "
                + "| restore → 1st incl. preparation | cgroup usage before | usage after scale-down "
                + "| RSS before | RSS after | freed (usage) | cycles |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for w in workloads {
            let xs = samples.filter { $0.workload == w && $0.runtime == zp }
            guard !xs.isEmpty else { continue }
            let m = { (k: (Sample) -> Double?) in Self.median(xs.compactMap(k)) }
            let before = m { $0.memory.map { mib($0.usage) } }
            let after = m { s in s.memory == nil ? nil : s.memoryAfter.map { mib($0.usage) } ?? 0 }
            let rssBefore = m { $0.memory.map { mib($0.rss) } }
            let rssAfter = m { s in s.memory == nil ? nil : s.memoryAfter.map { mib($0.rss) } ?? 0 }
            lines.append(
                "| \(w) | \(fmt(m { $0.deadlineToGoneMs }, digits: 1)) | \(fmt(m { $0.shimCheckpointMs }, digits: 1)) | "
                    + "\(fmt(m { $0.shimRestoreMs }, digits: 1)) | "
                    + "\(fmt(m { $0.restoreFirstResponseMs }, digits: 1)) | "
                    + "\(fmt(m { s in s.shimRestoreMs.flatMap { r in s.restoreFirstResponseMs.map { $0 - r } } }, digits: 1)) | "
                    + "\(fmt(m { $0.restorePreparationMs }, digits: 1)) | "
                    + "\(fmt(m { s in s.restorePreparationMs.flatMap { p in s.restoreFirstResponseMs.map { $0 + p } } }, digits: 1)) | "
                    + "\(fmt(before, digits: 1)) | \(fmt(after, digits: 1)) | \(fmt(rssBefore, digits: 1)) | \(fmt(rssAfter, digits: 1)) | "
                    + "\(fmt(before.flatMap { b in after.map { b - $0 } }, digits: 1)) | \(xs.count) |"
            )
        }
        if !shims.isEmpty {
            lines += [
                "", "Shim memory per pod (KiB, medians over the cycles; Go's shim: one sample):", "",
                "| workload | zeropod-swift shim RSS running | PSS running | RSS scaled down | containerd-shim-runc-v2 RSS | PSS | RSS ratio ours/Go |",
                "|---|---|---|---|---|---|---|",
            ]
            for r in shims {
                let rr = Self.median(r.running.map { Double($0.rssKiB) })
                let rp = Self.median(r.running.compactMap { $0.pssKiB.map(Double.init) })
                let sd = Self.median(r.scaledDown.map { Double($0.rssKiB) })
                let ratio = rr.flatMap { a in r.goShim.map { String(format: "%.2f", a / Double($0.rssKiB)) } } ?? "n/a"
                lines.append(
                    "| \(r.workload) | \(fmt(rr)) | \(fmt(rp)) | \(fmt(sd)) | \(r.goShim.map { "\($0.rssKiB)" } ?? "n/a") | "
                        + "\(r.goShim?.pssKiB.map { "\($0)" } ?? "n/a") | \(ratio) |"
                )
            }
        }
        // The issue's targets, each with its ratio and verdict.
        var targets: [String] = [
            "",
            "Targets (issue 17: restore → 1st response and checkpoint ≤ 0.5 × runc; ratios of medians in this run):",
            "",
        ]
        func verdict(_ label: String, _ a: Double?, _ b: Double?, _ limit: Double, atMost: Bool) {
            guard let a, let b, b > 0 else {
                targets.append("- \(label): n/a")
                return
            }
            let r = a / b
            let ok = atMost ? r <= limit : r >= limit
            targets.append(
                String(
                    format: "- %@: %.2f (target %@ %.2f) %@",
                    label,
                    r,
                    atMost ? "≤" : "≥",
                    limit,
                    ok ? "met" : String(format: "MISSED by %.0f %%", abs(r / limit - 1) * 100)
                )
            )
        }
        for w in ["busybox", "nginx", "mariadb", "jvm", "wordpress", "pooled"] where workloads.contains(w) {
            verdict(
                "\(w) restore → 1st response zp/runc (preparation excluded: done while scaled down)",
                med(w, zp) { $0.restoreFirstResponseMs },
                med(w, "runc") { $0.restoreFirstResponseMs },
                0.5,
                atMost: true
            )
            verdict(
                "\(w) restore → 1st response zp/runc (preparation included for both)",
                med(w, zp) { s in s.restorePreparationMs.flatMap { p in s.restoreFirstResponseMs.map { $0 + p } } },
                med(w, "runc") { $0.restoreFirstResponseMs },
                0.5,
                atMost: true
            )
            verdict(
                "\(w) checkpoint zp/runc (decision → process gone)",
                med(w, zp) { $0.checkpointMs },
                med(w, "runc") { $0.checkpointMs },
                0.5,
                atMost: true
            )
        }
        if workloads.contains("wordpress+wordpress-db") {
            verdict(
                "cascade zp (wordpress+db) / zp wordpress alone",
                med("wordpress+wordpress-db", zp) { $0.restoreFirstResponseMs },
                med("wordpress", zp) { $0.restoreFirstResponseMs },
                1.3,
                atMost: true
            )
        }
        for l in steady where l.runtime == zp {
            let base = steady.first { $0.workload == l.workload && $0.runtime == "runc" }
            verdict(
                "\(l.workload) steady-state throughput zp/runc",
                l.requestsPerSecond,
                base?.requestsPerSecond,
                0.97,
                atMost: false
            )
        }
        return lines + targets
    }

    /// Writes summary.md, summary.csv and samples.csv (one row per cycle) into `folder`.
    func write(to folder: String) throws {
        func csv(_ rows: [[String]]) -> String {
            rows.map { $0.map { $0.contains(",") ? "\"\($0)\"" : $0 }.joined(separator: ",") }.joined(separator: "\n")
                + "\n"
        }
        try (markdown() + "\n").write(toFile: folder + "/summary.md", atomically: true, encoding: .utf8)
        try csv([Self.summaryHeader] + summaryRows()).write(
            toFile: folder + "/summary.csv",
            atomically: true,
            encoding: .utf8
        )
        let f = { (v: Double?) -> String in v.map { String(format: "%.2f", $0) } ?? "" }
        let header = [
            "workload", "runtime", "cycle", "cold_start_ms", "checkpoint_ms", "restore_ms",
            "restore_first_response_ms", "image_kib", "criu_freezing_ms", "criu_frozen_ms",
            "criu_memdump_ms", "criu_memwrite_ms", "criu_pages_written", "criu_forking_ms", "criu_restore_ms",
            "memory_usage_bytes", "memory_rss_bytes", "memory_after_usage_bytes", "memory_after_rss_bytes",
            "shim_restore_ms",
            "shim_rss_running_kib", "shim_rss_scaled_down_kib", "checkpoint_detail", "restore_detail",
            "shim_checkpoint_ms", "restore_preparation_ms", "deadline_to_gone_ms",
            "second_checkpoint_ms", "second_criu_pages_written", "second_checkpoint_detail",
            "second_restore_first_response_ms",
        ]
        let rows = samples.map { (s: Sample) -> [String] in
            let image: String = s.imageKiB.map { String($0) } ?? ""
            let pages: String = s.criuDump?.pagesWritten.map { String($0) } ?? ""
            let usage: String = s.memory.map { String($0.usage) } ?? ""
            let rss: String = s.memory.map { String($0.rss) } ?? ""
            var row: [String] = [
                s.workload, s.runtime, String(s.cycle), f(s.coldStartMs), f(s.checkpointMs), f(s.restoreMs),
            ]
            row += [f(s.restoreFirstResponseMs), image, f(s.criuDump?.freezingMs), f(s.criuDump?.frozenMs)]
            row += [f(s.criuDump?.memdumpMs), f(s.criuDump?.memwriteMs), pages, f(s.criuRestore?.forkingMs)]
            row += [
                f(s.criuRestore?.restoreMs), usage, rss, s.memoryAfter.map { String($0.usage) } ?? "",
                s.memoryAfter.map { String($0.rss) } ?? "",
            ]
            row += [
                f(s.shimRestoreMs), s.shimRunning.map { String($0.rssKiB) } ?? "",
                s.shimScaledDown.map { String($0.rssKiB) } ?? "",
            ]
            row += [
                (s.checkpointDetail ?? "").replacingOccurrences(of: "\"", with: "'"),
                (s.shimRestoreDetail ?? "").replacingOccurrences(of: "\"", with: "'"),
            ]
            row += [f(s.shimCheckpointMs), f(s.restorePreparationMs), f(s.deadlineToGoneMs)]
            row += [
                f(s.secondCheckpointMs), s.secondCriuDump?.pagesWritten.map { String($0) } ?? "",
                (s.secondCheckpointDetail ?? "").replacingOccurrences(of: "\"", with: "'"),
                f(s.secondRestoreFirstResponseMs),
            ]
            return row
        }
        try csv([header] + rows).write(toFile: folder + "/samples.csv", atomically: true, encoding: .utf8)
        let steadyRows = steady.map { l in
            [
                l.workload, l.runtime, String(format: "%.1f", l.requestsPerSecond), String(format: "%.3f", l.p50),
                String(format: "%.3f", l.p99), "\(l.errors)",
            ]
        }
        try csv([["workload", "runtime", "requests_per_s", "p50_ms", "p99_ms", "errors"]] + steadyRows)
            .write(toFile: folder + "/steady-state.csv", atomically: true, encoding: .utf8)
        let lazyRows = lazy.sorted(by: { $0.key < $1.key }).flatMap { (w, xs) in
            xs.map {
                [
                    w, String($0.cycle), f($0.checkpointMs), String($0.imageKiB), f($0.fullMs), f($0.lazyMs),
                    f($0.daemonStartMs),
                    $0.daemonFinished ? "yes" : "no",
                ]
            }
        }
        if !lazyRows.isEmpty {
            try csv(
                [
                    [
                        "workload", "cycle", "checkpoint_ms", "image_kib", "full_restore_first_response_ms",
                        "lazy_restore_first_response_ms", "lazy_daemon_start_ms", "daemon_finished",
                    ]
                ] + lazyRows
            )
            .write(toFile: folder + "/lazy.csv", atomically: true, encoding: .utf8)
        }
    }
}
