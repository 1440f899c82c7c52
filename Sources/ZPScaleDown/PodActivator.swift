import NIOCore
import NIOPosix
import SystemPackage
import ZPActivator
import ZPBPF
import ZPSystem

/// Why a ``PodActivator`` could not be set up or armed: the step, the pod namespace, the
/// application port (when one is concerned) and the underlying reason.
public struct PodActivatorError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The step that failed.
    public enum Step: String, Sendable, Equatable {
        /// The port list is empty, has duplicates or port 0, or exceeds ``PodRedirector/maxPorts``.
        case validatePorts = "validate ports"
        /// Creating the activator's listening socket inside the pod namespace.
        case makeListener = "make the activator's listener"
        /// Putting the listening socket into the redirector's SOCKHASH.
        case registerListener = "register the listener in the redirector"
        /// Starting activity tracking for the port.
        case trackPort = "track the port's activity"
        /// Adopting the listening sockets into the activator (NIO).
        case startActivator = "start the activator"
        /// Switching the redirect on after a scale-down.
        case enableRedirect = "switch the redirect on"
    }

    /// The step that failed.
    public var step: Step
    /// The pod's network namespace path.
    public var namespacePath: String
    /// The application port concerned, if any.
    public var port: UInt16?
    /// The underlying error, as text.
    public var reason: String

    /// Creates an error value.
    /// - Parameters:
    ///   - step: what failed.
    ///   - namespacePath: the pod namespace.
    ///   - port: the application port concerned, if any.
    ///   - reason: why.
    public init(step: Step, namespacePath: String, port: UInt16?, reason: String) {
        self.step = step
        self.namespacePath = namespacePath
        self.port = port
        self.reason = reason
    }

    /// `pod /var/run/netns/x, port 8080: register the listener in the redirector failed: …`.
    public var description: String {
        "pod \(namespacePath)\(port.map { ", port \($0)" } ?? ""): \(step.rawValue) failed: \(reason)"
    }
}

/// One pod's activator behind ZPBPF's redirect: the glue the shim uses.
///
/// ``make(namespacePath:ports:redirector:configuration:startsScaledDown:group:events:restore:)``
/// creates one dual-stack listening socket per application port inside the pod's network
/// namespace (``PodRedirector/makeListener(inNamespaceAt:port:backlog:)``, on a free port),
/// registers each in the redirector's SOCKHASH for its application port, starts activity
/// tracking for the ports, and hands the sockets to an ``Activator`` that dials the application
/// with sockets made in the same namespace (``PodNamespaceSockets``) and switches the redirect
/// off through ``BPFRedirectControl`` once the restore hook returned.
///
/// Lifecycle, as the shim drives it:
/// 1. `make` when the container starts (the redirector's load and attach take tens of ms: keep
///    them off the scale-down path); redirects are off, the application runs.
/// 2. Run ``run()`` in the shim's task group for the container's life.
/// 3. After each checkpoint: ``applicationScaledDown()`` re-arms the single-flight restore, then
///    switches every port's redirect on.
/// 4. The first real connection restores; the activator switches the redirects off; later
///    connections reach the application directly, with no proxy in the path.
///
/// The redirector is not owned: the shim keeps (and eventually removes) it. The listening
/// sockets are owned by the activator and closed when ``run()`` returns; the kernel then drops
/// their SOCKHASH entries.
public final class PodActivator: Sendable {
    /// The activator (probe answers, single-flight restore, proxy).
    public let activator: Activator
    /// The pod's redirector (not owned).
    public let redirector: PodRedirector
    /// The application ports, in the order given.
    public let ports: [UInt16]
    /// The pod's network namespace.
    public let namespacePath: FilePath
    /// The container's kept connections and handover listeners (decisions 0045, 0046), if any.
    public let connections: ContainerConnections?
    /// What wakes the container besides the activator's connections: a handover port's new
    /// connection, a held connection's data (subscribed at `make`, served by ``run()``).
    private let wakeEvents: AsyncStream<PodWakeEvent>?
    /// Why the wake events of the given connections could not be read (then ``connections`` is
    /// nil: no handover, the activator proxies everything); nil when they are read.
    public let connectionsProblem: String?

    private init(
        activator: Activator,
        redirector: PodRedirector,
        ports: [UInt16],
        namespacePath: FilePath,
        connections: ContainerConnections?,
        wakeEvents: AsyncStream<PodWakeEvent>?,
        connectionsProblem: String?
    ) {
        self.activator = activator
        self.redirector = redirector
        self.ports = ports
        self.namespacePath = namespacePath
        self.connections = connections
        self.wakeEvents = wakeEvents
        self.connectionsProblem = connectionsProblem
    }

