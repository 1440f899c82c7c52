import ZPCore
import ZPSystem

/// `CLOCK_MONOTONIC`, the clock of the eBPF activity stamps (``ScaleDownClock``).
public struct MonotonicClock: ScaleDownClock {
    /// The clock.
    public init() {}

    /// Now, from `clock_gettime(CLOCK_MONOTONIC)`.
    public func now() -> ZPInstant {
        ZPInstant(nanoseconds: SystemClock.monotonicNanoseconds())
    }

    /// Sleeps until `deadline` on this clock (a relative sleep: both run at the same rate).
    /// - Throws: `CancellationError` when the task is cancelled first.
    public func sleep(until deadline: ZPInstant) async throws {
        let left = now().duration(to: deadline)
        if left > .zero { try await Task.sleep(for: left) }
        try Task.checkCancellation()
    }
}
