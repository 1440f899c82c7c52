import NIOCore
import NIOPosix
import Synchronization
import ZPCore
import ZPSystem

/// Switches the redirect of an application port off once the application is back.
/// The shim implements it with ZPBPF's redirect handle; tests use ``NoRedirect``.
public protocol RedirectControl: Sendable {
    /// Stops steering new connections for `port` to the activator.
    /// - Parameter port: the application's port.
    /// - Throws: whatever the redirect mechanism throws; the activator reports it and goes on.
    func disable(port: UInt16) async throws
}

/// A ``RedirectControl`` that does nothing (no redirect in front of the activator).
public struct NoRedirect: RedirectControl {
    /// Creates the no-op control.
    public init() {}
    /// Does nothing.
    public func disable(port: UInt16) async throws {}
}

/// One application port the activator stands in for.
public struct PortRedirect: Sendable {
    /// The application's port, dialled on 127.0.0.1 and ::1 after the restore.
    public var appPort: UInt16
    /// Where the activator's listening socket comes from.
    public var source: ListenerSource

    /// Creates a port entry.
    /// - Parameters:
    ///   - appPort: the application's port.
    ///   - source: bind an address, or adopt a socket made in the pod's network namespace.
    public init(appPort: UInt16, source: ListenerSource) {
        self.appPort = appPort
        self.source = source
    }
}

/// A listener the activator runs, as the caller needs to see it.
public struct ActivatorListener: Sendable {
    /// The application port it stands in for.
    public var appPort: UInt16
    /// The address it is bound to (with the real port when port 0 was asked for).
    public var localAddress: SocketAddress
}

/// Why ``Activator/wakeApplication()`` failed.
public enum ActivatorError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The restore hook threw; `message` is its error.
    case restoreFailed(message: String)
    /// The activator stopped (its `run()` ended).
    case stopped

    /// A one-line explanation.
    public var description: String {
        switch self {
        case .restoreFailed(let message): return "activator: restore failed: \(message)"
        case .stopped: return "activator: stopped"
        }
    }
}

/// The error a held connection sees when the restore hook failed.
struct RestoreFailedError: Error, CustomStringConvertible {
    var message: String
    var description: String { "restore failed: \(message)" }
}

/// The error a connection sees when the activator is stopping.
struct ActivatorStoppedError: Error, CustomStringConvertible {
    var description: String { "activator stopped" }
}

/// Holds first connections of a scaled-down container, answers kubelet probes, restores the
/// container once (single flight) and proxies every held connection to it.
///
/// Create it with ``bind(ports:configuration:startsScaledDown:group:redirect:applicationSockets:events:restore:)``,
/// hand the ``listeners``' sockets to the redirect, then call ``run()`` once; it serves until its
/// task is cancelled, then closes the listeners and every connection.
///
/// Per connection: inspect the first `probeBufferSize` bytes (``ProbeInspector``); answer probes
/// and close; otherwise ask ``RestoreSingleFlight`` for the application — the first such
/// connection runs the restore hook and switches the redirects off, the others wait — then dial
/// the application (retrying until `connectTimeout`) and proxy both ways, half-close aware.
/// A connection to a port that speaks first (annotated, or learned from who sent the first byte
/// on earlier proxied connections) skips the inspection unless it is a known probe's by its
/// connection (``ProbeConnectionCheck``; decision 0055).
public final class Activator: Sendable {
    typealias ClientChannel = NIOAsyncChannel<ClientInbound, ByteBuffer>
    typealias Waiter = CheckedContinuation<GateRole, any Error>

    /// What the single-flight gate told a connection.
    enum GateRole: Sendable { case restorer, proceed }

    private struct Server: Sendable {
        var appPort: UInt16
        var channel: NIOAsyncChannel<ClientChannel, Never>
    }

