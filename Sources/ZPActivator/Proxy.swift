import NIOCore
import NIOPosix
import Synchronization
import ZPCore
import ZPSystem

/// The application could not be reached before the connect timeout.
struct ApplicationUnreachableError: Error, CustomStringConvertible {
    var port: UInt16
    var attempts: Int
    var lastError: String
    var description: String {
        "application port \(port) unreachable on 127.0.0.1 and ::1 after \(attempts) attempts: \(lastError)"
    }
}

/// Connects to the restored application on the loopback addresses.
enum ApplicationDialer {
    private static let maximumDelay = Duration.milliseconds(20)

    /// Dials 127.0.0.1 then ::1 on `port`, again and again (1 ms doubling to 20 ms between
    /// rounds), until one connects or `timeout` has passed. Right after a restore the listening
    /// socket may not be there yet (refused) or its backlog may overflow; both are retried.
    static func dial(
        port: UInt16,
        factory: (any ApplicationSocketFactory)?,
        eventLoop: any EventLoop,
        timeout: Duration
    ) async throws -> NIOAsyncChannel<ByteBuffer, ByteBuffer> {
        let clock = ContinuousClock()
        let deadline = clock.now + timeout
        let addresses = [
            try SocketAddress(ipAddress: "127.0.0.1", port: Int(port)),
            try SocketAddress(ipAddress: "::1", port: Int(port)),
        ]
        var delay = Duration.milliseconds(1)
        var attempts = 0
        var lastError = "no attempt"
        while true {
            for address in addresses {
                try Task.checkCancellation()
                let remaining = deadline - clock.now
                guard remaining > .zero else {
                    throw ApplicationUnreachableError(port: port, attempts: attempts, lastError: lastError)
                }
                attempts += 1
                do {
                    return try await connect(
                        to: address,
                        factory: factory,
                        eventLoop: eventLoop,
                        timeout: remaining
                    )
                } catch is CancellationError {
                    throw CancellationError()
                } catch {
                    lastError = "\(address): \(error)"
                }
            }
            guard clock.now + delay < deadline else {
                throw ApplicationUnreachableError(port: port, attempts: attempts, lastError: lastError)
            }
            try await Task.sleep(for: delay)
            delay = min(delay * 2, maximumDelay)
        }
    }
}

extension ApplicationDialer {
    private static func wrap(_ channel: any Channel) -> EventLoopFuture<NIOAsyncChannel<ByteBuffer, ByteBuffer>> {
        channel.eventLoop.makeCompletedFuture {
            try NIOAsyncChannel<ByteBuffer, ByteBuffer>(
                wrappingChannelSynchronously: channel,
                configuration: .init(isOutboundHalfClosureEnabled: true)
            )
        }
    }

    /// One attempt: NIO connects a socket of its own (this process's network namespace), or,
    /// with a factory, the factory's socket is connected on NIO's thread pool and then adopted.
    private static func connect(
        to address: SocketAddress,
        factory: (any ApplicationSocketFactory)?,
        eventLoop: any EventLoop,
        timeout: Duration
    ) async throws -> NIOAsyncChannel<ByteBuffer, ByteBuffer> {
        let bootstrap = ClientBootstrap(group: eventLoop)
            .channelOption(.allowRemoteHalfClosure, value: true)
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
        guard let factory else {
            return try await bootstrap.connectTimeout(TimeAmount(timeout)).connect(to: address) { wrap($0) }
        }
        let isIPv6: Bool
        switch address {
        case .v6: isIPv6 = true
        case .v4, .unixDomainSocket: isIPv6 = false
        }
        // The factory may block (entering a namespace); the connect polls: both on the pool.
        let connected = try await NIOThreadPool.singleton.runIfActive {
            let socket = try factory.makeStreamSocket(ipv6: isIPv6)
            try SocketCalls.connect(socket, to: address, timeout: timeout)  // on failure `socket` closes it
            return SharedDescriptor(socket)
        }
        guard let socket = connected.take() else {
            throw SystemError(call: "connect", subject: "\(address)", errno: .badFileDescriptor)
        }
        // From here NIO owns the descriptor (it closes it also when adoption fails).
        return try await bootstrap.withConnectedSocket(socket.disown()) { wrap($0) }
    }
}

/// Byte counters and activity time shared by the two directions of one proxied connection.
private final class ProxyProgress: Sendable {
    let toApp = Atomic<Int>(0)
    let toClient = Atomic<Int>(0)
    let lastActivity = Atomic<Int64>(0)
    let firstByteBack = Mutex<ContinuousClock.Instant?>(nil)

    static func uptime() -> Int64 { Int64(NIODeadline.now().uptimeNanoseconds) }

    let idleTimedOut = Atomic<Bool>(false)
    let firstFailure = Mutex<String?>(nil)

    func touch() { lastActivity.store(Self.uptime(), ordering: .relaxed) }

