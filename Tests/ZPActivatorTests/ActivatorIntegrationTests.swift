import Foundation
import NIOCore
import NIOHPACK
import NIOHTTP2
import NIOPosix
import Synchronization
import Testing
import ZPSystem
import ZPTestSupport

@testable import ZPActivator

#if canImport(Glibc)
import Glibc
#endif

struct TestRestoreError: Error, CustomStringConvertible {
    var description: String { "criu said no (test)" }
}

/// Starts the test application once the restore hook signals, after `delay`.
private func appStarter(
    _ signals: AsyncStream<Void>,
    socket: ReservedPort,
    behaviour: TestApp.Behaviour,
    delay: Duration
) async throws {
    for await _ in signals {
        try await Task.sleep(for: delay)
        try await TestApp.serve(socket: socket, behaviour: behaviour)
    }
}

private func httpRequest(_ path: String, userAgent: String = "zpact-test/1") -> String {
    "GET \(path) HTTP/1.1\r\nHost: app\r\nUser-Agent: \(userAgent)\r\nConnection: close\r\n\r\n"
}

private func percentile(_ values: [Duration], _ p: Double) -> Duration {
    guard !values.isEmpty else { return .zero }
    let sorted = values.sorted()
    return sorted[min(sorted.count - 1, Int(Double(sorted.count - 1) * p))]
}

private func ms(_ d: Duration) -> String {
    let (s, atto) = d.components
    return String(format: "%.1f ms", Double(s) * 1000 + Double(atto) / 1e15)
}

/// Real sockets on loopback, a real NIO application started by the restore hook.
/// Serialized: the fd-leak test counts this process's descriptors.
@Suite(.serialized, .timeLimit(.minutes(3)))
struct ActivatorIntegrationTests {
    init() {
        _ = MultiThreadedEventLoopGroup.singleton.next()
    }

    @Test func fiveHundredConcurrentFirstConnections_restoreOnce_andEachGetsItsOwnResponse() async throws {
        let app = try ReservedPort()
        let activatorPort = Atomic<Int>(0)
        let events = EventLog<ActivatorEvent>()
        let (signals, signal) = AsyncStream.makeStream(of: Void.self)
        // Each connection costs four descriptors here (client, accepted, dialled, app side).
        let descriptorLimit = raiseDescriptorLimit(to: 8192)
        let count = min(500, (Int(descriptorLimit) - 256) / 4)
        if count < 500 {
            print("zpact: descriptor limit \(descriptorLimit) (hard) allows only \(count) concurrent connections")
        }
        let responses = try await withThrowingTaskGroup(of: [Int: String]?.self) { outer in
            // The application starts listening 300 ms after the restore hook was called.
            outer.addTask {
                try await appStarter(signals, socket: app, behaviour: .http, delay: .milliseconds(300))
                return nil
            }
            let result = try await withActivator(
                appPort: app.port,
                events: events,
                restore: {
                    signal.yield()
                    try await Task.sleep(for: .milliseconds(50))
                }
            ) { _, address in
                activatorPort.store(address.port ?? 0, ordering: .relaxed)
                return try await withThrowingTaskGroup(of: (Int, String).self) { group in
                    for i in 0..<count {
                        group.addTask { (i, try await TestClient.exchange(address, send: httpRequest("/req/\(i)"))) }
                    }
                    var all: [Int: String] = [:]
                    for try await (i, response) in group { all[i] = response }
                    // Clients see EOF a moment before the activator's tasks report: wait for them.
                    #expect(await eventuallyAsync(within: 20) { events.reports.count == count })
                    return all
                }
            }
            outer.cancelAll()
            return result
        }
        #expect(responses.count == count)
        for i in 0..<count {
            let body = "hello from app: /req/\(i)"
            #expect(responses[i]?.hasPrefix("HTTP/1.1 200 OK\r\n") == true, "connection \(i)")
            #expect(responses[i]?.hasSuffix("\r\n\r\n" + body) == true, "connection \(i): \(responses[i] ?? "nil")")
        }
        #expect(events.restoresStarted == 1)
        #expect(events.all.contains { if case .restoreSucceeded = $0 { true } else { false } })
        let reports = events.reports
        #expect(reports.count == count)
        let notProxied = reports.filter { if case .proxied = $0.outcome { false } else { true } }
        #expect(notProxied.isEmpty, "\(notProxied.prefix(3))")
        let reachable = reports.compactMap(\.timings.untilAppReachable)
        let firstByte = reports.compactMap(\.timings.untilFirstByte)
        let reachableToFirstByte = reports.compactMap { report -> Duration? in
            guard let reachable = report.timings.appReachable, let first = report.timings.firstByteBack else {
                return nil
            }
            return first - reachable
        }
        func summary(_ values: [Duration]) -> String {
            "p50 \(ms(percentile(values, 0.5))) p99 \(ms(percentile(values, 0.99))) max \(ms(percentile(values, 1)))"
        }
        let ports: Set<UInt16> = [app.port, UInt16(activatorPort.load(ordering: .relaxed))]
        let socketsClosed = await eventuallyAsync(within: 20) { ownTCPSockets(onPorts: ports).isEmpty }
        #expect(socketsClosed, "sockets left open: \(ownTCPSockets(onPorts: ports))")
        print("zpact-bench \(count) first connections, app listening 350 ms after the restore request:")
        print("zpact-bench   accept -> app reachable:     \(summary(reachable))")
        print("zpact-bench   accept -> first byte back:   \(summary(firstByte))")
        print("zpact-bench   app reachable -> first byte: \(summary(reachableToFirstByte))")
    }

