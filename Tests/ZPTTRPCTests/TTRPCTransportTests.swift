import Foundation
import Logging
import NIOPosix
import Testing
import ZPCore
import ZPTestSupport

@testable import ZPTTRPC

/// Real unix sockets: a ZPTTRPC server and client talking to each other.
@Suite struct TTRPCTransportTests {
    private static func socketPath(_ name: String) -> String { "/tmp/\(uniqueName("zpttrpc-\(name)")).sock" }

    private static var router: TTRPCRouter {
        var router = TTRPCRouter()
        router.register(service: "test.Echo", method: "Echo") { call in
            call.payload + Array((call.metadataValue("suffix") ?? "").utf8)
        }
        router.register(service: "test.Echo", method: "Slow") { call in
            try await Task.sleep(for: .seconds(2))
            return call.payload
        }
        router.register(service: "test.Echo", method: "Fail") { _ in
            throw TTRPCStatusError(.notFound, "no such thing")
        }
        router.register(service: "test.Echo", method: "Crash") { _ in
            struct Oops: Error {}
            throw Oops()
        }
        return router
    }

    /// Runs a server on a fresh socket for the duration of `body`.
    private static func withServer(_ name: String, _ body: @Sendable (String) async throws -> Void) async throws {
        try await withTTRPCTestServer(router, socketName: "\(name).sock") { _, path in try await body(path) }
    }

    @Test func unaryCall_echoesPayloadAndMetadata() async throws {
        try await Self.withServer("echo") { path in
            let client = try await TTRPCClient.connect(
                unixSocketPath: "unix://" + path,
                group: MultiThreadedEventLoopGroup.singleton
            )
            let out = try await client.call(
                service: "test.Echo",
                method: "Echo",
                payload: Array("ping".utf8),
                metadata: [("suffix", "-pong")]
            )
            #expect(String(decoding: out, as: UTF8.self) == "ping-pong")
            await client.close()
        }
    }

    @Test func socketFile_isOwnerOnly() async throws {
        try await Self.withServer("mode") { path in
            var st = stat()
            #expect(stat(path, &st) == 0)
            #expect(st.st_mode & 0o777 == 0o600)
        }
    }

