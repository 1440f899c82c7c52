#if canImport(Glibc)
import Glibc
#endif
import CZPShim
import Synchronization
import SystemPackage

/// A system call that failed: which call, on what, and the `errno` it returned.
public struct SysError: Error, Sendable, CustomStringConvertible {
    /// The C function, e.g. `open`.
    public var call: String
    /// What it was applied to (a path, a pid), for the message.
    public var subject: String
    /// The error number.
    public var errno: Errno

    /// Creates an error from a call name, its subject and its errno.
    public init(call: String, subject: String = "", errno: Errno) {
        self.call = call
        self.subject = subject
        self.errno = errno
    }

    public var description: String {
        subject.isEmpty ? "\(call): \(errno)" : "\(call) \(subject): \(errno)"
    }
}

/// The one funnel for system calls in ZPShim: retries `EINTR`, traps on `EBADF` (a bug: a
/// descriptor used after close), and throws ``SysError`` for everything else.
///
/// - Parameters:
///   - name: The C function's name, for errors.
///   - subject: What the call acts on, for errors.
///   - call: The call; returns -1 and sets `errno` on failure.
@discardableResult
func sysCall<R: FixedWidthInteger>(_ name: String, _ subject: @autoclosure () -> String = "", _ call: () -> R) throws(SysError) -> R {
    while true {
        let r = call()
        if r != -1 { return r }
        let e = Errno(rawValue: Glibc.errno)
        if e == .interrupted { continue }
        precondition(e != .badFileDescriptor, "\(name) \(subject()): EBADF is a bug")
        throw SysError(call: name, subject: subject(), errno: e)
    }
}

/// Owns one file descriptor and closes it exactly once (explicitly or at deinit).
///
/// `take()` hands the number over to a new owner (for example NIO) without closing it.
public final class OwnedDescriptor: Sendable, CustomStringConvertible {
    private let fd: Mutex<CInt?>

    /// Takes ownership of `fd`.
    public init(_ fd: CInt) {
        self.fd = Mutex(fd)
    }

    /// The descriptor number while open.
    /// - Precondition: not yet closed or taken.
    public var rawValue: CInt {
        fd.withLock { value in
            guard let value else { preconditionFailure("descriptor used after close") }
            return value
        }
    }

    /// Whether the descriptor is still owned here.
    public var isOpen: Bool { fd.withLock { $0 != nil } }

    /// Gives up ownership: the caller must close the returned number. Nil if already closed.
    public func take() -> CInt? {
        fd.withLock { value in
            defer { value = nil }
            return value
        }
    }

    /// Closes the descriptor if it is still owned here; later calls do nothing.
    public func close() {
        if let n = take() { _ = Glibc.close(n) }
    }

    public var description: String { fd.withLock { $0.map { "fd \($0)" } ?? "closed fd" } }

    deinit { close() }
}

/// Thin typed wrappers over the calls ZPShim makes.
enum Sys {
    /// `pipe2(O_CLOEXEC)`: the read and write ends.
    static func pipe() throws(SysError) -> (read: OwnedDescriptor, write: OwnedDescriptor) {
        var fds: [CInt] = [-1, -1]
        try sysCall("pipe2") { fds.withUnsafeMutableBufferPointer { czpshim_pipe_cloexec($0.baseAddress!) } }
        return (OwnedDescriptor(fds[0]), OwnedDescriptor(fds[1]))
    }

    /// `open(path, flags | O_CLOEXEC, mode)`.
    static func open(_ path: String, _ flags: CInt, mode: mode_t = 0o644) throws(SysError) -> OwnedDescriptor {
        OwnedDescriptor(try sysCall("open", path) { Glibc.open(path, flags | O_CLOEXEC, mode) })
    }

    /// `mkfifo`-free check: whether `path` names a FIFO.
    static func isFIFO(_ path: String) -> Bool {
        var st = stat()
        guard stat(path, &st) == 0 else { return false }
        return (st.st_mode & S_IFMT) == S_IFIFO
    }

    /// `kill(pid, signal)`.
    static func kill(_ pid: pid_t, _ signal: CInt) throws(SysError) {
        try sysCall("kill", "pid \(pid) signal \(signal)") { Glibc.kill(pid, signal) }
    }