    /// Not a timing assertion: prints what the proxy adds for a running application
    /// (500 concurrent requests directly, then through an activator in the running phase).
    @Test func benchmark_proxyOverhead_forARunningApp() async throws {
        let count = min(500, (Int(raiseDescriptorLimit(to: 8192)) - 256) / 4)
        let app = try ReservedPort()
        let events = EventLog<ActivatorEvent>()
        @Sendable func burst(_ address: SocketAddress) async throws -> [Duration] {
            try await withThrowingTaskGroup(of: Duration.self) { group in
                for i in 0..<count {
                    group.addTask {
                        let start = ContinuousClock.now
                        let response = try await TestClient.exchange(address, send: httpRequest("/b/\(i)"))
                        #expect(response.hasSuffix("hello from app: /b/\(i)"))
                        return .now - start
                    }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
        }
        func summary(_ values: [Duration]) -> String {
            "p50 \(ms(percentile(values, 0.5))) p99 \(ms(percentile(values, 0.99))) max \(ms(percentile(values, 1)))"
        }
        try await withThrowingTaskGroup(of: Void.self) { outer in
            outer.addTask { try await TestApp.serve(socket: app, behaviour: .http) }
            let direct = try SocketAddress(ipAddress: "127.0.0.1", port: Int(app.port))
            #expect(
                await eventuallyAsync(within: 20) {
                    (try? await TestClient.exchange(direct, send: httpRequest("/warm"))) != nil
                }
            )
            let directTimes = try await burst(direct)
            let viaTimes = try await withActivator(
                appPort: app.port,
                startsScaledDown: false,
                events: events,
                restore: {}
            ) { _, address in
                try await burst(address)
            }
            print("zpact-bench \(count) concurrent requests to a running app, client-side latency:")
            print("zpact-bench   direct:             \(summary(directTimes))")
            print("zpact-bench   through activator:  \(summary(viaTimes))")
            outer.cancelAll()
        }
        #expect(events.restoresStarted == 0)
    }

    /// Not a timing assertion: the activator's own cost on one first connection (inspection,
    /// restore hook that returns at once, dial, proxy), 50 scale-down cycles, app already up.
    @Test func benchmark_singleFirstConnection_activatorOverhead() async throws {
        let app = try ReservedPort()
        let events = EventLog<ActivatorEvent>()
        try await withThrowingTaskGroup(of: Void.self) { outer in
            outer.addTask { try await TestApp.serve(socket: app, behaviour: .http) }
            let direct = try SocketAddress(ipAddress: "127.0.0.1", port: Int(app.port))
            #expect(
                await eventuallyAsync(within: 20) {
                    (try? await TestClient.exchange(direct, send: httpRequest("/warm"))) != nil
                }
            )
            var clientSide: [Duration] = []
            try await withActivator(appPort: app.port, events: events, restore: {}) { activator, address in
                var measured: [Duration] = []
                for i in 0..<50 {
                    #expect(activator.appScaledDown() == .armed)
                    let start = ContinuousClock.now
                    let response = try await TestClient.exchange(address, send: httpRequest("/s/\(i)"))
                    measured.append(.now - start)
                    #expect(response.hasSuffix("hello from app: /s/\(i)"))
                }
                #expect(await eventuallyAsync(within: 20) { events.reports.count == 50 })
                return measured
            }.forEach { clientSide.append($0) }
            outer.cancelAll()
            let firstByte = events.reports.compactMap(\.timings.untilFirstByte)
            print("zpact-bench single first connection x50 (restore hook returns at once, app up):")
            print(
                "zpact-bench   client request->response: p50 \(ms(percentile(clientSide, 0.5))) p99 \(ms(percentile(clientSide, 0.99)))"
            )
            print(
                "zpact-bench   accept -> first byte back: p50 \(ms(percentile(firstByte, 0.5))) p99 \(ms(percentile(firstByte, 0.99)))"
            )
        }
        #expect(events.restoresStarted == 50)
    }

