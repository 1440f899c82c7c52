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
/// (not the activator), and `endHandover` then removes the marks.
@Suite(.enabled(if: Privileges.isRoot, "needs root: creates network namespaces and loads BPF programs"))
struct HandoverAtResumeTests {
    /// A listener as CRIU restores one: `SO_REUSEPORT` on for bind and listen (so it joins the
    /// handover listener's group), then the application's own value (off).
    private func restoredListener(in namespace: FilePath, port: UInt16) throws -> TestSocket {
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
        guard bound == 0, listen(socket.fd, 16) == 0 else {
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
}
