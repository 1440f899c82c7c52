import Foundation
import Glibc
import SystemPackage
import Testing
import ZPCore
import ZPSystem
import ZPTestSupport

@testable import ZPBPF

/// Network namespaces and veth pairs for one test, deleted on deinit. Names carry the pid and a
/// per-test index so parallel tests never collide: `zpbpf-<pid>-<index>-<role>`.
/// Subnets: IPv4 10.77.<index*4+link>.0/24 and IPv6 fd77:<index*4+link>::/64.
final class Lab {
    let index: Int
    private(set) var namespaces: [String] = []

    init(index: Int) { self.index = index }

    deinit {
        for name in namespaces { _ = try? sh(["ip", "netns", "del", name]) }
    }

    /// Creates a namespace with `lo` up; returns its name. Its path is /var/run/netns/<name>.
    func namespace(_ role: String) throws -> String {
        let name = "zpbpf-\(getpid())-\(index)-\(role)"
        _ = try? sh(["ip", "netns", "del", name])
        try sh(["ip", "netns", "add", name])
        namespaces.append(name)
        try sh(["ip", "-n", name, "link", "set", "lo", "up"])
        return name
    }

    /// Joins `pod` and `client` with a veth pair number `link` (0-3). The pod side gets .1 and
    /// fd77:N::1, the client side .2/.3 and fd77:N::2/::3. Returns the addresses.
    @discardableResult
    func veth(pod: String, client: String, link: Int = 0) throws -> Addresses {
        let subnet = index * 4 + link
        let podIf = "zpp\(link)", clientIf = "zpc\(link)"
        try sh(["ip", "link", "add", "zpbpf\(getpid() % 10000)x\(subnet)", "netns", pod, "type", "veth",
                 "peer", "name", clientIf, "netns", client])
        try sh(["ip", "-n", pod, "link", "set", "zpbpf\(getpid() % 10000)x\(subnet)", "name", podIf])
        let a = Addresses(subnet: subnet)
        try sh(["ip", "-n", pod, "addr", "add", "\(a.pod4)/24", "dev", podIf])
        try sh(["ip", "-n", pod, "addr", "add", "\(a.pod6)/64", "dev", podIf, "nodad"])
        try sh(["ip", "-n", client, "addr", "add", "\(a.client4)/24", "dev", clientIf])
        try sh(["ip", "-n", client, "addr", "add", "\(a.other4)/24", "dev", clientIf])
        try sh(["ip", "-n", client, "addr", "add", "\(a.client6)/64", "dev", clientIf, "nodad"])
        try sh(["ip", "-n", client, "addr", "add", "\(a.other6)/64", "dev", clientIf, "nodad"])
        try sh(["ip", "-n", pod, "link", "set", podIf, "up"])
        try sh(["ip", "-n", client, "link", "set", clientIf, "up"])
        return a
    }

    static func path(_ namespace: String) -> FilePath { FilePath("/var/run/netns/\(namespace)") }
}

struct Addresses {
    var subnet: Int
    var pod4: String { "10.77.\(subnet).1" }
    var client4: String { "10.77.\(subnet).2" }
    var other4: String { "10.77.\(subnet).3" }
    var pod6: String { "fd77:\(subnet)::1" }
    var client6: String { "fd77:\(subnet)::2" }
    var other6: String { "fd77:\(subnet)::3" }
}

/// A socket descriptor owned by a test, closed when the last reference goes.
final class TestSocket {
    let descriptor: SharedDescriptor
    var fd: CInt { descriptor.rawValue }
    init(_ descriptor: consuming OwnedDescriptor) { self.descriptor = SharedDescriptor(descriptor) }

    /// A TCP listener in `namespace` on `port` (dual-stack), as the activator would make it.
    static func listener(in namespace: String, port: UInt16 = 0) throws -> TestSocket {
        TestSocket(try PodRedirector.makeListener(inNamespaceAt: Lab.path(namespace), port: port))
    }

