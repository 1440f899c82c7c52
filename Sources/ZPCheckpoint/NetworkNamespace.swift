#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import SystemPackage

/// Small helpers around network namespace files (`/run/netns/NAME`, `/proc/PID/ns/net`): the
/// inode CRIU's `external net[<inode>]` names, and one-off work on a thread inside a namespace
/// (`setns` is per thread, so the caller's threads stay where they are).
public enum NetworkNamespace {
    /// The inode of a namespace file: the number in `net[<inode>]:extRootNetNS`.
    /// - Throws: `SystemCallError` when the file cannot be stat'ed.
    public static func inode(of path: FilePath) throws(SystemCallError) -> UInt64 {
        var st = stat()
        try syscall("stat", path.string) { stat(path.string, &st) }
        return UInt64(st.st_ino)
    }

    /// The CRIU `external` entry that marks the namespace at `path` as external under `key`.
    /// - Throws: `SystemCallError` when the file cannot be stat'ed.
    public static func externalEntry(for path: FilePath, key: String = "extRootNetNS") throws(SystemCallError) -> String {
        "net[\(try inode(of: path))]:\(key)"
    }

    /// Runs `body` on a fresh thread that has joined the network namespace at `path`.
    /// - Throws: `SystemCallError` when the namespace cannot be opened or joined, or the error
    ///   `body` threw.
    public static func perform<T: Sendable>(in path: FilePath, _ body: @escaping @Sendable () throws -> T) throws -> T {
        let job = NamespaceJob<T>(path: path, body: body)
        var thread = pthread_t()
        let unmanaged = Unmanaged.passRetained(job as AnyObject)
        let rc = pthread_create(&thread, nil, { arg in
            let any = Unmanaged<AnyObject>.fromOpaque(arg!).takeRetainedValue()
            (any as! any NamespaceRunnable).run()
            return nil
        }, unmanaged.toOpaque())
        if rc != 0 {
            unmanaged.release()
            throw SystemCallError(call: "pthread_create", errno: Errno(rawValue: rc))
        }
        pthread_join(thread, nil)
        return try job.result.get()
    }

    /// One HTTP/1.0 GET over a fresh TCP connection to `host:port`, in the namespace at `netns`
    /// (or the caller's own when nil). Returns the status code and the body.
    /// - Throws: `SystemCallError` for connect/read failures (ECONNREFUSED while nothing listens).
    public static func httpGet(netns: FilePath?, host: String = "127.0.0.1", port: UInt16, path: String = "/",
                               timeout: Duration = .seconds(5)) throws -> (status: Int, body: String) {
        @Sendable func get() throws -> (status: Int, body: String) {
            let fd = try syscall("socket") { socket(AF_INET, CInt(SOCK_STREAM.rawValue) | CInt(SOCK_CLOEXEC.rawValue), 0) }
            defer { _ = close(fd) }
            let ms = Int(timeout.components.seconds * 1000 + timeout.components.attoseconds / 1_000_000_000_000_000)
            var tv = timeval(tv_sec: ms / 1000, tv_usec: (ms % 1000) * 1000)
            _ = setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
            _ = setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
            var addr = sockaddr_in()
            addr.sin_family = sa_family_t(AF_INET)
            addr.sin_port = port.bigEndian
            inet_pton(AF_INET, host, &addr.sin_addr)
            try syscall("connect", "\(host):\(port)") {
                withUnsafePointer(to: &addr) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                        connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                    }
                }
            }
            let request = Array("GET \(path) HTTP/1.0\r\nHost: \(host)\r\nUser-Agent: zpck\r\n\r\n".utf8)
            try syscall("send", "\(host):\(port)") { request.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, CInt(MSG_NOSIGNAL)) } }
            var response: [UInt8] = []
            var chunk = [UInt8](repeating: 0, count: 16384)
            while true {
                let n = try syscall("recv", "\(host):\(port)") { chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) } }
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
        if let netns { return try perform(in: netns, get) }
        return try get()
    }
}

/// glibc's setns(2) wrapper; the Glibc module hides it behind _GNU_SOURCE.
@_silgen_name("setns")
private func zp_setns(_ fd: CInt, _ nstype: CInt) -> CInt

private protocol NamespaceRunnable: AnyObject { func run() }

/// Work for one namespace thread. `result` is written by that thread before it exits and read by
/// the caller only after `pthread_join`, which orders the two: no lock is needed.
private final class NamespaceJob<T: Sendable>: NamespaceRunnable {
    let path: FilePath
    let body: @Sendable () throws -> T
    var result: Result<T, any Error> = .failure(SystemCallError(call: "pthread", errno: .noSuchProcess))

    init(path: FilePath, body: @escaping @Sendable () throws -> T) {
        self.path = path
        self.body = body
    }

    func run() {
        result = Result { () throws -> T in
            let fd = try syscall("open", path.string) { open(path.string, O_RDONLY | O_CLOEXEC) }
            defer { _ = close(fd) }
            try syscall("setns", path.string) { zp_setns(fd, 0x4000_0000) }  // CLONE_NEWNET
            return try body()
        }
    }
}
