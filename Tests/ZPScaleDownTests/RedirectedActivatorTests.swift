import Foundation
import Glibc
import Synchronization
import SystemPackage
import Testing
import ZPActivator
import ZPCore
import ZPSystem
import ZPTestSupport

@testable import ZPBPF
@testable import ZPScaleDown

/// How the clients reach the pod in one run.
enum ClientPath: String, Sendable, CustomStringConvertible {
    /// From the client namespace over the veth pair to the pod's IPv4 address.
    case vethIPv4
    /// From the client namespace over the veth pair to the pod's IPv6 address.
    case vethIPv6
    /// Inside the pod namespace to 127.0.0.1 (clients bind 127.0.0.5, the activator dials from 127.0.0.1).
    case loopbackIPv4
    /// Inside the pod namespace to ::1 (the activator dials 127.0.0.1, so ::1 peers are direct).
    case loopbackIPv6

    var description: String { rawValue }
}

private func request(_ path: String, userAgent: String = "zpab-client/1") -> String {
    "GET \(path) HTTP/1.1\r\nHost: app\r\nUser-Agent: \(userAgent)\r\nConnection: close\r\n\r\n"
}

private func body(of response: String) -> String {
    guard let range = response.range(of: "\r\n\r\n") else { return "" }
    return String(response[range.upperBound...])
}

private func ms(_ d: Duration) -> String {
    let (s, atto) = d.components
    return String(format: "%.1f ms", Double(s) * 1000 + Double(atto) / 1e15)
}

private func percentile(_ values: [Duration], _ p: Double) -> Duration {
    guard !values.isEmpty else { return .zero }
    let sorted = values.sorted()
    return sorted[min(sorted.count - 1, Int(Double(sorted.count - 1) * p))]
}

/// End to end, real kernel: ZPBPF's sk_lookup redirect in a pod network namespace steers first
/// connections to ZPActivator's listener (made in the pod namespace), a restore hook starts a
/// real server process in the pod, the redirect goes off, the activator proxies; afterwards
/// clients reach the server directly.
@Suite(
    .serialized,  // four pods with 100 clients and a Python server each at once would swamp 2 cores
    .enabled(if: Privileges.isRoot, "needs root: creates network namespaces and loads BPF programs"),
    .timeLimit(.minutes(5))
)
struct RedirectedActivatorTests {
    static let clients = 100

    @Test(arguments: [ClientPath.vethIPv4, .vethIPv6, .loopbackIPv4, .loopbackIPv6])
    func firstConnections_throughTheRedirect_restoreOnce_thenGoDirect(path: ClientPath) async throws {
        let index: Int
        switch path {
        case .vethIPv4: index = 1
        case .vethIPv6: index = 2
        case .loopbackIPv4: index = 3
        case .loopbackIPv6: index = 4
        }
        let lab = try PodLab(index: index)
        defer { lab.destroy() }
        let port: UInt16 = 8080
        let overVeth = path == .vethIPv4 || path == .vethIPv6
        let clientNetns = overVeth ? lab.clientPath : lab.podPath
        let target: String
        let source: String?
        let probeSource: String?
        switch path {
        case .vethIPv4: (target, source, probeSource) = (lab.pod4, lab.client4, lab.probe4)
        case .vethIPv6: (target, source, probeSource) = (lab.pod6, lab.client6, lab.probe6)
        case .loopbackIPv4: (target, source, probeSource) = ("127.0.0.1", "127.0.0.5", nil)
        case .loopbackIPv6: (target, source, probeSource) = ("::1", nil, nil)
        }
        // The kubelet's addresses, IPv4 and IPv6: their traffic never counts as activity.
        let redirector = try PodRedirector(
            netnsPath: lab.podPath,
            options: .init(probeSources: [IPAddress(lab.probe4)!, IPAddress(lab.probe6)!])
        )
        let pinRoot = FilePath("/sys/fs/bpf/zpab-test-\(getpid())-\(index)")
        let pinned = try redirector.pin(podID: "pod", root: pinRoot)
        let kernelIDs = try redirector.kernelObjectIDs()
        let app = Mutex<AppProcess?>(nil)
        defer {  // on failure too: no process, pin or namespace left behind
            app.withLock { $0 }?.stop()
            redirector.remove()
            _ = rmdir(pinRoot.string)
        }
        let events = EventLog<ActivatorEvent>()
        let restoreCalls = Atomic<Int>(0)

        let pod = try await PodActivator.make(
            namespacePath: lab.podPath,
            ports: [port],
            redirector: redirector,
            configuration: ActivatorConfiguration(connectTimeout: .seconds(30)),
            events: events.sink,
            restore: {
                restoreCalls.add(1, ordering: .relaxed)
                // A slow start: the server process appears 200 ms after the restore request.
                try await Task.sleep(for: .milliseconds(200))
                let started = try AppProcess(namespace: lab.pod, port: port)
                app.withLock { $0 = started }
                try await started.waitUntilListening()
            }
        )
        let activatorPort = try #require(pod.listenerPorts[port])
        #expect(activatorPort != port && activatorPort != 0)
        #expect(try redirector.hasListener(port: port), "the activator's socket is in the SOCKHASH")
        #expect(try redirector.trackedPorts() == [port])
        #expect(try !redirector.isRedirectEnabled(port: port), "off until the application is scaled down")

        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await pod.run() }
            defer { group.cancelAll() }  // also when an expectation throws