    /// Connects from `namespace` to `address`:`port`, optionally from `source`, with a 10 s timeout.
    static func connect(from namespace: String, to address: String, port: UInt16, source: String? = nil) throws -> TestSocket {
        let v6 = address.contains(":")
        let socket = TestSocket(try NetworkNamespace(path: Lab.path(namespace)).makeTCPSocket(ipv6: v6))
        var timeout = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(socket.fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(socket.fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        if let source {
            var storage = try sockaddrStorage(source, port: 0)
            let rc = withUnsafePointer(to: &storage.0) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(socket.fd, $0, storage.1) }
            }
            guard rc == 0 else { throw LabError(message: "bind \(source): errno \(errno)") }
        }
        var storage = try sockaddrStorage(address, port: port)
        let rc = withUnsafePointer(to: &storage.0) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(socket.fd, $0, storage.1) }
        }
        guard rc == 0 else { throw LabError(message: "connect \(address):\(port) from \(namespace): errno \(errno)") }
        return socket
    }

    /// Whether a connection is waiting to be accepted within `seconds`.
    func hasPendingConnection(within seconds: Double) -> Bool {
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        return poll(&p, 1, Int32(seconds * 1000)) == 1
    }

    /// Accepts one connection, waiting up to `seconds`; nil if none arrives.
    func accept(within seconds: Double = 10) -> TestSocket? {
        guard hasPendingConnection(within: seconds) else { return nil }
        let fd = Glibc.accept(fd, nil, nil)
        guard fd >= 0 else { return nil }
        let socket = TestSocket(OwnedDescriptor(adopting: fd))
        var timeout = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        return socket
    }

    /// The local address and port (getsockname); IPv4-mapped addresses are shown as IPv4.
    func localAddress() -> (address: String, port: UInt16) {
        var storage = sockaddr_in6()
        var length = socklen_t(MemoryLayout<sockaddr_in6>.size)
        _ = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        if storage.sin6_family == sa_family_t(AF_INET) {
            return withUnsafePointer(to: &storage) {
                $0.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { sin in
                    let raw = withUnsafeBytes(of: sin.pointee.sin_addr) { Array($0) }
                    return (raw.map(String.init).joined(separator: "."), UInt16(bigEndian: sin.pointee.sin_port))
                }
            }
        }
        let bytes = withUnsafeBytes(of: storage.sin6_addr) { Array($0) }
        let address = IPAddress(bytes: bytes).map { ($0.unmappedV4 ?? $0).description }
        return (address ?? "?", UInt16(bigEndian: storage.sin6_port))
    }

    /// The port this (listening) socket is bound to.
    var port: UInt16 { localAddress().port }

    func send(_ text: String) throws {
        let bytes = Array(text.utf8)
        guard Glibc.send(fd, bytes, bytes.count, Int32(MSG_NOSIGNAL)) == bytes.count else {
            throw LabError(message: "send: errno \(errno)")
        }
    }

    /// Receives exactly `count` bytes (10 s timeout).
    func receive(_ count: Int) throws -> String {
        var buffer = [UInt8](repeating: 0, count: count)
        var got = 0
        while got < count {
            let n = buffer[got...].withUnsafeMutableBytes { Glibc.recv(fd, $0.baseAddress, count - got, 0) }
            guard n > 0 else { throw LabError(message: "recv: \(n) errno \(errno)") }
            got += n
        }
        return String(decoding: buffer, as: UTF8.self)
    }

    /// Sends `text` on `self` and reads it on `peer`: the connection carries data.
    func roundTrip(to peer: TestSocket, _ text: String = "ping") throws -> Bool {
        try send(text)
        return try peer.receive(text.utf8.count) == text
    }
}

private func sockaddrStorage(_ address: String, port: UInt16) throws -> (sockaddr_in6, socklen_t) {
    var storage = sockaddr_in6()
    if address.contains(":") {
        storage.sin6_family = sa_family_t(AF_INET6)
        storage.sin6_port = port.bigEndian
        guard inet_pton(AF_INET6, address, &storage.sin6_addr) == 1 else { throw LabError(message: "bad \(address)") }
        return (storage, socklen_t(MemoryLayout<sockaddr_in6>.size))
    }
    var sin = sockaddr_in()
    sin.sin_family = sa_family_t(AF_INET)
    sin.sin_port = port.bigEndian
    guard inet_pton(AF_INET, address, &sin.sin_addr) == 1 else { throw LabError(message: "bad \(address)") }
    withUnsafeMutableBytes(of: &storage) { dst in withUnsafeBytes(of: sin) { dst.copyMemory(from: $0) } }
    return (storage, socklen_t(MemoryLayout<sockaddr_in>.size))
}

/// Kernel object IDs that bpftool lists (`bpftool -j link show` / `map show`).
/// bpftool fails (EAGAIN, ENOENT) when an object vanishes while it walks the ids, which parallel
/// tests make likely: retry a few times.
func bpftoolIDs(_ kind: String) throws -> Set<UInt32> {
    var attempt = 0
    var json = ""
    while true {
        do {
            json = try sh(["bpftool", "-j", kind, "show"])
            break
        } catch {
            attempt += 1
            if attempt == 20 { throw error }
            usleep(50_000)
        }
    }
    guard let array = try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [[String: Any]] else { return [] }
    return Set(array.compactMap { ($0["id"] as? NSNumber)?.uint32Value })
}
