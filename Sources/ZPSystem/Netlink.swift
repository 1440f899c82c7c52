import SystemPackage

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Netlink sockets for request/answer exchanges with the kernel (socket diagnostics:
/// `NETLINK_SOCK_DIAG`). The messages themselves are encoded and decoded by the caller (ZPCore's
/// `InetDiag`); this is only the socket and its I/O.
public enum Netlink {
    /// `NETLINK_SOCK_DIAG`.
    public static let socketDiagnostics: CInt = 4

    /// A netlink socket of `protocol` inside `namespace` (the kernel answers about the namespace
    /// the socket was made in, whichever thread uses it later). The caller owns it.
    /// - Throws: ``SystemError`` naming `open`, `setns` or `socket` and the namespace.
    public static func socket(protocol: CInt, in namespace: NetworkNamespace) throws(SystemError) -> OwnedDescriptor {
        try namespace.makeSocket(domain: AF_NETLINK, type: CInt(SOCK_DGRAM.rawValue), protocol: `protocol`)
    }

    /// Sends `request` (one or more netlink messages) and reads the answer's datagrams until
    /// `finished` says one was the last.
    /// - Parameters:
    ///   - request: the encoded request.
    ///   - socket: a socket from ``socket(protocol:in:)``.
    ///   - maxDatagrams: a bound on the answer (a kernel that never ends the dump is an error).
    ///   - timeout: the longest wait for each datagram (the callers run on threads that must not
    ///     hang: a scale-down driver's hooks).
    ///   - finished: whether a datagram ends the answer.
    /// - Returns: the datagrams, in order.
    /// - Throws: ``SystemError`` naming `setsockopt`, `send` or `recv` (`EAGAIN` when no datagram
    ///   came within `timeout`, `EBADMSG` when the socket ended before the last one); `EMSGSIZE`
    ///   naming `recv` when the answer has more than `maxDatagrams` datagrams.
    public static func exchange(
        _ request: [UInt8],
        on socket: borrowing OwnedDescriptor,
        maxDatagrams: Int = 4096,
        timeout: Duration = .seconds(2),
        finished: ([UInt8]) -> Bool
    ) throws(SystemError) -> [[UInt8]] {
        let fd = socket.rawValue
        let (seconds, attoseconds) = timeout.components
        var limit = timeval(tv_sec: Int(seconds), tv_usec: Int(attoseconds / 1_000_000_000_000))
        try systemCall("setsockopt", "SO_RCVTIMEO of a netlink socket") {
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
        }
        let sent = try systemCall("send", "netlink request") {
            request.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, 0) }
        }
        guard sent == request.count else {
            throw SystemError(
                call: "send",
                subject: "netlink request (\(sent) of \(request.count) bytes)",
                errno: .messageTooLong
            )
        }
        // A dump's datagrams are at most a page or so; 64 KiB is what the kernel's own tools use.
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 65536, alignment: 8)
        defer { buffer.deallocate() }
        var datagrams: [[UInt8]] = []
        while datagrams.count < maxDatagrams {
            let n = try systemCall("recv", "netlink answer") { Glibc.recv(fd, buffer.baseAddress, buffer.count, 0) }
            guard n > 0 else {
                // The other end is gone: the answer is cut short, and a caller must not take the
                // datagrams so far for all of it.
                throw SystemError(
                    call: "recv",
                    subject: "netlink answer (ended after \(datagrams.count) datagrams, before its last)",
                    errno: .badMessage
                )
            }
            let datagram = [UInt8](UnsafeRawBufferPointer(rebasing: buffer[0..<n]))
            datagrams.append(datagram)
            if finished(datagram) { return datagrams }
        }
        throw SystemError(
            call: "recv",
            subject: "netlink answer (more than \(maxDatagrams) datagrams)",
            errno: .messageTooLong
        )
    }
}
