import NIOCore
import NIOPosix
import Synchronization
import Testing
import ZPCore
import ZPTestSupport

@testable import ZPActivator

#if canImport(Glibc)
import Glibc
#endif

/// Ports that speak first on the activator's proxy path (decision 0055): forwarded at accept
/// unless the connection is a known probe's, and learned from who spoke first. Real sockets on
/// loopback and a real server that greets first (``TestApp/Behaviour/bannerThenEcho``).
@Suite(.serialized, .timeLimit(.minutes(3)))
struct SpeakFirstTests {
    init() {
        _ = MultiThreadedEventLoopGroup.singleton.next()
    }

    /// A silent window long enough that waiting for it cannot be mistaken for a fast path.
    static let slowInspection = ActivatorConfiguration(
        inspectionTimeout: .seconds(4),
        silentClientTimeout: .seconds(2)
    )

    /// Connects (from `source` when given), reads the greeting, returns it and how long it took.
    private static func greeting(
        _ address: SocketAddress,
        from source: SocketAddress? = nil
    ) async throws -> (String, Duration) {
        let start = ContinuousClock.now
        let connection = try await TestClient.connect(address, from: source)
        return try await connection.executeThenClose { inbound, outbound in
            var received = ""
            var iterator = inbound.makeAsyncIterator()
            while !received.contains("\r\n"), let chunk = try await iterator.next() {
                received += String(buffer: chunk)
            }
            let elapsed = start.duration(to: .now)
            outbound.finish()
            return (received, elapsed)
        }
    }

    @Test func annotatedPort_greetsAtOnce_probeSourcesStillAnsweredWithoutRestore() async throws {
        let app = try ReservedPort()
        let events = EventLog<ActivatorEvent>()
        let (signals, signal) = AsyncStream.makeStream(of: Void.self)
        var configuration = Self.slowInspection
        configuration.speaksFirstPorts = [app.port]
        let probeSource = try SocketAddress(ipAddress: "127.0.0.2", port: 0)
        let (greeting, elapsed) = try await withThrowingTaskGroup(of: (String, Duration)?.self) { outer in
            outer.addTask {
                for await _ in signals { try await TestApp.serve(socket: app, behaviour: .bannerThenEcho) }
                return nil
            }
            let result = try await withActivator(
                appPort: app.port,
                configuration: configuration,
                probeConnections: ProbeSourceAddresses(["127.0.0.2"]),
                events: events,
                restore: { signal.yield() }
            ) { activator, address in
                // Probes from a probe source are inspected as before: answered, no restore.
                let tcp = try await TestClient.connect(address, from: probeSource)
                try await tcp.executeThenClose { _, _ in }
                let http = try await TestClient.exchange(
                    on: try await TestClient.connect(address, from: probeSource),
                    send: "GET /healthz HTTP/1.1\r\nHost: app\r\nUser-Agent: kube-probe/1.31\r\n\r\n",
                    halfClose: false
                )
                #expect(http == ProbeResponses.httpNoContent)
                #expect(await eventuallyAsync(within: 20) { events.reports.count == 2 })
                #expect(activator.phase == .scaledDown)
                // A client: the restore starts at the connection, the greeting comes without the
                // 2 s silent window.
                let result = try await Self.greeting(address)
                #expect(await eventuallyAsync(within: 20) { events.reports.count == 3 })
                return result
            }
            outer.cancelAll()
            return result
        }
        #expect(greeting == TestApp.banner)
        #expect(elapsed < .seconds(1), "greeting after \(elapsed): the silent window was paid")
        print("[zpact-speakfirst] annotated port: greeting after \(elapsed) (silent window 2 s)")
        #expect(events.restoresStarted == 1)
        let kinds = events.reports.compactMap { if case .probeAnswered(let kind) = $0.outcome { kind } else { nil } }
        #expect(kinds.count == 2 && Set(kinds) == [.tcp, .http], "\(kinds)")
        #expect(events.reports.last?.forwardReason == .speaksFirstPort)
        #expect(events.reports.last?.firstSpeaker == .application)
    }

    @Test func withoutProbeCheck_annotatedPortKeepsTheSilentWindow() async throws {
        let app = try ReservedPort()
        let events = EventLog<ActivatorEvent>()
        let (signals, signal) = AsyncStream.makeStream(of: Void.self)
        var configuration = ActivatorConfiguration(silentClientTimeout: .milliseconds(300))
        configuration.speaksFirstPorts = [app.port]
        let (greeting, elapsed) = try await withThrowingTaskGroup(of: (String, Duration)?.self) { outer in
            outer.addTask {
                for await _ in signals { try await TestApp.serve(socket: app, behaviour: .bannerThenEcho) }
                return nil
            }
            let result = try await withActivator(
                appPort: app.port,
                configuration: configuration,
                events: events,
                restore: { signal.yield() }
            ) { activator, address in
                #expect(activator.speaksFirstPorts == nil)
                let result = try await Self.greeting(address)
                #expect(await eventuallyAsync(within: 20) { events.reports.count == 1 })
                return result
            }
            outer.cancelAll()
            return result
        }
        #expect(greeting == TestApp.banner)
        #expect(elapsed >= .milliseconds(300), "no probe check: probes could not be told apart")
        #expect(events.reports.first?.forwardReason == .silentClient)
    }

