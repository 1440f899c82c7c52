// A ttrpc server on a fresh unix socket for the length of one test: a fake shim (status or task
// API) made of a router with canned answers, so clients and the CLI are tested without root.
import Foundation
import Glibc
import Logging
import NIOPosix
import ZPTTRPC

/// Serves `router` on `<fresh folder under /tmp>/<socketName>` while `body` runs, then stops the
/// server and removes the folder.
///
/// - Parameters:
///   - router: The methods to serve.
///   - socketName: The socket's path below the fresh folder (e.g. `run/s/abc.sock`); parent
///     folders are created.
///   - body: Gets the fresh folder and the socket path. Close every client before it returns.
/// - Throws: What `body` or the server throws.
public func withTTRPCTestServer(
    _ router: TTRPCRouter,
    socketName: String = "test.sock",
    _ body: @Sendable (_ folder: String, _ socket: String) async throws -> Void
) async throws {
    // Short (at most 25 bytes), so `<folder>/run` is a valid run-dir (NodeLayout.maximumRunDirectoryLength).
    let folder = "/tmp/zpt-\(getpid())-\(String(UInt32.random(in: 0...UInt32.max), radix: 16))"
    let path = folder + "/" + socketName
    try FileManager.default.createDirectory(
        atPath: (path as NSString).deletingLastPathComponent,
        withIntermediateDirectories: true
    )
    defer { try? FileManager.default.removeItem(atPath: folder) }
    let server = TTRPCServer(
        router: router,
        group: MultiThreadedEventLoopGroup.singleton,
        logger: Logger(label: "ttrpc-test-server")
    )
    let (ready, readyContinuation) = AsyncStream.makeStream(of: Void.self)
    try await withThrowingTaskGroup(of: Void.self) { group in
        group.addTask { try await server.run(unixSocketPath: path) { readyContinuation.yield() } }
        for await _ in ready { break }
        do {
            try await body(folder, path)
        } catch {
            group.cancelAll()
            throw error
        }
        group.cancelAll()
        try? await group.waitForAll()
    }
}
