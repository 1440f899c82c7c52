import Foundation
import Logging
import NIOCore
import NIOPosix
import Synchronization
import Testing
import ZPCore
import ZPTestSupport

@testable import ZPManager
@testable import ZPShim

#if canImport(Glibc)
import Glibc
#endif

// What the page path of a live migration costs apart from CRIU (issue 16; decisions 0058, 0063):
// the bytes of a page server cross up to four relays between CRIU's page server and the target's
// `criu lazy-pages` — the source shim's PageRelay (loopback TCP ← unix socket), the source
// manager's PageServerProxy (unix socket ← mutual TLS), the target manager's PageServerProxy
// (mutual TLS ← unix socket), the target shim's PageRelay (unix socket ← loopback TCP). A stand-in
// page server answers "N bytes, please" (8 bytes, big-endian N) with N bytes; a client fetches
// 64 MiB in requests of 64 KiB growing by 64 KiB up to 4 MiB (CRIU's lazy-pages daemon's background
// fetch, criu/uffd.c: 45 requests) and then 4 KiB pages one at a time (a page fault's round
// trip), directly and through each part of the path.
// Run: `.build/debug/zeropod-swiftPackageTests.xctest --testing-library swift-testing --filter PageRelayCostTests`.

/// The stand-in page server: answers each 8-byte request of N with N bytes.
private final class PagesServer: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    static let block = ByteBuffer(bytes: (0..<(1 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 31) })
    private let pending = Mutex(ByteBuffer())

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = unwrapInboundIn(data)
        var wanted: [Int] = []
        pending.withLock { buffer in
            buffer.writeBuffer(&incoming)
            while let n = buffer.readInteger(as: UInt64.self) { wanted.append(Int(n)) }
            buffer.discardReadBytes()
        }
        for var n in wanted {
            while n > 0 {
                let part = min(n, Self.block.readableBytes)
                context.write(wrapOutboundOut(Self.block.getSlice(at: 0, length: part)!), promise: nil)
                n -= part
            }
        }
        context.flush()
    }
}

private func startPagesServer() async throws -> any Channel {
    try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
        .childChannelInitializer { child in
            child.eventLoop.makeCompletedFuture { try child.pipeline.syncOperations.addHandler(PagesServer()) }
        }
        .bind(host: "127.0.0.1", port: 0).get()
}

/// What one client run measured.
private struct Measured {
    /// Seconds for the 64 MiB answer (from the request to its last byte).
    var bulk: Double
    /// Microseconds per 4 KiB round trip (median of `pages`).
    var roundTrip: Double
}

/// Connects to 127.0.0.1:`port` (blocking, on a thread of its own), asks for `bulk` bytes, then for
/// `pages` pages of 4 KiB one at a time; closes.
private func measure(port: Int, bulk: Int, pages: Int) async throws -> Measured {
    try await withCheckedThrowingContinuation { (done: CheckedContinuation<Measured, any Error>) in
        Thread {
            done.resume(with: Result { try measureBlocking(port: port, bulk: bulk, pages: pages) })
        }.start()
    }
}

private func measureBlocking(port: Int, bulk: Int, pages: Int) throws -> Measured {
    let socket = try TestSocket.connect(fromNetns: nil, to: "127.0.0.1", port: UInt16(port), timeout: 60)
    defer { withExtendedLifetime(socket) {} }  // the descriptor stays open while `fd` is used
    let fd = socket.fd
    var one: Int32 = 1
    setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
    var buffer = [UInt8](repeating: 0, count: 1 << 20)
    func ask(_ n: Int) throws {
        var request = UInt64(n).bigEndian
        guard withUnsafeBytes(of: &request, { send(fd, $0.baseAddress, 8, Int32(MSG_NOSIGNAL)) }) == 8 else {
            throw POSIXError(.EPIPE)
        }
        var left = n
        while left > 0 {
            let r = recv(fd, &buffer, min(buffer.count, left), 0)
            guard r > 0 else { throw POSIXError(.ECONNRESET) }
            left -= r
        }
    }
    // The bulk as CRIU's lazy-pages daemon fetches the remaining pages in the background
    // (criu/uffd.c): requests of 64 KiB, each one 64 KiB larger than the last, at most 4 MiB.
    let start = ContinuousClock.now
    var fetched = 0
    var length = 64 << 10
    while fetched < bulk {
        let n = min(length, bulk - fetched)
        try ask(n)
        fetched += n
        length = min(length + (64 << 10), 4 << 20)
    }
    let bulkTime = ContinuousClock.now - start
    var trips: [Double] = []
    for _ in 0..<pages {
        let t = ContinuousClock.now
        try ask(4096)
        trips.append(seconds(ContinuousClock.now - t) * 1e6)
    }
    trips.sort()
    return Measured(bulk: seconds(bulkTime), roundTrip: trips.isEmpty ? 0 : trips[trips.count / 2])
}

private func seconds(_ d: Duration) -> Double {
    Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
}

@Suite(.serialized) struct PageRelayCostTests {
    static let logger = Logger(label: "page-relay-cost")

