import Foundation
import Glibc
import Synchronization
import SystemPackage
import Testing
import ZPActivator
import ZPBPF
import ZPSystem
import ZPTestSupport

/// A pod network namespace and a client namespace joined by a veth pair, deleted by
/// ``destroy()``. Names: `zpab-<pid>-<index>-pod` / `-cli`. Subnets 10.78.<index>.0/24 and
/// fd78:<index>::/64; the pod side is .1 / ::1, the real client .2 / ::2 and the probe source
/// (the "kubelet") .3 / ::3, both on the client side.
final class PodLab: Sendable {
    let index: Int
    let pod: String
    let client: String

    init(index: Int) throws {
        self.index = index
        pod = "zpab-\(getpid())-\(index)-pod"
        client = "zpab-\(getpid())-\(index)-cli"
        for name in [pod, client] {
            _ = try? sh(["ip", "netns", "del", name])
            try sh(["ip", "netns", "add", name])
            try sh(["ip", "-n", name, "link", "set", "lo", "up"])
        }
        try sh(["ip", "link", "add", "zpabp", "netns", pod, "type", "veth", "peer", "name", "zpabc", "netns", client])
        try sh(["ip", "-n", pod, "addr", "add", "\(pod4)/24", "dev", "zpabp"])
        try sh(["ip", "-n", pod, "addr", "add", "\(pod6)/64", "dev", "zpabp", "nodad"])
        for address in [client4, probe4] {
            try sh(["ip", "-n", client, "addr", "add", "\(address)/24", "dev", "zpabc"])
        }
        for address in [client6, probe6] {
            try sh(["ip", "-n", client, "addr", "add", "\(address)/64", "dev", "zpabc", "nodad"])
        }
        try sh(["ip", "-n", pod, "link", "set", "zpabp", "up"])
        try sh(["ip", "-n", client, "link", "set", "zpabc", "up"])
    }

    var podPath: FilePath { FilePath("/var/run/netns/\(pod)") }
    var clientPath: FilePath { FilePath("/var/run/netns/\(client)") }
    var pod4: String { "10.78.\(index).1" }
    var client4: String { "10.78.\(index).2" }
    var probe4: String { "10.78.\(index).3" }
    var pod6: String { "fd78:\(index)::1" }
    var client6: String { "fd78:\(index)::2" }
    var probe6: String { "fd78:\(index)::3" }

    /// Deletes both namespaces (the veth pair goes with them).
    func destroy() {
        for name in [pod, client] { _ = try? sh(["ip", "netns", "del", name]) }
    }

    /// Whether `ip netns list` still shows one of this lab's namespaces.
    func namespacesLeft() throws -> [String] {
        try sh(["ip", "netns", "list"]).split(separator: "\n").map { String($0.split(separator: " ")[0]) }
            .filter { $0 == pod || $0 == client }
    }
}

/// A real application server process inside the pod namespace: Python's threading HTTP server
/// (`ip netns exec POD python3`), dual-stack on `[::]:port`. It answers every GET with
/// `hello from app: <path> from <peer address>` (IPv4 peers without the `::ffff:` prefix), so a
/// test can tell a connection proxied by the activator (peer 127.0.0.1: it dials that first)
/// from a direct one.
struct AppProcess: Sendable {
    let pid: pid_t
    let ports: [UInt16]

    static let script = """
        import socket, socketserver, sys, threading
        from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                peer = self.client_address[0]
                if peer.startswith("::ffff:"):
                    peer = peer[7:]
                body = ("hello from app: %s from %s" % (self.path, peer)).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(body)
            def log_message(self, *args):
                pass
        class Server(ThreadingHTTPServer):
            address_family = socket.AF_INET6
            request_queue_size = 1024
            daemon_threads = True
            def server_bind(self):
                self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
                socketserver.TCPServer.server_bind(self)  # no getfqdn: no DNS in the pod
                self.server_name, self.server_port = "app", self.server_address[1]
        servers = [Server(("::", int(port)), Handler) for port in sys.argv[1:]]
        for server in servers[1:]:
            threading.Thread(target=server.serve_forever, daemon=True).start()
        servers[0].serve_forever()
        """

