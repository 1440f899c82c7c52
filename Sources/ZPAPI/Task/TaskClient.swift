import NIOCore
import ZPCore
import ZPTTRPC

/// A client of one shim's task API (`containerd.task.v2.Task`), for tools and tests that talk to a
/// shim the way containerd does. Covers the calls that read or stop a task; containerd itself
/// creates and starts tasks.
public struct ShimTaskClient: Sendable {
    private let client: TTRPCClient
    private let metadata: [(key: String, value: String)]
    private let service: String

    private init(client: TTRPCClient, namespace: String, service: String) {
        self.client = client
        metadata = [(TaskAPI.namespaceMetadataKey, namespace)]
        self.service = service
    }

    /// Connects to a shim's task socket.
    ///
    /// - Parameters:
    ///   - path: The task API socket, e.g. `/run/containerd/s/<hash>` (without `unix://`).
    ///   - namespace: The containerd namespace sent with every call.
    ///   - service: ``TaskAPI/serviceV2`` (default) or ``TaskAPI/serviceV3``.
    ///   - group: The event loops to use.
    /// - Throws: NIO connection errors (`ENOENT`, `ECONNREFUSED`; a shim of another uid closes at once).
    public static func connect(
        socketPath path: String,
        namespace: String,
        service: String = TaskAPI.serviceV2,
        group: any EventLoopGroup
    ) async throws -> ShimTaskClient {
        ShimTaskClient(
            client: try await TTRPCClient.connect(unixSocketPath: path, group: group),
            namespace: namespace,
            service: service
        )
    }

    private func call<Response: ProtobufMessage>(
        _ method: TaskAPI.Method,
        _ request: some ProtobufMessage,
        _ response: Response.Type,
        timeout: Duration = .seconds(10)
    ) async throws -> Response {
        let bytes = try await client.call(
            service: service,
            method: method.rawValue,
            payload: request.encoded(),
            metadata: metadata,
            timeout: timeout
        )
        return try Response(decoding: bytes)
    }

    /// The shim's and the task's pids and the shim's version (`Connect`).
    /// - Throws: ``TTRPCStatusError`` (`notFound` for an unknown task) or transport errors.
    public func connect(id: String) async throws -> ConnectResponse {
        try await call(.connect, TaskIDRequest(id: id), ConnectResponse.self)
    }

    /// The state of task `id` or of its exec process `execID` (`State`).
    /// - Throws: ``TTRPCStatusError`` (`notFound` for an unknown task or exec) or transport errors.
    public func state(id: String, execID: String = "") async throws -> StateResponse {
        try await call(.state, TaskProcessRequest(id: id, execID: execID), StateResponse.self)
    }

    /// The pids of the container's processes (`Pids`).
    /// - Throws: ``TTRPCStatusError`` or transport errors.
    public func pids(id: String) async throws -> [UInt32] {
        try await call(.pids, TaskIDRequest(id: id), PidsResponse.self).pids
    }

    /// Sends `signal` to the task's init, an exec process, or every process (`Kill`).
    /// - Throws: ``TTRPCStatusError`` or transport errors.
    public func kill(id: String, execID: String = "", signal: UInt32, all: Bool = false) async throws {
        _ = try await call(.kill, KillRequest(id: id, execID: execID, signal: signal, all: all), EmptyMessage.self)
    }

    /// Waits until the process exits (`Wait`).
    /// - Parameter timeout: How long to wait for the exit.
    /// - Throws: ``TTRPCStatusError``, transport errors and timeouts.
    public func wait(id: String, execID: String = "", timeout: Duration = .seconds(60)) async throws -> WaitResponse {
        try await call(.wait, TaskProcessRequest(id: id, execID: execID), WaitResponse.self, timeout: timeout)
    }

    /// Closes the connection.
    public func close() async {
        await client.close()
    }
}
