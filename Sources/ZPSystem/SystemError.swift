import SystemPackage

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A system call that failed: which call, on what, and the `errno` it reported.
///
/// The project's one error type for failed system calls. Modules keep their domain errors
/// (`CRIUError`, `BPFError`, …) and wrap this one instead of carrying an `errno` of their own.
public struct SystemError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The C function that failed, e.g. `open` or `setsockopt(SO_REUSEADDR)`.
    public var call: String
    /// What the call acted on (a path, a pid, an address), or empty.
    public var subject: String
    /// The error number.
    public var errno: Errno

    /// Creates an error from a call name, its subject and its error number.
    /// - Parameters:
    ///   - call: the C function's name.
    ///   - subject: what it acted on, for the message.
    ///   - errno: the error number it reported.
    public init(call: String, subject: String = "", errno: Errno) {
        self.call = call
        self.subject = subject
        self.errno = errno
    }

    /// `call(subject): message (errno N)`, e.g. `open(/x): No such file or directory (errno 2)`.
    public var description: String {
        let on = subject.isEmpty ? "" : "(\(subject))"
        return "\(call)\(on): \(errno) (errno \(errno.rawValue))"
    }
}

/// The calling thread's `errno`.
package var currentErrno: CInt {
    get { Glibc.errno }
    set { Glibc.errno = newValue }
}
