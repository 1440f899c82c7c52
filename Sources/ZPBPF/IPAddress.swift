import Glibc

/// An IPv4 or IPv6 address as the BPF maps store it: 16 bytes, IPv4 as IPv4-mapped IPv6
/// (`::ffff:a.b.c.d`), so `10.0.0.1` and `::ffff:10.0.0.1` are the same source.
public struct IPAddress: Sendable, Hashable, CustomStringConvertible {
    /// The 16 bytes in network order.
    public let bytes: [UInt8]

    /// Parses dotted IPv4 (`10.0.0.1`) or IPv6 text (`fd00::1`, `::ffff:10.0.0.1`, via inet_pton);
    /// nil when `text` is neither.
    public init?(_ text: String) {
        var v6 = in6_addr()
        if inet_pton(AF_INET6, text, &v6) == 1 {
            bytes = withUnsafeBytes(of: &v6) { Array($0) }
            return
        }
        var v4 = in_addr()
        if inet_pton(AF_INET, text, &v4) == 1 {
            bytes = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff] + withUnsafeBytes(of: &v4) { Array($0) }
            return
        }
        return nil
    }

    /// True for IPv4 addresses (stored IPv4-mapped).
    public var isIPv4: Bool { bytes[0..<10].allSatisfy { $0 == 0 } && bytes[10] == 0xff && bytes[11] == 0xff }

    /// The usual text form: dotted quad for IPv4, inet_ntop's form for IPv6.
    public var description: String {
        if isIPv4 { return bytes[12...].map { String($0) }.joined(separator: ".") }
        var v6 = in6_addr()
        withUnsafeMutableBytes(of: &v6) { $0.copyBytes(from: bytes) }
        var buffer = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        _ = inet_ntop(AF_INET6, &v6, &buffer, socklen_t(buffer.count))
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

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

    /// Time since the last counted activity, measured against `now` (CLOCK_MONOTONIC); nil if none.
    public func idleTime(now: Duration = PortActivity.monotonicNow()) -> Duration? {
        lastActivity.map { now - $0 }
    }

    /// The current CLOCK_MONOTONIC reading, the clock of `lastActivity`.
    public static func monotonicNow() -> Duration {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return .seconds(ts.tv_sec) + .nanoseconds(ts.tv_nsec)
    }
}