    @Test func probesOfEachKind_whileScaledDown_areAnswered_withoutRestore() async throws {
        let events = EventLog<ActivatorEvent>()
        let app = try ReservedPort()
        defer { close(app.fd) }
        try await withActivator(appPort: app.port, events: events, restore: { throw TestRestoreError() }) {
            activator,
            address in
            // HTTP probe: 204, closed.
            let http = try await TestClient.exchange(
                address,
                send: httpRequest("/healthz", userAgent: "kube-probe/1.31")
            )
            #expect(http == ProbeResponses.httpNoContent)

            // TCP probe: connect and close without data.
            let tcp = try await TestClient.connect(address)
            try await tcp.executeThenClose { _, _ in }

            // gRPC health check through a real HTTP/2 client (NIOHTTP2).
            let status = try await grpcHealthCheck(address)
            #expect(status.httpStatus == "200")
            #expect(status.grpcStatus == "0")
            #expect(status.message == [0, 0, 0, 0, 2, 0x08, 0x01])  // HealthCheckResponse{SERVING}

            #expect(await eventuallyAsync(within: 20) { events.reports.count == 3 })
            #expect(activator.phase == .scaledDown)
        }
        #expect(events.restoresStarted == 0)
        let kinds = Set(
            events.reports.compactMap { if case .probeAnswered(let kind) = $0.outcome { kind } else { nil } }
        )
        #expect(kinds == [.http, .tcp, .grpcHealth])
    }

    @Test func disabledProbeDetection_forwardsAKubeletProbeToTheApp() async throws {
        let app = try ReservedPort()
        let events = EventLog<ActivatorEvent>()
        let (signals, signal) = AsyncStream.makeStream(of: Void.self)
        let response = try await withThrowingTaskGroup(of: String?.self) { outer in
            outer.addTask {
                try await appStarter(signals, socket: app, behaviour: .http, delay: .zero)
                return nil
            }
            let result = try await withActivator(
                appPort: app.port,
                configuration: ActivatorConfiguration(probeDetection: false),
                events: events,
                restore: { signal.yield() }
            ) { _, address in
                let response = try await TestClient.exchange(
                    address,
                    send: httpRequest("/healthz", userAgent: "kube-probe/1.31")
                )
                #expect(await eventuallyAsync(within: 20) { events.reports.count == 1 })
                return response
            }
            outer.cancelAll()
            return result
        }
        #expect(response.hasSuffix("hello from app: /healthz"))
        #expect(events.reports.first?.forwardReason == .probeDetectionDisabled)
    }

    /// A connection accepted elsewhere (the queue of a handover listener at a cold start,
    /// decision 0046) is adopted: it is not inspected (a kubelet-like request reaches the app), it
    /// joins the single flight (its arrival restores the scaled-down app) and is proxied.
    @Test func adoptedConnection_restoresAndIsProxied_withoutInspection() async throws {
        let app = try ReservedPort()
        let events = EventLog<ActivatorEvent>()
        let (signals, signal) = AsyncStream.makeStream(of: Void.self)
        let response = try await withThrowingTaskGroup(of: String?.self) { outer in
            outer.addTask {
                try await appStarter(signals, socket: app, behaviour: .http, delay: .milliseconds(100))
                return nil
            }
            let result = try await withActivator(
                appPort: app.port,
                events: events,
                restore: { signal.yield() }
            ) { activator, _ in
                // The stand-in for a handover listener: a plain listener of the test's.
                let listener = try SocketCalls.makeBound(try SocketAddress(ipAddress: "127.0.0.1", port: 0))
                try SocketCalls.listen(listener, backlog: 8)
                let shared = SharedDescriptor(listener)
                let queuedAt = try SocketAddress(ipAddress: "127.0.0.1", port: Int(try boundPort(shared)))
                let client = try await TestClient.connect(queuedAt)
                let accepted = try shared.withOwner { (l) throws(SystemError) -> SharedDescriptor in
                    SharedDescriptor(try UnixSockets.accept(l, timeout: .seconds(10)))
                }
                shared.close()
                activator.adopt([accepted], appPort: app.port)
                let response = try await TestClient.exchange(
                    on: client,
                    send: httpRequest("/queued", userAgent: "kube-probe/1.31"),
                    halfClose: false
                )
                #expect(await eventuallyAsync(within: 20) { events.reports.count == 1 })
                #expect(!accepted.isOpen, "the activator took the socket")
                return response
            }
            outer.cancelAll()
            return result
        }
        #expect(response.hasSuffix("hello from app: /queued"), "\(response)")
        #expect(events.restoresStarted == 1)
        #expect(events.reports.first?.forwardReason == .handoverQueue)
    }

