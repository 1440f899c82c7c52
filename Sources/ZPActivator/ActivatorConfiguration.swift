import Glibc
import NIOCore

/// Tells whether a connection the activator accepted is a known probe's, by the connection alone
/// (its addresses and ports), before any byte is read: the node's probe source addresses, or
/// kubelet's own connections as the kernel recorded them when kubelet opened them (decisions 0040,
/// 0052). The activator asks it for connections to ports that speak first, which it forwards
/// without looking at their content. Called on an event loop: it must not block for long (a map
/// lookup is fine).
public protocol ProbeConnectionCheck: Sendable {
    /// Whether the connection from `client` to `server` is a known probe's.
    /// - Parameters:
    ///   - client: the connection's remote end (the client's real address: the redirect keeps it).
    ///   - server: the local end, the address and port the client dialled.
    func isProbe(client: SocketAddress, server: SocketAddress) -> Bool
}

/// A ``ProbeConnectionCheck`` by a fixed set of client addresses (IPv4 also matches its
/// IPv4-mapped IPv6 form); for tests and embedders without ZPBPF.
public struct ProbeSourceAddresses: ProbeConnectionCheck {
    private let addresses: Set<[UInt8]>

    /// - Parameter addresses: numeric IPv4 or IPv6 addresses; ones that do not parse are ignored.
    public init(_ addresses: [String]) {
        self.addresses = Set(addresses.compactMap { try? SocketAddress(ipAddress: $0, port: 0) }.compactMap(Self.mapped))
    }

    /// Whether `client`'s address is one of the given ones.
    public func isProbe(client: SocketAddress, server: SocketAddress) -> Bool {
        Self.mapped(client).map(addresses.contains) ?? false
    }

    /// The 16 address bytes, IPv4 as IPv4-mapped IPv6.
    private static func mapped(_ address: SocketAddress) -> [UInt8]? {
        guard let bytes = address.ipAddressBytes else { return nil }
        if bytes.count == 4 { return [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff] + bytes }
        return bytes
    }
}

extension SocketAddress {
    /// The raw address bytes (4 for IPv4, 16 for IPv6), nil for a unix socket.
    var ipAddressBytes: [UInt8]? {
        switch self {
        case .v4(let a):
            return withUnsafeBytes(of: a.address.sin_addr.s_addr) { Array($0) }
        case .v6(let a):
            return withUnsafeBytes(of: a.address.sin6_addr) { Array($0) }
        case .unixDomainSocket:
            return nil
        }
    }
}

/// Tunables of one activator (one container). Plain values: the shim maps the pod annotations
/// (`probe-buffer-size`, `disable-probe-detection`, `connect-timeout`, `proxy-timeout`) onto it.
public struct ActivatorConfiguration: Sendable, Equatable {
    /// Answer kubelet probes without restoring (`false` = `disable-probe-detection`).
    public var probeDetection: Bool
    /// How many leading bytes of a connection are inspected for a probe (`probe-buffer-size`).
    public var probeBufferSize: Int
    /// How long the activator waits for the client's first bytes before it decides. A client
    /// that closes without data in this time was a TCP probe; one that stays open and silent is
    /// forwarded, so that server-speaks-first protocols wake the application.
    public var inspectionTimeout: Duration
    /// How long a client may stay silent (no byte, not closed) before the activator decides it
    /// is a server-speaks-first client (MySQL, SMTP, SSH ...) and wakes the application. A kubelet
    /// TCP probe closes right after connecting, and an HTTP or gRPC probe sends at once, so this
    /// can be much shorter than `inspectionTimeout`, which bounds a client that sent part of a
    /// request. Measured: with the full 500 ms window every MariaDB wake paid 500 ms.
    public var silentClientTimeout: Duration
    /// How long a probe connection may take to close after the answer was sent.
    public var probeLingerTimeout: Duration
    /// Total time to reach the application after the restore, retrying refused connects
    /// (`connect-timeout`).
    public var connectTimeout: Duration
    /// The proxied connection is closed when no byte moved in either direction for this long
    /// (`proxy-timeout`); `nil` = no limit. Unlike the original (a total limit of 5 s by default,
    /// which cut long first connections), this is an idle limit and off by default.
    public var proxyIdleTimeout: Duration?
    /// The listen backlog of every listening socket (many first connections arrive at once).
    public var backlog: Int32
    /// Ports whose server speaks first (`zeropod-swift/speaks-first-ports`): a connection to one of
    /// them that is not a known probe's is forwarded at once, without waiting for the client's
    /// first bytes or the silent window. Applies only when the activator is given a
    /// ``ProbeConnectionCheck`` (probes must be known by their connection, since their content is
    /// not looked at).
    public var speaksFirstPorts: Set<UInt16>
    /// Whether ports are learned as speaking first from the proxied connections (the application
    /// wrote before the client did) and then treated like ``speaksFirstPorts``; also needs a
    /// ``ProbeConnectionCheck``.
    public var learnsSpeaksFirstPorts: Bool

    /// Creates a configuration; every parameter has the documented default.
    /// - Parameters:
    ///   - probeDetection: default `true`.
    ///   - probeBufferSize: default 1024 bytes; values below 64 are raised to 64.
    ///   - inspectionTimeout: default 500 ms.
    ///   - silentClientTimeout: default 50 ms (never longer than `inspectionTimeout`).
    ///   - probeLingerTimeout: default 1 s.
    ///   - connectTimeout: default 5 s (the original's default).
    ///   - proxyIdleTimeout: default `nil` (no limit).
    ///   - backlog: default 4096.
    ///   - speaksFirstPorts: default none.
    ///   - learnsSpeaksFirstPorts: default `true`.
    public init(
        probeDetection: Bool = true,
        probeBufferSize: Int = 1024,
        inspectionTimeout: Duration = .milliseconds(500),
        silentClientTimeout: Duration = .milliseconds(50),
        probeLingerTimeout: Duration = .seconds(1),
        connectTimeout: Duration = .seconds(5),
        proxyIdleTimeout: Duration? = nil,
        backlog: Int32 = 4096,
        speaksFirstPorts: Set<UInt16> = [],
        learnsSpeaksFirstPorts: Bool = true
    ) {
        self.probeDetection = probeDetection
        self.probeBufferSize = max(64, probeBufferSize)
        self.inspectionTimeout = inspectionTimeout
        self.silentClientTimeout = min(silentClientTimeout, inspectionTimeout)
        self.probeLingerTimeout = probeLingerTimeout
        self.connectTimeout = connectTimeout
        self.proxyIdleTimeout = proxyIdleTimeout
        self.backlog = backlog
        self.speaksFirstPorts = speaksFirstPorts
        self.learnsSpeaksFirstPorts = learnsSpeaksFirstPorts
    }
}