            // The checkpoint happened (the app is not running): arm, redirect on.
            #expect(try pod.applicationScaledDown() == .armed)
            #expect(try redirector.isRedirectEnabled(port: port))
            #expect(pod.phase == .scaledDown)

            // A kubelet HTTP probe while scaled down: answered by the activator, no restore.
            let probe = try await onThread {
                try exchange(
                    from: clientNetns,
                    to: target,
                    port: port,
                    source: probeSource,
                    request: request("/healthz", userAgent: "kube-probe/1.31")
                )
            }
            #expect(probe == ProbeResponses.httpNoContent)
            // A kubelet TCP probe (connect, close): accepted and closed, no restore either.
            try await onThread { try tcpProbe(from: clientNetns, to: target, port: port, source: probeSource) }
            #expect(await eventuallyAsync { events.reports.count == 2 })
            // (In either order: the HTTP probe's report waits for the activator to see the close.)
            let probeOutcomes = events.reports.map(\.outcome)
            #expect(
                probeOutcomes.count == 2 && probeOutcomes.contains(.probeAnswered(.http))
                    && probeOutcomes.contains(.probeAnswered(.tcp)),
                "\(probeOutcomes)"
            )
            #expect(restoreCalls.load(ordering: .relaxed) == 0 && events.restoresStarted == 0)
            #expect(app.withLock { $0 } == nil, "no application process yet")
            #expect(pod.phase == .scaledDown)
            if overVeth {
                let activity = try #require(try redirector.activity(port: port))
                #expect(activity.lastActivity == nil, "probe-source traffic is not activity")
                #expect(activity.openConnections == 0)
            }

            // Resolve the pod's neighbour entry for the client address first (a refused connect to
            // an untracked port): 100 SYN-ACKs queued behind one unresolved IPv6 neighbour exceed
            // the queue and cost the dropped ones a 1 s SYN retransmit, a lab artefact.
            if overVeth, let source {
                let refused = try? await onThread {
                    try exchange(from: clientNetns, to: target, port: 1, source: source, request: "")
                }
                #expect(refused == nil, "nothing listens on port 1")
            }

            // 100 concurrent first connections, unique paths.
            let started = ContinuousClock.now
            let results = await concurrently(Self.clients) { i in
                try exchange(from: clientNetns, to: target, port: port, source: source, request: request("/first/\(i)"))
            }
            let burst = ContinuousClock.now - started
            var wrong: [String] = []
            for (i, result) in results.enumerated() {
                switch result {
                case .success(let response):
                    let text = body(of: response)
                    // Proxied: the application sees the activator's dial from the pod's 127.0.0.1.
                    if !(response.hasPrefix("HTTP/1.0 200 OK\r\n")
                        && text == "hello from app: /first/\(i) from 127.0.0.1")
                    {
                        wrong.append("\(i): \(response.prefix(200))")
                    }
                case .failure(let error):
                    wrong.append("\(i): \(error)")
                }
            }
            #expect(wrong.isEmpty, "\(wrong.count) wrong: \(wrong.prefix(5))")
            #expect(restoreCalls.load(ordering: .relaxed) == 1, "exactly one restore")
            #expect(events.restoresStarted == 1)
            #expect(try !redirector.isRedirectEnabled(port: port), "the activator switched the redirect off")
            #expect(pod.phase == .running)
            let expectedReports = 2 + Self.clients
            #expect(await eventuallyAsync { events.reports.count == expectedReports })
            let proxied = events.reports.dropFirst(2).filter {
                if case .proxied = $0.outcome { true } else { false }
            }
            #expect(proxied.count == Self.clients)
            func summary(_ values: [Duration]) -> String {
                "p50 \(ms(percentile(values, 0.5))) p99 \(ms(percentile(values, 0.99)))"
            }
            let restoreDuration = events.all.compactMap { event -> Duration? in
                if case .restoreSucceeded(let duration) = event { duration } else { nil }
            }
            let reachableToFirstByte = proxied.compactMap { report -> Duration? in
                guard let reachable = report.timings.appReachable, let first = report.timings.firstByteBack else {
                    return nil
                }
                return first - reachable
            }
            print(
                "zpab-bench \(path): \(Self.clients) first connections through the redirect: burst \(ms(burst)),"
                    + " restore hook + redirect off \(restoreDuration.first.map(ms) ?? "?");"
                    + " accept->app reachable \(summary(proxied.compactMap(\.timings.untilAppReachable)));"
                    + " app reachable->first byte \(summary(reachableToFirstByte));"
                    + " accept->first byte \(summary(proxied.compactMap(\.timings.untilFirstByte)))"
            )

            // After the restore: new connections reach the application directly.
            let direct = await concurrently(20) { i in
                try exchange(
                    from: clientNetns,
                    to: target,
                    port: port,
                    source: source,
                    request: request("/direct/\(i)")
                )
            }
            let directPeer = source ?? "::1"
            for (i, result) in direct.enumerated() {
                let text = body(of: (try? result.get()) ?? "")
                #expect(text == "hello from app: /direct/\(i) from \(directPeer)", "direct \(i): \(result)")
            }
            #expect(events.reports.count == expectedReports, "the activator accepted no new connection")

            // Activity: real client traffic counted, probe-source traffic (direct to the app now) not.
            if overVeth {
                // Quiet first: every counted connection closed means every FIN that stamps the port
                // (clients', the activator's dial) has arrived; a late FIN would move the stamp.
                #expect(
                    await eventuallyAsync { (try? redirector.activity(port: port)?.openConnections) == 0 },
                    "every connection of the burst closed"
                )
                let afterBurst = try #require(try redirector.activity(port: port)?.lastActivity)
                let probeSource = try #require(probeSource)
                for i in 0..<5 {
                    let answer = try await onThread {
                        try exchange(
                            from: clientNetns,
                            to: target,
                            port: port,
                            source: probeSource,
                            request: request("/healthz/\(i)", userAgent: "kube-probe/1.31")
                        )
                    }
                    #expect(body(of: answer) == "hello from app: /healthz/\(i) from \(probeSource)")
                }
                #expect(
                    try redirector.activity(port: port)?.lastActivity == afterBurst,
                    "probe-source traffic leaves the timestamp"
                )
                _ = try await onThread {
                    try exchange(from: clientNetns, to: target, port: port, source: source, request: request("/real"))
                }
                let afterReal = try #require(try redirector.activity(port: port)?.lastActivity)
                #expect(afterReal > afterBurst, "a real request moves the timestamp")
                #expect(
                    await eventuallyAsync { (try? redirector.activity(port: port)?.openConnections) == 0 },
                    "every connection closed"
                )
            } else {
                #expect(try redirector.activity(port: port)?.lastActivity != nil, "loopback clients count")
            }
            #expect(events.reports.count == expectedReports)
            group.cancelAll()
        }

        // Cleanup: run() returned, listeners closed (map entries gone), redirect off.
        #expect(await eventuallyAsync { (try? redirector.hasListener(port: port)) == false }, "SOCKHASH entry dropped")
        #expect(try redirector.redirectedPorts().isEmpty)
        let appProcess = try #require(app.withLock { $0 })
        appProcess.stop()
        #expect(!appProcess.exists, "the application process is gone")
        redirector.remove()
        #expect(access(pinned.string, F_OK) != 0, "pins removed")
        _ = rmdir(pinRoot.string)
        #expect(access(pinRoot.string, F_OK) != 0)
        #expect(
            try await eventuallyAsync { try bpftoolIDs("link").isDisjoint(with: kernelIDs.links) },
            "links detached"
        )
        #expect(try await eventuallyAsync { try bpftoolIDs("map").isDisjoint(with: kernelIDs.maps) }, "maps freed")
        lab.destroy()
        #expect(try lab.namespacesLeft().isEmpty, "namespaces deleted")
    }
}

