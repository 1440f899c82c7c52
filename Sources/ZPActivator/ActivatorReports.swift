import ZPCore

/// Timestamps of one connection through the activator. Unset stages were not reached.
public struct ConnectionTimings: Sendable, Equatable {
    /// When the activator got the accepted connection.
    public var accepted: ContinuousClock.Instant
    /// When probe inspection decided (probe or forward).
    public var inspected: ContinuousClock.Instant?
    /// When the connection asked for the application (restore or wait for the running one).
    public var restoreRequested: ContinuousClock.Instant?
    /// When the connection to the application was established.
    public var appReachable: ContinuousClock.Instant?
    /// When the first byte from the application was written back to the client.
    public var firstByteBack: ContinuousClock.Instant?
    /// When the connection ended.
    public var closed: ContinuousClock.Instant?

    /// Creates timings that start at `accepted`.
    /// - Parameter accepted: the accept time.
    public init(accepted: ContinuousClock.Instant) {
        self.accepted = accepted
    }

    /// accept → restore requested.
    public var untilRestoreRequested: Duration? { restoreRequested.map { $0 - accepted } }
    /// accept → application reachable.
    public var untilAppReachable: Duration? { appReachable.map { $0 - accepted } }
    /// accept → first byte back.
    public var untilFirstByte: Duration? { firstByteBack.map { $0 - accepted } }
}

/// How a connection ended.
public enum ConnectionOutcome: Sendable, Equatable {
    /// A probe was answered (or, for TCP, accepted and closed) without touching the application.
    case probeAnswered(ProbeKind)
    /// Proxied to the application until both sides closed; byte counts in each direction.
    case proxied(toApp: Int, toClient: Int)
    /// Proxied, then closed because no byte moved for the proxy idle timeout.
    case proxyIdleTimedOut(toApp: Int, toClient: Int)
    /// The connection was closed without reaching the application.
    case failed(ConnectionFailure)
}

/// Why a forwarded connection did not reach (or lost) the application.
public enum ConnectionFailure: Sendable, Equatable {
    /// The restore hook failed; the message is the hook's error.
    case restoreFailed(String)
    /// Connecting to the application was refused or failed until the connect timeout.
    case appUnreachable(String)
    /// A socket error while proxying.
    case proxyError(String)
    /// The activator stopped (task cancelled) while the connection waited or was proxied.
    case shutdown
}

/// One connection's report: which listener, the outcome and the timings.
public struct ConnectionReport: Sendable, Equatable {
    /// The application port this listener stands in for.
    public var appPort: UInt16
    /// Why probe inspection forwarded the connection, or `nil` for probes.
    public var forwardReason: ForwardReason?
    /// How it ended.
    public var outcome: ConnectionOutcome
    /// When each stage was reached.
    public var timings: ConnectionTimings
    /// Who sent the first byte once the connection was proxied; nil when nobody did or it was
    /// not proxied.
    public var firstSpeaker: FirstSpeaker? = nil
}

/// Why a connection was forwarded to the application rather than answered as a probe.
public enum ForwardReason: String, Sendable, Equatable {
    /// The first bytes are not a probe.
    case notAProbe
    /// `probe-buffer-size` bytes arrived without a decision (an oversized request).
    case bufferFull
    /// The client sent too little to decide within the inspection timeout.
    case inspectionTimeout
    /// The client sent nothing and stayed open for the silent-client timeout: a
    /// server-speaks-first protocol waiting for the application's greeting.
    case silentClient
    /// The client closed its side after sending some (undecided) bytes.
    case clientClosedEarly
    /// Probe detection is disabled.
    case probeDetectionDisabled
    /// The port speaks first (`zeropod-swift/speaks-first-ports`, or learned) and the connection
    /// is not a known probe's: forwarded at accept, without the silent window (decision 0055).
    case speaksFirstPort
    /// Queued on a handover listener that the application could not take over (it was cold
    /// started; decision 0046) and handed to the activator: forwarded without inspection.
    case handoverQueue
}

/// Something the caller (the shim) may log or export.
public enum ActivatorEvent: Sendable, Equatable {
    /// A connection asked for the application while it was scaled down: the restore hook runs.
    case restoreStarted
    /// The restore hook returned and the redirect was switched off; `duration` covers both.
    case restoreSucceeded(duration: Duration)
    /// The restore hook threw; held connections were closed. The next connection retries.
    case restoreFailed(message: String, duration: Duration)
    /// Switching the redirect off for `port` failed after a successful restore.
    case redirectDisableFailed(port: UInt16, message: String)
    /// A connection ended.
    case connectionFinished(ConnectionReport)
    /// What a proxied connection showed changed the ports that speak first: the application
    /// wrote first on a port (learned), or the client did on a learned port (unlearned).
    case speaksFirstChanged(SpeakFirstPorts.Change, speaksFirst: Set<UInt16>)
}
