import Logging
import Synchronization
import SystemPackage
import ZPBPF
import ZPCore
import ZPSystem

/// One container's TCP connections across its scale-downs, on the pod's ``PodRedirector``:
///
/// - **Kept connections** (decision 0045): the connections a `tcp_established` checkpoint dumps
///   are held — the pod's tc program drops their peers' segments, so that no peer sees a reset
///   while the sockets are in the images — from just before the dump until CRIU has put the
///   sockets back (its `post-restore` notification, where CRIU itself would unlock its network
///   lock). Data or FIN from a held connection's peer wakes the container.
/// - **Handover listeners** (decision 0046): after a checkpoint, each listening socket the dump
///   recorded on one of the container's ports is stood in for by a listener of ours with the same
///   address and `SO_REUSEPORT`; new connections (but those of probe sources, which the activator
///   answers) queue there in the kernel and wake the container; the restored listener joins the
///   listener's reuseport group, and closing ours migrates the queue to it. No process of ours
///   reads or copies those connections; the application accepts them with the client's address.
///
/// The shim's CRIU adapter calls the checkpoint side from CRIU's notifications (`pre-dump`,
/// `post-dump`, `post-restore`); ``PodActivator`` calls the redirect side. Thread-safe.
public final class ContainerConnections: Sendable {
    /// What this container does across a scale-down.
    public struct Settings: Sendable, Equatable {
        /// Dump established connections and hold them (`zeropod-swift/keep-connections`).
        public var keepConnections: Bool
        /// Queue new connections on handover listeners instead of proxying them
        /// (`zeropod-swift/listener-handover`).
        public var listenerHandover: Bool

        /// Settings; both on by default.
        public init(keepConnections: Bool = true, listenerHandover: Bool = true) {
            self.keepConnections = keepConnections
            self.listenerHandover = listenerHandover
        }
    }

    /// The pod's redirector (not owned).
    public let redirector: PodRedirector
    /// The pod's network namespace.
    public let namespacePath: FilePath
    /// The container's tag in the pod's maps and wake events (unique in the pod).
    public let owner: UInt32
    /// What this container does.
    public let settings: Settings
    private let logger: Logger

    private struct State {
        /// Held connections of the current scale-down.
        var held: Set<TCPConnectionTuple> = []
        /// Listening sockets recorded by the last dump.
        var listeners: [TCPListenerAddress] = []
        /// Ports whose redirect is on (``armHandover(ports:)`` to ``endHandover(ports:)``).
        var redirectedPorts: Set<UInt16> = []
        /// Our handover listeners, by port.
        var handovers: [UInt16: [SharedDescriptor]] = [:]
        /// Ports whose handover listeners ``processesResumed()`` closed, still marked in the
        /// redirector until ``endHandover(ports:)``.
        var resumedPorts: Set<UInt16> = []
    }

    private let state = Mutex(State())
    /// Where the queues of the handover listeners go at a cold start (``onColdStartQueue(_:)``).
    private let queueRescue = Mutex<(@Sendable (UInt16, [SharedDescriptor]) -> Void)?>(nil)

    /// One container's connections.
    /// - Parameters:
    ///   - redirector: the pod's redirector.
    ///   - namespacePath: the pod's network namespace (the redirector's).
    ///   - owner: the container's tag, unique among the pod's containers.
    ///   - settings: what this container does.
    ///   - logger: where held, released and handed-over connections are logged.
    public init(redirector: PodRedirector, namespacePath: FilePath, owner: UInt32, settings: Settings, logger: Logger) {
        self.redirector = redirector
        self.namespacePath = namespacePath
        self.owner = owner
        self.settings = settings
        self.logger = logger
    }

    // MARK: checkpoint side

    /// CRIU's `pre-dump`, before it seizes the processes: holds `connections` (the container's
    /// connections as `/proc` shows them), so that no segment reaches a socket CRIU has read.
    /// A connection that cannot be held is logged, not fatal (it risks a reset, as with
    /// `tcp_close`).
    public func dumpStarting(connections: [TCPConnectionTuple]) {
        guard settings.keepConnections, !connections.isEmpty else { return }
        do {
            try redirector.holdConnections(connections, owner: owner)
            state.withLock { $0.held.formUnion(connections) }
        } catch {
            logger.warning("connections not held before the dump: \(error)")
        }
    }

    /// CRIU's `post-dump`, while the dumped processes are still frozen: holds exactly the
    /// `connections` the images recorded (adds any `/proc` did not show, releases the others) and
    /// remembers the `listeners` for the handover.
    public func dumped(connections: [TCPConnectionTuple], listeners: [TCPListenerAddress]) {
        let wanted = settings.keepConnections ? Set(connections) : []
        let stale = state.withLock { s -> Set<TCPConnectionTuple> in
            s.listeners = listeners
            defer { s.held = wanted }
            return s.held.subtracting(wanted)
        }
        do {
            try redirector.releaseConnections(stale)
            if !wanted.isEmpty { try redirector.holdConnections(wanted, owner: owner) }
            if !wanted.isEmpty {
                logger.info(
                    "holding \(wanted.count) connection(s) while scaled down",
                    metadata: ["connections": "\(wanted.map(\.description).sorted())"]
                )
            }
        } catch {
            logger.warning("connections not held after the dump: \(error)")
        }
    }

