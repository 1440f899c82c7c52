import CZPSystem
import SystemPackage

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Another process's listening TCP socket, reached through a copy of its descriptor (decision
/// 0056: the backlog of a restored listener is raised while it takes over the connections queued
/// during the restore).
public enum ListeningSockets {
    /// A descriptor referring to process `pid` (`pidfd_open(2)`): it keeps no resource of the
    /// process alive and fails the copies below once the process is gone.
    /// - Throws: ``SystemError`` naming the pid (`ESRCH` when it is gone).
    public static func processDescriptor(_ pid: Int32) throws(SystemError) -> OwnedDescriptor {
        OwnedDescriptor(adopting: try systemCall("pidfd_open", "pid \(pid)") { czpsystem_pidfd_open(pid) })
    }

    /// A copy, in this process, of descriptor `fd` of the process `process` refers to
    /// (`pidfd_getfd(2)`, which needs ptrace access: root here).
    /// - Throws: ``SystemError`` naming the descriptor (`EBADF` when the process closed it or is
    ///   exiting, `ESRCH` when it is gone). `EBADF` here is the other process's state, not a bug of
    ///   ours, so unlike ``systemCall(_:_:_:)`` this does not trap on it (a shim trapped when the
    ///   restored processes were killed while their listener's backlog was raised).
    public static func copy(
        descriptor fd: CInt,
        of process: borrowing OwnedDescriptor
    ) throws(SystemError) -> OwnedDescriptor {
        try copy(descriptor: fd, ofPidfd: process.rawValue)
    }

    /// ``copy(descriptor:of:)`` with the pidfd's number.
    static func copy(descriptor fd: CInt, ofPidfd pidfd: CInt) throws(SystemError) -> OwnedDescriptor {
        while true {
            let copy = czpsystem_pidfd_getfd(pidfd, fd)
            if copy >= 0 { return OwnedDescriptor(adopting: copy) }
            let errno = Errno(rawValue: currentErrno)
            if errno == .interrupted { continue }
            throw SystemError(call: "pidfd_getfd", subject: "descriptor \(fd)", errno: errno)
        }
    }

    /// The inode of the socket (or file) `descriptor` refers to (`fstat(2)`), to tell that a
    /// descriptor number still names the same socket.
    /// - Throws: ``SystemError``.
    public static func inode(of descriptor: borrowing OwnedDescriptor) throws(SystemError) -> UInt64 {
        var info = stat()
        let fd = descriptor.rawValue
        try systemCall("fstat", "descriptor \(fd)") { fstat(fd, &info) }
        return UInt64(info.st_ino)
    }

    /// The accept queue of a listening socket (`TCP_INFO`): the connections waiting to be
    /// accepted, and the backlog (`listen(2)`'s, capped by `net.core.somaxconn`).
    /// - Throws: ``SystemError`` (`EOPNOTSUPP`/`ENOPROTOOPT` when it is not a TCP socket).
    public static func acceptQueue(
        of socket: borrowing OwnedDescriptor
    ) throws(SystemError) -> (queued: UInt32, backlog: UInt32) {
        var queued: UInt32 = 0
        var backlog: UInt32 = 0
        let fd = socket.rawValue
        try systemCall("getsockopt", "TCP_INFO of descriptor \(fd)") {
            czpsystem_tcp_accept_queue(fd, &queued, &backlog)
        }
        return (queued, backlog)
    }

    /// Sets the backlog of a socket that listens already (`listen(2)` again, which changes
    /// nothing else about it).
    /// - Throws: ``SystemError`` naming the backlog.
    public static func setBacklog(_ backlog: Int32, of socket: borrowing OwnedDescriptor) throws(SystemError) {
        let fd = socket.rawValue
        try systemCall("listen", "descriptor \(fd), backlog \(backlog)") { listen(fd, backlog) }
    }

    /// The state and addresses of the TCP socket `socket` refers to (a copy of another process's
    /// descriptor, ``copy(descriptor:of:)``): what `/proc/net/tcp` prints for it, without
    /// printing the namespace's whole table (which walks the established hash: ~1.5 ms per table
    /// on a 24 GiB node).
    /// - Returns: nil when it is not a TCP socket.
    /// - Throws: ``SystemError`` naming `getsockname` when a TCP socket has no local address.
    public static func tcpEndpoints(of socket: borrowing OwnedDescriptor) throws(SystemError) -> TCPEndpoints? {
        let fd = socket.rawValue
        var state: UInt8 = 0
        guard czpsystem_tcp_state(fd, &state) == 0 else { return nil }
        guard let local = try address(fd, peer: false) else { return nil }
        // No peer (ENOTCONN) for a listener, or one closed or still connecting.
        let remote = (try? address(fd, peer: true)) ?? nil
        return TCPEndpoints(
            state: state,
            local: local.bytes,
            localPort: local.port,
            remote: remote?.bytes ?? [UInt8](repeating: 0, count: local.bytes.count),
            remotePort: remote?.port ?? 0
        )
    }

    /// The local (`getsockname`) or peer (`getpeername`) address of an IPv4 or IPv6 socket: its
    /// network-order bytes and port; nil for another family.
    private static func address(_ fd: CInt, peer: Bool) throws(SystemError) -> (bytes: [UInt8], port: UInt16)? {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        try systemCall(peer ? "getpeername" : "getsockname", "descriptor \(fd)") {
            withUnsafeMutablePointer(to: &storage) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    peer ? getpeername(fd, $0, &length) : getsockname(fd, $0, &length)
                }
            }
        }
        return withUnsafeBytes(of: storage) { raw -> (bytes: [UInt8], port: UInt16)? in
            let port = UInt16(raw[2]) << 8 | UInt16(raw[3])  // sin_port and sin6_port, network order
            switch CInt(storage.ss_family) {
            case AF_INET: return (Array(raw[4..<8]), port)  // sin_addr
            case AF_INET6: return (Array(raw[8..<24]), port)  // sin6_addr
            default: return nil
            }
        }
    }
}

/// A TCP socket as ``ListeningSockets/tcpEndpoints(of:)`` reads it.
public struct TCPEndpoints: Sendable, Equatable {
    /// The kernel's TCP state (`TCP_INFO`'s `tcpi_state`: 1 established … 10 listen, as
    /// `/proc/net/tcp` prints it).
    public var state: UInt8
    /// The local address, network order: 4 bytes for IPv4, 16 for IPv6 (IPv4 peers of an IPv6
    /// socket appear IPv4-mapped, as in `/proc/net/tcp6`).
    public var local: [UInt8]
    /// The local port.
    public var localPort: UInt16
    /// The peer's address (zeros when there is none), same length as ``local``.
    public var remote: [UInt8]
    /// The peer's port (0 when there is none).
    public var remotePort: UInt16
}
