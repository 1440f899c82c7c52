import CZPBPF
import SystemPackage
import ZPSystem

#if canImport(Glibc)
import Glibc
#endif

// libbpf's two error conventions, on top of ZPSystem: int functions return -errno, pointer
// functions return NULL and set errno. Plain system calls go through ZPSystem's funnel and are
// wrapped with `bpfSystem`. EBADF and EFAULT mean a bug in this module and trap.

private func checked(_ name: StaticString, _ subject: @autoclosure () -> String, _ code: CInt) -> BPFError {
    let errno = Errno(rawValue: code)
    precondition(errno != .badFileDescriptor && errno != .badAddress, "\(name)(\(subject())): \(errno) is a bug")
    return .system(SystemError(call: "\(name)", subject: subject(), errno: errno))
}

/// Calls a libbpf function that returns a non-negative result or -errno.
@discardableResult
func libbpfCall(
    _ name: StaticString,
    _ subject: @autoclosure () -> String,
    _ body: () -> CInt
) throws(BPFError) -> CInt {
    while true {
        let result = body()
        if result >= 0 { return result }
        if -result == EINTR { continue }
        throw checked(name, subject(), -result)
    }
}

/// Calls a libbpf function that returns a pointer, or NULL with errno set.
func libbpfPointer(
    _ name: StaticString,
    _ subject: @autoclosure () -> String,
    _ body: () -> OpaquePointer?
) throws(BPFError) -> OpaquePointer {
    Glibc.errno = 0
    if let pointer = body() { return pointer }
    throw checked(name, subject(), Glibc.errno == 0 ? EINVAL : Glibc.errno)
}

/// Runs ZPSystem calls in a function that throws `BPFError`: a `SystemError` becomes `.system`.
@discardableResult
func bpfSystem<R: ~Copyable>(_ body: () throws(SystemError) -> R) throws(BPFError) -> R {
    do {
        return try body()
    } catch {
        throw .system(error)
    }
}

extension SharedDescriptor {
    /// A shared owner of a duplicate (close-on-exec) of `fd`, a descriptor someone else owns
    /// (libbpf's program and map descriptors, which `bpf_object__close` closes).
    static func duplicating(_ fd: CInt, _ what: @autoclosure () -> String) throws(BPFError) -> SharedDescriptor {
        try bpfSystem { () throws(SystemError) -> SharedDescriptor in
            SharedDescriptor(
                OwnedDescriptor(
                    adopting: try systemCall("fcntl(F_DUPFD_CLOEXEC)", what()) {
                        fcntl(fd, F_DUPFD_CLOEXEC, 0)
                    }
                )
            )
        }
    }
}