    /// The path's variants, each built fresh (relays and proxies are one-shot) in front of `server`:
    /// the port the client dials and what to close afterwards.
    private func path(
        _ variant: String,
        serverPort: Int,
        folder: String,
        ca: NodeCertificateAuthority
    ) async throws -> (port: Int, close: @Sendable () -> Void) {
        let group = MultiThreadedEventLoopGroup.singleton
        let id = String(repeating: "ab", count: 32)
        let layout = NodeLayout(runDirectory: folder + "/run", stateDirectory: folder + "/state")
        switch variant {
        case "direct":
            return (serverPort, {})
        case "shim relays":
            // The source shim's relay (its page socket → CRIU's port) and the target shim's
            // (its loopback port → the page socket), meeting on one unix socket.
            let source = try await PageRelay.start(
                group: group,
                listen: .unix(path: layout.pageSocket(containerID: id)),
                backend: .loopback(port: serverPort),
                timeout: .seconds(120),
                logger: Self.logger
            )
            let target = try await PageRelay.start(
                group: group,
                listen: .loopback(port: 0),
                backend: .unix(path: layout.pageSocket(containerID: id)),
                timeout: .seconds(120),
                logger: Self.logger
            )
            return (
                target.port,
                {
                    source.close()
                    target.close()
                }
            )
        case "manager proxies (mTLS)":
            let sourceTLS = try NodeTLS(credentials: try ca.issueLeaf(ipAddress: "127.0.0.1"))
            let targetTLS = try NodeTLS(credentials: try ca.issueLeaf(ipAddress: "127.0.0.5"))
            let source = try await PageServerProxy.start(
                group: group,
                listen: .tcp(host: "127.0.0.1", port: 0),
                serverTLS: sourceTLS,
                backend: .init(endpoint: .tcp(host: "127.0.0.1", port: serverPort), tls: nil),
                timeout: .seconds(120),
                logger: Self.logger
            )
            let target = try await PageServerProxy.start(
                group: group,
                listen: .tcp(host: "127.0.0.1", port: 0),
                serverTLS: nil,
                backend: .init(endpoint: .tcp(host: "127.0.0.1", port: source.port), tls: targetTLS),
                timeout: .seconds(120),
                logger: Self.logger
            )
            return (
                target.port,
                {
                    source.close()
                    target.close()
                }
            )
        default:  // the whole path, as a live migration runs it (decision 0063)
            let sourceTLS = try NodeTLS(credentials: try ca.issueLeaf(ipAddress: "127.0.0.1"))
            let targetTLS = try NodeTLS(credentials: try ca.issueLeaf(ipAddress: "127.0.0.5"))
            let sourceRelay = try await PageRelay.start(
                group: group,
                listen: .unix(path: layout.pageSocket(containerID: id)),
                backend: .loopback(port: serverPort),
                timeout: .seconds(120),
                logger: Self.logger
            )
            let sourceProxy = try await PageServerProxy.start(
                group: group,
                listen: .tcp(host: "127.0.0.1", port: 0),
                serverTLS: sourceTLS,
                backend: .init(endpoint: .unix(path: layout.pageSocket(containerID: id)), tls: nil),
                timeout: .seconds(120),
                logger: Self.logger
            )
            try FileManager.default.createDirectory(
                atPath: layout.targetPageSocketDirectory,
                withIntermediateDirectories: true,
                attributes: [.posixPermissions: 0o700]
            )
            let targetProxy = try await PageServerProxy.start(
                group: group,
                listen: .unix(path: layout.targetPageSocket(containerID: id)),
                serverTLS: nil,
                backend: .init(endpoint: .tcp(host: "127.0.0.1", port: sourceProxy.port), tls: targetTLS),
                timeout: .seconds(120),
                logger: Self.logger
            )
            let targetRelay = try await PageRelay.start(
                group: group,
                listen: .loopback(port: 0),
                backend: .unix(path: layout.targetPageSocket(containerID: id)),
                timeout: .seconds(120),
                logger: Self.logger
            )
            return (
                targetRelay.port,
                {
                    sourceRelay.close()
                    sourceProxy.close()
                    targetProxy.close()
                    targetRelay.close()
                }
            )
        }
    }

    /// 64 MiB and 200 page round trips through each variant, five runs each (interleaved, so a
    /// load spike of the shared machine hits every variant alike); prints the medians. The bytes
    /// arrive whole through every variant (the client counts them); the figures go to
    /// docs/benchmarks.md.
    @Test func pagePath_64MiB_directVersusRelays() async throws {
        let server = try await startPagesServer()
        defer { server.close(promise: nil) }
        let serverPort = try #require(server.localAddress?.port)
        let folder = "/tmp/zprelay-\(getpid())"
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let ca = try NodeCertificateAuthority.generate()
        let variants = ["direct", "shim relays", "manager proxies (mTLS)", "whole path (2 relays + 2 proxies)"]
        let bulk = 64 << 20
        var results: [String: [Measured]] = [:]
        for _ in 0..<5 {
            for variant in variants {
                let (port, close) = try await path(variant, serverPort: serverPort, folder: folder, ca: ca)
                let measured = try await measure(port: port, bulk: bulk, pages: 200)
                close()
                results[variant, default: []].append(measured)
            }
        }
        func median(_ values: [Double]) -> Double { values.sorted()[values.count / 2] }
        let direct = median(results["direct"]!.map(\.bulk))
        for variant in variants {
            let runs = results[variant]!
            let time = median(runs.map(\.bulk))
            let rtt = median(runs.map(\.roundTrip))
            print(
                String(
                    format:
                        "[zprelay] %@: 64 MiB in %.0f ms (%.0f MiB/s, %.1fx direct; runs %@ ms), 4 KiB round trip %.0f µs",
                    variant,
                    time * 1000,
                    64 / time,
                    time / direct,
                    runs.map { String(format: "%.0f", $0.bulk * 1000) }.joined(separator: "/"),
                    rtt
                )
            )
            #expect(time > 0)
        }
    }
}
