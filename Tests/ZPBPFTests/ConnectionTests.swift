import Foundation
import Glibc
import SystemPackage
import Testing
import ZPCore
import ZPSystem
import ZPTestSupport

@testable import ZPBPF

/// Held connections (decision 0045) and handover listeners (decision 0046) with real TCP over a
/// veth pair: what the peer of a dumped socket sees, and where queued connections end up.
@Suite(.enabled(if: Privileges.isRoot, "needs root: creates network namespaces, loads BPF programs, uses TCP_REPAIR"))
struct ConnectionTests {
    /// Closes `socket` as CRIU's dump leaves it: in TCP repair mode, so the kernel sends nothing.
    private func closeSilently(_ socket: TestSocket) throws {
        var on: CInt = 1
        guard
            setsockopt(socket.fd, CInt(IPPROTO_TCP), 19 /* TCP_REPAIR */, &on, socklen_t(MemoryLayout<CInt>.size)) == 0
        else {
            throw LabError("TCP_REPAIR: \(String(cString: strerror(errno)))")
        }
        socket.descriptor.close()
    }

    /// What `recv` on `socket` gives within `seconds`: data, EOF, a reset or nothing.
    private func outcome(of socket: TestSocket, within seconds: Int) -> String {
        socket.setTimeouts(seconds: seconds)
        var byte: UInt8 = 0
        let n = recv(socket.fd, &byte, 1, 0)
        if n > 0 { return "data" }
        if n == 0 { return "eof" }
        switch errno {
        case ECONNRESET: return "reset"
        case EAGAIN: return "nothing"
        default: return "errno \(errno)"
        }
    }

    private func nextEvent(_ stream: AsyncStream<PodWakeEvent>, within seconds: Double) async -> PodWakeEvent? {
        await withTaskGroup(of: PodWakeEvent?.self) { group in
            group.addTask {
                for await event in stream { return event }
                return nil
            }
            group.addTask {
                try? await Task.sleep(for: .seconds(seconds))
                return nil
            }
            let first = await group.next() ?? nil
            group.cancelAll()
            return first
        }
    }

    /// The control: without a hold, the peer of a silently closed socket gets a reset as soon as
    /// it sends (what the original zeropod's and our earlier `tcp_close` dumps avoid by closing).
    @Test func withoutHold_peerOfDumpedSocket_getsReset() throws {
        let lab = Lab(index: 20)
        let pod = try lab.namespace("pod")
        let client = try lab.namespace("cli")
        let a = try lab.veth(pod: pod, client: client)
        let app = try TestSocket.listener(in: pod, port: 8080)
        let redirector = try PodRedirector(netnsPath: Lab.path(pod))
        defer { redirector.close() }
        let c = try TestSocket.connect(from: client, to: a.pod4, port: 8080)
        let s = try #require(app.accept())
        try closeSilently(s)
        try c.send("hello")
        #expect(outcome(of: c, within: 5) == "reset")
    }