    /// The listeners, one per port, in the order given.
    public let listeners: [ActivatorListener]
    private let servers: [Server]
    private let configuration: ActivatorConfiguration
    private let restoreHook: @Sendable () async throws -> Void
    private let redirect: any RedirectControl
    private let applicationSockets: (any ApplicationSocketFactory)?
    private let emit: @Sendable (ActivatorEvent) -> Void
    private let gate: Mutex<RestoreSingleFlight<Waiter>>
    /// The ports that speak first (annotated and learned; decision 0055); nil without a probe
    /// check, when no port is treated as speaking first.
    private let speakFirst: SpeakFirstDecisions?
    private let nextConnectionID = Atomic<Int>(0)
    /// Connections accepted elsewhere, for ``run()`` to serve (``adopt(_:appPort:)``).
    private let adopted: AsyncStream<AdoptedConnection>
    private let adoptedInput: AsyncStream<AdoptedConnection>.Continuation

    /// A connected socket handed to the activator, with the application port it is for.
    private struct AdoptedConnection: Sendable {
        var appPort: UInt16
        var socket: SharedDescriptor
    }

    private init(
        listeners: [ActivatorListener],
        servers: [Server],
        configuration: ActivatorConfiguration,
        startsScaledDown: Bool,
        redirect: any RedirectControl,
        applicationSockets: (any ApplicationSocketFactory)?,
        speakFirst: SpeakFirstDecisions?,
        events: @escaping @Sendable (ActivatorEvent) -> Void,
        restore: @escaping @Sendable () async throws -> Void
    ) {
        self.listeners = listeners
        self.speakFirst = speakFirst
        self.servers = servers
        self.configuration = configuration
        self.gate = Mutex(RestoreSingleFlight(startsScaledDown: startsScaledDown))
        self.redirect = redirect
        self.applicationSockets = applicationSockets
        self.emit = events
        self.restoreHook = restore
        (adopted, adoptedInput) = AsyncStream.makeStream(of: AdoptedConnection.self)
    }

    /// Creates the listeners (listening at once; connections queue until ``run()``).
    /// - Parameters:
    ///   - ports: one entry per application port.
    ///   - configuration: probe, timeout and backlog settings.
    ///   - startsScaledDown: `true` (default) if the first connection must restore the application.
    ///   - group: the event loops for all sockets.
    ///   - redirect: switched off for every port after a successful restore.
    ///   - applicationSockets: makes the sockets the application is dialled with (inside the pod's
    ///     network namespace); `nil` dials from this process's namespace.
    ///   - probeConnections: tells known probes by their connection; with it, connections to ports
    ///     that speak first (``ActivatorConfiguration/speaksFirstPorts``, and learned ones when
    ///     ``ActivatorConfiguration/learnsSpeaksFirstPorts``) that are not known probes' are
    ///     forwarded at accept, without inspection (decision 0055); `nil` inspects every connection.
    ///   - events: receives restore and per-connection reports; called from any task, must not block.
    ///   - restore: brings the application back; the activator dials it when this returns.
    /// - Throws: `SystemError` when a socket cannot be created, bound or listened on (or an
    ///   adopted socket was already taken or closed), or NIO's error when it cannot adopt the
    ///   socket. Every socket made so far and every adopted socket is closed (adopted sockets
    ///   belong to the activator even when this throws).
    public static func bind(
        ports: [PortRedirect],
        configuration: ActivatorConfiguration = ActivatorConfiguration(),
        startsScaledDown: Bool = true,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        redirect: any RedirectControl = NoRedirect(),
        applicationSockets: (any ApplicationSocketFactory)? = nil,
        probeConnections: (any ProbeConnectionCheck)? = nil,
        events: @escaping @Sendable (ActivatorEvent) -> Void = { _ in },
        restore: @escaping @Sendable () async throws -> Void
    ) async throws -> Activator {
        var listeners: [ActivatorListener] = []
        var servers: [Server] = []
        // Shared with the listeners' child initialisers, which decide per connection at accept.
        let speakFirst = probeConnections.map {
            SpeakFirstDecisions(
                configured: configuration.speaksFirstPorts,
                learns: configuration.learnsSpeaksFirstPorts,
                probes: $0
            )
        }
        do {
            for port in ports {
                var speaksFirst: (@Sendable (SocketAddress?, SocketAddress?) -> Bool)?
                if let speakFirst {
                    let appPort = port.appPort
                    speaksFirst = { remote, local in
                        speakFirst.forwardsAtAccept(port: appPort, remote: remote, local: local)
                    }
                }
                let (listener, server) = try await bindOne(
                    port,
                    configuration: configuration,
                    group: group,
                    speaksFirst: speaksFirst
                )
                listeners.append(listener)
                servers.append(server)
            }
        } catch {
            for server in servers { try? await server.channel.channel.close() }
            // Adopted sockets after the failing port were never reached; they are ours to close
            // too (the failing port's socket was closed by `bindOne` or by NIO).
            for port in ports.dropFirst(servers.count + 1) {
                if case .adopt(let socket) = port.source { socket.close() }
            }
            throw error
        }
        return Activator(
            listeners: listeners,
            servers: servers,
            configuration: configuration,
            startsScaledDown: startsScaledDown,
            redirect: redirect,
            applicationSockets: applicationSockets,
            speakFirst: speakFirst,
            events: events,
            restore: restore
        )
    }