    @Test func oversizedProbe_isForwardedUnchanged() async throws {
        let app = try ReservedPort()
        let events = EventLog<ActivatorEvent>()
        let (signals, signal) = AsyncStream.makeStream(of: Void.self)
        // A kubelet-like request whose User-Agent comes after the first 256 inspected bytes.
        let padding = String(repeating: "x", count: 400)
        let request = "GET /big HTTP/1.1\r\nX-Padding: \(padding)\r\nUser-Agent: kube-probe/1.31\r\n\r\n"
        let response = try await withThrowingTaskGroup(of: String?.self) { outer in
            outer.addTask {
                try await appStarter(signals, socket: app, behaviour: .http, delay: .zero)
                return nil
            }
            let result = try await withActivator(
                appPort: app.port,
                configuration: ActivatorConfiguration(probeBufferSize: 256),
                events: events,
                restore: { signal.yield() }
            ) { _, address in
                let response = try await TestClient.exchange(address, send: request)
                #expect(await eventuallyAsync(within: 20) { events.reports.count == 1 })
                return response
            }
            outer.cancelAll()
            return result
        }
        #expect(response.hasSuffix("hello from app: /big"))
        #expect(events.reports.first?.forwardReason == .bufferFull)
        #expect(events.reports.first?.outcome == .proxied(toApp: request.utf8.count, toClient: response.utf8.count))
    }

