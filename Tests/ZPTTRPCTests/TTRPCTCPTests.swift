import Foundation
import Logging
import NIOCore
import NIOPosix
import Synchronization
import Testing
import ZPTestSupport

@testable import ZPTTRPC

/// The TCP channel (decision 0049): calls over loopback TCP, the connection hook on both sides,
/// and an error a client's pipeline reports named in the failed call.
/// A value shared with the server's and clients' hooks.
final class Shared<Value: Sendable>: Sendable {
    private let value: Mutex<Value>
    init(_ value: Value) { self.value = Mutex(value) }
    func get() -> Value { value.withLock { $0 } }
    func set(_ new: Value) { value.withLock { $0 = new } }
    func update(_ change: (inout Value) -> Void) { value.withLock { change(&$0) } }
}

@Suite struct TTRPCTCPTests {
    private static var router: TTRPCRouter {
        var router = TTRPCRouter()
        router.register(service: "test.Echo", method: "Echo") { call in call.payload }
        return router
    }

    /// Runs a TCP server on a free loopback port whose hook runs `prepare`, for `body`.
    private static func withServer(
        prepare: @escaping @Sendable (any Channel) throws -> Void,
        _ body: @Sendable (Int) async throws -> Void
    ) async throws {
        var logger = Logger(label: "ttrpc-tcp")
        logger.logLevel = .critical
        let server = TTRPCServer(router: router, group: MultiThreadedEventLoopGroup.singleton, logger: logger)
        let port = Shared<Int?>(nil)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                try await server.run(
                    tcpHost: "127.0.0.1",
                    port: 0,
                    prepareConnection: prepare,
                    onListening: { address in port.set(address.port) }
                )
            }
            #expect(await eventuallyAsync { port.get() != nil })
            try await body(try #require(port.get()))
            group.cancelAll()
        }
    }

    @Test func unaryCall_overTCP_runsBothHooks() async throws {
        let serverHooks = Shared(0)
        let clientHooks = Shared(0)
        try await Self.withServer(prepare: { _ in serverHooks.update { $0 += 1 } }) { port in
            let client = try await TTRPCClient.connect(
                host: "127.0.0.1",
                port: port,
                group: MultiThreadedEventLoopGroup.singleton,
                prepareConnection: { _ in clientHooks.update { $0 += 1 } }
            )
            let out = try await client.call(service: "test.Echo", method: "Echo", payload: Array("over tcp".utf8))
            #expect(String(decoding: out, as: UTF8.self) == "over tcp")
            await client.close()
        }
        #expect(serverHooks.get() == 1)
        #expect(clientHooks.get() == 1)
    }

    @Test func serverHookThatThrows_closesTheConnection() async throws {
        struct Refused: Error {}
        try await Self.withServer(prepare: { _ in throw Refused() }) { port in
            let client = try await TTRPCClient.connect(
                host: "127.0.0.1",
                port: port,
                group: MultiThreadedEventLoopGroup.singleton,
                prepareConnection: { _ in }
            )
            await #expect { _ = try await client.call(service: "test.Echo", method: "Echo", payload: [1]) } throws: {
                error in
                // Closed, or reset by the server before the call's frame was read (a reset names ECONNRESET).
                switch error as? TTRPCTransportError {
                case .connectionClosed?: return true
                case .connectionFailed(_, _, let reason)?: return reason.contains("Connection reset by peer")
                default: return false
                }
            }
            await client.close()
        }
    }

    /// A client-side handler that fails the connection as a TLS handler does on a refused certificate.
    final class FailOnActive: ChannelInboundHandler, Sendable {
        typealias InboundIn = NIOAny
        struct Refusal: Error, CustomStringConvertible { var description: String { "certificate refused by the test" } }
        func channelActive(context: ChannelHandlerContext) {
            context.fireChannelActive()
            context.fireErrorCaught(Refusal())
        }
    }

    @Test func pipelineError_isNamedInTheFailedCall() async throws {
        try await Self.withServer(prepare: { _ in }) { port in
            let client = try await TTRPCClient.connect(
                host: "127.0.0.1",
                port: port,
                group: MultiThreadedEventLoopGroup.singleton,
                prepareConnection: { try $0.pipeline.syncOperations.addHandler(FailOnActive()) }
            )
            await client.waitClosed()
            // The call is made after the connection closed: it still names why.
            await #expect { _ = try await client.call(service: "test.Echo", method: "Echo", payload: [1]) } throws: {
                error in
                "\(error)" == "ttrpc: connection failed before test.Echo/Echo answered: certificate refused by the test"
            }
        }
    }
}