private struct RestoreRefused: Error, CustomStringConvertible {
    var description: String { "restore refused (test)" }
}

/// The shim's loop: running, checkpointed (redirect on), a failed restore, a good one, scaled
/// down again, woken by an exec; and the setup's failure paths.
@Suite(
    .serialized,
    .enabled(if: Privileges.isRoot, "needs root: creates network namespaces and loads BPF programs"),
    .timeLimit(.minutes(5))
)
struct PodActivatorLifecycleTests {
    @Test func scaleDownCycles_failedRestore_retry_rearm_andExecWake() async throws {
        let lab = try PodLab(index: 5)
        defer { lab.destroy() }
        let port: UInt16 = 8081
        let redirector = try PodRedirector(netnsPath: lab.podPath)
        let kernelIDs = try redirector.kernelObjectIDs()
        let app = Mutex<AppProcess?>(nil)
        defer {
            app.withLock { $0 }?.stop()
            redirector.close()
        }
        let events = EventLog<ActivatorEvent>()
        let restoreCalls = Atomic<Int>(0)
        let pod = try await PodActivator.make(
            namespacePath: lab.podPath,
            ports: [port],
            redirector: redirector,
            configuration: ActivatorConfiguration(connectTimeout: .seconds(30)),
            events: events.sink,
            restore: {
                // The first restore fails; later ones start the server.
                if restoreCalls.add(1, ordering: .relaxed).newValue == 1 { throw RestoreRefused() }
                let started = try AppProcess(namespace: lab.pod, port: port)
                app.withLock { $0 = started }
                try await started.waitUntilListening()
            }
        )
        let clientPath = lab.clientPath
        let target = lab.pod4
        let source = lab.client4
        @Sendable func get(_ path: String) async throws -> String {
            try await onThread {
                try exchange(from: clientPath, to: target, port: port, source: source, request: request(path))
            }
        }
        func startAppDirectly() async throws {
            let started = try AppProcess(namespace: lab.pod, port: port)
            app.withLock { $0 = started }
            try await started.waitUntilListening()
        }
        func checkpoint() {
            app.withLock { current in
                current?.stop()
                current = nil
            }
        }

        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await pod.run() }
            defer { group.cancelAll() }

