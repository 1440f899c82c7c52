// One owner per file descriptor, with an explicit hand-off (cilium/ebpf `internal/sys/fd.go`
// `Disown`; swift-system `closeAfter`).
//
// - `OwnedDescriptor` (~Copyable) is the owner: it closes its descriptor exactly once, in `deinit`
//   or in `close()`, and gives it up only through `disown()` (to code outside this type system: NIO,
//   a C call that takes ownership) or by being consumed into a `SharedDescriptor`.
// - `SharedDescriptor` (a final class) is the one shared, Sendable form, for the places a
//   non-copyable value cannot go: arrays, tuples, Sendable option structs, values stored in actors
//   or behind a Mutex and passed between tasks. It holds an `OwnedDescriptor` behind a Mutex; the
//   descriptor closes when the last reference goes, or at `close()`; `take()` moves it back out.
//
// Raw numbers appear only as `rawValue`, read for the duration of one call while the owner lives.

import CZPSystem
import Synchronization
import SystemPackage

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The owner of one open file descriptor: closes it exactly once (``close()`` or deinit) unless it
/// was handed off with ``disown()``.
///
/// Non-copyable, so there is never a second owner by accident. Store it in a ``SharedDescriptor``
/// where a copyable or shared value is needed.
public struct OwnedDescriptor: ~Copyable, Sendable {
    private let fd: CInt

    /// Takes ownership of `rawValue`, a descriptor nobody else closes.
    /// - Parameter rawValue: an open descriptor (>= 0).
    public init(adopting rawValue: CInt) {
        precondition(rawValue >= 0, "OwnedDescriptor(adopting: \(rawValue))")
        fd = rawValue
    }

    /// The descriptor number, for a call made while this owner lives. Never store it: the owner
    /// closes it.
    public var rawValue: CInt { fd }

    /// Hands the descriptor to a new owner outside this type (NIO's `takingOwnershipOfDescriptor`,
    /// a C API that closes it): this owner no longer closes it.
    /// - Returns: the descriptor number, now the caller's to close.
    public consuming func disown() -> CInt {
        let fd = self.fd
        discard self
        return fd
    }

    /// Closes the descriptor now.
    ///
    /// `EINTR` counts as closed (Linux has released the descriptor by then; retrying could close
    /// another thread's new descriptor).
    /// - Throws: ``SystemError`` for `EIO` and the like (the descriptor is released anyway).
    public consuming func close() throws(SystemError) {
        let fd = disown()
        if Glibc.close(fd) == 0 { return }
        let errno = Errno(rawValue: currentErrno)
        if errno == .interrupted { return }
        precondition(errno != .badFileDescriptor, "close(\(fd)): EBADF is a bug")
        throw SystemError(call: "close", subject: "fd \(fd)", errno: errno)
    }

    /// A new owner of a duplicate of this descriptor (`fcntl(F_DUPFD_CLOEXEC)`).
    /// - Parameter minimum: the lowest number the duplicate may get.
    /// - Throws: ``SystemError`` (`EMFILE` when the process is out of descriptors).
    public borrowing func duplicate(atLeast minimum: CInt = 0) throws(SystemError) -> OwnedDescriptor {
        let fd = self.fd
        return OwnedDescriptor(
            adopting: try systemCall("fcntl(F_DUPFD_CLOEXEC)", "fd \(fd)") {
                fcntl(fd, F_DUPFD_CLOEXEC, minimum)
            }
        )
    }

    deinit { _ = Glibc.close(fd) }
}

extension OwnedDescriptor {
    /// Opens `path` (`open(2)`; `O_CLOEXEC` is always added).
    /// - Parameters:
    ///   - path: the file.
    ///   - flags: `O_RDONLY`, `O_WRONLY | O_CREAT | O_TRUNC`, …
    ///   - mode: the permissions of a created file.
    /// - Throws: ``SystemError`` naming `open` and the path.
    public static func open(
        _ path: FilePath,
        _ flags: CInt,
        mode: mode_t = 0o644
    ) throws(SystemError) -> OwnedDescriptor {
        let p = path.string
        return OwnedDescriptor(adopting: try systemCall("open", p) { Glibc.open(p, flags | O_CLOEXEC, mode) })
    }

