import NIOCore
import SystemPackage
import ZPSystem

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Where a listener's socket comes from.
public enum ListenerSource: Sendable {
    /// The activator creates the socket and binds it to `address` (port 0 = any free port).
    /// An IPv6 wildcard address is bound dual-stack (`IPV6_V6ONLY` off).
    case bind(SocketAddress)
    /// A stream socket the caller created and bound (for instance inside the pod's network
    /// namespace). ``Activator/bind(ports:configuration:startsScaledDown:group:redirect:applicationSockets:events:restore:)``
    /// takes it out (`take()`) and hands it to NIO, which calls `listen(2)` on it and closes it
    /// with the listener; the caller's other references then see it closed.
    case adopt(SharedDescriptor)
}

/// Makes the unconnected TCP sockets the activator dials the application with.
///
/// A socket belongs to the network namespace it was created in, whichever thread uses it later.
/// The shim implements this by creating the socket inside the pod's network namespace (on a
/// thread that entered it with `setns(2)`), so that the activator, running in the host
/// namespace, reaches the application's 127.0.0.1 / ::1.
public protocol ApplicationSocketFactory: Sendable {
    /// Returns a new, unconnected `SOCK_STREAM` socket of family `AF_INET6` (`ipv6`) or `AF_INET`,
    /// owned by the caller (the activator, which hands it to NIO once connected).
    /// - Parameter ipv6: the family wanted.
    /// - Throws: any error; the activator treats it like a failed connect and retries.
    func makeStreamSocket(ipv6: Bool) throws -> OwnedDescriptor
}

/// The socket calls ZPActivator makes itself (NIO does the rest), on ZPSystem's syscall funnel:
/// failures are `SystemError`s naming the call and the address.
enum SocketCalls {
    /// Creates a non-blocking, close-on-exec TCP socket bound to `address` (not yet listening).
    static func makeBound(_ address: SocketAddress) throws(SystemError) -> OwnedDescriptor {
        let family: Int32
        switch address {
        case .v4: family = AF_INET
        case .v6: family = AF_INET6
        case .unixDomainSocket:
            throw SystemError(call: "socket", subject: "\(address)", errno: .addressFamilyNotSupported)
        }
        let socket = try OwnedDescriptor.socket(
            domain: family,
            type: Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue),
            subject: "\(address)"
        )
        let fd = socket.rawValue
        var one: Int32 = 1
        try systemCall("setsockopt(SO_REUSEADDR)", "\(address)") {
            setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        }
        if family == AF_INET6 {
            var zero: Int32 = 0
            try systemCall("setsockopt(IPV6_V6ONLY)", "\(address)") {
                setsockopt(fd, Int32(IPPROTO_IPV6), IPV6_V6ONLY, &zero, socklen_t(MemoryLayout<Int32>.size))
            }
        }
        try systemCall("bind", "\(address)") {
            address.withSockAddr { pointer, length in Glibc.bind(fd, pointer, socklen_t(length)) }
        }
        return socket
    }

    /// `listen(2)` on a socket that is still ours.
    static func listen(_ socket: borrowing OwnedDescriptor, backlog: Int32) throws(SystemError) {
        try listen(number: socket.rawValue, backlog: backlog)
    }

    /// `listen(2)` on a socket NIO adopted: NIO's adoption path re-listens with its fixed backlog
    /// of 128, and a second `listen` only changes the backlog. Valid while NIO's channel is open.
    static func listen(number fd: CInt, backlog: Int32) throws(SystemError) {
        try systemCall("listen", "fd \(fd)") { Glibc.listen(fd, backlog) }
    }

    /// The error for a socket NIO adopted without a local address (not bound).
    static func noLocalAddress(_ fd: CInt) -> SystemError {
        SystemError(call: "getsockname", subject: "fd \(fd)", errno: .invalidArgument)
    }

    /// Connects `socket` (non-blocking, polled up to `timeout`) to `address`. Blocks the calling
    /// thread: run it on a thread pool. Leaves the socket non-blocking for NIO.
    static func connect(
        _ socket: borrowing OwnedDescriptor,
        to address: SocketAddress,
        timeout: Duration
    ) throws(SystemError) {
        let fd = socket.rawValue
        let flags = try systemCall("fcntl(F_GETFL)", "fd \(fd)") { fcntl(fd, F_GETFL) }
        try systemCall("fcntl(F_SETFL)", "fd \(fd)") { fcntl(fd, F_SETFL, flags | O_NONBLOCK) }
        let started = address.withSockAddr { pointer, length in Glibc.connect(fd, pointer, socklen_t(length)) }
        if started == 0 { return }
        let code = currentErrno
        guard code == EINPROGRESS || code == EINTR else {
            throw SystemError(call: "connect", subject: "\(address)", errno: Errno(rawValue: code))
        }
        var request = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
        let milliseconds = Int32(clamping: TimeAmount(timeout).nanoseconds / 1_000_000)
        let ready = try systemCall("poll", "\(address)") { poll(&request, 1, max(1, milliseconds)) }
        guard ready > 0 else { throw SystemError(call: "connect", subject: "\(address)", errno: .timedOut) }
        var socketError: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        try systemCall("getsockopt(SO_ERROR)", "\(address)") {
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &socketError, &length)
        }
        if socketError != 0 {
            throw SystemError(call: "connect", subject: "\(address)", errno: Errno(rawValue: socketError))
        }
    }
}
