import SystemPackage
import ZPSystem

#if canImport(Glibc)
import Glibc
#endif

extension NetworkNamespace {
    /// One HTTP/1.0 GET over a fresh TCP connection to `host:port`, in the namespace at `netns`
    /// (or the caller's own when nil). Returns the status code and the body. Blocks the calling
    /// thread (a probe for tests and benchmarks).
    /// - Throws: `SystemError` for connect/read failures (ECONNREFUSED while nothing listens).
    public static func httpGet(
        netns: FilePath?,
        host: String = "127.0.0.1",
        port: UInt16,
        path: String = "/",
        timeout: Duration = .seconds(5)
    ) throws(SystemError) -> (status: Int, body: String) {
        func get() throws(SystemError) -> (status: Int, body: String) {
            let socket = try OwnedDescriptor.socket(
                domain: AF_INET,
                type: CInt(SOCK_STREAM.rawValue),
                subject: "\(host):\(port)"
            )
            let fd = socket.rawValue
            let ms = Int(timeout.components.seconds * 1000 + timeout.components.attoseconds / 1_000_000_000_000_000)
            var tv = timeval(tv_sec: ms / 1000, tv_usec: (ms % 1000) * 1000)
            _ = setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
            _ = setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
            var addr = sockaddr_in()
            addr.sin_family = sa_family_t(AF_INET)
            addr.sin_port = port.bigEndian
            inet_pton(AF_INET, host, &addr.sin_addr)
            try systemCall("connect", "\(host):\(port)") {
                withUnsafePointer(to: &addr) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                        connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                    }
                }
            }
            let request = Array("GET \(path) HTTP/1.0\r\nHost: \(host)\r\nUser-Agent: zpck\r\n\r\n".utf8)
            try systemCall("send", "\(host):\(port)") {
                request.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, CInt(MSG_NOSIGNAL)) }
            }
            var response: [UInt8] = []
            var chunk = [UInt8](repeating: 0, count: 16384)
            while true {
                let n = try systemCall("recv", "\(host):\(port)") {
                    chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
                }
                if n == 0 { break }
                response += chunk[0..<n]
            }
            let separator: [UInt8] = [13, 10, 13, 10]
            let headerEnd = (0..<max(0, response.count - 3)).first { Array(response[$0..<$0 + 4]) == separator }
            let head = String(decoding: response[0..<(headerEnd ?? response.count)], as: UTF8.self)
            let parts = head.prefix { $0 != "\r" && $0 != "\n" }.split(separator: " ")
            let status = parts.count > 1 ? Int(parts[1]) ?? 0 : 0
            let body = headerEnd.map { String(decoding: response[($0 + 4)...], as: UTF8.self) } ?? ""
            return (status, body)
        }
        guard let netns else { return try get() }
        return try NetworkNamespace(path: netns).perform { () -> Result<(status: Int, body: String), SystemError> in
            Result { () throws(SystemError) in try get() }
        }.get()
    }
}
