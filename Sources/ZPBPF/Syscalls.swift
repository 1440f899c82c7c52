import CZPBPF
import Glibc
import SystemPackage

// The funnels every kernel and libbpf call goes through. libbpf 1.x reports errors two ways:
// int functions return -errno, pointer functions return NULL and set errno. Plain system calls
// return -1 and set errno. EBADF and EFAULT mean a bug in this module and trap.

private func checked(_ name: StaticString, _ subject: @autoclosure () -> String, _ code: CInt) -> BPFError {
    let errno = Errno(rawValue: code)
    precondition(errno != .badFileDescriptor && errno != .badAddress, "\(name)(\(subject())): \(errno) is a bug")
    return .system(call: "\(name)", subject: subject(), errno: errno)
}

/// Calls a libbpf function that returns a non-negative result or -errno.
@discardableResult
func libbpfCall(
    _ name: StaticString, _ subject: @autoclosure () -> String, _ body: () -> CInt
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
    _ name: StaticString, _ subject: @autoclosure () -> String, _ body: () -> OpaquePointer?
) throws(BPFError) -> OpaquePointer {
    Glibc.errno = 0
    if let pointer = body() { return pointer }
    throw checked(name, subject(), Glibc.errno == 0 ? EINVAL : Glibc.errno)
}

/// Calls a system function that returns -1 and sets errno on failure; retries EINTR.
@discardableResult
func systemCall(
    _ name: StaticString, _ subject: @autoclosure () -> String, _ body: () -> CInt
) throws(BPFError) -> CInt {
    while true {
        let result = body()
        if result != -1 { return result }
        if Glibc.errno == EINTR { continue }
        throw checked(name, subject(), Glibc.errno)
    }
}

/// Owns one kernel file descriptor (map, program, link, netns, socket) and closes it exactly once,
/// when the last reference goes. Hand-off to another owner is a `dup`, never a shared raw fd.
final class OwnedFD: Sendable {
    /// The descriptor; valid while this object lives.
    let raw: CInt

    init(_ raw: CInt) {
        precondition(raw >= 0, "OwnedFD(\(raw))")
        self.raw = raw
    }

    /// Takes a duplicate (close-on-exec) of a descriptor that someone else owns.
    static func duplicate(_ fd: CInt, _ what: @autoclosure () -> String) throws(BPFError) -> OwnedFD {
        OwnedFD(try systemCall("fcntl(F_DUPFD_CLOEXEC)", what()) { fcntl(fd, F_DUPFD_CLOEXEC, 0) })
    }

    deinit { _ = Glibc.close(raw) }
}
