// The one place where ZPCheckpoint calls into libc: every system call goes through `syscall(_:_:)`,
// which retries EINTR, traps on EBADF (a descriptor bug is ours, not the environment's) and turns
// everything else into a typed `SystemCallError`.

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import SystemPackage

/// A failed system call: which call, on what, and the errno it set.
public struct SystemCallError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The libc function that failed, e.g. "socketpair".
    public var call: String
    /// What the call worked on (a path, a pid), or empty.
    public var subject: String
    /// The error number.
    public var errno: Errno

    /// Creates an error record.
    public init(call: String, subject: String = "", errno: Errno) {
        self.call = call
        self.subject = subject
        self.errno = errno
    }

    /// "call(subject): message (errno N)".
    public var description: String {
        let on = subject.isEmpty ? "" : "(\(subject))"
        return "\(call)\(on): \(errno) (errno \(errno.rawValue))"
    }
}

/// Runs a libc call that returns -1 and sets errno on failure.
/// - Throws: `SystemCallError` for every errno except EINTR (retried); EBADF traps.
@discardableResult
func syscall<R: FixedWidthInteger>(
    _ name: String, _ subject: @autoclosure () -> String = "", _ call: () -> R
) throws(SystemCallError) -> R {
    while true {
        let r = call()
        if r != -1 { return r }
        let e = Errno(rawValue: Glibc.errno)
        if e == .interrupted { continue }
        precondition(e != .badFileDescriptor, "\(name): EBADF is a bug in ZPCheckpoint")
        throw SystemCallError(call: name, subject: subject(), errno: e)
    }
}

/// Runs a posix_spawn-family call, which returns the error number instead of setting errno.
/// - Throws: `SystemCallError` when the call returns non-zero.
func posixCall(_ name: String, _ subject: @autoclosure () -> String = "", _ call: () -> CInt) throws(SystemCallError) {
    let r = call()
    if r != 0 { throw SystemCallError(call: name, subject: subject(), errno: Errno(rawValue: r)) }
}