    /// The dump failed and the processes run on: lets their connections' segments pass again.
    public func dumpFailed() {
        releaseHeld(reason: "dump failed")
        state.withLock { $0.listeners = [] }
    }

    /// CRIU's `post-restore`: the sockets are back (still in repair mode, released before the
    /// processes resume): their peers' segments pass again.
    public func socketsRestored() {
        releaseHeld(reason: "sockets restored")
    }

    /// CRIU's `post-resume`: the restored processes run, and their listening sockets (restored
    /// with `SO_REUSEPORT`) are in our handover listeners' reuseport groups. Closes our listeners
    /// now, so the kernel migrates the connections queued on them to the application at once,
    /// rather than after the shim's own bookkeeping of the restore (cgroup placement, runc state,
    /// adoption, the activator's redirect-off: ~9 ms of a MariaDB restore on a quiet 2-core
    /// machine). The ports stay marked in the redirector until ``endHandover(ports:)``, so a
    /// connection arriving meanwhile still takes the regular lookup (now to the application's
    /// listener), not the activator's proxy.
    public func processesResumed() {
        let closing = state.withLock { s -> [(UInt16, [SharedDescriptor])] in
            let open = s.handovers.map { ($0.key, $0.value) }
            s.resumedPorts.formUnion(s.handovers.keys)
            s.handovers = [:]
            return open
        }
        for (_, sockets) in closing { for socket in sockets { socket.close() } }
        if !closing.isEmpty {
            logger.debug(
                "restored processes resumed: handover listeners closed, their queues moved to the application",
                metadata: ["ports": "\(closing.map(\.0).sorted())"]
            )
        }
    }

    /// The restore failed: releases the held connections (their peers meet a reset on their next
    /// segment, as without zeropod). The handover listeners stay for a second restore from the
    /// same images (after a failed lazy one); ``coldStartBegins()`` closes them.
    public func restoreFailed() {
        releaseHeld(reason: "restore failed")
    }

    /// Sets where the connections queued on the handover listeners go when the container is cold
    /// started (``PodActivator`` hands them to its activator, which proxies them to the new
    /// process). Without it they are reset.
    public func onColdStartQueue(_ rescue: @escaping @Sendable (UInt16, [SharedDescriptor]) -> Void) {
        queueRescue.withLock { $0 = rescue }
    }

    /// The container starts afresh from its bundle: the connections queued on the handover
    /// listeners are accepted and given to ``onColdStartQueue(_:)``'s receiver (reset without
    /// one), and the listeners close, so that the new process can bind the ports.
    public func coldStartBegins() {
        releaseHeld(reason: "cold start")
        let queued = acceptQueued()
        endHandover(ports: nil)
        guard !queued.isEmpty else { return }
        let rescue = queueRescue.withLock { $0 }
        let count = queued.reduce(0) { $0 + $1.1.count }
        for (port, sockets) in queued {
            if let rescue { rescue(port, sockets) } else { for socket in sockets { socket.close() } }
        }
        logger.info(
            rescue == nil
                ? "cold start: \(count) connection(s) queued for the restored listener are reset"
                : "cold start: \(count) connection(s) queued for the restored listener go through the activator",
            metadata: ["ports": "\(queued.map(\.0).sorted())"]
        )
    }

    /// Accepts every connection waiting on the handover listeners now (none blocks).
    private func acceptQueued() -> [(UInt16, [SharedDescriptor])] {
        let listeners = state.withLock { $0.handovers }
        var result: [(UInt16, [SharedDescriptor])] = []
        for (port, sockets) in listeners {
            var accepted: [SharedDescriptor] = []
            for socket in sockets where socket.isOpen {
                while let connection = try? socket.withOwner({ (listener) throws(SystemError) -> SharedDescriptor in
                    SharedDescriptor(try UnixSockets.accept(listener, timeout: .zero))
                }) {
                    accepted.append(connection)
                }
            }
            if !accepted.isEmpty { result.append((port, accepted)) }
        }
        return result
    }

    /// The container is deleted: nothing stays held or handed over.
    public func containerGone() {
        releaseHeld(reason: "container deleted")
        endHandover(ports: nil)
    }

