// `GET /metrics` (and `/healthz`) on `-metrics-addr`: a small SwiftNIO HTTP/1.1 server, one
// handler, no framework.
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import ServiceLifecycle
import Synchronization

/// Serves the Prometheus exposition of ``ZeropodMetrics`` until graceful shutdown.
public final class MetricsServer: Service, Sendable {
    /// The text a scrape gets.
    public typealias Render = @Sendable () -> String

    private let host: String
    private let port: Int
    private let render: Render
    private let logger: Logger
    private let bound = Mutex<Int?>(nil)
    private let ready = Mutex<[CheckedContinuation<Int, Never>]>([])

    /// A server on `host:port` (port 0 picks a free one; see ``boundPort()``).
    public init(host: String, port: Int, logger: Logger, render: @escaping Render) {
        self.host = host
        self.port = port
        self.render = render
        self.logger = logger
    }

    /// The port it listens on, once it does.
    public func boundPort() async -> Int {
        await withCheckedContinuation { continuation in
            let port = bound.withLock { p -> Int? in
                if p == nil { ready.withLock { $0.append(continuation) } }
                return p
            }
            if let port { continuation.resume(returning: port) }
        }
    }

    /// Binds, serves, and closes at graceful shutdown or cancellation.
    /// - Throws: bind errors (address in use, bad address).
    public func run() async throws {
        let render = self.render
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                    try channel.pipeline.syncOperations.addHandler(MetricsHandler(render: render))
                }
            }
            .bind(host: host, port: port)
            .get()
        let port = channel.localAddress?.port ?? self.port
        let waiters = bound.withLock { p -> [CheckedContinuation<Int, Never>] in
            p = port
            return ready.withLock { w in
                defer { w = [] }
                return w
            }
        }
        for waiter in waiters { waiter.resume(returning: port) }
        logger.info("serving metrics", metadata: ["address": "\(host):\(port)", "path": "/metrics"])
        await withTaskCancellationHandler {
            await withGracefulShutdownHandler {
                try? await channel.closeFuture.get()
            } onGracefulShutdown: {
                channel.close(promise: nil)
            }
        } onCancel: {
            channel.close(promise: nil)
        }
        try? await channel.close()
    }
}

/// Answers `GET /metrics` with the exposition, `GET /healthz` with `ok`, everything else 404/405.
private final class MetricsHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let render: MetricsServer.Render
    private var head: HTTPRequestHead?

    init(render: @escaping MetricsServer.Render) {
        self.render = render
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            self.head = head
        case .body:
            break
        case .end:
            guard let head else { return }
            self.head = nil
            let path = head.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? head.uri
            let (status, type, body): (HTTPResponseStatus, String, String)
            switch (head.method, path) {
            case (.GET, "/metrics"), (.HEAD, "/metrics"):
                (status, type, body) = (.ok, "text/plain; version=0.0.4; charset=utf-8", render())
            case (.GET, "/healthz"), (.HEAD, "/healthz"):
                (status, type, body) = (.ok, "text/plain; charset=utf-8", "ok\n")
            case (_, "/metrics"), (_, "/healthz"):
                (status, type, body) = (.methodNotAllowed, "text/plain; charset=utf-8", "method not allowed\n")
            default:
                (status, type, body) = (.notFound, "text/plain; charset=utf-8", "not found\n")
            }
            var buffer = context.channel.allocator.buffer(capacity: body.utf8.count)
            buffer.writeString(body)
            var headers = HTTPHeaders()
            headers.add(name: "Content-Type", value: type)
            headers.add(name: "Content-Length", value: "\(buffer.readableBytes)")
            let keepAlive = head.isKeepAlive
            if !keepAlive { headers.add(name: "Connection", value: "close") }
            context.write(
                wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: status, headers: headers))),
                promise: nil
            )
            if head.method != .HEAD { context.write(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil) }
            if keepAlive {
                context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
            } else {
                let channel = context.channel
                context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in channel.close(promise: nil) }
            }
        }
    }
}
