import NIOCore

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// A TCP socket's file descriptor crossing the API: a listening socket the caller puts into a
/// BPF SOCKMAP, or a socket the caller made inside the pod's network namespace for the activator.
///
/// Whoever is documented as owner closes it exactly once: the activator owns the listening
/// sockets (closed by its NIO server channel when ``Activator/run()`` returns) and every socket
/// an ``ApplicationSocketFactory`` returns.
public struct SocketHandle: Sendable, Hashable, CustomStringConvertible {
    /// The file descriptor number.
    public let rawValue: Int32

    /// Wraps a descriptor number.
    /// - Parameter rawValue: a bound stream socket's descriptor.
    public init(rawValue: Int32) {
        self.rawValue = rawValue
    }

    /// `fd <n>`.
    public var description: String { "fd \(rawValue)" }
}

/// Where a listener's socket comes from.
public enum ListenerSource: Sendable {
    /// The activator creates the socket and binds it to `address` (port 0 = any free port).
    /// An IPv6 wildcard address is bound dual-stack (`IPV6_V6ONLY` off).
    case bind(SocketAddress)
    /// A stream socket the caller created and bound (for instance inside the pod's network
    /// namespace). Ownership moves to the activator, which calls `listen(2)` on it.
    case adopt(SocketHandle)
}

/// A socket call failed: which call, on what, and the `errno`.
public struct ActivatorSocketError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The system call, e.g. `bind`.
    public var call: String
    /// What it was called on (an address or a descriptor).
    public var subject: String
    /// The `errno` value.
    public var errno: Int32

    /// `bind(127.0.0.1:80): Address already in use (errno 98)`.
    public var description: String {
        "\(call)(\(subject)): \(String(cString: strerror(errno))) (errno \(errno))"
    }
}

/// Makes the unconnected TCP sockets the activator dials the application with.
///
/// A socket belongs to the network namespace it was created in, whichever thread uses it later.
/// The shim implements this by creating the socket inside the pod's network namespace (on a
/// thread that entered it with `setns(2)`), so that the activator, running in the host
/// namespace, reaches the application's 127.0.0.1 / ::1.
public protocol ApplicationSocketFactory: Sendable {
    /// Returns a new, unconnected `SOCK_STREAM` socket of family `AF_INET6` (`ipv6`) or `AF_INET`.
    /// The activator owns the returned descriptor.
    /// - Parameter ipv6: the family wanted.
    /// - Throws: any error; the activator treats it like a failed connect and retries.
    func makeStreamSocket(ipv6: Bool) throws -> SocketHandle
}

/// The socket calls ZPActivator makes itself (NIO does the rest). One funnel: retries EINTR,
/// traps on EBADF (a bug), throws everything else as ``ActivatorSocketError``.
enum SocketCalls {
    private static func syscall(
        _ call: String,
        _ subject: @autoclosure () -> String,
        _ body: () -> Int32
    ) throws(ActivatorSocketError) -> Int32 {
        while true {
            let result = body()
            if result != -1 { return result }
            let code = Glibc.errno
            if code == EINTR { continue }
            precondition(code != EBADF, "\(call): EBADF is a bug")
            throw ActivatorSocketError(call: call, subject: subject(), errno: code)
        }
    }

    /// Creates a non-blocking, close-on-exec TCP socket bound to `address` (not yet listening).
    static func makeBound(_ address: SocketAddress) throws(ActivatorSocketError) -> SocketHandle {
        let family: Int32
        switch address {
        case .v4: family = AF_INET
        case .v6: family = AF_INET6
        case .unixDomainSocket:
            throw ActivatorSocketError(call: "socket", subject: "\(address)", errno: EAFNOSUPPORT)
        }
        let fd = try syscall("socket", "\(address)") {
            Glibc.socket(
                family,
                Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue),
                0
            )
        }
        do throws(ActivatorSocketError) {
            var one: Int32 = 1
            _ = try syscall("setsockopt(SO_REUSEADDR)", "\(address)") {
                setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
            }
            if family == AF_INET6 {
                var zero: Int32 = 0
                _ = try syscall("setsockopt(IPV6_V6ONLY)", "\(address)") {
                    setsockopt(fd, Int32(IPPROTO_IPV6), IPV6_V6ONLY, &zero, socklen_t(MemoryLayout<Int32>.size))
                }
            }
            _ = try syscall("bind", "\(address)") {
                address.withSockAddr { pointer, length in Glibc.bind(fd, pointer, socklen_t(length)) }
            }
        } catch {
            _ = Glibc.close(fd)
            throw error
        }
        return SocketHandle(rawValue: fd)
    }

    /// `listen(2)`; also used after NIO adopted the socket, because NIO's adoption path
    /// re-listens with its fixed backlog of 128 (a second `listen` only changes the backlog).
    static func listen(_ handle: SocketHandle, backlog: Int32) throws(ActivatorSocketError) {
        _ = try syscall("listen", "\(handle)") { Glibc.listen(handle.rawValue, backlog) }
    }

    /// The error for a socket NIO adopted without a local address (not bound).
    static func noLocalAddress(_ handle: SocketHandle) -> ActivatorSocketError {
        ActivatorSocketError(call: "getsockname", subject: "\(handle)", errno: EINVAL)
    }

    /// Connects `handle` (non-blocking, polled up to `timeout`) to `address`. Blocks the calling
    /// thread: run it on a thread pool. Leaves the socket non-blocking for NIO.
    static func connect(
        _ handle: SocketHandle,
        to address: SocketAddress,
        timeout: Duration
    ) throws(ActivatorSocketError) {
        let fd = handle.rawValue
        let flags = try syscall("fcntl(F_GETFL)", "\(handle)") { fcntl(fd, F_GETFL) }
        _ = try syscall("fcntl(F_SETFL)", "\(handle)") { fcntl(fd, F_SETFL, flags | O_NONBLOCK) }
        let started = address.withSockAddr { pointer, length in Glibc.connect(fd, pointer, socklen_t(length)) }
        if started == 0 { return }
        let code = Glibc.errno
        guard code == EINPROGRESS || code == EINTR else {
            throw ActivatorSocketError(call: "connect", subject: "\(address)", errno: code)
        }
        var request = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
        let milliseconds = Int32(clamping: TimeAmount(timeout).nanoseconds / 1_000_000)
        let ready = try syscall("poll", "\(address)") { poll(&request, 1, max(1, milliseconds)) }
        guard ready > 0 else { throw ActivatorSocketError(call: "connect", subject: "\(address)", errno: ETIMEDOUT) }
        var socketError: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        _ = try syscall("getsockopt(SO_ERROR)", "\(address)") {
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &socketError, &length)
        }
        if socketError != 0 { throw ActivatorSocketError(call: "connect", subject: "\(address)", errno: socketError) }
    }

    /// Closes a socket that never reached NIO.
    static func close(_ handle: SocketHandle) {
        _ = Glibc.close(handle.rawValue)
    }
}