    @Test func unknownMethod_isUnimplemented_andHandlerErrorsKeepTheirCode() async throws {
        try await Self.withServer("codes") { path in
            let client = try await TTRPCClient.connect(
                unixSocketPath: path,
                group: MultiThreadedEventLoopGroup.singleton
            )
            await #expect { _ = try await client.call(service: "test.Echo", method: "Nope", payload: []) } throws: {
                error in
                (error as? TTRPCStatusError)?.code == .unimplemented
            }
            await #expect { _ = try await client.call(service: "test.Echo", method: "Fail", payload: []) } throws: {
                error in
                let e = error as? TTRPCStatusError
                return e?.code == .notFound && e?.message == "no such thing"
            }
            await #expect { _ = try await client.call(service: "test.Echo", method: "Crash", payload: []) } throws: {
                error in
                (error as? TTRPCStatusError)?.code == .unknown
            }
            // The connection still works after errors.
            let out = try await client.call(service: "test.Echo", method: "Echo", payload: [1, 2, 3])
            #expect(out == [1, 2, 3])
            await client.close()
        }
    }

    @Test func slowCall_doesNotBlockOtherCallsOnTheSameConnection() async throws {
        try await Self.withServer("concurrent") { path in
            let client = try await TTRPCClient.connect(
                unixSocketPath: path,
                group: MultiThreadedEventLoopGroup.singleton
            )
            try await withThrowingTaskGroup(of: String.self) { group in
                group.addTask {
                    _ = try await client.call(service: "test.Echo", method: "Slow", payload: [9])
                    return "slow"
                }
                try await Task.sleep(for: .milliseconds(50))
                group.addTask {
                    _ = try await client.call(service: "test.Echo", method: "Echo", payload: [1])
                    return "fast"
                }
                let first = try await group.next()
                #expect(first == "fast")
                try await group.waitForAll()
            }
            await client.close()
        }
    }

    @Test func callTimeout_failsTheCallOnly() async throws {
        try await Self.withServer("timeout") { path in
            let client = try await TTRPCClient.connect(
                unixSocketPath: path,
                group: MultiThreadedEventLoopGroup.singleton
            )
            await #expect(throws: TTRPCTransportError.self) {
                _ = try await client.call(
                    service: "test.Echo",
                    method: "Slow",
                    payload: [],
                    timeout: .milliseconds(200)
                )
            }
            #expect(try await client.call(service: "test.Echo", method: "Echo", payload: [7]) == [7])
            await client.close()
        }
    }

    @Test func closedServer_failsCallsInFlight() async throws {
        let path = Self.socketPath("closed")
        let server = TTRPCServer(
            router: Self.router,
            group: MultiThreadedEventLoopGroup.singleton,
            logger: Logger(label: "test")
        )
        let (ready, readyContinuation) = AsyncStream.makeStream(of: Void.self)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await server.run(unixSocketPath: path) { readyContinuation.yield() } }
            for await _ in ready { break }
            defer { unlink(path) }
            let client = try await TTRPCClient.connect(
                unixSocketPath: path,
                group: MultiThreadedEventLoopGroup.singleton
            )
            async let slow: Bool = {
                do {
                    _ = try await client.call(service: "test.Echo", method: "Slow", payload: [], timeout: .seconds(30))
                    return false
                } catch { return true }
            }()
            try await Task.sleep(for: .milliseconds(100))
            group.cancelAll()  // stops the server and closes its connections
            let failed = await slow
            #expect(failed)
        }
    }

    @Test func rawFrames_fromAnotherClientImplementation_areAnswered() async throws {
        // A client that writes the frame bytes by hand over a plain socket (no ZPTTRPC client code).
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
            #expect(rc == 0)
            let request = TTRPCRequest(service: "test.Echo", method: "Echo", payload: [0x41])
            let frame = try TTRPCFrameCodec.encode(TTRPCFrame(streamID: 3, type: .request, payload: request.encoded()))
            #expect(frame.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) } == frame.count)
            var decoder = TTRPCFrameDecoder()
            var buffer = [UInt8](repeating: 0, count: 4096)
            var response: TTRPCFrame?
            while response == nil {
                let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
                #expect(n > 0)
                if n <= 0 { break }
                decoder.append(buffer[0..<n])
                response = try decoder.nextFrame()
            }
            let frameOut = try #require(response)
            #expect(frameOut.streamID == 3)
            #expect(frameOut.type == .response)
            let decoded = try TTRPCResponse(decoding: frameOut.payload)
            #expect(decoded.payload == [0x41])
            #expect((decoded.status?.code ?? 0) == 0)
        }
    }
}

@Suite struct TTRPCClientAfterCloseTests {
    @Test func callOnAConnectionThePeerClosed_failsInsteadOfHanging() async throws {
        let path = "/tmp/zpttrpc-peerclosed-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).sock"
        var router = TTRPCRouter()
        router.register(service: "s", method: "echo") { $0.payload }
        let server = TTRPCServer(
            router: router,
            group: MultiThreadedEventLoopGroup.singleton,
            logger: Logger(label: "test")
        )
        let (ready, readyContinuation) = AsyncStream.makeStream(of: Void.self)
        let client: TTRPCClient = try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await server.run(unixSocketPath: path) { readyContinuation.yield() } }
            for await _ in ready { break }
            let client = try await TTRPCClient.connect(
                unixSocketPath: path,
                group: MultiThreadedEventLoopGroup.singleton
            )
            #expect(try await client.call(service: "s", method: "echo", payload: [1]) == [1])  // the server owns the connection now
            group.cancelAll()  // the server goes away, as containerd does when it restarts
            return client
        }
        unlink(path)
        await client.waitClosed()
        // A call on the dead connection must fail promptly (well before its 60 s timeout).
        let started = ContinuousClock.now
        await #expect(throws: TTRPCTransportError.self) {
            _ = try await client.call(service: "s", method: "m", payload: [], timeout: .seconds(60))
        }
        print("[zpttrpc] call on a closed connection failed after \(ContinuousClock.now - started)")
    }
}