    /// Creates a socket (`socket(2)`; `SOCK_CLOEXEC` is always added).
    /// - Parameters:
    ///   - domain: `AF_INET`, `AF_INET6`, `AF_UNIX`, …
    ///   - type: `SOCK_STREAM`, possibly with `SOCK_NONBLOCK`.
    ///   - protocol: usually 0.
    ///   - subject: what the socket is for, for errors.
    /// - Throws: ``SystemError`` naming `socket`.
    public static func socket(
        domain: CInt,
        type: CInt,
        protocol: CInt = 0,
        subject: @autoclosure () -> String = ""
    ) throws(SystemError) -> OwnedDescriptor {
        OwnedDescriptor(
            adopting: try systemCall("socket", subject()) {
                Glibc.socket(domain, type | CInt(SOCK_CLOEXEC.rawValue), `protocol`)
            }
        )
    }

    /// Creates a pipe (`pipe2(O_CLOEXEC)`).
    /// - Throws: ``SystemError`` naming `pipe2`.
    public static func pipe() throws(SystemError) -> PipeEnds {
        var fds: (CInt, CInt) = (-1, -1)
        try systemCall("pipe2") {
            withUnsafeMutableBytes(of: &fds) {
                czpsystem_pipe_cloexec($0.baseAddress!.assumingMemoryBound(to: CInt.self))
            }
        }
        return PipeEnds(readEnd: OwnedDescriptor(adopting: fds.0), writeEnd: OwnedDescriptor(adopting: fds.1))
    }

    /// Reads up to `buffer.count` bytes (`read(2)`, `EINTR` retried).
    /// - Returns: the number of bytes read; 0 at end of file.
    /// - Throws: ``SystemError`` naming `read`.
    public borrowing func read(into buffer: UnsafeMutableRawBufferPointer) throws(SystemError) -> Int {
        let fd = self.fd
        return try systemCall("read", "fd \(fd)") { Glibc.read(fd, buffer.baseAddress, buffer.count) }
    }

    /// Reads until end of file, or until `limit` bytes were read.
    /// - Parameter limit: the most bytes to read.
    /// - Throws: ``SystemError`` naming `read`.
    public borrowing func readAll(limit: Int = .max) throws(SystemError) -> [UInt8] {
        try readToEnd(fd, limit: limit, subject: "fd \(fd)")
    }

    /// Writes all of `bytes` (`write(2)` until done, `EINTR` retried).
    /// - Throws: ``SystemError`` naming `write` (e.g. `EPIPE` when the reader is gone).
    public borrowing func writeAll(_ bytes: some Collection<UInt8>) throws(SystemError) {
        try writeFully(fd, bytes, subject: "fd \(fd)")
    }
}

/// `read(2)` on `fd` until end of file or `limit` bytes.
func readToEnd(_ fd: CInt, limit: Int, subject: @autoclosure () -> String) throws(SystemError) -> [UInt8] {
    var out: [UInt8] = []
    let chunk = UnsafeMutableRawBufferPointer.allocate(byteCount: 65536, alignment: 1)
    defer { chunk.deallocate() }
    while out.count < limit {
        let want = min(chunk.count, limit - out.count)
        let n = try systemCall("read", subject()) { Glibc.read(fd, chunk.baseAddress, want) }
        if n == 0 { break }
        out.append(contentsOf: UnsafeRawBufferPointer(rebasing: chunk[0..<n]))
    }
    return out
}

/// `write(2)` on `fd` until all of `bytes` is written.
func writeFully(_ fd: CInt, _ bytes: some Collection<UInt8>, subject: @autoclosure () -> String) throws(SystemError) {
    let array = Array(bytes)
    var offset = 0
    while offset < array.count {
        offset += try systemCall("write", subject()) {
            array.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + offset, $0.count - offset) }
        }
    }
}

/// The two ends of a pipe, each with its own owner. Take them apart with `consume`.
@frozen
public struct PipeEnds: ~Copyable, Sendable {
    /// The end to read from.
    public var readEnd: OwnedDescriptor
    /// The end to write to.
    public var writeEnd: OwnedDescriptor

    /// Pairs two ends.
    /// - Parameters:
    ///   - readEnd: the read end.
    ///   - writeEnd: the write end.
    public init(readEnd: consuming OwnedDescriptor, writeEnd: consuming OwnedDescriptor) {
        self.readEnd = readEnd
        self.writeEnd = writeEnd
    }
}

/// A shared, Sendable owner of one descriptor: an ``OwnedDescriptor`` behind a lock.
///
/// For descriptors that must live in arrays, Sendable option structs, actors or Mutex-protected
/// state, where a non-copyable value cannot go. The descriptor closes exactly once: at ``close()``,
/// or when the last reference goes. ``take()`` moves it back out into a single owner (for example
/// to hand it to NIO with ``OwnedDescriptor/disown()``).
public final class SharedDescriptor: Sendable, CustomStringConvertible {
    private let owner: Mutex<OwnedDescriptor?>

