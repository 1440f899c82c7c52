import Foundation

/// How busy the machine is, to measure a restore on a settled node rather than while the kernel
/// still writes 200 pods' images back or other work runs (the density run's restores are compared
/// with a lone pod's, which runs on a quiet node).
enum NodeQuiet {
    /// What a wait found.
    struct Settling: Sendable {
        /// Seconds waited.
        var seconds: Double
        /// Whether the node got quiet (false: the wait gave up).
        var quiet: Bool
        /// Busy share of all CPUs' time in the last window (0...1), and the KiB then waiting for writeback.
        var busy: Double
        var dirtyKiB: Int

        /// `0.6 s (busy 3 %, 120 KiB dirty)` or `gave up after 60 s (busy 54 %, …)`.
        var description: String {
            let how = "busy \(Int((busy * 100).rounded())) %, \(dirtyKiB) KiB dirty"
            let waited = String(format: "%.1f", seconds)
            return quiet ? "\(waited) s (\(how))" : "gave up after \(waited) s (\(how))"
        }
    }

    /// CPU time of all CPUs from `/proc/stat`'s `cpu` line: busy (user, nice, system, irq, softirq,
    /// steal) and in all (busy + idle + iowait), in ticks.
    static func cpuTicks() -> (busy: UInt64, total: UInt64) {
        let line = (readProcFile("/proc/stat") ?? "").split(separator: "\n").first { $0.hasPrefix("cpu ") } ?? ""
        let v = line.split(separator: " ").dropFirst().compactMap { UInt64($0) }
        guard v.count >= 8 else { return (0, 0) }
        let busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7]
        return (busy, busy + v[3] + v[4])
    }

    /// `Dirty + Writeback` of `/proc/meminfo` (KiB).
    static func dirtyKiB() -> Int {
        let text = readProcFile("/proc/meminfo") ?? ""
        return (ProcessFootprint.kib(text, "Dirty") ?? 0) + (ProcessFootprint.kib(text, "Writeback") ?? 0)
    }

    /// Waits until, over a window of 500 ms, at most `busyShare` of all CPUs' time was busy and at
    /// most `dirtyLimitKiB` wait for writeback; gives up after `limit`.
    static func waitUntilQuiet(
        within limit: Duration = .seconds(60),
        busyShare: Double = 0.15,
        dirtyLimitKiB: Int = 32 << 10
    ) -> Settling {
        let start = ContinuousClock.now
        var last = cpuTicks()
        while true {
            usleep(500_000)
            let now = cpuTicks()
            let total = now.total &- last.total
            let busy = total == 0 ? 1 : Double(now.busy &- last.busy) / Double(total)
            last = now
            let dirty = dirtyKiB()
            let waited = seconds(ContinuousClock.now - start)
            if busy <= busyShare && dirty <= dirtyLimitKiB {
                return Settling(seconds: waited, quiet: true, busy: busy, dirtyKiB: dirty)
            }
            if ContinuousClock.now - start >= limit {
                return Settling(seconds: waited, quiet: false, busy: busy, dirtyKiB: dirty)
            }
        }
    }
}