    @Test func heldConnection_noReset_onlyItsSegmentsDropped_dataWakesOwner() async throws {
        let lab = Lab(index: 21)
        let pod = try lab.namespace("pod")
        let client = try lab.namespace("cli")
        let a = try lab.veth(pod: pod, client: client)
        let app = try TestSocket.listener(in: pod, port: 8080)
        let redirector = try PodRedirector(netnsPath: Lab.path(pod))
        defer { redirector.close() }
        let events = try redirector.wakeEvents(owner: 7)

        let held = try TestSocket.connect(from: client, to: a.pod4, port: 8080)
        let heldServer = try #require(app.accept())
        let other = try TestSocket.connect(from: client, to: a.pod6, port: 8080)
        let otherServer = try #require(app.accept())
        let tuple = TCPConnectionTuple(
            local: IPAddress(a.pod4)!,
            localPort: 8080,
            remote: IPAddress(a.client4)!,
            remotePort: held.port
        )
        try redirector.holdConnections([tuple], owner: 7)
        #expect(try redirector.heldConnections() == [HeldConnection(tuple: tuple, owner: 7, dropped: 0, woken: false)])
        try closeSilently(heldServer)

        // Only the held tuple is dropped: the other connection carries data both ways.
        #expect(try other.roundTrip(to: otherServer))
        #expect(try otherServer.roundTrip(to: other))

        // The held peer sends: no reset, the segments are counted, the owner is woken once.
        try held.send("GET / HTTP/1.1\r\n\r\n")
        let event = await nextEvent(events, within: 10)
        #expect(event == PodWakeEvent(kind: .heldConnection, port: 8080, owner: 7))
        #expect(outcome(of: held, within: 2) == "nothing", "the peer saw neither a reset nor data")
        let counted = try #require(try redirector.heldConnections().first)
        #expect(counted.dropped >= 2, "the segment and at least one retransmission: \(counted.dropped)")
        #expect(counted.woken)
        #expect(try redirector.pendingWake(owner: 7))
        #expect(try !redirector.pendingWake(owner: 8))

        // Re-armed, the next retransmission wakes again.
        try redirector.rearmWakes(owner: 7)
        #expect(try !redirector.pendingWake(owner: 7))
        #expect(await nextEvent(events, within: 30) == PodWakeEvent(kind: .heldConnection, port: 8080, owner: 7))

        // Released with no socket behind it: the next retransmission meets the kernel's reset
        // (the peer's retransmission timer has backed off by now: up to 12.8 s, then 25.6 s).
        let released = try redirector.releaseConnections(owner: 7)
        #expect(released.map(\.tuple) == [tuple])
        #expect(try redirector.heldConnections().isEmpty)
        #expect(outcome(of: held, within: 60) == "reset")
    }

    @Test func holdKeys_roundTrip_ipv4AndIPv6() throws {
        let v4 = TCPConnectionTuple(
            local: IPAddress("10.0.0.1")!,
            localPort: 443,
            remote: IPAddress("10.0.0.2")!,
            remotePort: 50123
        )
        let v6 = TCPConnectionTuple(
            local: IPAddress("fd00::1")!,
            localPort: 1,
            remote: IPAddress("fd00::2")!,
            remotePort: 65535
        )
        let mapped = TCPConnectionTuple(
            local: IPAddress("::ffff:10.0.0.1")!,
            localPort: 443,
            remote: IPAddress("::ffff:10.0.0.2")!,
            remotePort: 50123
        )
        #expect(PodRedirector.connection(fromKey: PodRedirector.connectionKey(v4)) == v4)
        #expect(PodRedirector.connection(fromKey: PodRedirector.connectionKey(v6)) == v6)
        #expect(PodRedirector.connectionKey(mapped) == PodRedirector.connectionKey(v4), "one key for both forms")
    }

