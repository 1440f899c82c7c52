import Foundation
import Glibc
import SystemPackage
import Testing
import ZPCore
import ZPSystem
import ZPTestSupport

@testable import ZPBPF

/// Real traffic against the tcx activity program and the sockops connection counter.
@Suite(.enabled(if: Privileges.isRoot, "needs root: creates network namespaces and loads BPF programs"))
struct ActivityTests {
    /// One probe-style exchange: connect, send a request, the app reads it, both close.
    private func probe(from ns: String, to address: String, port: UInt16, source: String, app: TestSocket) throws {
        let c = try TestSocket.connect(from: ns, to: address, port: port, source: source)
        let s = try #require(app.accept())
        #expect(try c.roundTrip(to: s, "GET /healthz HTTP/1.1\r\nUser-Agent: kube-probe/1.31\r\n\r\n"))
    }

    @Test func probeSources_neverCount_realClientDoes() throws {
        let lab = Lab(index: 6)
        let pod = try lab.namespace("pod")
        let client = try lab.namespace("cli")
        let a = try lab.veth(pod: pod, client: client)
        let port: UInt16 = 8080
        let app = try TestSocket.listener(in: pod, port: port)
        // client4/client6 are the "kubelet"; the IPv4 one is given IPv4-mapped to check normalising.
        let redirector = try PodRedirector(
            netnsPath: Lab.path(pod),
            options: .init(probeSources: [IPAddress("::ffff:\(a.client4)")!, IPAddress(a.client6)!])
        )
        defer { redirector.close() }
        #expect(try redirector.probeSources() == [IPAddress(a.client4)!, IPAddress(a.client6)!])
        try redirector.trackPort(port)
        #expect(try redirector.activity(port: port) == PortActivity(lastActivity: nil, openConnections: 0))

        // A probe connection alone neither stamps nor counts.
        let openProbe = try TestSocket.connect(from: client, to: a.pod4, port: port, source: a.client4)
        let openProbeServer = try #require(app.accept())
        #expect(try openProbe.roundTrip(to: openProbeServer, "GET /ready HTTP/1.1\r\n\r\n"))
        #expect(try redirector.activity(port: port) == PortActivity(lastActivity: nil, openConnections: 0))

        // One real client connects (its SYN stamps the port) and then stays idle.
        let real = try TestSocket.connect(from: client, to: a.pod4, port: port, source: a.other4)
        let realServer = try #require(app.accept())
        #expect(try eventually { try redirector.activity(port: port)?.openConnections == 1 })
        let afterConnect = try #require(try redirector.activity(port: port)?.lastActivity)
        #expect(afterConnect <= SystemClock.monotonicNow())

        // Several seconds of probes over IPv4 and IPv6: the stamp and the count do not move.
        let start = Date()
        var probes = 0
        while Date().timeIntervalSince(start) < 3 {
            try probe(
                from: client,
                to: probes % 2 == 0 ? a.pod4 : a.pod6,
                port: port,
                source: probes % 2 == 0 ? a.client4 : a.client6,
                app: app
            )
            probes += 1
            usleep(50_000)
        }
        #expect(probes > 10)
        let afterProbes = try #require(try redirector.activity(port: port))
        #expect(
            afterProbes == PortActivity(lastActivity: afterConnect, openConnections: 1),
            "\(probes) probe exchanges changed nothing; the idle real connection is reported open"
        )
        #expect(try #require(afterProbes.idleTime()) >= .seconds(3))

        // One real request moves the stamp.
        #expect(try real.roundTrip(to: realServer, "GET / HTTP/1.1\r\n\r\n"))
        let afterRequest = try #require(try redirector.activity(port: port)?.lastActivity)
        #expect(afterRequest > afterConnect, "the request moved the timestamp")

