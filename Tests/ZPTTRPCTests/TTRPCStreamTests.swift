import Foundation
import Logging
import NIOPosix
import Synchronization
import Testing
import ZPCore
import ZPTestSupport

@testable import ZPTTRPC

/// Server streams over real unix sockets: ZPTTRPC's server and client, and raw frames written by
/// hand to check the wire format against containerd/ttrpc's (Data frames, final `RC|noData`).
@Suite struct TTRPCStreamTests {
    /// Set by the `Forever` handler when its task is cancelled (the peer left).
    static let foreverCancelled = Mutex(0)
    /// Counts messages the `Burst` handler has sent.
    static let burstSent = Mutex(0)

    private static var router: TTRPCRouter {
        var router = TTRPCRouter()
        // Sends the request payload's first byte as a count of one-byte messages 0, 1, 2, ...
        router.registerServerStream(service: "test.Stream", method: "Count") { call, writer in
            for i in 0..<Int(call.payload.first ?? 0) { try await writer.send([UInt8(i)]) }
        }
        router.registerServerStream(service: "test.Stream", method: "FailAfterTwo") { _, writer in
            try await writer.send([1])
            try await writer.send([2])
            throw TTRPCStatusError(.failedPrecondition, "stopped after two")
        }
        router.registerServerStream(service: "test.Stream", method: "Forever") { _, writer in
            do {
                while true {
                    try await writer.send([7])
                    try await Task.sleep(for: .milliseconds(20))
                }
            } catch {
                foreverCancelled.withLock { $0 += 1 }
                throw error
            }
        }
        router.registerServerStream(service: "test.Stream", method: "Burst") { call, writer in
            for i in 0..<Int(call.payload.first ?? 0) {
                try await writer.send([UInt8(i)])
                burstSent.withLock { $0 += 1 }
            }
        }
        router.register(service: "test.Stream", method: "Echo") { $0.payload }
        return router
    }

    private static func withServer(_ name: String, _ body: @Sendable (String) async throws -> Void) async throws {
        try await withTTRPCTestServer(router, socketName: "\(name).sock") { _, path in try await body(path) }
    }

    @Test func serverStream_deliversEveryMessageInOrder_andEnds() async throws {
        try await Self.withServer("count") { path in
            let client = try await TTRPCClient.connect(
                unixSocketPath: path,
                group: MultiThreadedEventLoopGroup.singleton
            )
            var received: [UInt8] = []
            for try await message in client.serverStream(service: "test.Stream", method: "Count", payload: [200]) {
                received += message
            }
            #expect(received == (0..<200).map { UInt8($0) })
            // An empty stream ends at once.
            var none = 0
            for try await _ in client.serverStream(service: "test.Stream", method: "Count", payload: [0]) { none += 1 }
            #expect(none == 0)
            await client.close()
        }
    }