    /// Restore 1: the client is silent, the window passes, the application greets: the port is
    /// learned. Restore 2: the greeting comes at once. Restore 3: the client sends before the
    /// application wrote (the restore takes long enough for its bytes to arrive first): unlearned,
    /// and restore 4 waits for the window again.
    @Test func learnsFromTheApplicationsGreeting_thenGreetsAtOnce_unlearnsWhenTheClientSpeaksFirst() async throws {
        let app = try ReservedPort()
        let events = EventLog<ActivatorEvent>()
        let (signals, signal) = AsyncStream.makeStream(of: Void.self)
        let slowRestore = Atomic<Bool>(false)
        let configuration = ActivatorConfiguration(inspectionTimeout: .seconds(2), silentClientTimeout: .milliseconds(500))
        let timings = try await withThrowingTaskGroup(of: [Duration]?.self) { outer in
            outer.addTask {
                // Serves from the first restore on (later restores find it running).
                for await _ in signals { try await TestApp.serve(socket: app, behaviour: .bannerThenEcho) }
                return nil
            }
            let result = try await withActivator(
                appPort: app.port,
                configuration: configuration,
                probeConnections: ProbeSourceAddresses(["127.0.0.2"]),
                events: events,
                restore: {
                    signal.yield()
                    if slowRestore.load(ordering: .relaxed) { try await Task.sleep(for: .milliseconds(300)) }
                }
            ) { activator, address in
                var timings: [Duration] = []
                #expect(activator.speaksFirstPorts == SpeakFirstPorts())
                // 1: silent window, then learned.
                let (first, firstElapsed) = try await Self.greeting(address)
                #expect(first == TestApp.banner)
                timings.append(firstElapsed)
                #expect(await eventuallyAsync(within: 20) { events.reports.count == 1 })
                #expect(activator.speaksFirstPorts?.learned == [app.port])
                // 2: scaled down again; the greeting comes at once.
                activator.appScaledDown()
                let (second, secondElapsed) = try await Self.greeting(address)
                #expect(second == TestApp.banner)
                timings.append(secondElapsed)
                #expect(await eventuallyAsync(within: 20) { events.reports.count == 2 })
                // 3: a client that sends at once on the learned port: unlearned.
                activator.appScaledDown()
                slowRestore.store(true, ordering: .relaxed)
                let connection = try await TestClient.connect(address)
                let echoed = try await connection.executeThenClose { inbound, outbound in
                    try await outbound.write(ByteBuffer(string: "EHLO zpact\r\n"))
                    var received = ""
                    var iterator = inbound.makeAsyncIterator()
                    while !received.contains("EHLO zpact\r\n"), let chunk = try await iterator.next() {
                        received += String(buffer: chunk)
                    }
                    outbound.finish()
                    return received
                }
                #expect(echoed.hasSuffix("EHLO zpact\r\n"))
                #expect(await eventuallyAsync(within: 20) { events.reports.count == 3 })
                #expect(activator.speaksFirstPorts?.learned == [])
                // 4: the silent window again.
                activator.appScaledDown()
                slowRestore.store(false, ordering: .relaxed)
                let (_, fourthElapsed) = try await Self.greeting(address)
                timings.append(fourthElapsed)
                #expect(await eventuallyAsync(within: 20) { events.reports.count == 4 })
                return timings
            }
            outer.cancelAll()
            return result
        }
        print("[zpact-speakfirst] learning: greeting after \(timings.map { "\($0)" }) (window 500 ms)")
        #expect(timings[0] >= .milliseconds(500), "before learning: the silent window")
        #expect(timings[1] < .milliseconds(500), "after learning: no silent window (\(timings[1]))")
        #expect(timings[2] >= .milliseconds(500), "after unlearning: the silent window again")
        let reasons = events.reports.map(\.forwardReason)
        #expect(reasons == [.silentClient, .speaksFirstPort, .speaksFirstPort, .silentClient])
        #expect(events.reports.map(\.firstSpeaker) == [.application, .application, .client, .application])
        let changes = events.all.compactMap { event -> SpeakFirstPorts.Change? in
            if case .speaksFirstChanged(let change, _) = event { change } else { nil }
        }
        #expect(changes == [.learned(app.port), .unlearned(app.port), .learned(app.port)])
        #expect(events.restoresStarted == 4)
    }
}
