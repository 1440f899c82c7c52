import Foundation
import Glibc
import Logging
import SystemPackage
import Testing
import ZPBPF
import ZPCore
import ZPSystem
import ZPTestSupport

@testable import ZPScaleDown

/// `ContainerConnections.processesResumed()` (CRIU's `post-resume`) against the real pod
/// programs: the handover listeners close while the redirect and the ports' handover marks stay
/// on, the queued connection moves to the restored application's listener with its client's
/// address, a connection arriving before the redirect goes off still reaches the application
/// (not the activator), and `endHandover` then removes the marks. Decision 0056: the restored
/// listener's backlog is raised while it takes the queue over, and set back afterwards.
@Suite(.enabled(if: Privileges.isRoot, "needs root: creates network namespaces and loads BPF programs"))
struct HandoverAtResumeTests {
    /// A listener as CRIU restores one: `SO_REUSEPORT` on for bind and listen (so it joins the
    /// handover listener's group), then the application's own value (off).
    private func restoredListener(in namespace: FilePath, port: UInt16, backlog: CInt = 16) throws -> TestSocket {
        let socket = TestSocket(try NetworkNamespace(path: namespace).makeSocket(domain: AF_INET, type: CInt(SOCK_STREAM.rawValue)))
        var on: CInt = 1
        var off: CInt = 0
        let size = socklen_t(MemoryLayout<CInt>.size)
        setsockopt(socket.fd, SOL_SOCKET, SO_REUSEADDR, &on, size)
        setsockopt(socket.fd, SOL_SOCKET, SO_REUSEPORT, &on, size)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(socket.fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0, listen(socket.fd, backlog) == 0 else {
            throw LabError("bind/listen on port \(port): \(String(cString: strerror(errno)))")
        }
        setsockopt(socket.fd, SOL_SOCKET, SO_REUSEPORT, &off, size)
        return socket
    }

    private func peer(_ socket: TestSocket) -> String {
        var storage = sockaddr_in()
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getpeername(socket.fd, $0, &length) }
        }
        return IPAddress.v4(UInt32(bigEndian: storage.sin_addr.s_addr)).description
    }

    @Test func postResume_movesTheQueueToTheApp_laterConnectionsGoDirect_untilTheRedirectGoesOff() async throws {
        let lab = try PodLab(index: 9)
        defer { lab.destroy() }
        let port: UInt16 = 8080
        let redirector = try PodRedirector(
            netnsPath: lab.podPath,
            options: .init(probeSources: [IPAddress(lab.probe4)!])
        )
        defer { redirector.close() }
        let activator = TestSocket(try PodRedirector.makeListener(inNamespaceAt: lab.podPath, port: 0))
        try activator.descriptor.withOwner { (socket) throws(BPFError) in
            try redirector.registerListener(port: port, socket: socket)
        }
        let connections = ContainerConnections(
            redirector: redirector,
            namespacePath: lab.podPath,
            owner: 7,
            settings: .init(keepConnections: false, listenerHandover: true),
            logger: Logger(label: "test")
        )
        // Scaled down: redirect on, the dump recorded a listener on the port, handover armed.
        connections.armHandover(ports: [port])
        try redirector.setRedirect(port: port, enabled: true)
        connections.dumped(connections: [], listeners: [TCPListenerAddress(address: .v4(0), port: port)])
        #expect(connections.checkpointed() == [port])
        #expect(connections.handoverPorts == [port])

        // A client queues on the handover listener.
        let first = try TestSocket.connect(fromNetns: lab.clientPath.string, to: lab.pod4, port: port, source: lab.client4)
        try first.send("GET /1 HTTP/1.1\r\n\r\n")
        #expect(activator.accept(within: 0.3) == nil, "a client's connection is not the activator's")

        // "Restore": the application's listener joins the group, then CRIU's post-resume.
        let app = try restoredListener(in: lab.podPath, port: port)
        connections.processesResumed()
        #expect(connections.handoverPorts.isEmpty)
        #expect(try redirector.handoverPorts().map(\.port) == [port], "the mark stays until the redirect goes off")
        let queued = try #require(app.accept(within: 10), "the queued connection moved to the application")
        #expect(peer(queued) == lab.client4)
        #expect(try queued.receive(19) == "GET /1 HTTP/1.1\r\n\r\n")

        // Before the redirect goes off: a client still reaches the application, a probe the activator.
        let second = try TestSocket.connect(fromNetns: lab.clientPath.string, to: lab.pod4, port: port, source: lab.client4)
        let direct = try #require(app.accept(within: 10), "a connection after post-resume reaches the application")
        #expect(peer(direct) == lab.client4)
        #expect(activator.accept(within: 0.3) == nil)
        let probe = try TestSocket.connect(fromNetns: lab.clientPath.string, to: lab.pod4, port: port, source: lab.probe4)
        #expect(activator.accept(within: 10) != nil, "probes still go to the activator while the redirect is on")

        // The activator's redirect-off ends the handover: the mark goes.
        try redirector.setRedirect(port: port, enabled: false)
        connections.endHandover(ports: [port])
        #expect(try redirector.handoverPorts().isEmpty)
        _ = (second, probe)
    }

    /// The restored listener's accept queue and backlog, through a copy of its descriptor.
    private func acceptQueue(_ socket: TestSocket) throws -> (queued: UInt32, backlog: UInt32) {
        let copy = try socket.descriptor.duplicate()
        return try ListeningSockets.acceptQueue(of: copy)
    }

    /// Decision 0056: the migration puts every queued connection in the application's accept
    /// queue at once, over its own backlog (9 here, as busybox httpd's); without the raise, every
    /// connection arriving until the application took them would be dropped (SYN retransmitted
    /// after 1 s, 3 s, ...) or answered with a cookie. With it, connections arriving right after the
    /// restore queue too, and the application's own backlog comes back once its queue stayed
    /// within it for a second, or at once before a dump.
    @Test func postResume_raisesTheRestoredBacklog_whileItTakesTheQueue_thenSetsItBack() async throws {
        let lab = try PodLab(index: 10)
        defer { lab.destroy() }
        let port: UInt16 = 8080
        let redirector = try PodRedirector(netnsPath: lab.podPath, options: .init(probeSources: [IPAddress(lab.probe4)!]))
        defer { redirector.close() }
        let activator = TestSocket(try PodRedirector.makeListener(inNamespaceAt: lab.podPath, port: 0))
        try activator.descriptor.withOwner { (socket) throws(BPFError) in
            try redirector.registerListener(port: port, socket: socket)
        }
        let connections = ContainerConnections(
            redirector: redirector,
            namespacePath: lab.podPath,
            owner: 8,
            settings: .init(keepConnections: false, listenerHandover: true),
            logger: Logger(label: "test")
        )
        connections.armHandover(ports: [port])
        try redirector.setRedirect(port: port, enabled: true)
        connections.dumped(connections: [], listeners: [TCPListenerAddress(address: .v4(0), port: port, backlog: 9)])
        #expect(connections.checkpointed() == [port])

        // 30 clients queue on the handover listener while "scaled down".
        var clients: [TestSocket] = []
        for _ in 0..<30 {
            clients.append(try TestSocket.connect(fromNetns: lab.clientPath.string, to: lab.pod4, port: port, source: lab.client4))
        }
        let app = try restoredListener(in: lab.podPath, port: port, backlog: 9)
        #expect(try acceptQueue(app).backlog == 9)
        var info = stat()
        #expect(fstat(app.fd, &info) == 0)
        let listener = ContainerConnections.ApplicationListener(
            port: port,
            pid: getpid(),
            descriptor: app.fd,
            inode: UInt64(info.st_ino)
        )
        connections.socketsRestored(applicationListeners: [listener])
        #expect(connections.hasWidenedListeners)
        #expect(try acceptQueue(app).backlog == 4096, "raised to the handover listener's backlog")

        // The application's listener is in the group, its processes do not run yet: new
        // connections still go to our listener (zp_reuseport_migrate selects it), none to the
        // application's by hash.
        for _ in 0..<20 {
            clients.append(try TestSocket.connect(fromNetns: lab.clientPath.string, to: lab.pod4, port: port, source: lab.client4))
        }
        #expect(try acceptQueue(app).queued == 0, "no connection reached the not-yet-running application")
        connections.processesResumed()
        #expect(
            eventually(within: 10) { (try? acceptQueue(app).queued) == 50 },
            "the queue moved to the application: \(String(describing: try? acceptQueue(app)))"
        )

        // 20 more arrive before the application accepted any: with a backlog of 9 they would wait
        // for a SYN retransmission; raised, their handshakes complete and they queue.
        for _ in 0..<20 {
            clients.append(try TestSocket.connect(fromNetns: lab.clientPath.string, to: lab.pod4, port: port, source: lab.client4))
        }
        #expect(eventually(within: 10) { (try? acceptQueue(app).queued) == 70 }, "queued: \(String(describing: try? acceptQueue(app)))")

        // Still over its own backlog: stays raised.
        let start = ContinuousClock.now
        connections.settleWidenedListeners(now: start)
        #expect(try acceptQueue(app).backlog == 4096)
        var accepted: [TestSocket] = []
        while let connection = app.accept(within: 0.5) { accepted.append(connection) }
        #expect(accepted.count == 70)
        // Within its backlog now: set back only once it stayed so for a second.
        connections.settleWidenedListeners(now: start + .milliseconds(100))
        #expect(try acceptQueue(app).backlog == 4096, "not yet: calm for 0 s")
        connections.settleWidenedListeners(now: start + .milliseconds(1200))
        #expect(try acceptQueue(app).backlog == 9, "set back after a calm second")
        #expect(!connections.hasWidenedListeners)

        // A second restore, then a dump before the queue calmed: set back at once (the images
        // must record the application's own backlog).
        connections.armHandover(ports: [port])
        connections.dumped(connections: [], listeners: [TCPListenerAddress(address: .v4(0), port: port, backlog: 9)])
        app.descriptor.close()
        #expect(connections.checkpointed() == [port])
        let client = try TestSocket.connect(fromNetns: lab.clientPath.string, to: lab.pod4, port: port, source: lab.client4)
        let app3 = try restoredListener(in: lab.podPath, port: port, backlog: 9)
        #expect(fstat(app3.fd, &info) == 0)
        connections.socketsRestored(
            applicationListeners: [.init(port: port, pid: getpid(), descriptor: app3.fd, inode: UInt64(info.st_ino))]
        )
        #expect(try acceptQueue(app3).backlog == 4096)
        connections.processesResumed()
        connections.settleWidenedListeners(force: true)
        #expect(try acceptQueue(app3).backlog == 9)
        #expect(!connections.hasWidenedListeners)

        // A third: the application closes its listener (or is killed) while the backlog is
        // raised: the next look finds the descriptor gone (`pidfd_getfd`: EBADF) and forgets it.
        connections.armHandover(ports: [port])
        connections.dumped(connections: [], listeners: [TCPListenerAddress(address: .v4(0), port: port, backlog: 9)])
        app3.descriptor.close()
        #expect(connections.checkpointed() == [port])
        let app4 = try restoredListener(in: lab.podPath, port: port, backlog: 9)
        #expect(fstat(app4.fd, &info) == 0)
        connections.socketsRestored(
            applicationListeners: [.init(port: port, pid: getpid(), descriptor: app4.fd, inode: UInt64(info.st_ino))]
        )
        #expect(connections.hasWidenedListeners)
        app4.descriptor.close()
        connections.settleWidenedListeners()
        #expect(!connections.hasWidenedListeners, "a closed listener is forgotten, without a trap")
        connections.processesResumed()
        try redirector.setRedirect(port: port, enabled: false)
        connections.endHandover(ports: nil)
        _ = (clients, client, activator)
    }
}
