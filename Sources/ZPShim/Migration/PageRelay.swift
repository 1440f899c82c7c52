// The shim's side of where a live migration's pages cross between the host's network namespace
// and the manager's (decision 0063). CRIU's lazy page server and `criu lazy-pages --page-server`
// speak TCP to an address, and the shim runs them in the host's namespace; the node's manager runs
// in its pod's namespace, whose loopback is not the host's. They meet only in the node's run folder
// (mounted into the manager's pod): a unix socket `<run-dir>/p/<container id>.sock` (folder 0700,
// socket 0600). On the source the shim listens there and relays the manager's one connection to
// CRIU's page server on 127.0.0.1; on the target the manager listens there and the shim relays its
// `criu lazy-pages`'s one connection from 127.0.0.1 to it.
import Logging
import NIOCore
import NIOPosix
import Synchronization
import SystemPackage
import ZPAPI
import ZPSystem

#if canImport(Glibc)
import Glibc
#endif

/// Where a ``PageRelay`` listens or connects.
enum PageRelayEndpoint: Sendable, CustomStringConvertible {
    /// TCP on the host's loopback; port 0 to listen on a free one.
    case loopback(port: Int)
    /// A unix socket (listening: made owner-only, removed when the relay closes).
    case unix(path: String)

    /// `127.0.0.1:<port>` or the socket's path.
    var description: String {
        switch self {
        case .loopback(let port): "127.0.0.1:\(port)"
        case .unix(let path): path
        }
    }
}

/// A one-shot byte relay: it accepts one connection, connects it to the backend, pipes bytes both
/// ways, and closes everything when either side ends, when ``close()`` is called, or after its
/// bound. Its unix listening socket is removed on close.
final class PageRelay: Sendable {
    /// The loopback port it listens on (0 for a unix listener).
    let port: Int
    /// Where it listens.
    let listening: PageRelayEndpoint
    private let listener: any Channel
    private let state = Mutex(RelayState())
    private let logger: Logger

    private struct RelayState {
        var taken = false
        var closed = false
        var connections: [any Channel] = []
    }

    /// Starts listening on `listen` (a unix socket's folder is made owner-only first, a stale
    /// socket file replaced); connects its one client to `backend`.
    /// - Throws: the folder, bind or mode errors.
    static func start(
        group: any EventLoopGroup,
        listen: PageRelayEndpoint,
        backend: PageRelayEndpoint,
        timeout: Duration,
        logger: Logger
    ) async throws -> PageRelay {
        let loop = group.next()
        let slot = RelaySlot()
        let bootstrap = ServerBootstrap(group: loop)
            .childChannelInitializer { child in
                child.eventLoop.makeCompletedFuture { try slot.accepted(child, backend: backend) }
            }
        let listener: any Channel
        switch listen {
        case .loopback(let port):
            listener = try await bootstrap.bind(host: "127.0.0.1", port: port).get()
        case .unix(let path):
            try Files.makeOwnerOnlyDirectory(FilePath(path).removingLastComponent())
            listener = try await bootstrap.bind(unixDomainSocketPath: path, cleanupExistingSocketFile: true).get()
            do {
                try systemCall("chmod", path) { chmod(path, 0o600) }
            } catch {
                try? await listener.close()
                _ = unlink(path)
                throw error
            }
        }
        let relay = PageRelay(
            listener: listener,
            listening: listen,
            port: listener.localAddress?.port ?? 0,
            logger: logger
        )
        slot.relay.withLock { $0 = relay }
        let timer = loop.scheduleTask(in: .nanoseconds(Int64(timeout.components.seconds) * 1_000_000_000)) {
            logger.warning("page relay closed after its bound", metadata: ["listening": "\(listen)"])
            relay.close()
        }
        relay.closedFuture.whenComplete { _ in timer.cancel() }
        return relay
    }

    private let closedPromise: EventLoopPromise<Void>

    private init(listener: any Channel, listening: PageRelayEndpoint, port: Int, logger: Logger) {
        self.listener = listener
        self.listening = listening
        self.port = port
        self.logger = logger
        self.closedPromise = listener.eventLoop.makePromise()
    }

    /// Completes when the relay closed (its connection ended, or ``close()``).
    var closedFuture: EventLoopFuture<Void> { closedPromise.futureResult }

    /// Takes the one shot with the accepted connection and its backend: false when it was taken
    /// or the relay closed.
    fileprivate func take(_ channels: [any Channel]) -> Bool {
        let first = state.withLock { s -> Bool in
            guard !s.taken, !s.closed else { return false }
            s.taken = true
            s.connections = channels
            return true
        }
        if first { closeListener() }
        return first
    }

    private func closeListener() {
        listener.close(promise: nil)
        if case .unix(let path) = listening { _ = unlink(path) }
    }

    /// Closes the listener (removing its socket file) and the relayed connection. Idempotent.
    func close() {
        let (connections, first) = state.withLock { s -> ([any Channel], Bool) in
            defer {
                s.closed = true
                s.connections = []
            }
            return (s.connections, !s.closed)
        }
        guard first else { return }
        closeListener()
        for channel in connections { channel.close(promise: nil) }
        closedPromise.succeed(())
    }
}

/// The relay as its listener's child initializer sees it (set right after the bind).
private final class RelaySlot: Sendable {
    let relay = Mutex<PageRelay?>(nil)

    /// Sets up an accepted connection: the backend is dialled once the connection is active (a
    /// unix connect completes inline: dialled from the child's initializer, it would pair and take
    /// the one shot before the child is registered).
    func accepted(_ child: any Channel, backend: PageRelayEndpoint) throws {
        let front = ByteGlue()
        front.onActive = { [self] in self.connectBackend(child, front: front, backend: backend) }
        try child.pipeline.syncOperations.addHandler(front)
    }

    private func connectBackend(_ child: any Channel, front: ByteGlue, backend: PageRelayEndpoint) {
        guard let relay = relay.withLock({ $0 }) else {
            child.close(promise: nil)
            return
        }
        let boundFront = NIOLoopBound(front, eventLoop: child.eventLoop)
        let connecting: EventLoopFuture<any Channel>
        let bootstrap = ClientBootstrap(group: child.eventLoop)
        switch backend {
        case .loopback(let port): connecting = bootstrap.connect(host: "127.0.0.1", port: port)
        case .unix(let path): connecting = bootstrap.connect(unixDomainSocketPath: path)
        }
        connecting.whenComplete { result in
            switch result {
            case .success(let peer):
                guard relay.take([child, peer]) else {
                    peer.close(promise: nil)
                    child.close(promise: nil)
                    return
                }
                let back = ByteGlue()
                back.onEnd = { relay.close() }
                boundFront.value.onEnd = { relay.close() }
                do {
                    try peer.pipeline.syncOperations.addHandler(back)
                    ByteGlue.pair(boundFront.value, back)
                } catch {
                    relay.close()
                    return
                }
                // Either side closing ends the relay, also when the client hung up while the
                // backend connected (a release: CRIU then sees the end of the transfer at once).
                // Not `isActive`: a unix connect completes inline, before the accepted child is
                // active.
                child.closeFuture.whenComplete { _ in relay.close() }
                peer.closeFuture.whenComplete { _ in relay.close() }
            case .failure:
                child.close(promise: nil)
            }
        }
    }
}
