// Blocking TCP sockets for tests, made inside a network namespace when asked.
import Foundation
import Glibc
import SystemPackage
import ZPSystem

/// A socket of a test: ZPSystem's descriptor owner, closed when the last reference goes.
public final class TestSocket: Sendable {
    /// The owner of the descriptor.
    public let descriptor: SharedDescriptor

    /// The descriptor number (while open).
    public var fd: CInt { descriptor.rawValue }

    /// Takes ownership of `descriptor`.
    public init(_ descriptor: consuming OwnedDescriptor) { self.descriptor = SharedDescriptor(descriptor) }

    /// A TCP socket (IPv6 if `ipv6`) made in the namespace at `netnsPath` (or in this process's
    /// own when nil), with send and receive (and so connect) timeouts of `timeout` seconds.
    /// - Throws: ZPSystem's `SystemError` when the namespace cannot be joined or socket(2) fails.
    public static func tcp(inNetns netnsPath: String?, ipv6: Bool, timeout: Int = 10) throws -> TestSocket {
        let socket: TestSocket
        if let netnsPath {
            socket = TestSocket(try NetworkNamespace(path: FilePath(netnsPath)).makeTCPSocket(ipv6: ipv6))
        } else {
            socket = TestSocket(
                try OwnedDescriptor.socket(domain: ipv6 ? AF_INET6 : AF_INET, type: CInt(SOCK_STREAM.rawValue))
            )
        }
        socket.setTimeouts(seconds: timeout)
        return socket
    }

    /// Connects from the namespace at `netnsPath` to `address`:`port`, optionally bound to
    /// `source` first; `timeout` seconds for the connect and every later send and receive.
    /// - Throws: ``LabError`` naming the address and errno.
    public static func connect(
        fromNetns netnsPath: String?,
        to address: String,
        port: UInt16,
        source: String? = nil,
        timeout: Int = 10
    ) throws -> TestSocket {
        let socket = try tcp(inNetns: netnsPath, ipv6: address.contains(":"), timeout: timeout)
        if let source {
            let (storage, length) = try socketAddress(source, port: 0)
            let rc = withUnsafePointer(to: storage) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(socket.fd, $0, length) }
            }
            guard rc == 0 else { throw LabError("bind \(source): \(String(cString: strerror(errno)))") }
        }
        let (storage, length) = try socketAddress(address, port: port)
        let rc = withUnsafePointer(to: storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(socket.fd, $0, length) }
        }
        guard rc == 0 else {
            throw LabError(
                "connect \(address):\(port) from \(netnsPath ?? "here"): \(String(cString: strerror(errno)))"
            )
        }
        return socket
    }

    /// Sets SO_SNDTIMEO and SO_RCVTIMEO.
    public func setTimeouts(seconds: Int) {
        var timeout = timeval(tv_sec: seconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    }

    /// Whether a connection (or data) is waiting within `seconds`.
    public func isReadable(within seconds: Double) -> Bool {
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        return poll(&p, 1, Int32(seconds * 1000)) == 1
    }

    /// Accepts one connection, waiting up to `seconds`; nil if none arrives.
    public func accept(within seconds: Double = 10) -> TestSocket? {
        guard isReadable(within: seconds) else { return nil }
        let fd = Glibc.accept(fd, nil, nil)
        guard fd >= 0 else { return nil }
        let socket = TestSocket(OwnedDescriptor(adopting: fd))
        socket.setTimeouts(seconds: 10)
        return socket
    }

    /// The local address and port (getsockname); IPv4-mapped addresses are shown as IPv4.
    public func localAddress() -> (address: String, port: UInt16) {
        var storage = sockaddr_in6()
        var length = socklen_t(MemoryLayout<sockaddr_in6>.size)
        _ = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        return describe(storage)
    }

    /// The port this socket is bound to.
    public var port: UInt16 { localAddress().port }

    /// Sends all of `bytes`.
    /// - Throws: ``LabError`` with errno when the kernel takes less.
    public func send(_ bytes: [UInt8]) throws {
        guard Glibc.send(fd, bytes, bytes.count, Int32(MSG_NOSIGNAL)) == bytes.count else {
            throw LabError("send: \(String(cString: strerror(errno)))")
        }
    }

    /// Sends `text` as UTF-8.
    /// - Throws: ``LabError`` with errno.
    public func send(_ text: String) throws { try send(Array(text.utf8)) }

    /// Receives exactly `count` bytes (within the receive timeout).
    /// - Throws: ``LabError`` on EOF, timeout or error.
    public func receive(_ count: Int) throws -> String {
        var buffer = [UInt8](repeating: 0, count: count)
        var got = 0
        while got < count {
            let n = buffer[got...].withUnsafeMutableBytes { Glibc.recv(fd, $0.baseAddress, count - got, 0) }
            guard n > 0 else { throw LabError("recv: \(n) \(String(cString: strerror(errno)))") }
            got += n
        }
        return String(decoding: buffer, as: UTF8.self)
    }

    /// Reads until the peer closes (within the receive timeout per read).
    /// - Throws: ``LabError`` on error or timeout.
    public func receiveAll() throws -> [UInt8] {
        var received: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n == 0 { return received }
            guard n > 0 else { throw LabError("recv: \(String(cString: strerror(errno)))") }
            received += chunk[0..<n]
        }
    }

    /// Sends `text` on `self` and reads it on `peer`: the connection carries data.
    public func roundTrip(to peer: TestSocket, _ text: String = "ping") throws -> Bool {
        try send(text)
        return try peer.receive(text.utf8.count) == text
    }
}

/// A socket address for `address` (IPv4 or IPv6 text) and `port`, in a `sockaddr_in6`-sized
/// buffer, with its length.
/// - Throws: ``LabError`` when the text is no address.
public func socketAddress(_ address: String, port: UInt16) throws -> (sockaddr_in6, socklen_t) {
    var storage = sockaddr_in6()
    if address.contains(":") {
        storage.sin6_family = sa_family_t(AF_INET6)
        storage.sin6_port = port.bigEndian
        guard inet_pton(AF_INET6, address, &storage.sin6_addr) == 1 else { throw LabError("bad address \(address)") }
        return (storage, socklen_t(MemoryLayout<sockaddr_in6>.size))
    }
    var sin = sockaddr_in()
    sin.sin_family = sa_family_t(AF_INET)
    sin.sin_port = port.bigEndian
    guard inet_pton(AF_INET, address, &sin.sin_addr) == 1 else { throw LabError("bad address \(address)") }
    withUnsafeMutableBytes(of: &storage) { dst in withUnsafeBytes(of: sin) { dst.copyMemory(from: $0) } }
    return (storage, socklen_t(MemoryLayout<sockaddr_in>.size))
}

private func describe(_ storage: sockaddr_in6) -> (address: String, port: UInt16) {
    var buffer = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
    if storage.sin6_family == sa_family_t(AF_INET) {
        let sin = withUnsafeBytes(of: storage) { $0.load(as: sockaddr_in.self) }
        var address = sin.sin_addr
        _ = inet_ntop(AF_INET, &address, &buffer, socklen_t(buffer.count))
        return (text(of: buffer), UInt16(bigEndian: sin.sin_port))
    }
    var address = storage.sin6_addr
    _ = inet_ntop(AF_INET6, &address, &buffer, socklen_t(buffer.count))
    var name = text(of: buffer)
    if name.hasPrefix("::ffff:"), name.contains(".") { name.removeFirst(7) }
    return (name, UInt16(bigEndian: storage.sin6_port))
}

/// The NUL-terminated C string in `buffer` as text.
private func text(of buffer: [CChar]) -> String {
    String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}
