import ZPSystem

/// What the BPF programs saw of one tracked port.
public struct PortActivity: Sendable, Equatable {
    /// CLOCK_MONOTONIC time (bpf_ktime_get_ns) of the last counted client segment (data, SYN or FIN
    /// from a source that is not a probe source or ignored loopback); nil if none since tracking began.
    public var lastActivity: Duration?
    /// Open server-side TCP connections on the port whose peer passed the same source filter.
    public var openConnections: Int

    /// Creates a value (tests and fakes).
    public init(lastActivity: Duration?, openConnections: Int) {
        self.lastActivity = lastActivity
        self.openConnections = openConnections
    }

    /// Time since the last counted activity, measured against `now` (CLOCK_MONOTONIC, ZPSystem's
    /// `SystemClock.monotonicNow()`); nil if none.
    public func idleTime(now: Duration = SystemClock.monotonicNow()) -> Duration? {
        lastActivity.map { now - $0 }
    }
}