    private func releaseHeld(reason: String) {
        let held = state.withLock { s -> Set<TCPConnectionTuple> in
            defer { s.held = [] }
            return s.held
        }
        guard !held.isEmpty else { return }
        do {
            let released = try redirector.releaseConnections(owner: owner)
            let dropped = released.reduce(UInt64(0)) { $0 + $1.dropped }
            logger.info(
                "released \(released.count) held connection(s): \(reason); \(dropped) segment(s) of their peers were dropped meanwhile"
            )
        } catch {
            logger.warning("held connections not released (\(reason)): \(error)")
        }
    }

    /// The connections held for this container now.
    public var heldConnections: Set<TCPConnectionTuple> { state.withLock { $0.held } }

    // MARK: redirect side

    /// When the redirect goes on (the driver does that just before the checkpoint): clears this
    /// owner's wake marks and remembers `ports` for the handover, which ``checkpointed()`` sets up
    /// once the dump has ended the processes (their listening sockets must be gone, and the dump
    /// has recorded them).
    public func armHandover(ports: [UInt16]) {
        try? redirector.rearmWakes(owner: owner)
        state.withLock { $0.redirectedPorts = Set(ports) }
    }

    /// After a successful checkpoint (the processes are gone): makes a handover listener for every
    /// listening socket the dump recorded on a port whose redirect is still on, and marks those
    /// ports in the redirector. Runs under the state lock, so that a redirect switched off
    /// meanwhile (``endHandover(ports:)``) either comes first (no listener is made) or closes
    /// the listeners made here.
    /// - Returns: the ports handed over; the others keep the activator's proxy (each is logged
    ///   with its reason).
    @discardableResult
    public func checkpointed() -> [UInt16] {
        guard settings.listenerHandover else { return [] }
        var notes: [(UInt16, String, [TCPListenerAddress])] = []
        let (handedOver, replaced) = state.withLock { s -> ([UInt16], [SharedDescriptor]) in
            var handedOver: [UInt16] = []
            var replaced: [SharedDescriptor] = []
            for port in s.redirectedPorts.sorted() {
                let mine = s.listeners.filter { $0.port == port }
                guard !mine.isEmpty else {
                    notes.append((port, "the checkpoint recorded no listening socket on it", s.listeners))
                    continue
                }
                var sockets: [SharedDescriptor] = []
                do throws(BPFError) {
                    for listener in mine {
                        sockets.append(
                            SharedDescriptor(
                                try redirector.makeHandoverListener(for: listener, inNamespaceAt: namespacePath)
                            )
                        )
                    }
                    try redirector.setHandover(port: port, owner: owner)
                } catch {
                    for socket in sockets { socket.close() }
                    notes.append((port, "handover listener failed: \(error)", mine))
                    continue
                }
                replaced += s.handovers[port] ?? []
                s.handovers[port] = sockets
                s.resumedPorts.remove(port)
                handedOver.append(port)
            }
            return (handedOver, replaced)
        }
        for socket in replaced { socket.close() }
        for (port, reason, listeners) in notes {
            logger.info(
                "port \(port) keeps the activator's proxy: \(reason)",
                metadata: ["listeners": "\(listeners.map(\.description))"]
            )
        }
        if !handedOver.isEmpty {
            logger.info(
                "handed over: new connections queue for the restored listener",
                metadata: ["ports": "\(handedOver)"]
            )
        }
        return handedOver
    }

    /// Ends the handover of `ports` (nil: all): the ports' marks go and our listeners close, which
    /// migrates their queued connections to the application's listener when it has joined their
    /// group (after a restore), and resets them otherwise.
    public func endHandover(ports: [UInt16]?) {
        let (closing, unmarked) = state.withLock { s -> ([(UInt16, [SharedDescriptor])], Set<UInt16>) in
            let chosen = ports.map { Set($0) }
            if let chosen { s.redirectedPorts.subtract(chosen) } else { s.redirectedPorts = [] }
            let matching = s.handovers.filter { chosen?.contains($0.key) ?? true }
            for port in matching.keys { s.handovers[port] = nil }
            // Ports whose listeners closed at `post-resume` keep their mark until now.
            let resumed = s.resumedPorts.filter { chosen?.contains($0) ?? true }
            s.resumedPorts.subtract(resumed)
            return (matching.map { ($0.key, $0.value) }, resumed)
        }
        for port in unmarked { try? redirector.removeHandover(port: port) }
        for (port, sockets) in closing {
            try? redirector.removeHandover(port: port)
            for socket in sockets { socket.close() }
        }
    }

    /// The ports handed over now.
    public var handoverPorts: [UInt16] { state.withLock { $0.handovers.keys.sorted() } }

    /// What woke this container while it was scaled down (``PodRedirector/wakeEvents(owner:)``).
    /// - Throws: `BPFError` when the pod's event ring cannot be read.
    public func wakeEvents() throws(BPFError) -> AsyncStream<PodWakeEvent> {
        try redirector.wakeEvents(owner: owner)
    }
}
