import NIOCore
import ZPCore
import ZPTTRPC

/// A client of one shim's status service (`zeropod.shim.v1.Shim`), for the manager, the `zeropod`
/// CLI and the shims of a wake group.
public struct ShimStatusClient: Sendable {
    private let client: TTRPCClient

    private init(client: TTRPCClient) {
        self.client = client
    }

    /// Connects to a shim's status socket.
    ///
    /// - Parameters:
    ///   - path: The status socket, `<run-dir>/s/<hash>.sock` (``NodeLayout/statusSocket(forShimSocket:)``).
    ///   - group: The event loops to use.
    /// - Throws: NIO connection errors (`ENOENT`, `ECONNREFUSED`; a shim of another uid closes at once).
    public static func connect(socketPath path: String, group: any EventLoopGroup) async throws -> ShimStatusClient {
        ShimStatusClient(client: try await TTRPCClient.connect(unixSocketPath: path, group: group))
    }

    /// The status of container `id`.
    /// - Throws: ``TTRPCStatusError`` with `notFound` when the shim does not serve `id`; transport errors.
    public func status(id: String) async throws -> StatusAPI.ContainerStatus {
        let bytes = try await client.call(
            service: StatusAPI.service,
            method: StatusAPI.getStatus,
            payload: StatusAPI.ContainerRequest(id: id).encoded()
        )
        return try StatusAPI.ContainerStatus(decoding: bytes)
    }

    /// Every container the shim serves, ordered by id.
    /// - Throws: ``TTRPCStatusError`` or transport errors.
    public func list() async throws -> [StatusAPI.ContainerStatus] {
        let bytes = try await client.call(service: StatusAPI.service, method: StatusAPI.listContainers, payload: [])
        return try StatusAPI.ListContainersResponse(decoding: bytes).containers
    }

    /// Cumulative metrics per container.
    /// - Throws: ``TTRPCStatusError`` or transport errors.
    public func metrics() async throws -> [StatusAPI.ContainerMetrics] {
        let bytes = try await client.call(service: StatusAPI.service, method: StatusAPI.metrics, payload: [])
        return try StatusAPI.MetricsResponse(decoding: bytes).containers
    }

    /// The shim's status changes, from now on (after every container's current status when
    /// `initialSnapshot` is set). Ends when the shim closes the stream; throws when the connection
    /// drops. The stream stays open on the shim until ``close()``.
    ///
    /// - Parameter initialSnapshot: Ask for the current status of every container first.
    public func subscribe(initialSnapshot: Bool = false) -> some AsyncSequence<StatusAPI.StatusChange, any Error> {
        client.serverStream(
            service: StatusAPI.service,
            method: StatusAPI.subscribeStatus,
            payload: StatusAPI.SubscribeStatusRequest(initialSnapshot: initialSnapshot).encoded()
        )
        .map { try StatusAPI.StatusChange(decoding: $0) }
    }

    /// Wakes container `id` for its wake group (``StatusAPI/wake``): answers once it runs again,
    /// or at once when there was nothing to do.
    /// - Parameters:
    ///   - id: The container, served by this shim.
    ///   - origin: The member that caused the wake, for the called shim's log.
    ///   - timeout: How long to wait for the answer.
    /// - Throws: ``TTRPCStatusError`` (`notFound` for an unknown id, `failedPrecondition` when the
    ///   container cannot come back); transport errors and timeouts.
    public func wake(
        id: String,
        origin: String,
        timeout: Duration = .seconds(30)
    ) async throws -> StatusAPI.WakeResponse {
        let bytes = try await client.call(
            service: StatusAPI.service,
            method: StatusAPI.wake,
            payload: StatusAPI.WakeRequest(id: id, origin: origin).encoded(),
            timeout: timeout
        )
        return try StatusAPI.WakeResponse(decoding: bytes)
    }

    /// Closes the connection (and with it any subscription).
    public func close() async {
        await client.close()
    }
}
