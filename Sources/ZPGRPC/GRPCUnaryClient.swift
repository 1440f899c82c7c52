// A gRPC client for unary calls only, over cleartext HTTP/2 on a unix socket (how kubelet reaches
// containerd's CRI and how the installer asks containerd's Version service), on SwiftNIO's HTTP/2:
// without a code generator or a gRPC library (decisions 0026, 0038).
import NIOCore
import NIOHPACK
import NIOHTTP2
import NIOPosix

/// A failed gRPC call: the method, the gRPC status code and message, or a transport failure.
public struct GRPCCallError: Error, CustomStringConvertible, Sendable {
    /// The full method path, e.g. `/runtime.v1.RuntimeService/RunPodSandbox`.
    public var method: String
    /// The `grpc-status` code (2 UNKNOWN when the server sent none; 4 DEADLINE_EXCEEDED on our timeout).
    public var code: Int
    /// The `grpc-message`, percent-decoded, or what went wrong.
    public var message: String

    /// An error for `method` with gRPC status `code` and `message`.
    public init(method: String, code: Int, message: String) {
        (self.method, self.code, self.message) = (method, code, message)
    }

    /// "method: code N: message".
    public var description: String { "\(method): gRPC status \(code): \(message)" }
}

/// One HTTP/2 connection to a gRPC server on a unix socket; every call opens a stream on it.
public final class GRPCUnaryClient: Sendable {
    private let channel: any Channel
    private let multiplexer: NIOHTTP2Handler.AsyncStreamMultiplexer<Void>
    /// The `:authority` sent with each call.
    private let authority: String
    /// The `user-agent` sent with each call.
    private let userAgent: String

    private init(
        channel: any Channel,
        multiplexer: NIOHTTP2Handler.AsyncStreamMultiplexer<Void>,
        authority: String,
        userAgent: String
    ) {
        (self.channel, self.multiplexer, self.authority, self.userAgent) = (channel, multiplexer, authority, userAgent)
    }

    /// Connects to the gRPC server listening on the unix socket at `path`.
    /// - Parameters:
    ///   - userAgent: the `user-agent` sent with every call.
    ///   - connectTimeout: how long the connect may take.
    /// - Throws: NIO's connect errors.
    public static func connect(
        unixSocket path: String,
        userAgent: String = "grpc-go/1.72.2 zeropod-swift-cri-testbed",
        connectTimeout: Duration = .seconds(10)
    ) async throws -> GRPCUnaryClient {
        try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connectTimeout(
                .milliseconds(
                    max(
                        1,
                        connectTimeout.components.seconds * 1000
                            + connectTimeout.components.attoseconds / 1_000_000_000_000_000
                    )
                )
            )
            .connect(unixDomainSocketPath: path) { channel in
                channel.eventLoop.makeCompletedFuture {
                    let multiplexer = try channel.pipeline.syncOperations.configureAsyncHTTP2Pipeline(mode: .client) {
                        $0.eventLoop.makeSucceededVoidFuture()
                    }
                    return GRPCUnaryClient(
                        channel: channel,
                        multiplexer: multiplexer,
                        authority: "localhost",
                        userAgent: userAgent
                    )
                }
            }
    }

    /// Closes the connection.
    public func close() async {
        try? await channel.close()
    }

    /// Calls `method` with the encoded `request` and returns the encoded response message.
    /// - Parameters:
    ///   - method: `/package.Service/Method`.
    ///   - timeout: sent as `grpc-timeout` and enforced here.
    /// - Throws: ``GRPCCallError`` for a non-OK status, a malformed answer or the timeout.
    public func call(_ method: String, _ request: [UInt8], timeout: Duration = .seconds(60)) async throws -> [UInt8] {
        let seconds = max(1, Int(timeout.components.seconds))
        return try await withThrowingTaskGroup(of: [UInt8]?.self) { group in
            group.addTask { try await self.exchange(method, request, timeoutSeconds: seconds) }
            group.addTask {
                try await Task.sleep(for: timeout)
                return nil
            }
            defer { group.cancelAll() }
            guard let first = try await group.next(), let response = first else {
                throw GRPCCallError(method: method, code: 4, message: "no answer within \(seconds) s")
            }
            return response
        }
    }

    private func exchange(_ method: String, _ request: [UInt8], timeoutSeconds: Int) async throws -> [UInt8] {
        let stream = try await multiplexer.openStream { stream in
            stream.eventLoop.makeCompletedFuture {
                try NIOAsyncChannel<HTTP2Frame.FramePayload, HTTP2Frame.FramePayload>(
                    wrappingChannelSynchronously: stream
                )
            }
        }
        return try await stream.executeThenClose { inbound, outbound in
            let headers = HPACKHeaders([
                (":method", "POST"), (":scheme", "http"), (":path", method), (":authority", authority),
                ("content-type", "application/grpc"), ("te", "trailers"), ("grpc-timeout", "\(timeoutSeconds)S"),
                ("user-agent", userAgent),
            ])
            try await outbound.write(.headers(.init(headers: headers)))
            var frame = ByteBuffer()
            frame.writeInteger(UInt8(0))
            frame.writeInteger(UInt32(request.count))
            frame.writeBytes(request)
            try await outbound.write(.data(.init(data: .byteBuffer(frame), endStream: true)))
            var body: [UInt8] = []
            var status: Int? = nil
            var message = ""
            loop: for try await payload in inbound {
                switch payload {
                case .headers(let block):
                    if let code = block.headers.first(name: "grpc-status") { status = Int(code) }
                    if let text = block.headers.first(name: "grpc-message") { message = text.removingPercentEncoding() }
                    if block.endStream { break loop }
                case .data(let data):
                    if case .byteBuffer(let bytes) = data.data { body += bytes.readableBytesView }
                    if data.endStream { break loop }
                default:
                    continue
                }
            }
            guard let status else {
                throw GRPCCallError(method: method, code: 2, message: "no grpc-status in the answer")
            }
            guard status == 0 else { throw GRPCCallError(method: method, code: status, message: message) }
            guard body.count >= 5 else {
                throw GRPCCallError(method: method, code: 2, message: "no message in the answer")
            }
            guard body[0] == 0 else { throw GRPCCallError(method: method, code: 2, message: "compressed answer") }
            let length = body[1...4].reduce(0) { $0 << 8 | Int($1) }
            guard body.count >= 5 + length else {
                throw GRPCCallError(method: method, code: 2, message: "truncated answer")
            }
            return Array(body[5..<(5 + length)])
        }
    }
}

extension String {
    /// `%XX` sequences decoded (gRPC's `grpc-message` encoding).
    fileprivate func removingPercentEncoding() -> String {
        var bytes: [UInt8] = []
        var utf8 = Array(self.utf8)[...]
        while let byte = utf8.popFirst() {
            if byte == UInt8(ascii: "%"), utf8.count >= 2,
                let value = UInt8(String(decoding: utf8.prefix(2), as: UTF8.self), radix: 16)
            {
                bytes.append(value)
                utf8 = utf8.dropFirst(2)
            } else {
                bytes.append(byte)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
