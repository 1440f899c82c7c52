#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The kernel clocks the project reads directly.
///
/// `CLOCK_MONOTONIC` is the clock of `bpf_ktime_get_ns`, so the eBPF activity stamps and the
/// scale-down driver's idle deadlines compare without conversion. (Swift's `ContinuousClock` is
/// `CLOCK_BOOTTIME` on Linux, which runs ahead of it after a suspend.)
public enum SystemClock {
    /// The current `CLOCK_MONOTONIC` reading, as time since an unspecified start (boot).
    public static func monotonicNow() -> Duration {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return .seconds(ts.tv_sec) + .nanoseconds(ts.tv_nsec)
    }

    /// The current `CLOCK_MONOTONIC` reading in nanoseconds.
    public static func monotonicNanoseconds() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }

    /// Nanoseconds since the Unix epoch (`CLOCK_REALTIME`), for timestamps that leave the
    /// process (containerd events, exit times, status records).
    public static func realtimeNanoseconds() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Int64(ts.tv_sec) * 1_000_000_000 + Int64(ts.tv_nsec)
    }
}

/// A duration as milliseconds with one decimal, e.g. `"84.1"` for 84.06 ms (half away from zero),
/// for figures in logs and reports. The unit is the caller's to add.
/// - Parameter duration: the duration (negative ones get a leading `-`).
public func milliseconds(_ duration: Duration) -> String {
    let (seconds, attoseconds) = duration.components
    let ms = Double(seconds) * 1000 + Double(attoseconds) / 1e15
    let tenths = Int64((ms * 10).rounded())  // tenths of a millisecond, half away from zero
    let sign = tenths < 0 ? "-" : ""
    let magnitude = tenths.magnitude
    return "\(sign)\(magnitude / 10).\(magnitude % 10)"
}
