import Logging
import NIOCore
import SystemPackage
import ZPActivator
import ZPBPF
import ZPCore

/// The driver's ``ScaleDownRedirect`` for a pod: ZPBPF's ``PodRedirector`` (sk_lookup steering,
/// activity stamps) and one ``PodActivator`` per container, listening inside the pod's network
/// namespace (decisions 0004, 0005).
public struct PodRedirect: ScaleDownRedirect {
    /// The pod's redirector (one per pod netns, shared by its containers).
    public let redirector: PodRedirector
    /// The pod's network namespace.
    public let namespacePath: FilePath
    /// The activator's settings (probe detection, connect timeout, …).
    public let configuration: ActivatorConfiguration
    /// The event loops of the activator's sockets.
    public let group: any EventLoopGroup
    /// Where the activator's reports are logged.
    public let logger: Logger
    /// The container's kept connections and handover listeners (decisions 0045, 0046), if any.
    public let connections: ContainerConnections?

    /// A redirect for one container of the pod.
    /// - Parameters:
    ///   - redirector: the pod's redirector.
    ///   - namespacePath: the pod's network namespace (the one `redirector` is attached to).
    ///   - configuration: the activator's settings.
    ///   - group: event loops for the activator's sockets.
    ///   - logger: restore failures and probe answers of the activator are logged here.
    ///   - connections: the container's kept connections and handover listeners.
    public init(
        redirector: PodRedirector,
        namespacePath: FilePath,
        configuration: ActivatorConfiguration,
        group: any EventLoopGroup,
        logger: Logger,
        connections: ContainerConnections? = nil
    ) {
        self.redirector = redirector
        self.namespacePath = namespacePath
        self.configuration = configuration
        self.group = group
        self.logger = logger
        self.connections = connections
    }

    /// The pod's network namespace path.
    public var location: String { namespacePath.string }

    /// ``PodActivator/make(namespacePath:ports:redirector:configuration:startsScaledDown:group:events:restore:)``
    /// with the driver's connection hook as the restore.
    /// - Throws: ``PodActivatorError`` naming the step and port.
    public func makeActivator(
        ports: [UInt16],
        connection: @escaping @Sendable () async throws -> Void
    ) async throws -> any ScaleDownActivator {
        let log = logger
        let activator = try await PodActivator.make(
            namespacePath: namespacePath,
            ports: ports,
            redirector: redirector,
            configuration: configuration,
            group: group,
            events: { event in
                switch event {
                case .restoreFailed(let message, _): log.warning("activator: restore failed: \(message)")
                case .redirectDisableFailed(let port, let message):
                    log.warning("activator: redirect off failed for port \(port): \(message)")
                case .connectionFinished(let report):
                    switch report.outcome {
                    case .probeAnswered(let kind): log.debug("activator answered probe \(kind)")
                    case .proxied, .proxyIdleTimedOut:
                        // Only connections that arrived while the container was down come here.
                        log.info("activator: \(Self.describe(report))")
                    case .failed: break
                    }
                case .speaksFirstChanged(let change, let ports):
                    let now = ports.sorted().map(String.init).joined(separator: ",")
                    switch change {
                    case .learned(let port):
                        log.info(
                            "port \(port) learned as speaking first (the application wrote before the client): later restores start at the connection (speaks first now: \(now))"
                        )
                    case .unlearned(let port):
                        log.info(
                            "port \(port) no longer speaks first (a client sent before the application wrote; speaks first now: \(now.isEmpty ? "none" : now))"
                        )
                    case .none: break
                    }
                case .restoreStarted, .restoreSucceeded: break
                }
            },
            connections: connections,
            restore: connection
        )
        if let problem = activator.connectionsProblem {
            log.warning("wake events unavailable, so no listener handover (the activator proxies): \(problem)")
        }
        return activator
    }

    /// `connection to port 2525 proxied (forwarded: speaksFirstPort, first byte from the
    /// application; restore requested after 0.1 ms, application reachable after 61.0 ms, first byte
    /// back after 63.2 ms)`.
    static func describe(_ report: ConnectionReport) -> String {
        func ms(_ duration: Duration?) -> String {
            guard let duration else { return "-" }
            let (seconds, attoseconds) = duration.components
            let value = Double(seconds) * 1000 + Double(attoseconds) / 1e15
            return "\((value * 10).rounded() / 10) ms"
        }
        let speaker = report.firstSpeaker.map { "first byte from the \($0.rawValue)" } ?? "no byte either way"
        return "connection to port \(report.appPort) proxied (forwarded: "
            + "\(report.forwardReason.map(\.rawValue) ?? "-"), \(speaker); restore requested after "
            + "\(ms(report.timings.untilRestoreRequested)), application reachable after "
            + "\(ms(report.timings.untilAppReachable)), first byte back after \(ms(report.timings.untilFirstByte)))"
    }

    /// Switches the redirect of every port off (one map delete each) and ends their handover
    /// (decision 0046).
    /// - Throws: `BPFError` of the first port that fails.
    public func redirectOff(ports: [UInt16]) throws {
        defer { connections?.endHandover(ports: ports) }
        for port in ports { try redirector.setRedirect(port: port, enabled: false) }
    }

    /// ``ContainerConnections/settleWidenedListeners(now:force:)``.
    public func settleRestoredListeners() {
        connections?.settleWidenedListeners()
    }

    /// ``ContainerConnections/hasWidenedListeners``.
    public var hasRestoredListenersToSettle: Bool { connections?.hasWidenedListeners ?? false }

    /// The newest stamp of `zp_activity` over `ports` and the sum of their open connections; ports
    /// whose entry cannot be read count as idle.
    public func activity(ports: [UInt16]) -> (lastActivity: ZPInstant?, openConnections: Int) {
        var last: ZPInstant?
        var open = 0
        for port in ports {
            guard let activity = try? redirector.activity(port: port) else { continue }
            open += activity.openConnections
            if let stamp = activity.lastActivity {
                let (seconds, attoseconds) = stamp.components
                let instant = ZPInstant(
                    nanoseconds: UInt64(max(0, seconds)) * 1_000_000_000 + UInt64(max(0, attoseconds / 1_000_000_000))
                )
                if last.map({ instant > $0 }) ?? true { last = instant }
            }
        }
        return (last, open)
    }
}

extension PodActivator: ScaleDownActivator {
    /// ``applicationScaledDown()``: re-arms the single flight, then steers the ports to it.
    /// - Throws: ``PodActivatorError`` (`.enableRedirect`); the redirects are then off again.
    public func redirectOn() throws {
        try applicationScaledDown()
    }
}
