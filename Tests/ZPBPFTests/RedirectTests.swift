import CZPBPF
import Foundation
import Glibc
import SystemPackage
import Testing
import ZPCore
import ZPSystem
import ZPTestSupport

@testable import ZPBPF

/// Real kernel, real namespaces, real TCP: the sk_lookup redirect.
@Suite(.enabled(if: Privileges.isRoot, "needs root: creates network namespaces and loads BPF programs"))
struct RedirectTests {
    @Test(arguments: [
        ("bpf/zpbpf.bpf.c", EmbeddedObject.sourceSHA256, EmbeddedObject.objectSHA256, EmbeddedObject.bytes),
        ("bpf/zpbpf_node.bpf.c", NodeSockops.sourceSHA256, NodeSockops.objectSHA256, NodeSockops.bytes),
    ])
    func embeddedObjects_matchTheirSources(
        source: String,
        sourceHash: String,
        objectHash: String,
        bytes: [UInt8]
    ) throws {
        let root = URL(fileURLWithPath: TestPaths.packageRoot)
        // scripts/bpf-embed.sh hashes the shared header followed by the object's source.
        let output = try sh([
            "sh", "-c", "cat \"$0\" \"$1\" | sha256sum", root.appendingPathComponent("bpf/zpbpf_shared.h").path,
            root.appendingPathComponent(source).path,
        ])
        #expect(String(output.prefix(64)) == sourceHash, "run `make bpf` to regenerate the arrays in Sources/CZPBPF")
        let object = FileManager.default.temporaryDirectory.appendingPathComponent("zpbpf-\(getpid())-\(bytes.count).o")
        defer { try? FileManager.default.removeItem(at: object) }
        try Data(bytes).write(to: object)
        #expect(
            String(try sh(["sha256sum", object.path]).prefix(64)) == objectHash,
            "the embedded bytes are the object the script generated"
        )
    }

    @Test func loadOnly_everyProgramPassesTheVerifier() throws {
        let loaded = try EmbeddedObject.load()
        for fd in [loaded.skLookup, loaded.tcIngress, loaded.reuseportMigrate] {
            var info = [UInt32](repeating: 0, count: 64)
            var length = UInt32(info.count * 4)
            #expect(bpf_obj_get_info_by_fd(fd.rawValue, &info, &length) == 0)
            #expect(info[1] != 0, "a loaded program has a kernel id")
        }
    }

    /// Redirect on: the activator gets the connection and sees the dialled address and port;
    /// off: the app gets it; connections established before each switch keep working.
    @Test(arguments: [false, true])
    func veth_redirectOnAndOff_reachesActivatorThenApp(ipv6: Bool) throws {
        let lab = Lab(index: ipv6 ? 1 : 2)
        let pod = try lab.namespace("pod")
        let client = try lab.namespace("cli")
        let a = try lab.veth(pod: pod, client: client)
        let target = ipv6 ? a.pod6 : a.pod4
        let port: UInt16 = 8080
        let app = try TestSocket.listener(in: pod, port: port)
        let activator = try TestSocket.listener(in: pod)
        let redirector = try PodRedirector(netnsPath: Lab.path(pod))
        defer { redirector.close() }
        try activator.descriptor.withOwner { (socket) throws(BPFError) in
            try redirector.registerListener(port: port, socket: socket)
        }
        #expect(try redirector.hasListener(port: port))

        // Before: straight to the app, and this connection must survive the switch.
        let early = try TestSocket.connect(from: client, to: target, port: port)
        let earlyServer = try #require(app.accept())

        try redirector.setRedirect(port: port, enabled: true)
        #expect(try redirector.isRedirectEnabled(port: port))
        let redirected = try TestSocket.connect(from: client, to: target, port: port)
        let held = try #require(activator.accept(), "redirected connection reaches the activator")
        #expect(!app.isReadable(within: 0.2))
        let local = held.localAddress()
        #expect(local.port == port, "activator sees the original port")
        #expect(local.address == target)
        #expect(try early.roundTrip(to: earlyServer, "early-while-on"))

        try redirector.setRedirect(port: port, enabled: false)
        let direct = try TestSocket.connect(from: client, to: target, port: port)
        let appServer = try #require(app.accept(), "after switch-off the app gets new connections")
        #expect(!activator.isReadable(within: 0.2))
        #expect(try direct.roundTrip(to: appServer))
        #expect(try redirected.roundTrip(to: held, "held-after-off"), "activator connection survives switch-off")
        #expect(try held.roundTrip(to: redirected, "reply"))
    }

    /// Same through loopback inside the pod netns (127.0.0.1 and ::1).
    @Test func loopback_redirectOnAndOff() throws {
        let lab = Lab(index: 3)
        let pod = try lab.namespace("pod")
        let port: UInt16 = 9090
        let app = try TestSocket.listener(in: pod, port: port)
        let activator = try TestSocket.listener(in: pod)
        let redirector = try PodRedirector(netnsPath: Lab.path(pod))
        defer { redirector.close() }
        try activator.descriptor.withOwner { (socket) throws(BPFError) in
            try redirector.registerListener(port: port, socket: socket)
        }
        try redirector.setRedirect(port: port, enabled: true)
        for address in ["127.0.0.1", "::1"] {
            let c = try TestSocket.connect(from: pod, to: address, port: port)
            let s = try #require(activator.accept(), "\(address) reaches the activator")
            #expect(s.localAddress().port == port)
            #expect(s.localAddress().address == address)
            #expect(try c.roundTrip(to: s))
            #expect(!app.isReadable(within: 0.1))
        }
        try redirector.setRedirect(port: port, enabled: false)
        for address in ["127.0.0.1", "::1"] {
            let c = try TestSocket.connect(from: pod, to: address, port: port)
            let s = try #require(app.accept(), "\(address) reaches the app when off")
            #expect(try c.roundTrip(to: s))
        }
    }

    /// 128 ports, each with its own activator socket; a 129th is refused with a clear error.
    @Test func maxPorts_allRedirected() throws {
        let lab = Lab(index: 4)
        let pod = try lab.namespace("pod")
        let client = try lab.namespace("cli")
        let a = try lab.veth(pod: pod, client: client)
        let redirector = try PodRedirector(netnsPath: Lab.path(pod))
        defer { redirector.close() }
        let ports = (0..<UInt16(PodRedirector.maxPorts)).map { 20000 + $0 }
        var activators: [UInt16: TestSocket] = [:]
        for port in ports {
            let activator = try TestSocket.listener(in: pod)
            activators[port] = activator
            try redirector.trackPort(port)
            try activator.descriptor.withOwner { (socket) throws(BPFError) in
                try redirector.registerListener(port: port, socket: socket)
            }
            try redirector.setRedirect(port: port, enabled: true)
        }
        #expect(throws: BPFError.tooManyPorts(port: 30000, limit: 128)) {
            try redirector.setRedirect(port: 30000, enabled: true)
        }
        #expect(throws: BPFError.tooManyPorts(port: 30000, limit: 128)) { try redirector.trackPort(30000) }
        for port in ports {
            // Nothing listens on these ports in the pod: only the redirect can answer.
            let c = try TestSocket.connect(from: client, to: port % 2 == 0 ? a.pod4 : a.pod6, port: port)
            let s = try #require(activators[port]!.accept(), "port \(port) reaches its own activator socket")
            #expect(s.localAddress().port == port)
            _ = c
        }
    }

    /// Two pods side by side: redirecting one never catches the other's traffic.
    @Test func twoPods_redirectOneOnly() throws {
        let lab = Lab(index: 5)
        let podA = try lab.namespace("pa")
        let podB = try lab.namespace("pb")
        let client = try lab.namespace("cli")
        let toA = try lab.veth(pod: podA, client: client, link: 0)
        let toB = try lab.veth(pod: podB, client: client, link: 1)
        let port: UInt16 = 8080
        let appA = try TestSocket.listener(in: podA, port: port)
        let appB = try TestSocket.listener(in: podB, port: port)
        let activatorA = try TestSocket.listener(in: podA)
        let redirectorA = try PodRedirector(netnsPath: Lab.path(podA))
        let redirectorB = try PodRedirector(netnsPath: Lab.path(podB))
        defer {
            redirectorA.close()
            redirectorB.close()
        }
        try activatorA.descriptor.withOwner { (socket) throws(BPFError) in
            try redirectorA.registerListener(port: port, socket: socket)
        }
        try redirectorA.setRedirect(port: port, enabled: true)
        #expect(try !redirectorB.isRedirectEnabled(port: port))
        for round in 0..<5 {
            let cb = try TestSocket.connect(from: client, to: round % 2 == 0 ? toB.pod4 : toB.pod6, port: port)
            let sb = try #require(appB.accept(), "pod B's app keeps its traffic")
            #expect(try cb.roundTrip(to: sb))
            let ca = try TestSocket.connect(from: client, to: round % 2 == 0 ? toA.pod4 : toA.pod6, port: port)
            let sa = try #require(activatorA.accept(), "pod A's traffic is redirected")
            #expect(try ca.roundTrip(to: sa))
        }
        #expect(!appA.isReadable(within: 0.1))
        #expect(!activatorA.isReadable(within: 0.1))
    }
}
