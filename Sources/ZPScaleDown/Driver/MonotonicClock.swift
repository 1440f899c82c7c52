import ZPBPF
import ZPCore

/// `CLOCK_MONOTONIC`, the clock of the eBPF activity stamps (``ScaleDownClock``).
public struct MonotonicClock: ScaleDownClock {
    /// The clock.
    public init() {}

    /// Now, from `clock_gettime(CLOCK_MONOTONIC)`.
    public func now() -> ZPInstant {
        let (seconds, attoseconds) = PortActivity.monotonicNow().components
        return ZPInstant(
            nanoseconds: UInt64(max(0, seconds)) * 1_000_000_000 + UInt64(max(0, attoseconds / 1_000_000_000))
        )
    }

    /// Sleeps until `deadline` on this clock (a relative sleep: both run at the same rate).
    /// - Throws: `CancellationError` when the task is cancelled first.
    public func sleep(until deadline: ZPInstant) async throws {
        let left = now().duration(to: deadline)
        if left > .zero { try await Task.sleep(for: left) }
        try Task.checkCancellation()
    }
}