    /// `mount(2)`.
    static func mount(source: String, target: String, type: String, flags: UInt, data: String?) throws(SysError) {
        try sysCall("mount", "\(type) \(source) on \(target)") {
            if let data { return Glibc.mount(source, target, type, flags, data) }
            return Glibc.mount(source, target, type, flags, nil)
        }
    }

    /// `umount2(target, MNT_DETACH)`; `EINVAL` (not a mount point) and `ENOENT` count as done.
    static func unmount(_ target: String) throws(SysError) {
        do {
            try sysCall("umount2", target) { umount2(target, CInt(MNT_DETACH)) }
        } catch where error.errno == .invalidArgument || error.errno == .noSuchFileOrDirectory {
            return
        }
    }

    /// Mount points of this mount namespace under `prefix` (which should end in "/"), deepest first,
    /// from /proc/self/mountinfo (octal escapes such as `\040` decoded).
    static func mountPoints(under prefix: String) -> [String] {
        guard let bytes = readFile("/proc/self/mountinfo") else { return [] }
        let points = String(decoding: bytes, as: UTF8.self).split(separator: "\n").compactMap { line -> String? in
            let fields = line.split(separator: " ", omittingEmptySubsequences: false)
            guard fields.count > 4 else { return nil }
            return decodeMountinfoPath(String(fields[4]))
        }
        return points.filter { $0.hasPrefix(prefix) }.sorted { $0.count > $1.count }
    }

    private static func decodeMountinfoPath(_ field: String) -> String {
        var out: [UInt8] = []
        let u = Array(field.utf8)
        var i = 0
        while i < u.count {
            if u[i] == UInt8(ascii: "\\"), i + 3 < u.count,
               let v = UInt8(String(decoding: u[(i + 1)...(i + 3)], as: UTF8.self), radix: 8) {
                out.append(v)
                i += 4
            } else {
                out.append(u[i])
                i += 1
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Writes all of `bytes` to `fd`.
    static func writeAll(_ fd: CInt, _ bytes: [UInt8]) throws(SysError) {
        var offset = 0
        while offset < bytes.count {
            let n = try sysCall("write", "fd \(fd)") {
                bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + offset, $0.count - offset) }
            }
            offset += n
        }
    }

    /// Reads `fd` to end of file.
    static func readAll(_ fd: CInt) throws(SysError) -> [UInt8] {
        var out: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 16384)
        while true {
            let n = try sysCall("read", "fd \(fd)") { chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress!, $0.count) } }
            if n == 0 { return out }
            out.append(contentsOf: chunk[0..<n])
        }
    }

    /// The contents of a small file, or nil when it cannot be read.
    static func readFile(_ path: String) -> [UInt8]? {
        guard let fd = try? open(path, O_RDONLY) else { return nil }
        return try? readAll(fd.rawValue)
    }

    /// Writes `bytes` to `path` (created or truncated, mode `mode`).
    static func writeFile(_ path: String, _ bytes: [UInt8], mode: mode_t = 0o644) throws(SysError) {
        let fd = try open(path, O_WRONLY | O_CREAT | O_TRUNC, mode: mode)
        try writeAll(fd.rawValue, bytes)
    }

    /// The working directory (`getcwd`), or "." when it cannot be read.
    static func currentDirectory() -> String {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        guard getcwd(&buffer, buffer.count) != nil else { return "." }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// Nanoseconds since the Unix epoch (`CLOCK_REALTIME`).
    static func now() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Int64(ts.tv_sec) * 1_000_000_000 + Int64(ts.tv_nsec)
    }
}

extension String {
    /// The string without leading and trailing spaces, tabs and newlines.
    var trimmedWhitespace: String {
        let isSpace: (Character) -> Bool = { $0 == " " || $0 == "\t" || $0 == "\n" || $0 == "\r" }
        guard let first = firstIndex(where: { !isSpace($0) }), let last = lastIndex(where: { !isSpace($0) }) else { return "" }
        return String(self[first...last])
    }
}
