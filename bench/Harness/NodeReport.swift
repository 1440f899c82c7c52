import Foundation

/// Markdown for the node measurements (memory, shim start, density).
enum NodeReport {
    private static func med(_ xs: [Double]) -> Double? { Report.median(xs) }
    private static func f(_ v: Double?, _ digits: Int = 0) -> String {
        v.map { String(format: "%.\(digits)f", $0) } ?? "n/a"
    }
    private static func mib(_ kib: Double?) -> String { kib.map { String(format: "%.2f", $0 / 1024) } ?? "n/a" }
    private static func range(_ xs: [Double], _ digits: Int = 1) -> String {
        guard let m = med(xs), let lo = xs.min(), let hi = xs.max() else { return "n/a" }
        return String(format: "%.\(digits)f [%.\(digits)f–%.\(digits)f]", m, lo, hi)
    }
    private static func ratio(_ a: Double?, _ b: Double?) -> String {
        guard let a, let b, b > 0 else { return "n/a" }
        return String(format: "%.2f", a / b)
    }
    private static func verdict(_ r: Double?, _ limit: Double) -> String {
        guard let r else { return "n/a" }
        return r <= limit ? "met" : String(format: "MISSED by %.0f %%", (r / limit - 1) * 100)
    }

    /// The shim memory tables: per shim, per pod and where our shim's memory goes.
    static func memory(_ m: NodeRuns.MemoryResult) -> [String] {
        let o = m.ours
        let r = m.runc
        let oRSS = med(o.map { Double($0.shim.rssKiB) })
        let rRSS = med(r.map { Double($0.shim.rssKiB) })
        let oPSS = med(o.map { Double($0.shim.pssKiB) })
        let rPSS = med(r.map { Double($0.shim.pssKiB) })
        let oPriv = med(o.map { Double($0.shim.privateKiB) })
        let rPriv = med(r.map { Double($0.shim.privateKiB) })
        let criuPSS = med(o.map { Double($0.criu.map(\.pssKiB).reduce(0, +)) })
        let criuRSS = med(o.map { Double($0.criu.map(\.rssKiB).reduce(0, +)) })
        let criuPriv = med(o.map { Double($0.criu.map(\.privateKiB).reduce(0, +)) })
        let bpf = med(o.map { Double($0.bpfBytes) / 1024 })
        let sockO = med(o.map { Double($0.sockets) })
        let sockR = med(r.map { Double($0.sockets) })
        let sockKO = med(o.map { Double($0.socketBytes) / 1024 })
        let sockKR = med(r.map { Double($0.socketBytes) / 1024 })
        let totalO = med(o.map { Double($0.totalKiB) })
        let totalR = med(r.map { Double($0.totalKiB) })
        let pssRatio = oPSS.flatMap { a in rPSS.map { a / $0 } }
        var lines = [
            "",
            "### Shim memory: \(m.pods) pods under zeropod-swift (scaled down) beside \(m.pods) under containerd-shim-runc-v2 (running), one private containerd",
            "",
            "containerd and its containerd-shim-runc-v2: `\(m.containerd)`; our shim: `\(m.shimDir)`; CRIU: `\(m.criu)`. "
                + "Medians over the pods, MiB (PSS divides shared pages among all processes mapping them).", "",
            "| per pod | zeropod-swift (scaled down) | containerd-shim-runc-v2 (running) | ratio ours/runc | target |",
            "|---|---|---|---|---|",
            "| shim RSS | \(mib(oRSS)) | \(mib(rRSS)) | \(ratio(oRSS, rRSS)) | (reported) |",
            "| shim PSS | \(mib(oPSS)) | \(mib(rPSS)) | \(ratio(oPSS, rPSS)) | ≤ 1.0: \(verdict(pssRatio, 1.0)) |",
            "| shim private (clean + dirty) | \(mib(oPriv)) | \(mib(rPriv)) | \(ratio(oPriv, rPriv)) | |",
            "| shim threads | \(f(med(o.map { Double($0.shim.threads) }))) | \(f(med(r.map { Double($0.shim.threads) }))) | | |",
            "| CRIU restore worker prepared while scaled down: PSS (RSS, private) | \(mib(criuPSS)) (\(mib(criuRSS)), \(mib(criuPriv))) | — | | |",
            "| BPF maps, programs and BTF (kernel) | \(mib(bpf)) | — | | |",
            "| sockets held by the shim (kernel, estimated) | \(f(sockO)) (\(mib(sockKO))) | \(f(sockR)) (\(mib(sockKR))) | | |",
            "| **node memory per pod** (PSS of shim + CRIU + kernel objects) | **\(mib(totalO))** | \(mib(totalR)) (shim + sockets) | \(ratio(totalO, totalR)) | ≤ 4 MiB: \(verdict(totalO.map { $0 / 4096 }, 1.0)) |",
        ]
        lines += [
            "", "Where it goes (KiB, medians over the pods; shared = RSS − private):", "",
            "| part | our shim RSS | PSS | private | our CRIU worker RSS | PSS | private | runc shim RSS | PSS | private |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for part in ProcessFootprint.Part.allCases {
            let cells = [o.map(\.shim), o.compactMap(\.criu.first), r.map(\.shim)].flatMap { fps -> [String] in
                let u = fps.map { $0.parts[part] ?? ProcessFootprint.Usage() }
                return [
                    f(med(u.map { Double($0.rss) })), f(med(u.map { Double($0.pss) })),
                    f(med(u.map { Double($0.privateKiB) })),
                ]
            }
            lines.append("| \(part.rawValue) | " + cells.joined(separator: " | ") + " |")
        }
        let totals = [o.map(\.shim), o.compactMap(\.criu.first), r.map(\.shim)].flatMap { fps -> [String] in
            [
                f(med(fps.map { Double($0.rssKiB) })), f(med(fps.map { Double($0.pssKiB) })),
                f(med(fps.map { Double($0.privateKiB) })),
            ]
        }
        lines.append("| total (smaps_rollup) | " + totals.joined(separator: " | ") + " |")
        return lines
    }

