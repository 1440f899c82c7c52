// The page-server proxy of a live migration (decisions 0058, 0063; the original's
// `manager/node/page_server_proxy.go`, kubernetes brief §4.3). The manager runs in its pod's
// network namespace and its node's shims in the host's: they meet only through unix sockets in
// the node's run folder (`<run-dir>/p/<container id>.sock`). On the source the shim relays that
// socket to CRIU's page server on the host's loopback, and this proxy serves it to the target over
// mutual TLS on the pod network; on the target this proxy listens on the new container's page
// socket (owner-only) and relays its one client to the source's proxy over mutual TLS. Each proxy
// is one-shot (one client, then the listener closes) and bounded in time. Stricter than the
// original: the source proxy connects to its backend only after a peer's TLS handshake succeeded,
// so a peer without a valid certificate neither reaches the page server nor uses up the one shot.
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import NIOTLS
import Synchronization
import ZPAPI

#if canImport(Glibc)
import Glibc
#endif

/// Where a ``PageServerProxy`` listens or connects.
enum PageProxyEndpoint: Sendable, CustomStringConvertible {
    /// TCP (port 0 to listen on a free one).
    case tcp(host: String, port: Int)
    /// A unix socket in the node's run folder (listening: mode 0600, removed when the listener
    /// closes).
    case unix(path: String)

    /// `host:port` or the socket's path.
    var description: String {
        switch self {
        case .tcp(let host, let port): "\(host):\(port)"
        case .unix(let path): path
        }
    }
}

/// A one-shot TCP proxy from a listener to a backend, either side optionally with the node
/// service's mutual TLS.
final class PageServerProxy: Sendable {
    /// Where the backend is and how to reach it.
    struct Backend: Sendable {
        /// The backend's address.
        var endpoint: PageProxyEndpoint
        /// Dial it with the node service's client TLS (the peer's IP SAN checked; TCP only).
        var tls: NodeTLS?
    }

    /// The TCP port the proxy listens on (0 for a unix listener).
    let port: Int
    /// Where the proxy listens.
    let listening: PageProxyEndpoint
    private let listener: any Channel
    private let connections = Mutex<[any Channel]>([])
    private let taken = Mutex(false)
    private let finishedPromise: EventLoopPromise<Void>
    private let logger: Logger

    /// Starts a proxy listening on `listen` (a unix socket is made mode 0600, a stale one
    /// replaced; its folder must exist, owner-only).
    /// - Parameters:
    ///   - serverTLS: accepted connections must complete the node service's mutual TLS first.
    ///   - timeout: the proxy closes (listener and connections) after this time.
    static func start(
        group: any EventLoopGroup,
        listen: PageProxyEndpoint,
        serverTLS: NodeTLS?,
        backend: Backend,
        timeout: Duration,
        logger: Logger
    ) async throws -> PageServerProxy {
        let loop = group.next()
        let slot = ProxySlot()
        let bootstrap = ServerBootstrap(group: loop)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { child in
                child.eventLoop.makeCompletedFuture {
                    try slot.accepted(child, serverTLS: serverTLS, backend: backend, logger: logger)
                }
            }
        let listener: any Channel
        switch listen {
        case .tcp(let host, let port):
            listener = try await bootstrap.bind(host: host, port: port).get()
        case .unix(let path):
            listener = try await bootstrap.bind(unixDomainSocketPath: path, cleanupExistingSocketFile: true).get()
            if chmod(path, 0o600) != 0 {
                let error = IOError(errnoCode: errno, reason: "chmod 0600 \(path)")
                try? await listener.close()
                _ = unlink(path)
                throw error
            }
        }
        let proxy = PageServerProxy(
            listener: listener,
            listening: listen,
            port: listener.localAddress?.port ?? 0,
            finished: loop.makePromise(),
            logger: logger
        )
        slot.proxy.withLock { $0 = proxy }
        let timer = loop.scheduleTask(in: .nanoseconds(Int64(timeout.components.seconds) * 1_000_000_000)) {
            logger.warning("page-server proxy closed after its bound", metadata: ["listening": "\(listen)"])
            proxy.close()
        }
        proxy.finishedPromise.futureResult.whenComplete { _ in timer.cancel() }
        return proxy
    }

    private init(
        listener: any Channel,
        listening: PageProxyEndpoint,
        port: Int,
        finished: EventLoopPromise<Void>,
        logger: Logger
    ) {
        self.listener = listener
        self.listening = listening
        self.port = port
        self.finishedPromise = finished
        self.logger = logger
    }

    /// Completes when the proxied connection ended (or the proxy was closed).
    var finished: EventLoopFuture<Void> { finishedPromise.futureResult }