    @Test func serverStream_errorStatus_endsTheStreamWithTheCode() async throws {
        try await Self.withServer("fail") { path in
            let client = try await TTRPCClient.connect(
                unixSocketPath: path,
                group: MultiThreadedEventLoopGroup.singleton
            )
            var received: [[UInt8]] = []
            await #expect {
                for try await message in client.serverStream(
                    service: "test.Stream",
                    method: "FailAfterTwo",
                    payload: []
                ) {
                    received.append(message)
                }
            } throws: { error in
                let e = error as? TTRPCStatusError
                return e?.code == .failedPrecondition && e?.message == "stopped after two"
            }
            #expect(received == [[1], [2]])
            // Unknown streaming method: Unimplemented, and the connection keeps working.
            await #expect {
                for try await _ in client.serverStream(service: "test.Stream", method: "Nope", payload: []) {}
            } throws: { ($0 as? TTRPCStatusError)?.code == .unimplemented }
            #expect(try await client.call(service: "test.Stream", method: "Echo", payload: [5]) == [5])
            await client.close()
        }
    }

    @Test func openStream_doesNotBlockUnaryCalls_andEndsWhenTheConnectionCloses() async throws {
        try await Self.withServer("forever") { path in
            let before = Self.foreverCancelled.withLock { $0 }
            let client = try await TTRPCClient.connect(
                unixSocketPath: path,
                group: MultiThreadedEventLoopGroup.singleton
            )
            let stream = client.serverStream(service: "test.Stream", method: "Forever", payload: [])
            var iterator = stream.makeAsyncIterator()
            #expect(try await iterator.next() == [7])
            for i in 0..<20 {
                #expect(
                    try await client.call(service: "test.Stream", method: "Echo", payload: [UInt8(i)]) == [UInt8(i)]
                )
            }
            #expect(try await iterator.next() == [7])
            await client.close()
            // The client's side fails the stream; the server cancels the handler.
            await #expect(throws: TTRPCTransportError.self) {
                while try await iterator.next() != nil {}
            }
            #expect(await eventuallyAsync { Self.foreverCancelled.withLock { $0 } > before })
        }
    }

    @Test func unreadMessagesOverTheLimit_failTheStreamLoudly() async throws {
        try await Self.withServer("overflow") { path in
            let client = try await TTRPCClient.connect(
                unixSocketPath: path,
                group: MultiThreadedEventLoopGroup.singleton
            )
            let start = Self.burstSent.withLock { $0 }
            let stream = client.serverStream(service: "test.Stream", method: "Burst", payload: [50], bufferLimit: 8)
            // Read nothing until the server has sent all 50 and the client has taken them in: a
            // unary answer on the same connection comes after them in the byte stream.
            #expect(await eventuallyAsync { Self.burstSent.withLock { $0 } - start >= 50 })
            #expect(try await client.call(service: "test.Stream", method: "Echo", payload: [1]) == [1])
            var received = 0
            await #expect {
                for try await _ in stream { received += 1 }
            } throws: { error in
                guard case .streamBufferOverflow(_, _, let limit)? = error as? TTRPCTransportError else { return false }
                return limit == 8
            }
            #expect(received == 8)
            await client.close()
        }
    }

    @Test func rawFrames_serverStreamFollowsTheTTRPCWireFormat() async throws {
        try await Self.withServer("raw") { path in
            let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
            defer { close(fd) }
            var addr = sockaddr_un()
            addr.sun_family = sa_family_t(AF_UNIX)
            withUnsafeMutableBytes(of: &addr.sun_path) { raw in for (i, b) in path.utf8.enumerated() { raw[i] = b } }
            let rc = withUnsafePointer(to: &addr) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
                }
            }
            try #require(rc == 0)
            // As containerd/ttrpc's client opens a server stream: Request flagged remote-closed.
            let request = TTRPCRequest(service: "test.Stream", method: "Count", payload: [3])
            let frame = try TTRPCFrameCodec.encode(
                TTRPCFrame(streamID: 5, type: .request, flags: .remoteClosed, payload: request.encoded())
            )
            #expect(frame.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) } == frame.count)
            // Non-blocking reads with pauses: a blocking read would hold one of the few threads of
            // the cooperative pool that the server's tasks need.
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
            var decoder = TTRPCFrameDecoder()
            var buffer = [UInt8](repeating: 0, count: 4096)
            var frames: [TTRPCFrame] = []
            let deadline = ContinuousClock.now + .seconds(30)
            while frames.last.map({ !$0.flags.contains(.remoteClosed) && $0.type != .response }) ?? true {
                try #require(ContinuousClock.now < deadline, "no end of stream within 30 s")
                let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
                if n < 0 && errno == EAGAIN {
                    try await Task.sleep(for: .milliseconds(5))
                    continue
                }
                try #require(n > 0)
                decoder.append(buffer[0..<n])
                while let f = try decoder.nextFrame() { frames.append(f) }
            }
            #expect(frames.count == 4)
            #expect(frames.allSatisfy { $0.streamID == 5 && $0.type == .data })
            #expect(frames.prefix(3).map(\.payload) == [[0], [1], [2]])
            #expect(frames.prefix(3).allSatisfy { $0.flags.isEmpty })
            #expect(frames.last?.flags == [.remoteClosed, .noData])
            #expect(frames.last?.payload == [])
        }
    }
}