    /// Starts the server in `namespace` (posix_spawn of `ip netns exec`, which execs python in
    /// place: the pid is the server's); it listens on every one of `ports` a moment later (see
    /// ``waitUntilListening(deadline:)``). Standard streams go to /dev/null.
    init(namespace: String, ports: [UInt16]) throws {
        let arguments = ["ip", "netns", "exec", namespace, "/usr/bin/python3", "-c", Self.script] + ports.map { "\($0)" }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
        var argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
        defer { for pointer in argv { free(pointer) } }
        var pid: pid_t = 0
        let rc = posix_spawnp(&pid, "ip", &actions, nil, &argv, environ)
        guard rc == 0 else { throw LabError(message: "posix_spawnp ip netns exec \(namespace): errno \(rc)") }
        self.pid = pid
        self.ports = ports
    }

    /// Starts the server on one port.
    init(namespace: String, port: UInt16) throws {
        try self.init(namespace: namespace, ports: [port])
    }

    /// Whether the server still runs (reaps it if it exited).
    var isRunning: Bool {
        var status: CInt = 0
        return waitpid(pid, &status, WNOHANG) == 0
    }

    /// Whether the process has listening TCP sockets on all its ports (its /proc/PID/net/tcp6
    /// shows the pod namespace). Connecting would not tell: while the redirect is on, a connect
    /// to the port lands in the activator.
    func isListening() -> Bool {
        var listening = Set<UInt16>()
        for file in ["tcp6", "tcp"] {
            guard let text = try? String(contentsOfFile: "/proc/\(pid)/net/\(file)", encoding: .utf8) else { continue }
            for line in text.split(separator: "\n").dropFirst() {
                let fields = line.split(separator: " ")
                guard fields.count > 3, fields[3] == "0A", let colon = fields[1].lastIndex(of: ":") else { continue }
                if let port = UInt16(fields[1][fields[1].index(after: colon)...], radix: 16) { listening.insert(port) }
            }
        }
        return listening.isSuperset(of: ports)
    }

    /// Waits until the server listens (or exits: then throws).
    func waitUntilListening(deadline seconds: Double = 30) async throws {
        let listening = await eventuallyAsync(seconds) { isListening() || !isRunning }
        guard listening, isRunning else {
            throw LabError(message: "app in pod did not listen on \(ports) (pid \(pid))")
        }
    }

    /// Sends SIGKILL to the server and reaps it (SIGKILL also stands in for "checkpointed").
    func stop() {
        kill(pid, SIGKILL)
        var status: CInt = 0
        while waitpid(pid, &status, 0) == -1 && errno == EINTR {}
    }

    /// Whether a process with this pid still exists (false once stopped and reaped).
    var exists: Bool { kill(pid, 0) == 0 }
}

/// A blocking TCP client: makes its socket in `namespace` (ZPSystem's `NetworkNamespace`), binds
/// `source` if given, connects to `address`:`port`, sends `request`, reads until EOF.
/// Timeouts of 20 s on every call keep a broken run from hanging (a healthy burst takes < 1 s).
func exchange(
    from namespace: FilePath, to address: String, port: UInt16, source: String? = nil, request: String
) throws -> String {
    let fd = try connectedSocket(from: namespace, to: address, port: port, source: source)
    defer { close(fd) }
    let bytes = Array(request.utf8)
    guard send(fd, bytes, bytes.count, Int32(MSG_NOSIGNAL)) == bytes.count else {
        throw LabError(message: "send to \(address):\(port): errno \(errno)")
    }
    var received: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 4096)
    while true {
        let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        if n == 0 { break }
        guard n > 0 else { throw LabError(message: "recv from \(address):\(port): errno \(errno)") }
        received += chunk[0..<n]
    }
    return String(decoding: received, as: UTF8.self)
}

/// A kubelet TCP probe: connect, then close at once without sending.
func tcpProbe(from namespace: FilePath, to address: String, port: UInt16, source: String? = nil) throws {
    close(try connectedSocket(from: namespace, to: address, port: port, source: source))
}