            // Running: the application serves directly, the activator sees nothing.
            try await startAppDirectly()
            #expect(body(of: try await get("/running")) == "hello from app: /running from \(source)")
            #expect(events.reports.isEmpty)

            // Checkpointed: armed, redirect on. The first restore fails: the client is closed
            // without an answer, the redirect stays on, the next connection tries again.
            checkpoint()
            #expect(try pod.applicationScaledDown() == .armed)
            #expect(try await get("/fails") == "", "closed cleanly, no bytes")
            #expect(await eventuallyAsync { events.reports.count == 1 })
            #expect(events.reports.last?.outcome == .failed(.restoreFailed("restore refused (test)")))
            #expect(events.all.contains { if case .restoreFailed = $0 { true } else { false } })
            #expect(try redirector.isRedirectEnabled(port: port), "still redirected after a failed restore")
            #expect(pod.phase == .scaledDown)

            #expect(body(of: try await get("/retry")) == "hello from app: /retry from 127.0.0.1", "proxied")
            #expect(restoreCalls.load(ordering: .relaxed) == 2)
            #expect(try !redirector.isRedirectEnabled(port: port))
            #expect(body(of: try await get("/after")) == "hello from app: /after from \(source)", "direct")
            #expect(await eventuallyAsync { events.reports.count == 2 })

