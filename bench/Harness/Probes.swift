import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// How the harness decides that a workload answered correctly: a real client request whose
/// response is checked, not just an open port.
enum Probe: Sendable {
    /// `GET path` with `Host: host`; passes on status 200 with `expect` in the body.
    case http(path: String, host: String, expect: String)
    /// MySQL protocol: handshake as a password-less user, run `query`, pass when a result row
    /// contains `expect`.
    case mysql(user: String, query: String, expect: String)

    /// One attempt against `address:port`; nil when it passed, else why not.
    func attempt(address: String, port: UInt16) -> String? {
        let conn: Connection
        do { conn = try Connection(address: address, port: port) } catch { return "\(error)" }
        switch self {
        case .http(let path, let host, let expect):
            return conn.http(path: path, host: host, expect: expect)
        case .mysql(let user, let query, let expect):
            return conn.mysql(user: user, query: query, expect: expect)
        }
    }

    /// Repeats `attempt` every 2 ms until it passes (returns true) or `deadline` passes (false).
    /// `lastError` receives the reason of the last failed attempt.
    func poll(address: String, port: UInt16, deadline: ContinuousClock.Instant, lastError: inout String) -> Bool {
        while ContinuousClock.now < deadline {
            guard let why = attempt(address: address, port: port) else { return true }
            lastError = why
            usleep(2000)
        }
        return false
    }
}

/// A blocking TCP client connection with 5 s send/receive timeouts; closed on deinit.
private final class Connection {
    let fd: Int32
    private var buffer: [UInt8] = []

    init(address: String, port: UInt16) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw BenchError("socket: \(String(cString: strerror(errno)))") }
        var tv = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var sa = sockaddr_in()
        sa.sin_family = sa_family_t(AF_INET)
        sa.sin_port = port.bigEndian
        guard inet_pton(AF_INET, address, &sa.sin_addr) == 1 else {
            _ = Glibc.close(fd)
            throw BenchError("bad IPv4 address \(address)")
        }
        let rc = withUnsafePointer(to: &sa) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard rc == 0 else {
            let e = errno
            _ = Glibc.close(fd)
            throw BenchError("connect \(address):\(port): \(String(cString: strerror(e)))")
        }
    }
    deinit { _ = Glibc.close(fd) }

    func send(_ bytes: [UInt8]) -> Bool {
        var off = 0
        while off < bytes.count {
            let n = bytes[off...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { return false }
            off += n
        }
        return true
    }

    /// Reads more bytes into the buffer; false on EOF, error or timeout.
    func fill() -> Bool {
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = read(fd, &chunk, chunk.count)
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { return false }
            buffer.append(contentsOf: chunk[0..<n])
            return true
        }
    }

    func http(path: String, host: String, expect: String) -> String? {
        let req = "GET \(path) HTTP/1.0\r\nHost: \(host)\r\nUser-Agent: zpbench\r\nConnection: close\r\n\r\n"
        guard send(Array(req.utf8)) else { return "send failed: \(String(cString: strerror(errno)))" }
        while buffer.count < 8 << 20, fill() {}
        let text = String(decoding: buffer, as: UTF8.self)
        guard let statusLine = text.split(separator: "\r\n", maxSplits: 1).first else { return "empty response" }
        guard statusLine.hasPrefix("HTTP/1."), statusLine.split(separator: " ").dropFirst().first == "200" else {
            return "status line '\(statusLine)'"
        }
        guard let bodyStart = text.range(of: "\r\n\r\n") else { return "no end of headers" }
        guard text[bodyStart.upperBound...].contains(expect) else { return "body without '\(expect)'" }
        return nil
    }

    /// Reads one MySQL packet: 3-byte little-endian length, sequence id, payload.
    func packet() -> (seq: UInt8, payload: [UInt8])? {
        while buffer.count < 4 { guard fill() else { return nil } }
        let len = Int(buffer[0]) | Int(buffer[1]) << 8 | Int(buffer[2]) << 16
        while buffer.count < 4 + len { guard fill() else { return nil } }
        let seq = buffer[3]
        let payload = Array(buffer[4..<4 + len])
        buffer.removeFirst(4 + len)
        return (seq, payload)
    }

    func sendPacket(seq: UInt8, _ payload: [UInt8]) -> Bool {
        let n = payload.count
        return send([UInt8(n & 0xff), UInt8(n >> 8 & 0xff), UInt8(n >> 16 & 0xff), seq] + payload)
    }

    func mysql(user: String, query: String, expect: String) -> String? {
        guard let greeting = packet() else { return "no greeting" }
        guard greeting.payload.first == 10 else {
            return "greeting is not protocol 10: \(String(decoding: greeting.payload.dropFirst(3), as: UTF8.self))"
        }
        // CLIENT_LONG_PASSWORD | CLIENT_PROTOCOL_41 | CLIENT_SECURE_CONNECTION; empty auth response.
        let caps: UInt32 = 0x0001 | 0x0200 | 0x8000
        var resp = withUnsafeBytes(of: caps.littleEndian, Array.init)
        resp += withUnsafeBytes(of: UInt32(1 << 24).littleEndian, Array.init)
        resp.append(45)  // utf8mb4_general_ci
        resp += [UInt8](repeating: 0, count: 23)
        resp += Array(user.utf8) + [0]
        resp.append(0)
        guard sendPacket(seq: greeting.seq &+ 1, resp) else { return "handshake send failed" }
        guard var auth = packet() else { return "no reply to the handshake" }
        if auth.payload.first == 0xfe {  // auth switch: answer with an empty password
            guard sendPacket(seq: auth.seq &+ 1, []), let next = packet() else { return "auth switch failed" }
            auth = next
        }
        guard auth.payload.first == 0 else {
            return "login refused: \(String(decoding: auth.payload.dropFirst(3), as: UTF8.self))"
        }
        guard sendPacket(seq: 0, [0x03] + Array(query.utf8)) else { return "query send failed" }
        let needle = Array(expect.utf8)
        for _ in 0..<16 {
            guard let p = packet() else { return "result ended early" }
            if p.payload.first == 0xff {
                return "query error: \(String(decoding: p.payload.dropFirst(3), as: UTF8.self))"
            }
            if p.payload.count >= needle.count,
                p.payload.indices.contains(where: { i in
                    i + needle.count <= p.payload.count && Array(p.payload[i..<i + needle.count]) == needle
                })
            {
                _ = sendPacket(seq: 0, [0x01])  // COM_QUIT
                return nil
            }
        }
        return "no row with '\(expect)'"
    }
}
