import CZPSystem
import SystemPackage

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A network namespace by its file (`/var/run/netns/NAME`, `/proc/PID/ns/net`): work on a
/// thread inside it, and sockets that live in it.
///
/// `setns(2)` is per thread, so every call here runs on a fresh thread that joins the namespace
/// and ends with the work: the caller's threads (and Swift's cooperative pool) stay where they are.
/// A socket keeps the namespace it was created in for life, whichever thread uses it later.
public struct NetworkNamespace: Sendable, Hashable, CustomStringConvertible {
    /// The namespace file.
    public var path: FilePath

    /// Names the namespace at `path` (opened per call).
    /// - Parameter path: e.g. `/var/run/netns/NAME` or `/proc/PID/ns/net`.
    public init(path: FilePath) { self.path = path }

    /// The namespace file's path.
    public var description: String { path.string }

    /// The namespace's inode number (what CRIU's `net[<inode>]` and `ip netns identify` name).
    /// - Throws: ``SystemError`` naming `stat` and the path.
    public func inode() throws(SystemError) -> UInt64 {
        try Files.inode(of: path)
    }

    /// Runs `body` on a new thread that has joined this namespace, and waits for it.
    ///
    /// `body` returns a value rather than throwing so that callers keep their own typed errors:
    /// return a `Result` to carry one out.
    /// - Parameter body: the work, run inside the namespace.
    /// - Returns: what `body` returned.
    /// - Throws: ``SystemError`` when the namespace cannot be opened or joined (`open`, `setns`),
    ///   or no thread can be started.
    public func perform<T>(_ body: () -> T) throws(SystemError) -> T {
        let namespace = try OwnedDescriptor.open(path, O_RDONLY)
        let fd = namespace.rawValue
        let p = path.string
        return try Threads.runOnNewThread { () -> Result<T, SystemError> in
            Result { () throws(SystemError) -> T in
                try systemCall("setns", p) { czpsystem_setns(fd, czpsystem_clone_newnet()) }
                return body()
            }
        }.get()
    }

    /// Runs `body` on a new thread that has moved into a new, empty network namespace
    /// (`unshare(CLONE_NEWNET)`; only loopback, down), and waits for it. The namespace goes away
    /// with the thread unless `body` keeps something of it open. For feature probes.
    /// - Parameter body: the work, run inside the new namespace.
    /// - Returns: what `body` returned.
    /// - Throws: ``SystemError`` naming `unshare` (`EPERM` without CAP_SYS_ADMIN).
    public static func performInNewNamespace<T>(_ body: () -> T) throws(SystemError) -> T {
        try Threads.runOnNewThread { () -> Result<T, SystemError> in
            Result { () throws(SystemError) -> T in
                try systemCall("unshare(CLONE_NEWNET)") { czpsystem_unshare_network() }
                return body()
            }
        }.get()
    }

    /// Creates a socket inside this namespace (on a thread that joined it); the caller owns it.
    /// - Parameters:
    ///   - domain: `AF_INET`, `AF_INET6`, …
    ///   - type: `SOCK_STREAM`, `SOCK_DGRAM`, possibly with `SOCK_NONBLOCK`.
    ///   - protocol: usually 0.
    /// - Throws: ``SystemError`` naming `open`, `setns` or `socket` and the path.
    public func makeSocket(domain: CInt, type: CInt, protocol: CInt = 0) throws(SystemError) -> OwnedDescriptor {
        let p = path.string
        let made = try perform { () -> Result<SharedDescriptor, SystemError> in
            Result { () throws(SystemError) -> SharedDescriptor in
                SharedDescriptor(
                    try OwnedDescriptor.socket(domain: domain, type: type, protocol: `protocol`, subject: p)
                )
            }
        }.get()
        return made.take()!
    }

    /// Creates an unbound TCP socket (IPv6 if `ipv6`, else IPv4) inside this namespace; the
    /// caller owns it.
    /// - Parameter ipv6: the family wanted.
    /// - Throws: ``SystemError`` naming `open`, `setns` or `socket` and the path.
    public func makeTCPSocket(ipv6: Bool) throws(SystemError) -> OwnedDescriptor {
        try makeSocket(domain: ipv6 ? AF_INET6 : AF_INET, type: CInt(SOCK_STREAM.rawValue))
    }
}