    private static func bindOne(
        _ port: PortRedirect,
        configuration: ActivatorConfiguration,
        group: any EventLoopGroup,
        speaksFirst: (@Sendable (SocketAddress?, SocketAddress?) -> Bool)?
    ) async throws -> (ActivatorListener, Server) {
        let socket: OwnedDescriptor
        switch port.source {
        case .bind(let address):
            socket = try SocketCalls.makeBound(address)
        case .adopt(let shared):
            guard let adopted = shared.take() else {
                throw SystemError(
                    call: "listen",
                    subject: "adopted socket for port \(port.appPort): \(shared)",
                    errno: .badFileDescriptor
                )
            }
            socket = adopted
        }
        try SocketCalls.listen(socket, backlog: configuration.backlog)  // on failure `socket` closes it
        let fd = socket.disown()  // NIO owns it from here (it closes it also when adoption fails)
        let channel = try await ServerBootstrap(group: group)
            .serverChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(AcceptErrorAbsorber())
                }
            }
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
            .bind(fd) { child in
                child.eventLoop.makeCompletedFuture {
                    try child.pipeline.syncOperations.addHandler(
                        ProbeInspector(configuration: configuration, speaksFirst: speaksFirst)
                    )
                    return try ClientChannel(
                        wrappingChannelSynchronously: child,
                        configuration: .init(isOutboundHalfClosureEnabled: true)
                    )
                }
            }
        // NIO's adoption path calls listen(2) with its own backlog of 128: raise it again (on the
        // channel's descriptor, open while the channel is).
        try SocketCalls.listen(number: fd, backlog: configuration.backlog)
        guard let localAddress = channel.channel.localAddress else {
            try? await channel.channel.close()
            throw SocketCalls.noLocalAddress(fd)
        }
        return (
            ActivatorListener(appPort: port.appPort, localAddress: localAddress),
            Server(appPort: port.appPort, channel: channel)
        )
    }

    /// The phase of the single-flight gate (scaled down, restoring, running, stopped).
    public var phase: RestorePhase {
        gate.withLock { $0.phase }
    }

    /// The ports that speak first as they are now (annotated and learned, decision 0055); nil
    /// when the activator was made without a ``ProbeConnectionCheck`` and treats no port so.
    public var speaksFirstPorts: SpeakFirstPorts? {
        speakFirst?.snapshot
    }

    /// Brings the application back through the same single flight as connections do, for a
    /// caller that needs it running without a connection (for instance an exec into the
    /// container). Returns at once if it runs; joins a restore in progress.
    /// - Throws: ``ActivatorError`` when the restore hook failed or the activator stopped;
    ///   `CancellationError` when the calling task was cancelled while waiting.
    public func wakeApplication() async throws {
        do {
            try await awaitApplication()?.releaseWaiters()
        } catch let error as RestoreFailedError {
            throw ActivatorError.restoreFailed(message: error.message)
        } catch is ActivatorStoppedError {
            throw ActivatorError.stopped
        }
    }

    /// Re-arms the restore trigger after the application was checkpointed again. Call it before
    /// the redirect is switched back on, so that the first redirected connection restores.
    /// - Returns: what the gate did (ignored while a restore runs or after stop).
    @discardableResult
    public func appScaledDown() -> ScaledDownAction {
        gate.withLock { $0.appScaledDown() }
    }

    /// Serves all listeners until the calling task is cancelled; then closes the listeners and
    /// every connection, and fails connections that were waiting for a restore. Call once.
    /// - Throws: when a listener fails fatally.
    public func run() async throws {
        do {
            try await withThrowingDiscardingTaskGroup { group in
                group.addTask {
                    defer { self.adoptedInput.finish() }
                    try await withThrowingDiscardingTaskGroup { servers in
                        for server in self.servers {
                            servers.addTask { try await self.serve(server) }
                        }
                    }
                }
                group.addTask { await self.serveAdopted() }
            }
        } catch {
            stopGate()
            throw error
        }
        stopGate()
    }

    /// Serves connections that were accepted elsewhere for `appPort` as connections that are not
    /// probes: each waits for the application (a restore or cold start under way joins the single
    /// flight) and is then proxied to it. This is the queue of a handover listener that the
    /// application could not take over because it was cold started (decision 0046): without it,
    /// closing that listener would reset them. The activator owns the sockets from here; ones given
    /// after ``run()`` ended are closed.
    public func adopt(_ sockets: [SharedDescriptor], appPort: UInt16) {
        for socket in sockets {
            if case .terminated = adoptedInput.yield(AdoptedConnection(appPort: appPort, socket: socket)) {
                socket.close()
            }
        }
    }

    private func serveAdopted() async {
        await withDiscardingTaskGroup { group in
            for await connection in adopted {
                guard let owned = connection.socket.take() else { continue }
                let descriptor = owned.disown()  // NIO owns it from here (and closes it on failure)
                group.addTask { await self.serveAdopted(descriptor: descriptor, appPort: connection.appPort) }
            }
        }
    }

    private func serveAdopted(descriptor: CInt, appPort: UInt16) async {
        guard let server = servers.first(where: { $0.appPort == appPort }) ?? servers.first else {
            _ = try? OwnedDescriptor(adopting: descriptor).close()
            return
        }
        let configuration = self.configuration
        let connection: ClientChannel
        do {
            connection = try await ClientBootstrap(group: server.channel.channel.eventLoop)
                .channelOption(.allowRemoteHalfClosure, value: true)
                .channelOption(.tcpOption(.tcp_nodelay), value: 1)
                .withConnectedSocket(descriptor) { child in
                    child.eventLoop.makeCompletedFuture {
                        try child.pipeline.syncOperations.addHandler(
                            ProbeInspector(configuration: configuration, forward: .handoverQueue)
                        )
                        return try ClientChannel(
                            wrappingChannelSynchronously: child,
                            configuration: .init(isOutboundHalfClosureEnabled: true)
                        )
                    }
                }
        } catch {
            emit(
                .connectionFinished(
                    ConnectionReport(
                        appPort: appPort,
                        forwardReason: .handoverQueue,
                        outcome: .failed(.proxyError("adopting the connection: \(error)")),
                        timings: ConnectionTimings(accepted: .now)
                    )
                )
            )
            return
        }
        await handle(connection, appPort: appPort)
    }

    private func stopGate() {
        let waiters = gate.withLock { $0.stop() }
        for waiter in waiters { waiter.resume(throwing: ActivatorStoppedError()) }
    }

    private func serve(_ server: Server) async throws {
        try await server.channel.executeThenClose { inbound in
            try await withThrowingDiscardingTaskGroup { group in
                for try await connection in inbound {
                    group.addTask { await self.handle(connection, appPort: server.appPort) }
                }
            }
        }
    }

    // MARK: one connection

    private func handle(_ connection: ClientChannel, appPort: UInt16) async {
        var timings = ConnectionTimings(accepted: .now)
        var forwardReason: ForwardReason?
        var firstSpeaker: FirstSpeaker?
        var outcome = ConnectionOutcome.failed(.shutdown)
        do {
            try await connection.executeThenClose { inbound, outbound in
                var iterator = inbound.makeAsyncIterator()
                guard case .verdict(let verdict) = try await iterator.next() else { return }
                timings.inspected = .now
                switch verdict {
                case .answer(let answer):
                    try await self.answer(answer, connection: connection, iterator: &iterator, outbound: outbound)
                    outcome = .probeAnswered(answer.kind)
                case .forward(let reason):
                    forwardReason = reason
                    outcome = await self.forward(
                        appPort: appPort,
                        client: connection,
                        iterator: &iterator,
                        outbound: outbound,
                        timings: &timings,
                        firstSpeaker: &firstSpeaker
                    )
                }
            }
        } catch is CancellationError {
            outcome = .failed(.shutdown)
        } catch {
            if case .probeAnswered = outcome {} else { outcome = .failed(.proxyError("\(error)")) }
        }
        timings.closed = .now
        emit(
            .connectionFinished(
                ConnectionReport(
                    appPort: appPort,
                    forwardReason: forwardReason,
                    outcome: outcome,
                    timings: timings,
                    firstSpeaker: firstSpeaker
                )
            )
        )
    }

    private func answer(
        _ answer: ProbeAnswer,
        connection: ClientChannel,
        iterator: inout NIOAsyncChannelInboundStream<ClientInbound>.AsyncIterator,
        outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>
    ) async throws {
        let allocator = connection.channel.allocator
        switch answer {
        case .tcp:
            return
        case .http:
            try await outbound.write(allocator.buffer(string: ProbeResponses.httpNoContent))
        case .grpc(let streamID):
            try await outbound.write(try ProbeResponses.grpcServing(streamID: streamID, allocator: allocator))
        }
        // Half-close, then read until the client closes (or the linger timeout closes the
        // channel): closing with unread input would reset the connection and could destroy the
        // answer before the client read it.
        outbound.finish()
        let channel = connection.channel
        let closer = channel.eventLoop.scheduleTask(in: TimeAmount(configuration.probeLingerTimeout)) {
            channel.close(promise: nil)
        }
        defer { closer.cancel() }
        do {
            while try await iterator.next() != nil {}
        } catch {
            // Reset or closed by the linger timeout: the answer was sent, nothing else to do.
        }
    }

    private func forward(
        appPort: UInt16,
        client: ClientChannel,
        iterator: inout NIOAsyncChannelInboundStream<ClientInbound>.AsyncIterator,
        outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>,
        timings: inout ConnectionTimings,
        firstSpeaker: inout FirstSpeaker?
    ) async -> ConnectionOutcome {
        timings.restoreRequested = .now
        let restore: RestoreInProgress?
        do {
            restore = try await awaitApplication()
        } catch let error as RestoreFailedError {
            return .failed(.restoreFailed(error.message))
        } catch {
            return .failed(.shutdown)
        }
        let dialled: Result<NIOAsyncChannel<ByteBuffer, ByteBuffer>, any Error>
        do {
            dialled = .success(
                try await ApplicationDialer.dial(
                    port: appPort,
                    factory: applicationSockets,
                    eventLoop: client.channel.eventLoop,
                    timeout: configuration.connectTimeout
                )
            )
        } catch {
            dialled = .failure(error)
        }
        // The restoring connection wakes the held ones only once it reached the application (or
        // gave up), so that hundreds of held connections do not hammer a port that is not
        // listening yet; they then dial themselves, usually at the first attempt.
        restore?.releaseWaiters()
        let app: NIOAsyncChannel<ByteBuffer, ByteBuffer>
        switch dialled {
        case .success(let channel):
            app = channel
        case .failure(let error) where error is CancellationError:
            return .failed(.shutdown)
        case .failure(let error):
            return .failed(.appUnreachable("\(error)"))
        }
        timings.appReachable = .now
        return await Proxy.run(
            client: &iterator,
            clientChannel: client.channel,
            clientOutbound: outbound,
            app: app,
            idleTimeout: configuration.proxyIdleTimeout,
            timings: &timings,
            firstSpeaker: &firstSpeaker,
            onFirstSpeaker: { [speakFirst, emit] speaker in
                guard let speakFirst else { return }
                let (change, ports) = speakFirst.observed(port: appPort, firstSpeaker: speaker)
                switch change {
                case .learned, .unlearned: emit(.speaksFirstChanged(change, speaksFirst: ports))
                case .none: break
                }
            }
        )
    }

    // MARK: single flight

    /// A restore this task ran: the hook succeeded and the redirects are off, but the held
    /// connections still wait until ``releaseWaiters()``. Call it exactly once.
    private struct RestoreInProgress {
        let activator: Activator
        let started: ContinuousClock.Instant

        func releaseWaiters() {
            if case .wake(let waiters) = activator.gate.withLock({ $0.restoreSucceeded() }) {
                for waiter in waiters { waiter.resume(returning: .proceed) }
            }
            activator.emit(.restoreSucceeded(duration: .now - started))
        }
    }

    /// Returns when the application runs: this task restores it (and gets the
    /// ``RestoreInProgress`` to release the others), or waited for the task that did (`nil`).
    /// - Throws: ``RestoreFailedError``, ``ActivatorStoppedError`` or `CancellationError`.
    private func awaitApplication() async throws -> RestoreInProgress? {
        let id = nextConnectionID.wrappingAdd(1, ordering: .relaxed).newValue
        let role = try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (waiter: Waiter) in
                if Task.isCancelled {
                    waiter.resume(throwing: CancellationError())
                    return
                }
                let action = gate.withLock { $0.connectionNeedsApp(id: id, waiter: waiter) }
                switch action {
                case .startRestore: waiter.resume(returning: .restorer)
                case .park: break
                case .proceed: waiter.resume(returning: .proceed)
                case .reject: waiter.resume(throwing: ActivatorStoppedError())
                }
            }
        } onCancel: {
            gate.withLock { $0.waiterCancelled(id: id) }?.resume(throwing: CancellationError())
        }
        switch role {
        case .proceed: return nil
        case .restorer: return try await performRestore()
        }
    }

    /// Runs the restore hook, then switches the redirects off. On failure the held connections
    /// are failed here; on success they are released by the returned value.
    private func performRestore() async throws -> RestoreInProgress {
        emit(.restoreStarted)
        let started = ContinuousClock.now
        do {
            try await restoreHook()
        } catch {
            let failure = RestoreFailedError(message: "\(error)")
            if case .wake(let waiters) = gate.withLock({ $0.restoreFailed() }) {
                for waiter in waiters { waiter.resume(throwing: failure) }
            }
            emit(.restoreFailed(message: failure.message, duration: .now - started))
            throw failure
        }
        for server in servers {
            do {
                try await redirect.disable(port: server.appPort)
            } catch {
                emit(.redirectDisableFailed(port: server.appPort, message: "\(error)"))
            }
        }
        return RestoreInProgress(activator: self, started: started)
    }
}

/// Keeps accept errors (EMFILE, ECONNABORTED, ...) from ending the listener's async stream:
/// NIO reports them through `errorCaught` and goes on accepting.
private final class AcceptErrorAbsorber: ChannelInboundHandler {
    typealias InboundIn = Any

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if error is IOError { return }
        context.fireErrorCaught(error)
    }
}

@available(*, unavailable)
extension AcceptErrorAbsorber: Sendable {}