    @Test func adoptedSocket_isServed_andOwnedByTheActivator() async throws {
        let events = EventLog<ActivatorEvent>()
        let listening = try ReservedPort()  // a bound socket made by the "caller"
        let adopted = SharedDescriptor(OwnedDescriptor(adopting: listening.fd))
        let activator = try await Activator.bind(
            ports: [PortRedirect(appPort: 1, source: .adopt(adopted))],
            events: events.sink,
            restore: { throw TestRestoreError() }
        )
        #expect(!adopted.isOpen, "the activator took the descriptor over (NIO owns it now)")
        #expect(activator.listeners[0].localAddress.port == Int(listening.port))
        // The leak detector the descriptor tests use does see a live socket of ours.
        #expect(ownTCPSockets(onPorts: [listening.port]).count == 1)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await activator.run() }
            let http = try await TestClient.exchange(
                activator.listeners[0].localAddress,
                send: httpRequest("/", userAgent: "kube-probe/1.30")
            )
            #expect(http == ProbeResponses.httpNoContent)
            group.cancelAll()
        }
        // run() returned: the activator closed the adopted descriptor.
        #expect(ownTCPSockets(onPorts: [listening.port]).isEmpty)
    }

    @Test func dualStackListener_answersOnIPv4AndIPv6() async throws {
        let events = EventLog<ActivatorEvent>()
        let activator = try await Activator.bind(
            ports: [PortRedirect(appPort: 1, source: .bind(try SocketAddress(ipAddress: "::", port: 0)))],
            events: events.sink,
            restore: { throw TestRestoreError() }
        )
        let port = try #require(activator.listeners[0].localAddress.port)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await activator.run() }
            for host in ["127.0.0.1", "::1"] {
                let address = try SocketAddress(ipAddress: host, port: port)
                let http = try await TestClient.exchange(address, send: httpRequest("/", userAgent: "kube-probe/1.30"))
                #expect(http == ProbeResponses.httpNoContent, "via \(host)")
            }
            group.cancelAll()
        }
        #expect(events.restoresStarted == 0)
    }

    @Test func appScaledDownAgain_rearmsTheRestore() async throws {
        let events = EventLog<ActivatorEvent>()
        let restores = Atomic<Int>(0)
        let app = try ReservedPort()
        let (signals, signal) = AsyncStream.makeStream(of: Void.self)
        try await withThrowingTaskGroup(of: Void.self) { outer in
            outer.addTask { try await appStarter(signals, socket: app, behaviour: .http, delay: .zero) }
            try await withActivator(
                appPort: app.port,
                events: events,
                restore: {
                    restores.add(1, ordering: .relaxed)
                    signal.yield()
                }
            ) { activator, address in
                let first = try await TestClient.exchange(address, send: httpRequest("/one"))
                #expect(first.hasSuffix("hello from app: /one"))
                #expect(activator.phase == .running)
                // While running (a redirect that lags), connections go straight to the app.
                let second = try await TestClient.exchange(address, send: httpRequest("/two"))
                #expect(second.hasSuffix("hello from app: /two"))
                #expect(restores.load(ordering: .relaxed) == 1)
                // Checkpointed again: the next connection restores again (the app still runs
                // here, so the hook only counts).
                #expect(activator.appScaledDown() == .armed)
                let third = try await TestClient.exchange(address, send: httpRequest("/three"))
                #expect(third.hasSuffix("hello from app: /three"))
                #expect(restores.load(ordering: .relaxed) == 2)
            }
            outer.cancelAll()
        }
        #expect(events.restoresStarted == 2)
    }

    @Test func wakeApplication_joinsTheSingleFlightWithConnections() async throws {
        let app = try ReservedPort()
        let events = EventLog<ActivatorEvent>()
        let (signals, signal) = AsyncStream.makeStream(of: Void.self)
        try await withThrowingTaskGroup(of: Void.self) { outer in
            outer.addTask { try await appStarter(signals, socket: app, behaviour: .http, delay: .zero) }
            try await withActivator(
                appPort: app.port,
                events: events,
                restore: {
                    try await Task.sleep(for: .milliseconds(100))
                    signal.yield()
                }
            ) { activator, address in
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for i in 0..<10 {
                        group.addTask { try await activator.wakeApplication() }
                        group.addTask {
                            let response = try await TestClient.exchange(address, send: httpRequest("/w/\(i)"))
                            #expect(response.hasSuffix("hello from app: /w/\(i)"))
                        }
                    }
                    try await group.waitForAll()
                }
                #expect(activator.phase == .running)
                try await activator.wakeApplication()  // running: returns at once
            }
            outer.cancelAll()
        }
        #expect(events.restoresStarted == 1)
    }

    /// The shim's setting without the BPF redirect: the activator's listening socket, the
    /// application and the clients live in a pod network namespace; the activator runs in the
    /// host namespace and dials the application with sockets made inside the pod namespace.
    @Test(
        .enabled(
            if: Privileges.isRoot && Privileges.hasTool("ip"),
            "needs root and iproute2: creates a network namespace"
        )
    )
    func podNetworkNamespace_socketsMadeInside_areServedAndDialled() async throws {
        let namespace = try TestNetns("zpact")
        defer { namespace.delete() }
        let loopback = try SocketAddress(ipAddress: "127.0.0.1", port: 0)
        let listening = try namespace.run { SharedDescriptor(try SocketCalls.makeBound(loopback)) }
        let appSocket = try namespace.run { SharedDescriptor(try SocketCalls.makeBound(loopback)) }
        let appPort = try boundPort(appSocket)
        let factory = NamespaceSocketFactory(namespace: namespace)
        let events = EventLog<ActivatorEvent>()
        let (signals, signal) = AsyncStream.makeStream(of: Void.self)
        let activator = try await Activator.bind(
            ports: [PortRedirect(appPort: appPort, source: .adopt(listening))],
            applicationSockets: factory,
            events: events.sink,
            restore: { signal.yield() }
        )
        let port = try #require(activator.listeners[0].localAddress.port)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                for await _ in signals {
                    guard let socket = appSocket.take() else { break }
                    try await TestApp.serve(adopting: socket.disown(), behaviour: .http)
                }
            }
            group.addTask { try await activator.run() }
            // Nothing listens on the host side of that port.
            await #expect(throws: (any Error).self) {
                _ = try await TestClient.connect(try SocketAddress(ipAddress: "127.0.0.1", port: port))
            }
            let probe = try await TestClient.exchange(
                in: namespace,
                port: port,
                send: httpRequest("/healthz", userAgent: "kube-probe/1.31")
            )
            #expect(probe == ProbeResponses.httpNoContent)
            #expect(events.restoresStarted == 0)
            let response = try await TestClient.exchange(in: namespace, port: port, send: httpRequest("/in-pod"))
            #expect(response.hasSuffix("hello from app: /in-pod"))
            #expect(events.restoresStarted == 1)
            #expect(factory.made.load(ordering: .relaxed) >= 1)
            group.cancelAll()
        }
    }

    @Test func serverSpeaksFirstProtocol_worksThroughTheProxy() async throws {
        let app = try ReservedPort()
        let events = EventLog<ActivatorEvent>()
        let (signals, signal) = AsyncStream.makeStream(of: Void.self)
        let configuration = ActivatorConfiguration(inspectionTimeout: .milliseconds(300))
        let transcript = try await withThrowingTaskGroup(of: String?.self) { outer in
            outer.addTask {
                try await appStarter(signals, socket: app, behaviour: .bannerThenEcho, delay: .milliseconds(100))
                return nil
            }
            let result = try await withActivator(
                appPort: app.port,
                configuration: configuration,
                events: events,
                restore: { signal.yield() }
            ) { _, address in
                let connection = try await TestClient.connect(address)
                return try await connection.executeThenClose { inbound, outbound in
                    var iterator = inbound.makeAsyncIterator()
                    var received = ""
                    // The client says nothing until the server greeted it.
                    while !received.contains("\r\n"), let chunk = try await iterator.next() {
                        received += String(buffer: chunk)
                    }
                    try await outbound.write(ByteBuffer(string: "HELO zpact\r\n"))
                    while !received.hasSuffix("HELO zpact\r\n"), let chunk = try await iterator.next() {
                        received += String(buffer: chunk)
                    }
                    outbound.finish()
                    while let chunk = try await iterator.next() { received += String(buffer: chunk) }
                    #expect(await eventuallyAsync(within: 20) { events.reports.count == 1 })
                    return received
                }
            }
            outer.cancelAll()
            return result
        }
        #expect(transcript == TestApp.banner + "HELO zpact\r\n")
        #expect(events.reports.first?.forwardReason == .silentClient)
        #expect(events.restoresStarted == 1)
    }

    @Test func halfClose_isPropagatedBothWays() async throws {
        let app = try ReservedPort()
        let events = EventLog<ActivatorEvent>()
        let (signals, signal) = AsyncStream.makeStream(of: Void.self)
        let payload = String(repeating: "0123456789abcdef", count: 8192)  // 128 KiB, larger than any buffer
        let response = try await withThrowingTaskGroup(of: String?.self) { outer in
            outer.addTask {
                try await appStarter(signals, socket: app, behaviour: .answerAfterEOF, delay: .zero)
                return nil
            }
            let result = try await withActivator(appPort: app.port, events: events, restore: { signal.yield() }) {
                _,
                address in
                let response = try await TestClient.exchange(address, send: "PUT" + payload, halfClose: true)
                #expect(await eventuallyAsync(within: 20) { events.reports.count == 1 })
                return response
            }
            outer.cancelAll()
            return result
        }
        #expect(response == "got \(payload.utf8.count + 3): PUT" + payload)
        #expect(events.reports.first?.outcome == .proxied(toApp: payload.utf8.count + 3, toClient: response.utf8.count))
    }

    @Test func restoreFailure_closesHeldConnectionsCleanly_reportsIt_andTheNextConnectionRetries() async throws {
        let app = try ReservedPort()
        let events = EventLog<ActivatorEvent>()
        let (signals, signal) = AsyncStream.makeStream(of: Void.self)
        let attempts = Atomic<Int>(0)
        let (failed, succeeded) = try await withThrowingTaskGroup(of: ([String], String)?.self) { outer in
            outer.addTask {
                try await appStarter(signals, socket: app, behaviour: .http, delay: .zero)
                return nil
            }
            let result = try await withActivator(
                appPort: app.port,
                events: events,
                restore: {
                    if attempts.add(1, ordering: .relaxed).newValue == 1 {
                        try await Task.sleep(for: .milliseconds(200))
                        throw TestRestoreError()
                    }
                    signal.yield()
                }
            ) { activator, address in
                let failed = try await withThrowingTaskGroup(of: String.self) { group in
                    for i in 0..<20 {
                        group.addTask { try await TestClient.exchange(address, send: httpRequest("/held/\(i)")) }
                    }
                    return try await group.reduce(into: []) { $0.append($1) }
                }
                #expect(activator.phase == .scaledDown)
                let succeeded = try await TestClient.exchange(address, send: httpRequest("/retry"))
                #expect(await eventuallyAsync(within: 20) { events.reports.count == 21 })
                return (failed, succeeded)
            }
            outer.cancelAll()
            return result
        }
        // Held connections: closed with EOF (no reset, no bytes).
        #expect(failed.count == 20)
        #expect(failed.allSatisfy { $0.isEmpty })
        #expect(succeeded.hasSuffix("hello from app: /retry"))
        #expect(events.restoresStarted == 2)
        #expect(
            events.all.contains {
                if case .restoreFailed(let message, _) = $0 { message.contains("criu said no") } else { false }
            }
        )
        let failures = events.reports.filter { if case .failed(.restoreFailed) = $0.outcome { true } else { false } }
        #expect(failures.count == 20)
    }

    @Test func misbehavingClients_endWithinTimeouts_andLeakNoDescriptors() async throws {
        let app = try ReservedPort()
        let activatorPort = Atomic<Int>(0)
        let events = EventLog<ActivatorEvent>()
        let (signals, signal) = AsyncStream.makeStream(of: Void.self)
        let configuration = ActivatorConfiguration(
            inspectionTimeout: .milliseconds(300),
            connectTimeout: .seconds(3),
            proxyIdleTimeout: .milliseconds(1500)
        )
        let results = try await withThrowingTaskGroup(of: [String: String]?.self) { outer in
            outer.addTask {
                try await appStarter(signals, socket: app, behaviour: .http, delay: .zero)
                return nil
            }
            let result = try await withActivator(
                appPort: app.port,
                configuration: configuration,
                events: events,
                restore: { signal.yield() }
            ) { _, address in
                activatorPort.store(address.port ?? 0, ordering: .relaxed)
                return try await withThrowingTaskGroup(of: (String, String).self) { group in
                    group.addTask {
                        var generator = SystemRandomNumberGenerator()
                        let garbage = (0..<2000).map { _ in UInt8.random(in: 0...255, using: &generator) }
                        let connection = try await TestClient.connect(address)
                        let answer = try await connection.executeThenClose { inbound, outbound in
                            try await outbound.write(ByteBuffer(bytes: garbage))
                            outbound.finish()
                            var count = 0
                            for try await chunk in inbound { count += chunk.readableBytes }
                            return "\(count)"
                        }
                        return ("garbage", answer)
                    }
                    group.addTask {
                        // One byte per second for three seconds, then the rest of a request.
                        let connection = try await TestClient.connect(address)
                        let answer = try await connection.executeThenClose { inbound, outbound in
                            for byte in "GET" {
                                try await outbound.write(ByteBuffer(string: String(byte)))
                                try await Task.sleep(for: .seconds(1))
                            }
                            try await outbound.write(
                                ByteBuffer(string: " /slow HTTP/1.1\r\nUser-Agent: kube-probe/1.31\r\n\r\n")
                            )
                            var received = ""
                            for try await chunk in inbound { received += String(buffer: chunk) }
                            return received
                        }
                        return ("slow", answer)
                    }
                    group.addTask {
                        // Connects and never sends: woken after the inspection timeout, then cut by the idle timeout.
                        let connection = try await TestClient.connect(address)
                        let answer = try await connection.executeThenClose { inbound, _ in
                            var count = 0
                            for try await chunk in inbound { count += chunk.readableBytes }
                            return "\(count)"
                        }
                        return ("silent", answer)
                    }
                    group.addTask {
                        // Closes in the middle of a request.
                        let connection = try await TestClient.connect(address)
                        try await connection.executeThenClose { _, outbound in
                            try await outbound.write(ByteBuffer(string: "GET /half HTTP/1.1\r\nHost:"))
                        }
                        return ("half", "closed")
                    }
                    var all: [String: String] = [:]
                    for try await (name, answer) in group { all[name] = answer }
                    #expect(await eventuallyAsync(within: 20) { events.reports.count == 4 })
                    return all
                }
            }
            outer.cancelAll()
            return result
        }
        #expect(results["garbage"] == "0")
        #expect(results["slow"]?.hasSuffix("hello from app: /slow") == true)
        #expect(results["silent"] == "0")
        #expect(events.restoresStarted == 1)
        let reports = events.reports
        #expect(
            reports.contains {
                $0.forwardReason == .silentClient && $0.outcome == .proxyIdleTimedOut(toApp: 0, toClient: 0)
            }
        )
        #expect(reports.contains { $0.forwardReason == .clientClosedEarly })
        let ports: Set<UInt16> = [app.port, UInt16(activatorPort.load(ordering: .relaxed))]
        #expect(ports.count == 2 && !ports.contains(0))
        let socketsClosed = await eventuallyAsync(within: 20) { ownTCPSockets(onPorts: ports).isEmpty }
        #expect(socketsClosed, "sockets left open: \(ownTCPSockets(onPorts: ports))")
    }

    /// `proxy-timeout` is an idle limit: a proxied connection that keeps carrying bytes for several
    /// limits stays open; once nothing moves for the limit, both sides are closed.
    @Test func proxyIdleTimeout_cutsOnlyIdleConnections() async throws {
        let app = try ReservedPort()
        let events = EventLog<ActivatorEvent>()
        let (signals, signal) = AsyncStream.makeStream(of: Void.self)
        let limit = Duration.milliseconds(600)
        let configuration = ActivatorConfiguration(proxyIdleTimeout: limit)
        let (talked, idle, echoed) = try await withThrowingTaskGroup(of: (Duration, Duration, String)?.self) { outer in
            outer.addTask {
                try await appStarter(signals, socket: app, behaviour: .bannerThenEcho, delay: .zero)
                return nil
            }
            let result = try await withActivator(
                appPort: app.port,
                configuration: configuration,
                events: events,
                restore: { signal.yield() }
            ) { _, address in
                let connection = try await TestClient.connect(address)
                return try await connection.executeThenClose { inbound, outbound in
                    var iterator = inbound.makeAsyncIterator()
                    var received = ""
                    // A line every 200 ms for 2.2 s: over three idle limits, never idle for one.
                    let started = ContinuousClock.now
                    for i in 0..<12 {
                        let line = "line-\(i)\n"
                        try await outbound.write(ByteBuffer(string: line))
                        while !received.hasSuffix(line), let chunk = try await iterator.next() {
                            received += String(buffer: chunk)
                        }
                        // Idleness is measured from the last echo, so no pause after it.
                        if i < 11 { try await Task.sleep(for: .milliseconds(200)) }
                    }
                    let talked = started.duration(to: .now)
                    let idleFrom = ContinuousClock.now
                    while let chunk = try await iterator.next() { received += String(buffer: chunk) }
                    return (talked, idleFrom.duration(to: .now), received)
                }
            }
            outer.cancelAll()
            return result
        }
        #expect(echoed == TestApp.banner + (0..<12).map { "line-\($0)\n" }.joined(), "every line came back")
        #expect(talked > limit * 3)
        #expect(idle >= limit - .milliseconds(50) && idle < .seconds(5), "closed after \(idle) idle")
        #expect(await eventuallyAsync(within: 20) { events.reports.count == 1 })
        #expect(
            events.reports.first.map {
                if case .proxyIdleTimedOut(let toApp, let toClient) = $0.outcome {
                    toApp > 0 && toClient > 0
                } else {
                    false
                }
            } == true,
            "\(events.reports)"
        )
    }
}