            // Scaled down again, then an exec wakes it without a connection.
            checkpoint()
            #expect(try pod.applicationScaledDown() == .armed)
            #expect(try redirector.isRedirectEnabled(port: port))
            try await pod.wakeApplication()
            #expect(restoreCalls.load(ordering: .relaxed) == 3)
            #expect(pod.phase == .running)
            #expect(try !redirector.isRedirectEnabled(port: port), "the wake switched the redirect off")
            #expect(body(of: try await get("/woken")) == "hello from app: /woken from \(source)", "direct")
            #expect(events.reports.count == 2, "the activator accepted nothing more")
            group.cancelAll()
        }
        #expect(await eventuallyAsync { (try? redirector.hasListener(port: port)) == false })
        let last = try #require(app.withLock { $0 })
        last.stop()
        #expect(!last.exists)
        redirector.close()
        #expect(
            try await eventuallyAsync { try bpftoolIDs("link").isDisjoint(with: kernelIDs.links) },
            "links detached"
        )
        lab.destroy()
        #expect(try lab.namespacesLeft().isEmpty)
    }

    /// Two ports, and a shim that goes away while the pod is scaled down: the pinned redirect
    /// state survives, a new shim reopens the pins, makes a new activator (registering new
    /// listeners), and a connection on the second port restores and switches both ports off.
    @Test func twoPorts_shimRestartWhileScaledDown_reopensPins_andRestores() async throws {
        let lab = try PodLab(index: 8)
        defer { lab.destroy() }
        let ports: [UInt16] = [8080, 9090]
        let pinRoot = FilePath("/sys/fs/bpf/zpab-test-\(getpid())-8")
        let first = try PodRedirector(netnsPath: lab.podPath)
        let pinned = try first.pin(podID: "pod", root: pinRoot)
        let kernelIDs = try first.kernelObjectIDs()
        let app = Mutex<AppProcess?>(nil)
        defer {
            app.withLock { $0 }?.stop()
            PodRedirector.removePinned(at: pinned)
            _ = rmdir(pinRoot.string)
        }
        let clientPath = lab.clientPath
        let target = lab.pod4
        let source = lab.client4

        // The first shim: scaled down, then gone (its redirector closed first, as a crash would
        // leave it: run()'s switch-off cannot reach the maps any more).
        let firstEvents = EventLog<ActivatorEvent>()
        let firstPod = try await PodActivator.make(
            namespacePath: lab.podPath,
            ports: ports,
            redirector: first,
            events: firstEvents.sink
        ) { Issue.record("the first shim must not restore") }
        try await withThrowingTaskGroup(of: Void.self) { group throws in
            group.addTask { try await firstPod.run() }
            defer { group.cancelAll() }
            #expect(try firstPod.applicationScaledDown() == .armed)
            #expect(try first.redirectedPorts() == ports)
            first.close()
            group.cancelAll()
        }

        // The new shim finds the redirect still on but no listener (the sockets closed with the
        // old activator), so a connection now is refused.
        let second = try PodRedirector.open(pinnedAt: pinned)
        defer { second.close() }
        #expect(try second.redirectedPorts() == ports)
        #expect(await eventuallyAsync { ports.allSatisfy { (try? second.hasListener(port: $0)) == false } })
        let refused = try? await onThread {
            try exchange(from: clientPath, to: target, port: 9090, source: source, request: request("/gap"))
        }
        #expect(refused == nil, "no listener registered, no application: refused")

        let events = EventLog<ActivatorEvent>()
        let restoreCalls = Atomic<Int>(0)
        let pod = try await PodActivator.make(
            namespacePath: lab.podPath,
            ports: ports,
            redirector: second,
            startsScaledDown: true,
            events: events.sink
        ) {
            restoreCalls.add(1, ordering: .relaxed)
            let started = try AppProcess(namespace: lab.pod, ports: ports)
            app.withLock { $0 = started }
            try await started.waitUntilListening()
        }
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await pod.run() }
            defer { group.cancelAll() }
            #expect(try pod.applicationScaledDown() == .armed)
            #expect(try ports.allSatisfy { try second.hasListener(port: $0) })
            let second = try await onThread {
                try exchange(from: clientPath, to: target, port: 9090, source: source, request: request("/p2"))
            }
            #expect(body(of: second) == "hello from app: /p2 from 127.0.0.1", "proxied on the second port")
            #expect(restoreCalls.load(ordering: .relaxed) == 1)
            #expect(await eventuallyAsync { events.reports.count == 1 })
            #expect(events.reports.first?.appPort == 9090)
            for port in ports {
                let text = try await onThread {
                    try exchange(
                        from: clientPath,
                        to: target,
                        port: port,
                        source: source,
                        request: request("/d\(port)")
                    )
                }
                #expect(body(of: text) == "hello from app: /d\(port) from \(source)", "direct on \(port)")
            }
            #expect(events.reports.count == 1, "both redirects were switched off by the one restore")
            group.cancelAll()
        }
        #expect(try second.redirectedPorts().isEmpty)
        #expect(firstEvents.reports.isEmpty)

        second.remove()
        #expect(access(pinned.string, F_OK) != 0, "pins removed")
        #expect(
            try await eventuallyAsync { try bpftoolIDs("link").isDisjoint(with: kernelIDs.links) },
            "links detached"
        )
        #expect(try await eventuallyAsync { try bpftoolIDs("map").isDisjoint(with: kernelIDs.maps) }, "maps freed")
        let last = try #require(app.withLock { $0 })
        last.stop()
        #expect(!last.exists)
    }

    @Test func make_rejectsBadPortLists() async throws {
        let lab = try PodLab(index: 6)
        defer { lab.destroy() }
        let redirector = try PodRedirector(netnsPath: lab.podPath)
        defer { redirector.close() }
        for ports: [UInt16] in [[], [0, 80], [80, 81, 80], Array(1...129)] {
            do {
                _ = try await PodActivator.make(namespacePath: lab.podPath, ports: ports, redirector: redirector) {}
                Issue.record("ports \(ports.prefix(4)) accepted")
            } catch {
                #expect(error.step == .validatePorts, "\(error)")
            }
        }
        #expect(try listeningSockets(in: lab.pod).isEmpty)
        #expect(try redirector.trackedPorts().isEmpty)
    }

    /// A failure after listeners were made (the SOCKHASH is full) closes them and untracks the
    /// ports it started tracking.
    @Test func make_failingHalfway_closesItsListeners_andUntracks() async throws {
        let lab = try PodLab(index: 7)
        defer { lab.destroy() }
        let redirector = try PodRedirector(netnsPath: lab.podPath)
        defer { redirector.close() }
        // Fill all but one SOCKHASH slot with sockets of our own (ports 20000...20126): 7000 gets
        // the last slot, 7001 fails.
        var fillers: [SharedDescriptor] = []
        defer { withExtendedLifetime(fillers) {} }  // open until the test ends
        for i in 0..<(PodRedirector.maxPorts - 1) {
            let listener = try PodRedirector.makeListener(inNamespaceAt: lab.podPath)
            try redirector.registerListener(port: UInt16(20000 + i), socket: listener)
            fillers.append(SharedDescriptor(listener))
        }
        try redirector.trackPort(6999)
        let before = try listeningSockets(in: lab.pod).count
        #expect(before == PodRedirector.maxPorts - 1)
        do {
            _ = try await PodActivator.make(namespacePath: lab.podPath, ports: [7000, 7001], redirector: redirector) {}
            Issue.record("a full SOCKHASH was accepted")
        } catch {
            #expect(error.step == .registerListener)
            #expect(error.port == 7001)
            #expect(error.description.contains("port 7001") && error.description.contains(lab.pod), "\(error)")
        }
        #expect(try listeningSockets(in: lab.pod).count == before, "the listeners made for 7000 and 7001 are closed")
        #expect(await eventuallyAsync { (try? redirector.hasListener(port: 7000)) == false }, "its entry dropped")
        #expect(try redirector.trackedPorts() == [6999], "7000 untracked again, 6999 (tracked before) kept")

        // A closed redirector: the error names the step.
        redirector.close()
        await #expect(throws: PodActivatorError.self) {
            _ = try await PodActivator.make(namespacePath: lab.podPath, ports: [7000], redirector: redirector) {}
        }
    }
}

/// Listening TCP sockets in network namespace `name` (`ss -Htln`).
private func listeningSockets(in name: String) throws -> [String] {
    try sh(["ip", "netns", "exec", name, "ss", "-Htln"]).split(separator: "\n").map(String.init)
}