    /// Creates the listeners in the pod namespace, registers them in `redirector`, tracks the
    /// ports and binds the activator. Redirects stay as they are (off for a new redirector).
    /// - Parameters:
    ///   - namespacePath: the pod's network namespace (`/var/run/netns/NAME`, `/proc/PID/ns/net`);
    ///     the one `redirector` is attached to.
    ///   - ports: the application's TCP ports (1...65535, unique, at most ``PodRedirector/maxPorts``).
    ///   - redirector: the pod's redirector.
    ///   - configuration: the activator's settings; its `backlog` is used for the listeners.
    ///   - startsScaledDown: `false` (default) when the application runs now (the shim's case:
    ///     call ``applicationScaledDown()`` after the checkpoint); `true` if the first redirected
    ///     connection must restore.
    ///   - group: the event loops for the activator's sockets.
    ///   - events: the activator's restore and per-connection reports; must not block.
    ///   - connections: the container's kept connections and handover listeners; its wake events
    ///     restore through the activator's single flight, and switching a port's redirect off
    ///     also ends its handover.
    ///   - restore: brings the application back; must return once its listening sockets exist.
    /// - Throws: ``PodActivatorError`` naming the step and port; every socket made so far is
    ///   closed and ports this call started tracking are untracked again.
    public static func make(
        namespacePath: FilePath,
        ports: [UInt16],
        redirector: PodRedirector,
        configuration: ActivatorConfiguration = ActivatorConfiguration(),
        startsScaledDown: Bool = false,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        events: @escaping @Sendable (ActivatorEvent) -> Void = { _ in },
        connections: ContainerConnections? = nil,
        restore: @escaping @Sendable () async throws -> Void
    ) async throws(PodActivatorError) -> PodActivator {
        let pod = namespacePath.string
        func failure(_ step: PodActivatorError.Step, _ port: UInt16?, _ error: any Error) -> PodActivatorError {
            PodActivatorError(step: step, namespacePath: pod, port: port, reason: "\(error)")
        }
        if let problem = portListProblem(ports) {
            throw PodActivatorError(step: .validatePorts, namespacePath: pod, port: nil, reason: problem)
        }

        // Sockets stay ours until Activator.bind takes them over.
        var sockets: [SharedDescriptor] = []
        var newlyTracked: [UInt16] = []
        func undo() {
            for socket in sockets { socket.close() }
            for port in newlyTracked { try? redirector.untrackPort(port) }
        }
        let alreadyTracked: Set<UInt16>
        do {
            alreadyTracked = Set(try redirector.trackedPorts())
        } catch {
            throw failure(.trackPort, nil, error)
        }
        for port in ports {
            let listener: OwnedDescriptor
            do {
                listener = try PodRedirector.makeListener(inNamespaceAt: namespacePath, backlog: configuration.backlog)
            } catch {
                undo()
                throw failure(.makeListener, port, error)
            }
            do {
                try redirector.registerListener(port: port, socket: listener)
            } catch {
                undo()
                throw failure(.registerListener, port, error)  // `listener` closes as it goes
            }
            sockets.append(SharedDescriptor(listener))
            do {
                try redirector.trackPort(port)
                if !alreadyTracked.contains(port) { newlyTracked.append(port) }
            } catch {
                undo()
                throw failure(.trackPort, port, error)
            }
        }

        let activator: Activator
        do {
            activator = try await Activator.bind(
                ports: zip(ports, sockets).map { port, socket in
                    PortRedirect(appPort: port, source: .adopt(socket))
                },
                configuration: configuration,
                startsScaledDown: startsScaledDown,
                group: group,
                redirect: BPFRedirectControl(redirector: redirector, connections: connections),
                applicationSockets: PodNamespaceSockets(namespacePath: namespacePath),
                // Ports that speak first need probes known by their connection (decision 0055).
                probeConnections: configuration.speaksFirstPorts.isEmpty && !configuration.learnsSpeaksFirstPorts
                    ? nil : BPFProbeConnections(redirector: redirector),
                events: events,
                restore: restore
            )
        } catch {
            // Activator.bind closed every adopted socket; the kernel dropped their map entries.
            sockets = []
            undo()
            throw failure(.startActivator, nil, error)
        }
        // Subscribed now, for the container's life: a wake must not be missed between a
        // checkpoint and the next serve.
        var wakeEvents: AsyncStream<PodWakeEvent>?
        var usable = connections
        var problem: String?
        if let connections {
            do {
                wakeEvents = try connections.wakeEvents()
            } catch {
                // Without wake events neither handover ports nor held connections could wake the
                // container: keep the activator's proxy for everything.
                usable = nil
                problem = "\(error)"
            }
        }
        // A cold start cannot take the handover listeners' queues over: the activator proxies them.
        usable?.onColdStartQueue { [activator] port, sockets in activator.adopt(sockets, appPort: port) }
        return PodActivator(
            activator: activator,
            redirector: redirector,
            ports: ports,
            namespacePath: namespacePath,
            connections: usable,
            wakeEvents: wakeEvents,
            connectionsProblem: problem
        )
    }