    /// Takes the one shot: true for the first caller.
    fileprivate func take(_ channels: [any Channel]) -> Bool {
        let first = taken.withLock { t -> Bool in
            defer { t = true }
            return !t
        }
        guard first else { return false }
        connections.withLock { $0 = channels }
        closeListener()
        return true
    }

    /// Closes the listener; a unix one's socket file goes with it.
    private func closeListener() {
        listener.close(promise: nil)
        if case .unix(let path) = listening { _ = unlink(path) }
    }

    /// One side of the proxied connection closed: close the other and finish.
    fileprivate func connectionEnded() {
        let channels = connections.withLock { $0 }
        for channel in channels { channel.close(promise: nil) }
        finishedPromise.succeed(())
    }

    /// Closes the listener and any proxied connection. Idempotent. With `releasingBackend`, a
    /// proxy that never had a client first connects to its backend and hangs up: CRIU's lazy page
    /// server takes that as the end of the transfer, so a source whose target never came ends its
    /// dump (and the processes the Kill asked to end) now instead of at its bound.
    func close(releasingBackend backend: PageProxyEndpoint? = nil) {
        let unused = taken.withLock { t -> Bool in
            defer { t = true }
            return !t
        }
        closeListener()
        connectionEnded()
        guard unused, let backend else { return }
        ClientBootstrap(group: listener.eventLoop).connect(to: backend).whenSuccess { channel in
            channel.close(promise: nil)
        }
    }
}

/// The proxy as its listener's child initializer sees it (set right after the bind).
private final class ProxySlot: Sendable {
    let proxy = Mutex<PageServerProxy?>(nil)

    /// Sets up an accepted connection: TLS first when asked (a refused peer is logged: it never
    /// reached the backend), then (on the child's event loop) the backend connection and the glue
    /// between both.
    func accepted(_ child: any Channel, serverTLS: NodeTLS?, backend: PageServerProxy.Backend, logger: Logger) throws {
        let front = ByteGlue()
        if let serverTLS {
            try serverTLS.prepareServer(
                child,
                logger: logger,
                refusal: "page-server proxy refused a peer before reaching CRIU's page server"
            )
            try child.pipeline.syncOperations.addHandler(
                HandshakeGate { [self] in self.connectBackend(child, front: front, backend: backend) }
            )
        }
        try child.pipeline.syncOperations.addHandler(front)
        if serverTLS == nil { connectBackend(child, front: front, backend: backend) }
    }

    private func connectBackend(_ child: any Channel, front: ByteGlue, backend: PageServerProxy.Backend) {
        let loop = child.eventLoop
        guard let proxy = proxy.withLock({ $0 }) else {
            child.close(promise: nil)
            return
        }
        let boundFront = NIOLoopBound(front, eventLoop: loop)
        ClientBootstrap(group: loop)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let tls = backend.tls { try tls.prepareClient(channel) }
                }
            }
            .connect(to: backend.endpoint)
            .whenComplete { result in
                switch result {
                case .success(let peer):
                    guard proxy.take([child, peer]) else {
                        peer.close(promise: nil)
                        child.close(promise: nil)
                        return
                    }
                    let back = ByteGlue()
                    back.onEnd = { proxy.connectionEnded() }
                    boundFront.value.onEnd = { proxy.connectionEnded() }
                    do {
                        try peer.pipeline.syncOperations.addHandler(back)
                        ByteGlue.pair(boundFront.value, back)
                    } catch {
                        proxy.connectionEnded()
                        return
                    }
                    // Either side closing ends the proxy, also when the client hung up while the
                    // backend connected (not `isActive`: a unix connect completes inline, before
                    // an accepted child is active).
                    child.closeFuture.whenComplete { _ in proxy.connectionEnded() }
                    peer.closeFuture.whenComplete { _ in proxy.connectionEnded() }
                case .failure:
                    child.close(promise: nil)
                }
            }
    }
}

extension ClientBootstrap {
    /// Connects to a TCP or unix endpoint.
    fileprivate func connect(to endpoint: PageProxyEndpoint) -> EventLoopFuture<any Channel> {
        switch endpoint {
        case .tcp(let host, let port): connect(host: host, port: port)
        case .unix(let path): connect(unixDomainSocketPath: path)
        }
    }
}

/// Passes nothing on until the TLS handshake completed, then calls `completed` once.
private final class HandshakeGate: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny
    private var completed: (() -> Void)?

    init(completed: @escaping () -> Void) { self.completed = completed }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let tlsEvent = event as? TLSUserEvent, case .handshakeCompleted = tlsEvent, let completed {
            self.completed = nil
            completed()
        }
        context.fireUserInboundEventTriggered(event)
    }
}
