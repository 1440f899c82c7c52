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
                    case .proxied, .proxyIdleTimedOut, .failed: break
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

    /// Switches the redirect of every port off (one map delete each) and ends their handover
    /// (decision 0046).
    /// - Throws: `BPFError` of the first port that fails.
    public func redirectOff(ports: [UInt16]) throws {
        defer { connections?.endHandover(ports: ports) }
        for port in ports { try redirector.setRedirect(port: port, enabled: false) }
    }

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
