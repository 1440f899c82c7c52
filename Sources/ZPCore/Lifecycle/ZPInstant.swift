// Time as a value: the lifecycle state machine never reads a clock. The driver reads one monotonic
// clock (CLOCK_MONOTONIC, the clock behind the kernel's `bpf_ktime_get_ns`, so activity stamps
// written by eBPF programs compare directly) and passes instants in with each event.

/// A point on a monotonic clock, in nanoseconds since an arbitrary origin.
///
/// `ZPInstant` carries no clock of its own: the caller reads `CLOCK_MONOTONIC` (or takes a
/// nanosecond stamp the kernel wrote with `bpf_ktime_get_ns`, which uses the same clock) and wraps
/// it. Two instants compare only when they come from the same clock on the same boot.
public struct ZPInstant: Sendable, Hashable, Comparable, CustomStringConvertible {
    /// Nanoseconds since the clock's origin.
    public var nanoseconds: UInt64

    /// Wraps a nanosecond reading of a monotonic clock.
    /// - Parameter nanoseconds: the reading, e.g. `tv_sec * 1e9 + tv_nsec` of `CLOCK_MONOTONIC`.
    public init(nanoseconds: UInt64) {
        self.nanoseconds = nanoseconds
    }

    /// The clock's origin (nanosecond 0).
    public static let zero = ZPInstant(nanoseconds: 0)

    /// The instant `duration` after (or, if negative, before) this one, clamped to the clock's range.
    /// - Parameter duration: the offset; sub-nanosecond parts are dropped.
    public func advanced(by duration: Duration) -> ZPInstant {
        let delta = duration.zpNanoseconds
        if delta >= 0 {
            let (sum, overflow) = nanoseconds.addingReportingOverflow(UInt64(delta))
            return ZPInstant(nanoseconds: overflow ? .max : sum)
        }
        let magnitude = delta.magnitude
        return ZPInstant(nanoseconds: magnitude > nanoseconds ? 0 : nanoseconds - magnitude)
    }

    /// The signed time from this instant to `other` (negative when `other` is earlier).
    /// - Parameter other: the later (or earlier) instant.
    public func duration(to other: ZPInstant) -> Duration {
        if other.nanoseconds >= nanoseconds {
            return .nanoseconds(Int64(clamping: other.nanoseconds - nanoseconds))
        }
        return .nanoseconds(-Int64(clamping: nanoseconds - other.nanoseconds))
    }

    /// Orders instants by their nanosecond value.
    public static func < (lhs: ZPInstant, rhs: ZPInstant) -> Bool {
        lhs.nanoseconds < rhs.nanoseconds
    }

    /// The reading in seconds with nanosecond precision, e.g. `12.000000500s`.
    public var description: String {
        let fraction = String(nanoseconds % 1_000_000_000)
        let padded = String(repeating: "0", count: 9 - fraction.count) + fraction
        return "\(nanoseconds / 1_000_000_000).\(padded)s"
    }
}

extension Duration {
    /// The duration in whole nanoseconds, truncated toward zero and clamped to `Int64`.
    var zpNanoseconds: Int64 {
        let (seconds, attoseconds) = components
        let (scaled, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
        if overflow { return seconds < 0 ? .min : .max }
        let (sum, overflow2) = scaled.addingReportingOverflow(attoseconds / 1_000_000_000)
        if overflow2 { return seconds < 0 ? .min : .max }
        return sum
    }
}
