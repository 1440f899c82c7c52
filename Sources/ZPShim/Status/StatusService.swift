import Logging
import NIOCore
import SystemPackage
import ZPAPI
import ZPCore
import ZPSystem
import ZPTTRPC

#if canImport(Glibc)
import Glibc
#endif

/// The shim's status service, `zeropod.shim.v1.Shim`, served over ttrpc on an owner-only socket of
/// its own: `GetStatus`, `ListContainers`, `SubscribeStatus` (a server stream) and `Metrics`, all
/// read from a ``ShimStatusBoard``, and `Wake` for wake groups (docs/decisions/0011-wake-groups.md).
/// Its socket is `<run-dir>/s/<hash>.sock` (`NodeLayout.statusSocket(forShimSocket:)`).
public struct ShimStatusService: Sendable {
    /// The board the methods read.
    public let board: ShimStatusBoard
    /// How many unread changes each subscriber may hold before it loses the oldest.
    public var subscriberCapacity: Int
    /// Answers `Wake` (wake groups); the method is not served when nil.
    public var wake: (@Sendable (StatusAPI.WakeRequest) async throws -> StatusAPI.WakeResponse)?

    /// A service over `board`.
    /// - Parameter wake: Carries out `Wake` calls (``TaskService/wake(_:)``); nil serves no `Wake`.
    public init(
        board: ShimStatusBoard,
        subscriberCapacity: Int = ShimStatusBoard.defaultSubscriberCapacity,
        wake: (@Sendable (StatusAPI.WakeRequest) async throws -> StatusAPI.WakeResponse)? = nil
    ) {
        self.board = board
        self.subscriberCapacity = subscriberCapacity
        self.wake = wake
    }

    /// Registers the methods on `router` (`Wake` only when ``wake`` is set).
    public func register(on router: inout TTRPCRouter) {
        let board = board
        let capacity = subscriberCapacity
        let service = StatusAPI.service
        router.register(service: service, method: StatusAPI.getStatus) { call in
            let request = try Self.decode(StatusAPI.ContainerRequest.self, call)
            guard !request.id.isEmpty else {
                throw TTRPCStatusError(.invalidArgument, "GetStatus: the request names no container id")
            }
            guard let status = board.status(id: request.id) else {
                throw TTRPCStatusError(.notFound, "GetStatus: container \"\(request.id)\" is not served by this shim")
            }
            return status.encoded()
        }
        router.register(service: service, method: StatusAPI.listContainers) { call in
            _ = try Self.decode(StatusAPI.Empty.self, call)
            return StatusAPI.ListContainersResponse(containers: board.list()).encoded()
        }
        router.register(service: service, method: StatusAPI.metrics) { call in
            _ = try Self.decode(StatusAPI.Empty.self, call)
            return StatusAPI.MetricsResponse(containers: board.metrics()).encoded()
        }
        if let wake {
            router.register(service: service, method: StatusAPI.wake) { call in
                let request = try Self.decode(StatusAPI.WakeRequest.self, call)
                guard !request.id.isEmpty else {
                    throw TTRPCStatusError(.invalidArgument, "Wake: the request names no container id")
                }
                return try await wake(request).encoded()
            }
        }
        router.registerServerStream(service: service, method: StatusAPI.subscribeStatus) { call, writer in
            let request = try Self.decode(StatusAPI.SubscribeStatusRequest.self, call)
            // Ends when the board finishes its subscriptions (shutdown) or this task is cancelled
            // (the peer closed the connection).
            for await change in board.subscribe(capacity: capacity, initialSnapshot: request.initialSnapshot) {
                try await writer.send(change.encoded())
            }
        }
    }

    private static func decode<M: ProtobufMessage>(_ type: M.Type, _ call: TTRPCCall) throws -> M {
        do {
            return try M(decoding: call.payload)
        } catch {
            throw TTRPCStatusError(.invalidArgument, "\(call.method): malformed request: \(error)")
        }
    }

    /// Serves on `path` until the task is cancelled, then removes the socket file.
    ///
    /// Creates the folder with mode 0700 (and sets that mode if it exists), binds the socket with
    /// mode 0600 before it listens, and refuses peers of another uid (``TTRPCServer``).
    ///
    /// - Parameters:
    ///   - path: The socket file, `NodeLayout.statusSocket(forShimSocket:)`.
    ///   - group: The event loops for the sockets.
    ///   - logger: Connection problems are logged here.
    ///   - onListening: Called once the socket accepts connections.
    /// - Throws: ``SystemError`` when the folder or the socket cannot be made; NIO errors.
    public func run(
        socketPath path: String,
        group: any EventLoopGroup,
        logger: Logger,
        onListening: @Sendable () -> Void = {}
    ) async throws {
        let directory = path.split(separator: "/", omittingEmptySubsequences: false).dropLast().joined(separator: "/")
        try Self.makeOwnerOnlyDirectory(directory)
        let descriptor = try StartCommand.listen(at: path)
        defer { unlink(path) }
        var router = TTRPCRouter()
        register(on: &router)
        let server = TTRPCServer(router: router, group: group, logger: logger)
        onListening()
        try await server.run(listeningDescriptor: descriptor.disown())  // the server closes it
    }

    /// Serves at `path` for the daemon until the task is cancelled. A failure is logged and does
    /// not stop the shim: the task API matters more.
    ///
    /// - Parameters:
    ///   - path: The status socket (`NodeLayout.statusSocket(forShimSocket:)`); nothing is served when nil.
    ///   - group: The event loops for the sockets.
    ///   - logger: Where failures go.
    public func serve(socketPath path: String?, group: any EventLoopGroup, logger: Logger) async {
        guard let path else { return }
        do {
            try await run(socketPath: path, group: group, logger: logger) {
                logger.info("status service listening", metadata: ["socket": "\(path)"])
            }
        } catch is CancellationError {
        } catch {
            logger.error("status service on \(path) failed: \(error)")
        }
    }

    /// `mkdir -p` with mode 0700 for every folder it creates, and `chmod 0700` for an existing last
    /// one (ZPSystem's ``Files/makeOwnerOnlyDirectory(_:)``).
    static func makeOwnerOnlyDirectory(_ path: String) throws(SystemError) {
        guard !path.isEmpty else { return }
        try Files.makeOwnerOnlyDirectory(FilePath(path))
    }
}
