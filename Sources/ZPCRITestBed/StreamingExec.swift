// `kubectl exec` against the CRI streaming server: the URL that `Exec` returns, opened as a
// WebSocket with Kubernetes' channel protocols (v5/v4 `channel.k8s.io`: one byte of channel,
// then the data; 0 stdin, 1 stdout, 2 stderr, 3 error/status, 4 resize, 255 close), as kubectl
// 1.30+ and the API server's streaming proxy do. containerd 1.6 serves v4, 2.1 also v5.
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOWebSocket

/// What a streaming exec produced.
public struct StreamingExecResult: Sendable {
    /// The WebSocket subprotocol the server chose.
    public var subprotocol: String
    /// Everything on the stdout channel (the terminal's output with a tty).
    public var stdout: [UInt8]
    /// Everything on the stderr channel.
    public var stderr: [UInt8]
    /// The status on the error channel (a `metav1.Status` JSON), empty on success in v4+ servers
    /// that send `{"status":"Success"}`.
    public var status: String

    /// stdout as text.
    public var stdoutText: String { String(decoding: stdout, as: UTF8.self) }

    /// The exit code from a `NonZeroExitCode` status, 0 for `Success`, nil when neither.
    public var exitCode: Int? {
        if status.contains("\"status\":\"Success\"") { return 0 }
        guard status.contains("NonZeroExitCode"), let range = status.range(of: "\"reason\":\"ExitCode\",\"message\":\"")
        else { return nil }
        return Int(status[range.upperBound...].prefix { $0.isNumber })
    }
}

/// A failed streaming exec (the upgrade was refused, or the URL is not one we can open).
public struct StreamingExecError: Error, CustomStringConvertible, Sendable {
    /// What went wrong.
    public var description: String
}

/// Opens the streaming URL `url` (`http://HOST:PORT/exec/TOKEN`, or an attach URL), sends `resize`
/// (columns, rows) first when given and `input` on stdin (then closes stdin: v5 only), and collects
/// every channel until the server closes, or, with `until`, until stdout contains that text (then
/// the client closes: how `kubectl attach` ends without ending the process). With a tty, output
/// comes on stdout only.
/// - Throws: ``StreamingExecError`` when the URL or the upgrade fails; NIO errors.
public func streamingExec(
    url: String,
    input: [UInt8] = [],
    resize: (columns: Int, rows: Int)? = nil,
    until: String? = nil,
    timeout: Duration = .seconds(60)
) async throws -> StreamingExecResult {
    guard url.hasPrefix("http://") else { throw StreamingExecError(description: "not an http:// URL: \(url)") }
    let rest = url.dropFirst("http://".count)
    let slash = rest.firstIndex(of: "/") ?? rest.endIndex
    let hostPort = rest[..<slash]
    let path = String(rest[slash...])
    guard let colon = hostPort.lastIndex(of: ":"), let port = Int(hostPort[hostPort.index(after: colon)...]) else {
        throw StreamingExecError(description: "no port in \(url)")
    }
    let host = String(hostPort[..<colon]).trimmingCharacters(in: ["[", "]"])
    enum Upgrade: Sendable {
        case websocket(NIOAsyncChannel<WebSocketFrame, WebSocketFrame>, String)
        case refused
    }
    let upgrade: EventLoopFuture<Upgrade> = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
        .connectTimeout(.seconds(10))
        .connect(host: host, port: port) { channel in
            channel.eventLoop.makeCompletedFuture {
                let upgrader = NIOTypedWebSocketClientUpgrader<Upgrade>(maxFrameSize: 1 << 20) { channel, response in
                    channel.eventLoop.makeCompletedFuture {
                        let protocolName = response.headers.first(name: "Sec-WebSocket-Protocol") ?? ""
                        return .websocket(
                            try NIOAsyncChannel<WebSocketFrame, WebSocketFrame>(wrappingChannelSynchronously: channel),
                            protocolName
                        )
                    }
                }
                var headers = HTTPHeaders()
                headers.add(name: "Host", value: "\(hostPort)")
                headers.add(
                    name: "Sec-WebSocket-Protocol",
                    value: "v5.channel.k8s.io, v4.channel.k8s.io, channel.k8s.io"
                )
                headers.add(name: "Content-Length", value: "0")
                let head = HTTPRequestHead(version: .http1_1, method: .GET, uri: path, headers: headers)
                let configuration = NIOTypedHTTPClientUpgradeConfiguration<Upgrade>(
                    upgradeRequestHead: head,
                    upgraders: [upgrader],
                    notUpgradingCompletionHandler: { $0.eventLoop.makeSucceededFuture(.refused) }
                )
                return try channel.pipeline.syncOperations.configureUpgradableHTTPClientPipeline(
                    configuration: .init(upgradeConfiguration: configuration)
                )
            }
        }
    guard case .websocket(let socket, let subprotocol) = try await upgrade.get() else {
        throw StreamingExecError(description: "the streaming server refused the WebSocket upgrade for \(url)")
    }
    return try await withThrowingTaskGroup(of: StreamingExecResult?.self) { group in
        group.addTask {
            try await socket.executeThenClose { inbound, outbound in
                func send(_ channel: UInt8, _ bytes: [UInt8]) async throws {
                    var buffer = ByteBuffer()
                    buffer.writeInteger(channel)
                    buffer.writeBytes(bytes)
                    try await outbound.write(
                        WebSocketFrame(fin: true, opcode: .binary, maskKey: .random(), data: buffer)
                    )
                }
                if let resize {
                    try await send(4, Array("{\"Width\":\(resize.columns),\"Height\":\(resize.rows)}".utf8))
                }
                if !input.isEmpty { try await send(0, input) }
                if subprotocol.hasPrefix("v5."), until == nil { try await send(255, [0]) }  // v5: close stdin
                var result = StreamingExecResult(subprotocol: subprotocol, stdout: [], stderr: [], status: "")
                loop: for try await frame in inbound {
                    switch frame.opcode {
                    case .binary, .text:
                        let bytes = Array(frame.unmaskedData.readableBytesView)
                        guard let channel = bytes.first else { continue }
                        switch channel {
                        case 1:
                            result.stdout += bytes.dropFirst()
                            if let until, result.stdoutText.contains(until) {
                                try? await outbound.write(
                                    WebSocketFrame(
                                        fin: true,
                                        opcode: .connectionClose,
                                        maskKey: .random(),
                                        data: ByteBuffer()
                                    )
                                )
                                break loop
                            }
                        case 2: result.stderr += bytes.dropFirst()
                        case 3: result.status += String(decoding: bytes.dropFirst(), as: UTF8.self)
                        default: continue
                        }
                    case .ping:
                        try await outbound.write(
                            WebSocketFrame(fin: true, opcode: .pong, maskKey: .random(), data: frame.unmaskedData)
                        )
                    case .connectionClose:
                        break loop
                    default:
                        continue
                    }
                }
                return result
            }
        }
        group.addTask {
            try await Task.sleep(for: timeout)
            return nil
        }
        defer { group.cancelAll() }
        guard let first = try await group.next(), let result = first else {
            throw StreamingExecError(description: "the exec at \(url) did not finish within \(timeout)")
        }
        return result
    }
}