    /// 0 until the first byte moved; then 1 (the client sent it) or 2 (the application did).
    let firstSpeakerCode = Atomic<UInt8>(0)

    /// Records `speaker` if no byte moved before; true for the one call that did.
    func spoke(_ speaker: FirstSpeaker) -> Bool {
        let code: UInt8
        switch speaker {
        case .client: code = 1
        case .application: code = 2
        }
        return firstSpeakerCode.compareExchange(expected: 0, desired: code, ordering: .relaxed).exchanged
    }

    var firstSpeaker: FirstSpeaker? {
        switch firstSpeakerCode.load(ordering: .relaxed) {
        case 1: return .client
        case 2: return .application
        default: return nil
        }
    }

    func fail(_ error: any Error) { firstFailure.withLock { $0 = $0 ?? "\(error)" } }
}

/// Copies bytes both ways between a client and the application, unchanged, half-close aware:
/// when one side stops sending, the other side's write half is shut down, and the proxy ends
/// when both directions have ended. An error in either direction, or the idle timeout, closes
/// both channels, which ends the other direction too. The side that sends the first byte is
/// recorded and reported once, as it happens (`onFirstSpeaker`), for learning the ports that speak
/// first (decision 0055).
///
/// The client's inbound iterator must stay in the calling task (NIO forbids sharing it), so the
/// client → application direction runs in the caller and application → client in a child task.
enum Proxy {
    private enum Child { case appToClient, watchdog }

    static func run(
        client: inout NIOAsyncChannelInboundStream<ClientInbound>.AsyncIterator,
        clientChannel: any Channel,
        clientOutbound: NIOAsyncChannelOutboundWriter<ByteBuffer>,
        app: NIOAsyncChannel<ByteBuffer, ByteBuffer>,
        idleTimeout: Duration?,
        timings: inout ConnectionTimings,
        firstSpeaker: inout FirstSpeaker?,
        onFirstSpeaker: @escaping @Sendable (FirstSpeaker) -> Void
    ) async -> ConnectionOutcome {
        let progress = ProxyProgress()
        progress.touch()
        let appChannel = app.channel
        let closeBoth: @Sendable () -> Void = {
            clientChannel.close(promise: nil)
            appChannel.close(promise: nil)
        }
        do {
            try await app.executeThenClose { appInbound, appOutbound in
                await withTaskGroup(of: Child.self) { group in
                    group.addTask {
                        do {
                            for try await bytes in appInbound {
                                progress.touch()
                                if bytes.readableBytes > 0, progress.spoke(.application) {
                                    onFirstSpeaker(.application)
                                }
                                if progress.toClient.add(bytes.readableBytes, ordering: .relaxed).oldValue == 0 {
                                    progress.firstByteBack.withLock { $0 = $0 ?? .now }
                                }
                                try await clientOutbound.write(bytes)
                            }
                            clientOutbound.finish()
                        } catch {
                            progress.fail(error)
                            closeBoth()
                        }
                        return .appToClient
                    }
                    if let idleTimeout {
                        group.addTask {
                            let limit = Int64(TimeAmount(idleTimeout).nanoseconds)
                            while true {
                                let idle = ProxyProgress.uptime() - progress.lastActivity.load(ordering: .relaxed)
                                if idle >= limit {
                                    progress.idleTimedOut.store(true, ordering: .relaxed)
                                    closeBoth()
                                    return .watchdog
                                }
                                do {
                                    try await Task.sleep(for: .nanoseconds(limit - idle))
                                } catch {
                                    return .watchdog  // cancelled: the proxy ended
                                }
                            }
                        }
                    }
                    do {
                        while let message = try await client.next() {
                            guard case .bytes(let bytes) = message else { continue }
                            progress.touch()
                            if bytes.readableBytes > 0, progress.spoke(.client) { onFirstSpeaker(.client) }
                            progress.toApp.add(bytes.readableBytes, ordering: .relaxed)
                            try await appOutbound.write(bytes)
                        }
                        appOutbound.finish()
                    } catch {
                        progress.fail(error)
                        closeBoth()
                    }
                    while let child = await group.next() {
                        if case .appToClient = child { break }
                    }
                    group.cancelAll()
                }
            }
        } catch {
            progress.fail(error)
        }
        timings.firstByteBack = progress.firstByteBack.withLock { $0 }
        firstSpeaker = progress.firstSpeaker
        let toApp = progress.toApp.load(ordering: .relaxed)
        let toClient = progress.toClient.load(ordering: .relaxed)
        if progress.idleTimedOut.load(ordering: .relaxed) {
            return .proxyIdleTimedOut(toApp: toApp, toClient: toClient)
        }
        if let failure = progress.firstFailure.withLock({ $0 }) {
            return Task.isCancelled ? .failed(.shutdown) : .failed(.proxyError(failure))
        }
        return .proxied(toApp: toApp, toClient: toClient)
    }
}
