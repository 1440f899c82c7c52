import SystemPackage
import Testing

@testable import ZPSystem

#if canImport(Glibc)
import Glibc
#endif

/// A new pty: its master (unlocked) and the slave's path.
private func openPty() throws -> (master: SharedDescriptor, slave: String) {
    let master = try OwnedDescriptor.open("/dev/ptmx", O_RDWR | O_NOCTTY)
    var unlock: CInt = 0
    var index: CInt = -1
    guard ioctl(master.rawValue, 0x4004_5431 /* TIOCSPTLCK */, &unlock) == 0,
        ioctl(master.rawValue, 0x8004_5430 /* TIOCGPTN */, &index) == 0
    else {
        throw SystemError(call: "ioctl", subject: "/dev/ptmx", errno: Errno(rawValue: errno))
    }
    return (SharedDescriptor(master), "/dev/pts/\(index)")
}

/// The console-socket exchange runc makes with a shim (`--console-socket`), and the terminal size.
@Suite struct UnixSocketTests {
    @Test func descriptorPassedOverAPathSocket_arrivesWithItsOwner_andTheBytes() throws {
        let path = "/tmp/zpsystem-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).sock"
        defer { unlink(path) }
        let listener = try UnixSockets.listen(at: path)
        var st = stat()
        #expect(stat(path, &st) == 0 && st.st_mode & 0o777 == 0o600)
        // The sender, as runc does it: connect, sendmsg with one SCM_RIGHTS descriptor.
        let pipe = try OwnedDescriptor.pipe()
        let client = try OwnedDescriptor.socket(domain: AF_UNIX, type: CInt(SOCK_STREAM.rawValue))
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in for (i, b) in path.utf8.enumerated() { raw[i] = b } }
        let connected = withUnsafePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(client.rawValue, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        #expect(connected == 0)
        let sent = sendDescriptor(pipe.writeEnd.rawValue, over: client.rawValue, bytes: Array("/dev/pts/0".utf8))
        #expect(sent > 0)
        let connection = try UnixSockets.accept(listener, timeout: .seconds(5))
        let (bytes, descriptors) = try UnixSockets.receive(connection, timeout: .seconds(5))
        #expect(String(decoding: bytes, as: UTF8.self) == "/dev/pts/0" && descriptors.count == 1)
        // The received descriptor is the pipe's write end: what is written arrives at the read end.
        try descriptors[0].withOwner { (fd) throws(SystemError) in try fd.writeAll(Array("hi".utf8)) }
        descriptors[0].close()
        try pipe.writeEnd.close()
        #expect(try pipe.readEnd.readAll() == Array("hi".utf8))
    }

    @Test func accept_withNobodyConnecting_timesOut_andAPathTooLongIsRefused() throws {
        let path = "/tmp/zpsystem-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).sock"
        defer { unlink(path) }
        let listener = try UnixSockets.listen(at: path)
        let start = ContinuousClock.now
        #expect { _ = try UnixSockets.accept(listener, timeout: .milliseconds(200)) } throws: {
            ($0 as? SystemError)?.errno == .timedOut
        }
        #expect(ContinuousClock.now - start >= .milliseconds(200))
        #expect { _ = try UnixSockets.listen(at: "/tmp/" + String(repeating: "x", count: 120)) } throws: {
            ($0 as? SystemError)?.errno == .fileNameTooLong
        }
    }

    @Test func windowSize_setOnTheMaster_isWhatTheSlaveSees() throws {
        let (master, slavePath) = try openPty()
        let slave = try OwnedDescriptor.open(FilePath(slavePath), O_RDWR | O_NOCTTY)
        try master.withOwner { (m) throws(SystemError) in try Terminals.setWindowSize(m, columns: 132, rows: 43) }
        let seen = try Terminals.windowSize(slave)
        #expect(seen.columns == 132 && seen.rows == 43)
        let file = try OwnedDescriptor.open("/dev/null", O_RDONLY)
        #expect { try Terminals.setWindowSize(file, columns: 1, rows: 1) } throws: {
            ($0 as? SystemError)?.errno == .inappropriateIOCTLForDevice
        }
    }
}

/// sendmsg of `bytes` with `fd` as SCM_RIGHTS (the sender's side, as runc's `utils.SendFd`).
private func sendDescriptor(_ fd: CInt, over socket: CInt, bytes: [UInt8]) -> Int {
    var payload = bytes
    let align = MemoryLayout<Int>.size
    let header = (MemoryLayout<cmsghdr>.size + align - 1) & ~(align - 1)
    var control = [UInt8](repeating: 0, count: header + ((MemoryLayout<CInt>.size + align - 1) & ~(align - 1)))
    return payload.withUnsafeMutableBytes { data in
        control.withUnsafeMutableBytes { ctl in
            var hdr = cmsghdr()
            hdr.cmsg_len = header + MemoryLayout<CInt>.size
            hdr.cmsg_level = SOL_SOCKET
            hdr.cmsg_type = CInt(SCM_RIGHTS)
            ctl.storeBytes(of: hdr, toByteOffset: 0, as: cmsghdr.self)
            ctl.storeBytes(of: fd, toByteOffset: header, as: CInt.self)
            var iov = iovec(iov_base: data.baseAddress, iov_len: data.count)
            return withUnsafeMutablePointer(to: &iov) { iovp in
                var msg = msghdr()
                msg.msg_iov = iovp
                msg.msg_iovlen = 1
                msg.msg_control = ctl.baseAddress
                msg.msg_controllen = ctl.count
                return sendmsg(socket, &msg, 0)
            }
        }
    }
}
