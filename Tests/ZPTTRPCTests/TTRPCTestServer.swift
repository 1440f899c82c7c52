import Foundation
import Logging
import NIOPosix
import ZPTestSupport
@testable import ZPTTRPC

/// Runs a ZPTTRPC server with `router` on a fresh unix socket `/tmp/zpttrpc-<socketName>-<random>.sock`
/// for the duration of `body`, which gets the socket's path; then stops it and removes the socket.
func withTTRPCServer(
    router: TTRPCRouter, socketName: String, _ body: @Sendable (String) async throws -> Void
) async throws {
    let path = "/tmp/\(uniqueName("zpttrpc-\(socketName)")).sock"
    let server = TTRPCServer(router: router, group: MultiThreadedEventLoopGroup.singleton, logger: Logger(label: "test"))
    let (ready, readyContinuation) = AsyncStream.makeStream(of: Void.self)
    try await withThrowingTaskGroup(of: Void.self) { group in
        group.addTask { try await server.run(unixSocketPath: path) { readyContinuation.yield() } }
        for await _ in ready { break }
        defer { unlink(path) }
        try await body(path)
        group.cancelAll()
    }
}
