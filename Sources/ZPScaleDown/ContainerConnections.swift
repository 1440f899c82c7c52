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
        /// Ports whose handover listeners ``processesResumed()`` closed,
        /// still marked in the redirector until ``endHandover(ports:)``.
        var resumedPorts: Set<UInt16> = []
        /// Restored listeners whose backlog is raised until they have taken what we queued.
        var widened: [WidenedListener] = []
    }

    /// A listening socket of the restored application, as the shim found it after the restore:
    /// one process holding it, the descriptor number there, and the socket's inode.
    public struct ApplicationListener: Sendable, Hashable {
        /// The port it listens on.
        public var port: UInt16
        /// A process holding it (host pid).
        public var pid: Int32
        /// Its descriptor number in that process.
        public var descriptor: Int32
        /// The socket's inode (`socket:[inode]`).
        public var inode: UInt64

        /// A listener found in `/proc`.
        public init(port: UInt16, pid: Int32, descriptor: Int32, inode: UInt64) {
            self.port = port
            self.pid = pid
            self.descriptor = descriptor
            self.inode = inode
        }
    }

    /// A restored listener whose backlog ``socketsRestored(applicationListeners:)`` raised
    /// (decision 0056), reached again through its process for each look.
    struct WidenedListener: Sendable {
        var listener: ApplicationListener
        /// `pidfd_open` of ``ApplicationListener/pid``: fails the copies once the process is gone.
        var process: SharedDescriptor
        /// The application's own backlog (as the kernel applied it), set back at the end.
        var ownBacklog: UInt32
        /// When the backlog was raised.
        var since: ContinuousClock.Instant
        /// Since when the accept queue has been within ``ownBacklog`` at every look.
        var calmSince: ContinuousClock.Instant? = nil
    }

    /// How long a restored listener's accept queue must stay within the application's own
    /// backlog before that backlog is set back: a burst that woke the container usually goes on
    /// arriving for a while after the queued part was taken.
    public static let widenedBacklogCalm: Duration = .seconds(1)

    /// How long a restored listener keeps the raised backlog at most, when the application does
    /// not take its queue down to its own backlog (it accepts slowly, or not at all).
    public static let widenedBacklogLimit: Duration = .seconds(10)

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
    ///
    /// The restored listening sockets are back too, in our handover listeners' reuseport groups,
    /// while their processes do not run yet: new connections are spread over both by hash until
    /// ``processesResumed()``, and the migration at our listeners' close ignores the
    /// application's backlog. A burst that woke the container would then overflow a small backlog
    /// (busybox httpd listens with 9), and every connection arriving until the application has
    /// accepted the queue would be dropped or answered with a SYN cookie, which without us it
    /// would not have been (decision 0056). So the backlog of each of `applicationListeners` on a
    /// handed-over port is raised to our listener's now, and set back to the application's own
    /// once its queue has stayed within it for ``widenedBacklogCalm``
    /// (``settleWidenedListeners(now:force:)``), at the latest after ``widenedBacklogLimit``, or
    /// before the next dump.
    /// - Parameter applicationListeners: the restored application's listening sockets (the shim
    ///   finds them in `/proc`); empty leaves every backlog as the application set it.
    public func socketsRestored(applicationListeners: [ApplicationListener] = []) {
        releaseHeld(reason: "sockets restored")
        guard !applicationListeners.isEmpty else { return }
        let ours = state.withLock { $0.handovers }
        var wideBacklog: UInt32 = 0
        for socket in ours.values.joined() {
            if let queue = try? socket.withOwner({ (listener) throws(SystemError) in
                try ListeningSockets.acceptQueue(of: listener)
            }) {
                wideBacklog = max(wideBacklog, queue.backlog)
            }
        }
        let widened = widen(applicationListeners.filter { ours[$0.port] != nil }, to: wideBacklog)
        if !widened.isEmpty {
            logger.info(
                "restored listeners' backlog raised while they take the handover queue",
                metadata: ["widened": "\(widened)"]
            )
        }
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
        var queued: [UInt16: UInt32] = [:]
        for (port, sockets) in closing {
            for socket in sockets {
                if let queue = try? socket.withOwner({ (listener) throws(SystemError) in
                    try ListeningSockets.acceptQueue(of: listener)
                }) {
                    queued[port, default: 0] += queue.queued
                }
                socket.close()
            }
        }
        if !closing.isEmpty {
            logger.log(
                level: queued.values.contains { $0 > 0 } ? .info : .debug,
                "restored processes resumed: handover listeners closed, their queues moved to the application",
                metadata: [
                    "ports": "\(closing.map(\.0).sorted())",
                    "queued": "\(queued.sorted { $0.key < $1.key }.map { "\($0.key): \($0.value)" })",
                ]
            )
        }
    }

    /// Raises the backlog of `listeners` to `backlog` where it is smaller; returns a description
    /// of each one raised.
    private func widen(_ listeners: [ApplicationListener], to backlog: UInt32) -> [String] {
        guard backlog > 0 else { return [] }
        var raised: [WidenedListener] = []
        var notes: [String] = []
        for listener in listeners {
            do throws(SystemError) {
                let process = try ListeningSockets.processDescriptor(listener.pid)
                let socket = try ListeningSockets.copy(descriptor: listener.descriptor, of: process)
                guard try ListeningSockets.inode(of: socket) == listener.inode else { continue }
                let own = try ListeningSockets.acceptQueue(of: socket).backlog
                guard own < backlog else { continue }
                try ListeningSockets.setBacklog(Int32(clamping: backlog), of: socket)
                raised.append(
                    WidenedListener(
                        listener: listener,
                        process: SharedDescriptor(process),
                        ownBacklog: own,
                        since: .now
                    )
                )
                notes.append("port \(listener.port): backlog \(own) → \(backlog)")
            } catch {
                logger.debug(
                    "restored listener's backlog not raised",
                    metadata: ["port": "\(listener.port)", "pid": "\(listener.pid)", "error": "\(error)"]
                )
            }
        }
        if !raised.isEmpty { state.withLock { $0.widened += raised } }
        return notes
    }

    /// Sets the backlog of each restored listener raised by
    /// ``socketsRestored(applicationListeners:)`` back to the application's own once its accept
    /// queue has stayed within it for ``widenedBacklogCalm``, or when ``widenedBacklogLimit`` has
    /// passed, or now when `force`
    /// (before a dump, which must record the application's own). A listener the application
    /// closed meanwhile, or whose process is gone, is forgotten. The scale-down driver calls this
    /// every 50 ms while ``hasWidenedListeners``.
    public func settleWidenedListeners(now: ContinuousClock.Instant = .now, force: Bool = false) {

        let pending = state.withLock { s -> [WidenedListener] in
            defer { s.widened = [] }
            return s.widened
        }
        guard !pending.isEmpty else { return }
        var keep: [WidenedListener] = []
        for var widened in pending {
            do throws(SystemError) {
                let listener = widened.listener
                let waited = now - widened.since
                let calmSince = widened.calmSince
                let forced = force || waited >= Self.widenedBacklogLimit
                // nil: set back, or the application closed the socket (its number names another
                // file now); else the queue now.
                let queued = try widened.process.withOwner { (process) throws(SystemError) -> UInt32? in
                    let socket = try ListeningSockets.copy(descriptor: listener.descriptor, of: process)
                    guard try ListeningSockets.inode(of: socket) == listener.inode else { return nil }
                    let queue = try ListeningSockets.acceptQueue(of: socket)
                    let calm = queue.queued <= widened.ownBacklog
                    let calmEnough = calm && calmSince.map { now - $0 >= Self.widenedBacklogCalm } == true
                    guard forced || calmEnough else { return queue.queued }
                    try ListeningSockets.setBacklog(Int32(clamping: widened.ownBacklog), of: socket)
                    logger.info(
                        "restored listener's own backlog set back",
                        metadata: [
                            "port": "\(listener.port)", "backlog": "\(widened.ownBacklog)",
                            "queued": "\(queue.queued)", "after": "\(waited)",
                        ]
                    )
                    return nil
                }
                guard let queued else { continue }
                if queued > widened.ownBacklog {
                    widened.calmSince = nil
                } else if widened.calmSince == nil {
                    widened.calmSince = now
                }
                keep.append(widened)
            } catch {
                // The process closed the socket or ended: nothing to set back.
            }
        }
        if !keep.isEmpty { state.withLock { $0.widened = keep + $0.widened } }
    }

    /// Whether a restored listener's backlog is raised now (``socketsRestored(applicationListeners:)``).
    public var hasWidenedListeners: Bool { state.withLock { !$0.widened.isEmpty } }

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
        state.withLock { $0.widened = [] }
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
        var addressBound: [TCPListenerAddress] = []
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
                        let socket = try redirector.makeHandoverListener(for: listener, inNamespaceAt: namespacePath)
                        // Connections the handover takes go to this listener itself (decision
                        // 0056); one bound to a single address is left to the regular lookup.
                        if !(try redirector.registerHandoverListener(socket, for: listener)) {
                            addressBound.append(listener)
                        }
                        sockets.append(SharedDescriptor(socket))
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
        if !addressBound.isEmpty {
            logger.info(
                "handover listeners left to the regular lookup (bound to one address): during a restore, new connections may reach the application's listener before it runs",
                metadata: ["listeners": "\(addressBound.map(\.description))"]
            )
        }
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
