// The project's one syscall funnel (swift-system's `valueOrErrno`, NIO's `syscall(blocking:where:_:)`).
// libc reports failure in three ways, so the funnel has one entry point per convention
// (`systemCall`, `systemCallReturningErrno`, `systemCallReturningPointer`); all of them
// trap on EBADF and EFAULT (a descriptor used after close or a bad pointer is our bug, never the
// environment's) and throw `SystemError` for everything else. ZPBPF keeps its two libbpf funnels
// (libbpf returns -errno) on top of `SystemError`.

import SystemPackage

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Traps on the error numbers that only a bug of ours can cause.
@inline(__always)
private func trapOnBug(_ errno: Errno, _ name: String, _ subject: () -> String) {
    precondition(errno != .badFileDescriptor && errno != .badAddress, "\(name)(\(subject())): \(errno) is a bug")
}

/// Runs a libc call that returns -1 and sets `errno` on failure (most system calls).
///
/// Retries `EINTR`; traps on `EBADF` and `EFAULT`.
/// - Parameters:
///   - name: the C function's name, for the error.
///   - subject: what the call acts on, for the error.
///   - call: the call.
/// - Returns: the call's result.
/// - Throws: ``SystemError`` for every other error number.
@discardableResult
package func systemCall<R: FixedWidthInteger>(
    _ name: String,
    _ subject: @autoclosure () -> String = "",
    _ call: () -> R
) throws(SystemError) -> R {
    while true {
        let result = call()
        if result != -1 { return result }
        let errno = Errno(rawValue: currentErrno)
        if errno == .interrupted { continue }
        trapOnBug(errno, name, subject)
        throw SystemError(call: name, subject: subject(), errno: errno)
    }
}

/// Runs a libc call that returns the error number itself, 0 on success (`posix_spawn` and its
/// attribute functions, `pthread_create`). Such calls are not interrupted, so nothing is retried.
///
/// - Parameters:
///   - name: the C function's name, for the error.
///   - subject: what the call acts on, for the error.
///   - call: the call.
/// - Throws: ``SystemError`` when the call returns non-zero; traps on `EBADF` and `EFAULT`.
package func systemCallReturningErrno(
    _ name: String,
    _ subject: @autoclosure () -> String = "",
    _ call: () -> CInt
) throws(SystemError) {
    let result = call()
    if result == 0 { return }
    let errno = Errno(rawValue: result)
    trapOnBug(errno, name, subject)
    throw SystemError(call: name, subject: subject(), errno: errno)
}

/// Runs a libc call that returns a pointer, or NULL with `errno` set (`opendir`).
///
/// Retries `EINTR`; traps on `EBADF` and `EFAULT`.
/// - Parameters:
///   - name: the C function's name, for the error.
///   - subject: what the call acts on, for the error.
///   - call: the call.
/// - Returns: the non-NULL pointer.
/// - Throws: ``SystemError`` for every other error number (`EINVAL` when `errno` was not set).
package func systemCallReturningPointer<P>(
    _ name: String,
    _ subject: @autoclosure () -> String = "",
    _ call: () -> P?
) throws(SystemError) -> P {
    while true {
        currentErrno = 0
        if let pointer = call() { return pointer }
        let errno = Errno(rawValue: currentErrno == 0 ? EINVAL : currentErrno)
        if errno == .interrupted { continue }
        trapOnBug(errno, name, subject)
        throw SystemError(call: name, subject: subject(), errno: errno)
    }
}