        // A real IPv6 client counts as well.
        let real6 = try TestSocket.connect(from: client, to: a.pod6, port: port, source: a.other6)
        let real6Server = try #require(app.accept())
        #expect(try eventually { try redirector.activity(port: port)?.openConnections == 2 })
        withExtendedLifetime((openProbe, openProbeServer, real, realServer, real6, real6Server)) {}
    }

    @Test func probeSources_canBeReplacedAtRunTime() throws {
        let lab = Lab(index: 13)
        let pod = try lab.namespace("pod")
        let client = try lab.namespace("cli")
        let a = try lab.veth(pod: pod, client: client)
        let port: UInt16 = 8083
        let app = try TestSocket.listener(in: pod, port: port)
        let redirector = try PodRedirector(netnsPath: Lab.path(pod))
        defer { redirector.close() }
        try redirector.trackPort(port)
        try redirector.setProbeSources([IPAddress(a.client4)!, IPAddress("10.1.2.3")!])
        try probe(from: client, to: a.pod4, port: port, source: a.client4, app: app)
        #expect(try redirector.activity(port: port)?.lastActivity == nil)
        try redirector.setProbeSources([IPAddress("10.1.2.3")!])
        #expect(try redirector.probeSources() == [IPAddress("10.1.2.3")!])
        try probe(from: client, to: a.pod4, port: port, source: a.client4, app: app)
        #expect(try redirector.activity(port: port)?.lastActivity != nil, "no longer a probe source")
    }

    @Test func closingConnections_countGoesToZero() throws {
        let lab = Lab(index: 7)
        let pod = try lab.namespace("pod")
        let client = try lab.namespace("cli")
        let a = try lab.veth(pod: pod, client: client)
        let port: UInt16 = 8081
        let app = try TestSocket.listener(in: pod, port: port)
        let redirector = try PodRedirector(netnsPath: Lab.path(pod))
        defer { redirector.close() }
        try redirector.trackPort(port)
        var pairs: [(TestSocket, TestSocket)] = []
        for i in 0..<4 {
            let c = try TestSocket.connect(from: client, to: i % 2 == 0 ? a.pod4 : a.pod6, port: port)
            pairs.append((c, try #require(app.accept())))
        }
        #expect(try eventually { try redirector.activity(port: port)?.openConnections == 4 })
        pairs.removeLast(2)  // both ends close
        #expect(try eventually { try redirector.activity(port: port)?.openConnections == 2 })
        pairs.removeAll()
        #expect(try eventually { try redirector.activity(port: port)?.openConnections == 0 })
    }

    @Test func loopback_countsUnlessIgnored() throws {
        let lab = Lab(index: 8)
        let pod = try lab.namespace("pod")
        let port: UInt16 = 8082
        let app = try TestSocket.listener(in: pod, port: port)
        let redirector = try PodRedirector(netnsPath: Lab.path(pod), options: .init(ignoreLoopback: true))
        defer { redirector.close() }
        try redirector.trackPort(port)
        for address in ["127.0.0.1", "::1", "127.0.0.1"] {
            let c = try TestSocket.connect(from: pod, to: address, port: port)
            let s = try #require(app.accept())
            #expect(try c.roundTrip(to: s))
        }
        #expect(try redirector.activity(port: port) == PortActivity(lastActivity: nil, openConnections: 0))

        try redirector.setIgnoreLoopback(false)
        let c = try TestSocket.connect(from: pod, to: "::1", port: port)
        let s = try #require(app.accept())
        #expect(try c.roundTrip(to: s))
        #expect(try redirector.activity(port: port)?.lastActivity != nil)
        #expect(try eventually { try redirector.activity(port: port)?.openConnections == 1 })
    }

    /// Two pods tracking the same port: each sees only its own traffic (tcx per netns, sockops by
    /// netns cookie).
    @Test func twoPods_activityStaysApart() throws {
        let lab = Lab(index: 14)
        let podA = try lab.namespace("pa")
        let podB = try lab.namespace("pb")
        let client = try lab.namespace("cli")
        try lab.veth(pod: podA, client: client, link: 0)
        let toB = try lab.veth(pod: podB, client: client, link: 1)
        let port: UInt16 = 8080
        let appB = try TestSocket.listener(in: podB, port: port)
        let a = try PodRedirector(netnsPath: Lab.path(podA))
        let b = try PodRedirector(netnsPath: Lab.path(podB))
        defer {
            a.close()
            b.close()
        }
        try a.trackPort(port)
        try b.trackPort(port)
        let c = try TestSocket.connect(from: client, to: toB.pod6, port: port)
        let s = try #require(appB.accept())
        #expect(try c.roundTrip(to: s))
        #expect(try eventually { try b.activity(port: port)?.openConnections == 1 })
        #expect(try b.activity(port: port)?.lastActivity != nil)
        #expect(try a.activity(port: port) == PortActivity(lastActivity: nil, openConnections: 0))
    }

    @Test func untrackedPort_hasNoFigures() throws {
        let lab = Lab(index: 9)
        let pod = try lab.namespace("pod")
        let redirector = try PodRedirector(netnsPath: Lab.path(pod))
        defer { redirector.close() }
        #expect(try redirector.activity(port: 1234) == nil)
        try redirector.trackPort(1234)
        #expect(try redirector.activity(port: 1234) != nil)
        try redirector.untrackPort(1234)
        #expect(try redirector.activity(port: 1234) == nil)
    }
}