    /// A listener made as CRIU's restore makes one: `SO_REUSEPORT` on for bind and listen, then
    /// back to the application's value (off).
    private func criuLikeListener(in namespace: String, port: UInt16) throws -> TestSocket {
        let socket = TestSocket(
            try NetworkNamespace(path: Lab.path(namespace)).makeSocket(
                domain: AF_INET,
                type: CInt(SOCK_STREAM.rawValue)
            )
        )
        var on: CInt = 1
        var off: CInt = 0
        let size = socklen_t(MemoryLayout<CInt>.size)
        setsockopt(socket.fd, SOL_SOCKET, SO_REUSEADDR, &on, size)
        setsockopt(socket.fd, SOL_SOCKET, SO_REUSEPORT, &on, size)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(socket.fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard bound == 0, listen(socket.fd, 16) == 0 else {
            throw LabError("bind/listen: \(String(cString: strerror(errno)))")
        }
        setsockopt(socket.fd, SOL_SOCKET, SO_REUSEPORT, &off, size)
        return socket
    }

    private func peerAddress(_ socket: TestSocket) -> String {
        var storage = sockaddr_in6()
        var length = socklen_t(MemoryLayout<sockaddr_in6>.size)
        _ = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getpeername(socket.fd, $0, &length) }
        }
        if storage.sin6_family == sa_family_t(AF_INET) {
            return withUnsafeBytes(of: storage) { raw in
                let sin = raw.load(as: sockaddr_in.self)
                return IPAddress.v4(UInt32(bigEndian: sin.sin_addr.s_addr)).description
            }
        }
        return "family \(storage.sin6_family)"
    }

    @Test func handover_probesToActivator_clientQueues_wakes_thenMigratesToApp() async throws {
        let lab = Lab(index: 22)
        let pod = try lab.namespace("pod")
        let client = try lab.namespace("cli")
        let a = try lab.veth(pod: pod, client: client)
        let port: UInt16 = 8080
        // client4 is the "kubelet"; other4 a real client.
        let redirector = try PodRedirector(
            netnsPath: Lab.path(pod),
            options: .init(probeSources: [IPAddress(a.client4)!])
        )
        defer { redirector.close() }
        let activator = try TestSocket.listener(in: pod)
        try activator.descriptor.withOwner { (socket) throws(BPFError) in
            try redirector.registerListener(port: port, socket: socket)
        }
        let handover = TestSocket(
            try redirector.makeHandoverListener(
                for: TCPListenerAddress(address: .v4(0), port: port),
                inNamespaceAt: Lab.path(pod)
            )
        )
        try redirector.setHandover(port: port, owner: 9)
        try redirector.setRedirect(port: port, enabled: true)
        let events = try redirector.wakeEvents(owner: 9)

        // The probe source goes to the activator and wakes nothing.
        let probe = try TestSocket.connect(from: client, to: a.pod4, port: port, source: a.client4)
        #expect(activator.accept(within: 5) != nil)
        _ = probe
        #expect(try redirector.handoverPorts().map(\.woken) == [false])

        // A real client queues on the handover listener and wakes the owner.
        let real = try TestSocket.connect(from: client, to: a.pod4, port: port, source: a.other4)
        try real.send("GET / HTTP/1.1\r\n\r\n")
        #expect(await nextEvent(events, within: 10) == PodWakeEvent(kind: .connection, port: port, owner: 9))
        #expect(try redirector.handoverPorts().map(\.woken) == [true])
        #expect(activator.accept(within: 0.2) == nil)

        // "Restore": the application's listener joins the group; the handover listener closes and
        // its queue moves to the application, which sees the client's own address.
        let app = try criuLikeListener(in: pod, port: port)
        try redirector.setRedirect(port: port, enabled: false)
        try redirector.removeHandover(port: port)
        handover.descriptor.close()
        let accepted = try #require(app.accept(within: 5), "the queued connection migrated to the app's listener")
        #expect(peerAddress(accepted) == a.other4)
        #expect(try accepted.receive(18) == "GET / HTTP/1.1\r\n\r\n")
        try accepted.send("HTTP/1.1 204 No Content\r\n\r\n")
        #expect(try real.receive(27) == "HTTP/1.1 204 No Content\r\n\r\n")

        // Later connections reach the application directly.
        let later = try TestSocket.connect(from: client, to: a.pod4, port: port, source: a.other4)
        #expect(app.accept(within: 5) != nil)
        _ = later
    }

    @Test func handoverListener_refusedWhileTheAppListens_namesTheCall() throws {
        let lab = Lab(index: 23)
        let pod = try lab.namespace("pod")
        let redirector = try PodRedirector(netnsPath: Lab.path(pod))
        defer { redirector.close() }
        let app = try TestSocket.listener(in: pod, port: 8081)  // no SO_REUSEPORT, like most apps
        #expect {
            _ = try redirector.makeHandoverListener(
                for: TCPListenerAddress(address: .v6(high: 0, low: 0), port: 8081),
                inNamespaceAt: Lab.path(pod)
            )
        } throws: { error in
            guard case .system(let failure) = error as? BPFError else { return false }
            return failure.call == "bind" && failure.errno == .addressInUse
        }
        _ = app
    }
}
