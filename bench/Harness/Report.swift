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

    /// One progress line for the console.
    var summaryLine: String {
        func f(_ v: Double?) -> String { v.map { String(format: "%.1f", $0) } ?? "-" }
        return "cold \(f(coldStartMs)) ms, checkpoint \(f(checkpointMs)) ms, restore \(f(restoreMs)) ms, "
            + "restore→1st \(f(restoreFirstResponseMs)) ms, image \(imageKiB.map { String($0 / 1024) } ?? "-") MiB"
            + ", CRIU frozen \(f(criuDump?.frozenMs)) ms, CRIU restore \(f(criuRestore?.restoreMs)) ms"
    }
}

/// Medians per workload and runtime, written as markdown and CSV.
struct Report {
    var samples: [Sample]
    var failures: [String]
    var cycles: Int
    var runtimes: [String]

    /// The runtime whose numbers the issue's targets compare against runc's.
    static let zeropod = "zeropod-swift"

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
    /// (`n/a` until that runtime takes part) and their ratios to runc.
    func summaryRows() -> [[String]] {
        workloads.map { w in
            let image = med(w, "runc") { $0.imageKiB.map { Double($0) / 1024 } }
            let cold = med(w, "runc") { $0.coldStartMs }
            let ck = med(w, "runc") { $0.checkpointMs }
            let rs = med(w, "runc") { $0.restoreMs }
            let rf = med(w, "runc") { $0.restoreFirstResponseMs }
            let zck = med(w, Self.zeropod) { $0.checkpointMs }
            let zrf = med(w, Self.zeropod) { $0.restoreFirstResponseMs }
            let frozen = med(w, "runc") { $0.criuDump?.frozenMs }
            let criuRestore = med(w, "runc") { $0.criuRestore?.restoreMs }
            let ratio = { (a: Double?, b: Double?) -> String in
                guard let a, let b, b > 0 else { return "n/a" }
                return String(format: "%.2f", a / b)
            }
            let n = samples.filter { $0.workload == w && $0.runtime == "runc" }.count
            return [w, fmt(image, digits: 1), fmt(cold), fmt(ck), fmt(rs), fmt(rf), fmt(frozen), fmt(criuRestore),
                    fmt(zck), fmt(zrf), ratio(zck, ck), ratio(zrf, rf), "\(n)"]
        }
    }

    static let summaryHeader = [
        "workload", "image MiB", "cold start → 1st response", "runc checkpoint", "runc restore -d",
        "runc restore → 1st response", "CRIU frozen (dump)", "CRIU restore_time",
        "zeropod-swift checkpoint", "zeropod-swift restore → 1st via activator",
        "checkpoint ratio zp/runc", "restore→1st ratio zp/runc", "cycles",
    ]

    /// The summary as a markdown table (milliseconds unless the header says otherwise).
    func markdown() -> String {
        var lines = ["| " + Self.summaryHeader.joined(separator: " | ") + " |",
                     "|" + String(repeating: "---|", count: Self.summaryHeader.count)]
        for row in summaryRows() { lines.append("| " + row.joined(separator: " | ") + " |") }
        lines.append("")
        lines.append("Medians of \(cycles) cycles, milliseconds; runtimes measured: \(runtimes.joined(separator: ", ")).")
        for f in failures { lines.append("FAILED: \(f)") }
        return lines.joined(separator: "\n")
    }

    /// Writes summary.md, summary.csv and samples.csv (one row per cycle) into `folder`.
    func write(to folder: String) throws {
        func csv(_ rows: [[String]]) -> String {
            rows.map { $0.map { $0.contains(",") ? "\"\($0)\"" : $0 }.joined(separator: ",") }.joined(separator: "\n") + "\n"
        }
        try (markdown() + "\n").write(toFile: folder + "/summary.md", atomically: true, encoding: .utf8)
        try csv([Self.summaryHeader] + summaryRows()).write(toFile: folder + "/summary.csv", atomically: true, encoding: .utf8)
        let f = { (v: Double?) in v.map { String(format: "%.2f", $0) } ?? "" }
        let header = ["workload", "runtime", "cycle", "cold_start_ms", "checkpoint_ms", "restore_ms",
                      "restore_first_response_ms", "image_kib", "criu_freezing_ms", "criu_frozen_ms",
                      "criu_memdump_ms", "criu_memwrite_ms", "criu_pages_written", "criu_forking_ms", "criu_restore_ms"]
        let rows = samples.map { s in
            [s.workload, s.runtime, "\(s.cycle)", f(s.coldStartMs), f(s.checkpointMs), f(s.restoreMs),
             f(s.restoreFirstResponseMs), s.imageKiB.map(String.init) ?? "", f(s.criuDump?.freezingMs),
             f(s.criuDump?.frozenMs), f(s.criuDump?.memdumpMs), f(s.criuDump?.memwriteMs),
             s.criuDump?.pagesWritten.map(String.init) ?? "", f(s.criuRestore?.forkingMs), f(s.criuRestore?.restoreMs)]
        }
        try csv([header] + rows).write(toFile: folder + "/samples.csv", atomically: true, encoding: .utf8)
    }
}
