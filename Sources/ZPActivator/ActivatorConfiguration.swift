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
    public init(
        probeDetection: Bool = true,
        probeBufferSize: Int = 1024,
        inspectionTimeout: Duration = .milliseconds(500),
        silentClientTimeout: Duration = .milliseconds(50),
        probeLingerTimeout: Duration = .seconds(1),
        connectTimeout: Duration = .seconds(5),
        proxyIdleTimeout: Duration? = nil,
        backlog: Int32 = 4096
    ) {
        self.probeDetection = probeDetection
        self.probeBufferSize = max(64, probeBufferSize)
        self.inspectionTimeout = inspectionTimeout
        self.silentClientTimeout = min(silentClientTimeout, inspectionTimeout)
        self.probeLingerTimeout = probeLingerTimeout
        self.connectTimeout = connectTimeout
        self.proxyIdleTimeout = proxyIdleTimeout
        self.backlog = backlog
    }
}
