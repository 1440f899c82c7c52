// Unix stream sockets on a path and descriptors passed over them (SCM_RIGHTS), and the terminal
// window size ioctl: what a shim needs for runc's `--console-socket` (runc connects and sends the
// pty master it made) and for ResizePty.

import CZPSystem
import SystemPackage

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Unix stream sockets bound to a path.
public enum UnixSockets {
    /// Binds a stream socket to `path` (which must not exist) and listens (`socket`, `bind`,
    /// `listen`), mode 0600.
    /// - Throws: ``SystemError`` (`ENAMETOOLONG` for a path longer than `sun_path`).
    public static func listen(at path: String, backlog: CInt = 4) throws(SystemError) -> OwnedDescriptor {
        let fd = try OwnedDescriptor.socket(domain: AF_UNIX, type: CInt(SOCK_STREAM.rawValue), subject: path)
        var addr = try address(path)
        let raw = fd.rawValue
        try systemCall("bind", path) {
            withUnsafePointer(to: &addr) { p in
                p.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    bind(raw, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
                }
            }
        }
        try systemCall("chmod", path) { chmod(path, 0o600) }
        try systemCall("listen", path) { Glibc.listen(raw, backlog) }
        return fd
    }

    /// Accepts one connection on `listener`, waiting at most `timeout` (`.zero`: only one that is
    /// already waiting).
    /// - Throws: ``SystemError`` (`ETIMEDOUT` when nobody connected in time).
    public static func accept(
        _ listener: borrowing OwnedDescriptor,
        timeout: Duration
    ) throws(SystemError) -> OwnedDescriptor {
        let raw = listener.rawValue
        try waitReadable(raw, timeout: timeout, call: "accept")
        return OwnedDescriptor(adopting: try systemCall("accept4") { czpsystem_accept_cloexec(raw) })
    }

    /// Receives one message on a connected stream socket with the descriptors that came with it
    /// (SCM_RIGHTS, received close-on-exec), waiting at most `timeout`.
    /// - Returns: the message's bytes and the descriptors, each with its own owner.
    /// - Throws: ``SystemError`` (`ETIMEDOUT`; `ECONNRESET` when the peer closed without sending).
    public static func receive(
        _ socket: borrowing OwnedDescriptor,
        timeout: Duration,
        maxDescriptors: Int = 4
    )
        throws(SystemError) -> (bytes: [UInt8], descriptors: [SharedDescriptor])
    {
        let raw = socket.rawValue
        try waitReadable(raw, timeout: timeout, call: "recvmsg")
        var buffer = [UInt8](repeating: 0, count: 4096)
        let align = MemoryLayout<Int>.size
        func aligned(_ n: Int) -> Int { (n + align - 1) & ~(align - 1) }
        let header = MemoryLayout<cmsghdr>.size
        var control = [UInt8](repeating: 0, count: aligned(header) + aligned(maxDescriptors * MemoryLayout<CInt>.size))
        let outcome: Result<(received: Int, controlLength: Int), SystemError> = buffer.withUnsafeMutableBytes { data in
            control.withUnsafeMutableBytes { ctl in
                var iov = iovec(iov_base: data.baseAddress, iov_len: data.count)
                return withUnsafeMutablePointer(to: &iov) { iovp in
                    var msg = msghdr()
                    msg.msg_iov = iovp
                    msg.msg_iovlen = 1
                    msg.msg_control = ctl.baseAddress
                    msg.msg_controllen = ctl.count
                    return Result { () throws(SystemError) -> (received: Int, controlLength: Int) in
                        let n = try systemCall("recvmsg") { recvmsg(raw, &msg, CInt(MSG_CMSG_CLOEXEC)) }
                        return (n, Int(msg.msg_controllen))
                    }
                }
            }
        }
        let (received, controlLength) = try outcome.get()
        var descriptors: [SharedDescriptor] = []
        control.withUnsafeBytes { ctl in
            var offset = 0
            while offset + header <= controlLength {
                let hdr = ctl.loadUnaligned(fromByteOffset: offset, as: cmsghdr.self)
                let length = Int(hdr.cmsg_len)
                guard length >= header, offset + length <= controlLength else { break }
                if hdr.cmsg_level == SOL_SOCKET && hdr.cmsg_type == CInt(SCM_RIGHTS) {
                    var p = offset + aligned(header)
                    while p + MemoryLayout<CInt>.size <= offset + length {
                        descriptors.append(
                            SharedDescriptor(
                                OwnedDescriptor(adopting: ctl.loadUnaligned(fromByteOffset: p, as: CInt.self))
                            )
                        )
                        p += MemoryLayout<CInt>.size
                    }
                }
                offset += aligned(length)
            }
        }
        if received == 0 && descriptors.isEmpty {
            throw SystemError(call: "recvmsg", subject: "the peer closed without sending", errno: .connectionReset)
        }
        return (Array(buffer[0..<received]), descriptors)
    }

    /// Waits until `fd` is readable; a zero `timeout` only looks (one poll that does not wait).
    private static func waitReadable(_ fd: CInt, timeout: Duration, call: String) throws(SystemError) {
        let deadline = ContinuousClock.now + timeout
        while true {
            let left = deadline - .now
            guard left > .zero || timeout <= .zero else {
                throw SystemError(call: call, subject: "nothing arrived within \(timeout)", errno: .timedOut)
            }
            var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let ms =
                timeout <= .zero
                ? 0
                : CInt(
                    min(
                        left.components.seconds * 1000 + left.components.attoseconds / 1_000_000_000_000_000 + 1,
                        60_000
                    )
                )
            if try systemCall("poll") { Glibc.poll(&pfd, 1, ms) } > 0 { return }
            if timeout <= .zero {
                throw SystemError(call: call, subject: "nothing waiting", errno: .timedOut)
            }
        }
    }

    private static func address(_ path: String) throws(SystemError) -> sockaddr_un {
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: addr.sun_path) else {
            throw SystemError(call: "bind", subject: path, errno: .fileNameTooLong)
        }
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            for (i, b) in bytes.enumerated() { raw[i] = b }
        }
        return addr
    }
}

/// Terminal controls.
public enum Terminals {
    /// Sets a terminal's window size (`ioctl(TIOCSWINSZ)`); the kernel sends SIGWINCH to its
    /// foreground process group.
    /// - Parameters:
    ///   - fd: the pty master (or any descriptor of the terminal).
    ///   - columns: the width in characters.
    ///   - rows: the height in lines.
    /// - Throws: ``SystemError`` (`ENOTTY` when `fd` is no terminal).
    public static func setWindowSize(_ fd: borrowing OwnedDescriptor, columns: UInt16, rows: UInt16) throws(SystemError)
    {
        var size = winsize(ws_row: rows, ws_col: columns, ws_xpixel: 0, ws_ypixel: 0)
        let raw = fd.rawValue
        try systemCall("ioctl(TIOCSWINSZ)") { ioctl(raw, UInt(TIOCSWINSZ), &size) }
    }

    /// A terminal's window size (`ioctl(TIOCGWINSZ)`).
    /// - Throws: ``SystemError`` (`ENOTTY` when `fd` is no terminal).
    public static func windowSize(
        _ fd: borrowing OwnedDescriptor
    ) throws(SystemError) -> (columns: UInt16, rows: UInt16) {
        var size = winsize()
        let raw = fd.rawValue
        try systemCall("ioctl(TIOCGWINSZ)") { ioctl(raw, UInt(TIOCGWINSZ), &size) }
        return (size.ws_col, size.ws_row)
    }
}