    /// Shares `descriptor`.
    /// - Parameter descriptor: the owner to share (consumed).
    public init(_ descriptor: consuming OwnedDescriptor) {
        owner = Mutex(Optional(descriptor))
    }

    /// The descriptor number while it is open here, for one call. A caller that closes or takes
    /// the descriptor while another thread uses this number has a bug.
    /// - Precondition: not closed or taken.
    public var rawValue: CInt {
        owner.withLock { owner in
            guard let fd = owner?.rawValue else { preconditionFailure("descriptor used after close or take") }
            return fd
        }
    }

    /// Whether the descriptor is still open here.
    public var isOpen: Bool { owner.withLock { $0 != nil } }

    /// Moves the descriptor out: the caller owns it from now on, later calls here return nil.
    /// - Returns: the owner, or nil if already closed or taken.
    public func take() -> OwnedDescriptor? {
        owner.withLock { $0.take() }
    }

    /// Closes the descriptor if it is still here; later calls do nothing.
    public func close() {
        _ = take()  // the taken owner closes it as it goes
    }

    /// A new single owner of a duplicate (`fcntl(F_DUPFD_CLOEXEC)`).
    /// - Parameter minimum: the lowest number the duplicate may get.
    /// - Throws: ``SystemError``; `EBADF` when already closed or taken.
    public func duplicate(atLeast minimum: CInt = 0) throws(SystemError) -> OwnedDescriptor {
        try owner.withLock { (owner) throws(SystemError) -> OwnedDescriptor in
            guard let fd = owner?.rawValue else {
                throw SystemError(
                    call: "fcntl(F_DUPFD_CLOEXEC)",
                    subject: "closed descriptor",
                    errno: .badFileDescriptor
                )
            }
            return OwnedDescriptor(
                adopting: try systemCall("fcntl(F_DUPFD_CLOEXEC)", "fd \(fd)") {
                    fcntl(fd, F_DUPFD_CLOEXEC, minimum)
                }
            )
        }
    }

    /// Runs `body` with the owner borrowed, for an API that takes `borrowing OwnedDescriptor`.
    /// The lock is held meanwhile: keep `body` short and non-blocking.
    /// - Parameter body: the work.
    /// - Precondition: not closed or taken.
    public func withOwner<R, E: Error>(_ body: (borrowing OwnedDescriptor) throws(E) -> R) throws(E) -> R {
        try owner.withLock { (owner) throws(E) -> R in
            guard owner != nil else { preconditionFailure("descriptor used after close or take") }
            return try body(owner!)
        }
    }

    /// `fd N`, or `closed fd`.
    public var description: String {
        owner.withLock { owner in
            guard let fd = owner?.rawValue else { return "closed fd" }
            return "fd \(fd)"
        }
    }
}

/// The calling process's descriptor table.
public enum DescriptorTable {
    /// Grows the table so that descriptors up to `count - 1` fit without the kernel growing it
    /// again, by duplicating a descriptor to `count - 1` and closing the copy.
    ///
    /// The kernel grows a table that several threads share only after an RCU grace period
    /// (`expand_fdtable` calls `synchronize_rcu` when the table has more than one user): 10-20 ms on
    /// these nodes, inside whichever call first needs a higher number — for the shim, the
    /// `dup` above 100 before its first CRIU worker's spawn, on a checkpoint's path. A process that
    /// calls this while it still has one thread pays nothing; a table never shrinks.
    /// - Throws: ``SystemError`` from `open` of `/dev/null` or `fcntl` (`EMFILE` or `EINVAL` when
    ///   `count` exceeds the process's descriptor limit).
    public static func reserve(_ count: CInt) throws(SystemError) {
        let probe = try OwnedDescriptor.open("/dev/null", O_RDONLY)
        _ = try probe.duplicate(atLeast: count - 1)  // closed when dropped
    }

    /// How many descriptors the table holds now (`FDSize` in `/proc/self/status`); nil when that
    /// cannot be read.
    public static var size: Int? {
        guard let status = try? Files.readText(FilePath("/proc/self/status")) else { return nil }
        for line in status.split(separator: "\n") where line.hasPrefix("FDSize:") {
            return Int(line.dropFirst("FDSize:".count).filter { $0 != " " && $0 != "\t" })
        }
        return nil
    }
}
