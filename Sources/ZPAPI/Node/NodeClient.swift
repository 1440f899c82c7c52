import NIOCore
import ZPCore
import ZPTTRPC

/// A client of a manager's node service (`zeropod.node.v1.Node`): shims on the node socket, peer
/// managers over mutual TLS (the TLS connection is made by the caller and wrapped here).
public struct NodeClient: Sendable {
    private let client: TTRPCClient

    /// Wraps a connected ttrpc client (for example one over TLS, see ZPManager's `NodeTLS`).
    public init(client: TTRPCClient) {
        self.client = client
    }

    /// Connects to the node socket, `<run-dir>/node.sock` (``NodeLayout/nodeSocket``).
    /// - Throws: NIO connection errors (`ENOENT` when no manager serves it, `ECONNREFUSED`).
    public static func connect(socketPath path: String, group: any EventLoopGroup) async throws -> NodeClient {
        NodeClient(client: try await TTRPCClient.connect(unixSocketPath: path, group: group))
    }

    private func call<Response: ProtobufMessage>(
        _ method: NodeAPI.Method,
        _ request: some ProtobufMessage,
        _: Response.Type,
        timeout: Duration
    ) async throws -> Response {
        let bytes = try await client.call(
            service: NodeAPI.service,
            method: method.rawValue,
            payload: request.encoded(),
            timeout: timeout
        )
        return try Response(decoding: bytes)
    }

    /// Source: waits until a target claimed the pod's Migration and is ready to restore, or until
    /// the node gives up (``NodeAPI/EvacOutcome``).
    /// - Parameter timeout: How long to wait for the answer (longer than the node's claim and
    ///   ready timeouts together).
    /// - Throws: ``TTRPCStatusError`` or transport errors.
    public func prepareEvac(_ request: NodeAPI.EvacRequest, timeout: Duration) async throws -> NodeAPI.EvacResponse {
        try await call(.prepareEvac, request, NodeAPI.EvacResponse.self, timeout: timeout)
    }

    /// Source: the shim wrote the image archive (`<state-dir>/m/<source id>/image.zpimg`); the node
    /// computes its digest, publishes its image server and marks the Migration Running.
    /// - Throws: ``TTRPCStatusError`` (`failedPrecondition` when the image is incomplete) or transport errors.
    public func evac(
        _ request: NodeAPI.EvacRequest,
        timeout: Duration = .seconds(60)
    ) async throws -> NodeAPI.EvacResponse {
        try await call(.evac, request, NodeAPI.EvacResponse.self, timeout: timeout)
    }

    /// Source: a published live migration's dump ended without the target taking the pages (the
    /// shim's `pages-transfer-timeout`, or CRIU failed); `request.migrationInfo` carries the
    /// reason in `failure` and the Evac answer's `migration_uid`. The node marks the Migration
    /// Failed and closes the container's page-server proxy (decision 0064).
    /// - Throws: ``TTRPCStatusError`` (`failedPrecondition` for a report about another or an
    ///   already final Migration, decision 0065) or transport errors.
    public func abortEvac(
        _ request: NodeAPI.EvacRequest,
        timeout: Duration = .seconds(30)
    ) async throws -> NodeAPI.EvacResponse {
        try await call(.abortEvac, request, NodeAPI.EvacResponse.self, timeout: timeout)
    }

    /// Target: claims or finds the pod's Migration, waits for the source's image server, pulls and
    /// checks the image and answers where it is.
    /// - Throws: ``TTRPCStatusError``: `notFound` when there is no Migration for this pod (start
    ///   normally), `failedPrecondition` / `deadlineExceeded` / `dataLoss` when the migration failed
    ///   (start from scratch); transport errors.
    public func restore(_ request: NodeAPI.RestoreRequest, timeout: Duration) async throws -> NodeAPI.RestoreResponse {
        try await call(.restore, request, NodeAPI.RestoreResponse.self, timeout: timeout)
    }

    /// Target: the container was created from the image (or from scratch, with `failure` set).
    /// - Throws: ``TTRPCStatusError`` or transport errors.
    public func finishRestore(
        _ request: NodeAPI.RestoreRequest,
        timeout: Duration = .seconds(30)
    ) async throws
        -> NodeAPI.RestoreResponse
    {
        try await call(.finishRestore, request, NodeAPI.RestoreResponse.self, timeout: timeout)
    }

    /// Peer: the chunks of the compressed image archive of `request.imageID`, from
    /// `request.offset` on, at most `request.length` bytes. Pull in windows of at most
    /// `bufferLimit` chunks (``NodeAPI/imageChunkSize`` each): ttrpc has no flow control, and a
    /// window larger than the buffer ends with `streamBufferOverflow` when the reader is slow.
    public func pullImage(
        _ request: NodeAPI.PullImageRequest,
        bufferLimit: Int = 128
    ) -> some AsyncSequence<[UInt8], any Error> {
        client.serverStream(
            service: NodeAPI.service,
            method: NodeAPI.Method.pullImage.rawValue,
            payload: request.encoded(),
            bufferLimit: bufferLimit
        )
        .map { try NodeAPI.Image(decoding: $0).imageData }
    }

    /// Closes the connection.
    public func close() async {
        await client.close()
    }

    /// Completes when the connection has closed: ``close()`` was called, or the manager went away.
    public func waitClosed() async {
        await client.waitClosed()
    }
}