    /// The shim start rows.
    static func start(_ s: NodeRuns.StartResult) -> [String] {
        [
            "", "### Shim start (busybox pod, \(s.runOurs.count) interleaved trials, ms, median [min–max])", "",
            "| measure | containerd-shim-zeropod-v2 | containerd-shim-runc-v2 | ratio ours/runc |",
            "|---|---|---|---|",
            "| `ctr run -d` → returned (shim `start`, connect, Create, Start: task ready) | \(range(s.runOurs)) | \(range(s.runRunc)) | \(ratio(med(s.runOurs), med(s.runRunc))) |",
            "| `start` command alone (exec → address printed, daemon started) | \(range(s.startOurs)) | \(range(s.startRunc)) | \(ratio(med(s.startOurs), med(s.startRunc))) |",
        ]
    }

    /// The density rows.
    static func density(_ d: NodeRuns.DensityResult) -> [String] {
        let total = d.footprints.map { Double($0.totalKiB) }.reduce(0, +)
        let perPod = med(d.footprints.map { Double($0.totalKiB) })
        let lone = med(d.loneFirstResponse)
        let loneFirst = med(d.loneShimFirst)
        let one = med(d.oneOfMany)
        let oneRatio = one.flatMap { a in loneFirst.map { a / $0 } }
        let oneRatioAllCycles = one.flatMap { a in lone.map { a / $0 } }
        return [
            "", "### Density: \(d.pods) busybox pods scaled down at once (one private containerd, one netns each)", "",
            "| measure | value | target |", "|---|---|---|",
            "| node memory, all \(d.pods) pods scaled down: Σ (shim PSS + CRIU worker PSS + BPF + sockets) | \(mib(total)) MiB (\(d.footprints.count) pods read) | |",
            "| per pod, median | \(mib(perPod)) MiB | ≤ 4 MiB: \(verdict(perPod.map { $0 / 4096 }, 1.0)) |",
            "| shim PSS / CRIU worker PSS / BPF / sockets per pod, medians (KiB) | \(f(med(d.footprints.map { Double($0.shim.pssKiB) }))) / "
                + "\(f(med(d.footprints.map { Double($0.criu.map(\.pssKiB).reduce(0, +)) }))) / "
                + "\(f(med(d.footprints.map { Double($0.bpfBytes) / 1024 }))) / \(f(med(d.footprints.map { Double($0.socketBytes) / 1024 }))) | |",
            "| node-wide MemTotal − MemAvailable: before → all scaled down (whole machine, noisy) | \(d.nodeInUseBefore / 1024) → \(d.nodeInUseScaledDown / 1024) MiB (+\((d.nodeInUseScaledDown - d.nodeInUseBefore) / 1024) MiB, \(f(Double(d.nodeInUseScaledDown - d.nodeInUseBefore) / 1024 / Double(max(1, d.pods)), 2)) MiB per pod) | |",
            "| images on disk per pod (in the page cache until reclaimed) | \(f(med(d.imageKiB.map(Double.init)))) KiB | |",
            "| time to scale all \(d.pods) down: first idle deadline → last pod gone (deadlines spread over \(f(d.deadlineSpreadSeconds, 1)) s) | \(f(d.scaleAllDownSeconds, 1)) s | |",
            "| shim checkpoint times meanwhile (ms, median [min–max]) | \(range(d.checkpointMs, 0)) | |",
            "| restore → 1st response, lone pod (\(d.loneFirstResponse.count) cycles) | \(range(d.loneFirstResponse)) ms | |",
            "| restore → 1st response, lone, the first restore of its shim (\(d.loneShimFirst.count) pods) | \(range(d.loneShimFirst)) ms | |",
            "| restore → 1st response, one pod while \(d.pods - 1) stay scaled down (\(d.oneOfMany.count) pods, each its shim's first restore) | \(range(d.oneOfMany)) ms | ≤ 1.2 × lone (first restores): \(f(oneRatio, 2)) \(verdict(oneRatio, 1.2)); × the lone pod's cycles: \(f(oneRatioAllCycles, 2)) |",
            "| \(d.simultaneous.count) pods woken at the same moment: slowest (median) first response | \(f(d.simultaneous.max(), 1)) (\(f(med(d.simultaneous), 1))) ms | |",
            "| node settled before the measurements (CPU ≤ 15 % busy and ≤ 32 MiB dirty over 500 ms; at most 60 s): lone pod / among the scaled-down pods | \(d.loneSettling.map(\.description).joined(separator: "; ")) / \(d.oneOfManySettling.map(\.description).joined(separator: "; ")) | |",
        ]
            + d.failures.map { "FAILED: \($0)" }
    }
}