    /// Why `ports` cannot be used, or nil.
    static func portListProblem(_ ports: [UInt16]) -> String? {
        if ports.isEmpty { return "no ports given" }
        if ports.contains(0) { return "port 0 is not an application port" }
        if Set(ports).count != ports.count { return "duplicate ports in \(ports)" }
        if ports.count > PodRedirector.maxPorts {
            return "\(ports.count) ports; a pod supports at most \(PodRedirector.maxPorts)"
        }
        return nil
    }

    /// The activator's own listening ports inside the pod namespace, by application port (the
    /// sockets are bound to free ports; redirected connections keep their original address).
    public var listenerPorts: [UInt16: UInt16] {
        var result: [UInt16: UInt16] = [:]
        for listener in activator.listeners { result[listener.appPort] = UInt16(listener.localAddress.port ?? 0) }
        return result
    }

    /// Serves until the calling task is cancelled (``Activator/run()``), and restores through the
    /// activator's single flight on every wake event of ``connections`` (a handover port's new
    /// connection, a held connection's data); then switches every port's redirect off and ends
    /// every handover (best effort: a closed redirector is fine), so that nothing stays steered to
    /// a listener that no longer exists.
    /// - Throws: what ``Activator/run()`` throws.
    public func run() async throws {
        defer {
            for port in ports { try? redirector.setRedirect(port: port, enabled: false) }
            connections?.endHandover(ports: nil)
        }
        try await withThrowingTaskGroup(of: Void.self) { group in
            if let wakeEvents {
                group.addTask {
                    for await _ in wakeEvents {
                        // Joins a restore in progress; returns at once when the app runs.
                        try? await self.activator.wakeApplication()
                    }
                }
            }
            group.addTask { try await self.activator.run() }
            // The activator's end (cancellation or failure) ends the wake loop too.
            defer { group.cancelAll() }
            try await group.next()
        }
    }

    /// Call after the application was checkpointed: re-arms the single-flight restore, then
    /// switches every port's redirect on, in that order, so the first redirected connection
    /// restores.
    /// - Returns: the gate's answer; redirects are switched on only when it is `.armed`.
    /// - Throws: ``PodActivatorError`` (`.enableRedirect`) when a map update fails; every port's
    ///   redirect is then switched off again (nothing redirected), and the caller decides (for
    ///   instance restore at once).
    @discardableResult
    public func applicationScaledDown() throws(PodActivatorError) -> ScaledDownAction {
        let action = activator.appScaledDown()
        switch action {
        case .armed:
            // Re-arms the wake marks and remembers the ports; the handover listeners (decision
            // 0046) are made once the checkpoint has ended the processes
            // (ContainerConnections.checkpointed()): until then the activator takes the ports.
            connections?.armHandover(ports: ports)
            for port in ports {
                do {
                    try redirector.setRedirect(port: port, enabled: true)
                } catch {
                    for other in ports { try? redirector.setRedirect(port: other, enabled: false) }
                    connections?.endHandover(ports: nil)
                    throw PodActivatorError(
                        step: .enableRedirect,
                        namespacePath: namespacePath.string,
                        port: port,
                        reason: "\(error)"
                    )
                }
            }
        case .ignoredWhileRestoring, .ignoredWhileStopped:
            break
        }
        return action
    }

    /// Brings the application back through the activator's single flight without a connection
    /// (an exec into a scaled-down container); the redirects are switched off as for a connection.
    /// - Throws: ``ActivatorError`` as ``Activator/wakeApplication()``.
    public func wakeApplication() async throws {
        try await activator.wakeApplication()
    }

    /// The single-flight phase (scaled down, restoring, running, stopped).
    public var phase: RestorePhase { activator.phase }
}