private func connectedSocket(
    from namespace: FilePath, to address: String, port: UInt16, source: String?
) throws -> Int32 {
    let fd = try NetworkNamespace(path: namespace).makeTCPSocket(ipv6: address.contains(":")).disown()  // closed by the caller
    do {
        var timeout = timeval(tv_sec: 20, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        if let source {
            var (storage, length) = try socketAddress(source, port: 0)
            let rc = withUnsafePointer(to: &storage) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) }
            }
            guard rc == 0 else { throw LabError(message: "bind \(source): errno \(errno)") }
        }
        var (storage, length) = try socketAddress(address, port: port)
        let rc = withUnsafePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, length) }
        }
        guard rc == 0 else { throw LabError(message: "connect \(address):\(port) from \(namespace): errno \(errno)") }
        return fd
    } catch {
        close(fd)
        throw error
    }
}

/// Runs `body(0..<count)` on `count` threads at once (real concurrency for blocking clients,
/// which the 2-thread cooperative pool would serialize); returns every result in index order.
func concurrently<T: Sendable>(
    _ count: Int, _ body: @escaping @Sendable (Int) throws -> T
) async -> [Result<T, any Error>] {
    await withCheckedContinuation { continuation in
        let results = Mutex<[Result<T, any Error>?]>(Array(repeating: nil, count: count))
        let remaining = Atomic<Int>(count)
        for i in 0..<count {
            let thread = Thread {
                let result = Result { try body(i) }
                results.withLock { $0[i] = result }
                if remaining.subtract(1, ordering: .acquiringAndReleasing).newValue == 0 {
                    continuation.resume(returning: results.withLock { $0.map { $0! } })
                }
            }
            thread.start()
        }
    }
}

/// Runs one blocking `body` on its own thread: blocking calls must never occupy the cooperative
/// pool (two threads here), which the activator's connection tasks need.
func onThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await concurrently(1) { _ in try body() }[0].get()
}

private func socketAddress(_ address: String, port: UInt16) throws -> (sockaddr_in6, socklen_t) {
    var storage = sockaddr_in6()
    if address.contains(":") {
        storage.sin6_family = sa_family_t(AF_INET6)
        storage.sin6_port = port.bigEndian
        guard inet_pton(AF_INET6, address, &storage.sin6_addr) == 1 else { throw LabError(message: "bad \(address)") }
        return (storage, socklen_t(MemoryLayout<sockaddr_in6>.size))
    }
    var sin = sockaddr_in()
    sin.sin_family = sa_family_t(AF_INET)
    sin.sin_port = port.bigEndian
    guard inet_pton(AF_INET, address, &sin.sin_addr) == 1 else { throw LabError(message: "bad \(address)") }
    withUnsafeMutableBytes(of: &storage) { dst in withUnsafeBytes(of: sin) { dst.copyMemory(from: $0) } }
    return (storage, socklen_t(MemoryLayout<sockaddr_in>.size))
}

/// Collects the activator's events.
final class EventLog: Sendable {
    private let events = Mutex<[ActivatorEvent]>([])

    var sink: @Sendable (ActivatorEvent) -> Void { { event in self.events.withLock { $0.append(event) } } }
    var all: [ActivatorEvent] { events.withLock { $0 } }
    var reports: [ConnectionReport] {
        all.compactMap { if case .connectionFinished(let report) = $0 { return report } else { return nil } }
    }
    var restoresStarted: Int { all.filter { $0 == .restoreStarted }.count }
}

/// Kernel object IDs that `bpftool -j <kind> show` lists; retried because bpftool fails when an
/// object vanishes while it walks the IDs (other tests run in parallel).
func bpftoolIDs(_ kind: String) throws -> Set<UInt32> {
    var attempt = 0
    while true {
        do {
            let json = try sh(["bpftool", "-j", kind, "show"])
            guard let array = try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [[String: Any]] else {
                return []
            }
            return Set(array.compactMap { ($0["id"] as? NSNumber)?.uint32Value })
        } catch {
            attempt += 1
            if attempt == 20 { throw error }
            usleep(50_000)
        }
    }
}