// MARK: gRPC client on NIOHTTP2

private struct GRPCHealthResult {
    var httpStatus: String?
    var grpcStatus: String?
    var message: [UInt8] = []
}

private struct HTTP2Client: Sendable {
    var channel: any Channel
    var multiplexer: NIOHTTP2Handler.AsyncStreamMultiplexer<Void>
}

/// Sends one `grpc.health.v1.Health/Check` over cleartext HTTP/2 and collects the answer.
private func grpcHealthCheck(_ address: SocketAddress) async throws -> GRPCHealthResult {
    let client = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
        .connect(to: address) { channel in
            channel.eventLoop.makeCompletedFuture {
                let multiplexer = try channel.pipeline.syncOperations.configureAsyncHTTP2Pipeline(mode: .client) {
                    stream in
                    stream.eventLoop.makeSucceededVoidFuture()
                }
                return HTTP2Client(channel: channel, multiplexer: multiplexer)
            }
        }
    defer { client.channel.close(promise: nil) }
    let stream = try await client.multiplexer.openStream { stream in
        stream.eventLoop.makeCompletedFuture {
            try NIOAsyncChannel<HTTP2Frame.FramePayload, HTTP2Frame.FramePayload>(wrappingChannelSynchronously: stream)
        }
    }
    return try await stream.executeThenClose { inbound, outbound in
        let headers = HPACKHeaders([
            (":method", "POST"), (":scheme", "http"), (":path", "/grpc.health.v1.Health/Check"),
            (":authority", "10.0.0.7:9000"), ("content-type", "application/grpc"), ("te", "trailers"),
            ("user-agent", "kube-probe/1.31"),
        ])
        try await outbound.write(.headers(.init(headers: headers)))
        try await outbound.write(.data(.init(data: .byteBuffer(ByteBuffer(bytes: [0, 0, 0, 0, 0])), endStream: true)))
        var result = GRPCHealthResult()
        loop: for try await frame in inbound {
            switch frame {
            case .headers(let block):
                if let status = block.headers.first(name: ":status") { result.httpStatus = status }
                if let status = block.headers.first(name: "grpc-status") { result.grpcStatus = status }
                if block.endStream { break loop }
            case .data(let data):
                if case .byteBuffer(let bytes) = data.data { result.message += bytes.readableBytesView }
                if data.endStream { break loop }
            default:
                continue
            }
        }
        return result
    }
}
