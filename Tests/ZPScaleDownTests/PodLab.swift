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
    private let podNetns: TestNetns
    private let clientNetns: TestNetns

    init(index: Int) throws {
        self.index = index
        podNetns = try TestNetns(exactName: "zpab-\(getpid())-\(index)-pod")
        clientNetns = try TestNetns(exactName: "zpab-\(getpid())-\(index)-cli")
        let (pod4, pod6, client4, probe4, client6, probe6) =
            (
                "10.78.\(index).1", "fd78:\(index)::1", "10.78.\(index).2", "10.78.\(index).3", "fd78:\(index)::2",
                "fd78:\(index)::3"
            )
        try connectVeth(
            podNetns,
            "zpabp",
            addresses: ["\(pod4)/24", "\(pod6)/64"],
            to: clientNetns,
            "zpabc",
            addresses: ["\(client4)/24", "\(probe4)/24", "\(client6)/64", "\(probe6)/64"]
        )
    }

    var pod: String { podNetns.name }
    var client: String { clientNetns.name }
    var podPath: FilePath { podNetns.filePath }
    var clientPath: FilePath { clientNetns.filePath }
    var pod4: String { "10.78.\(index).1" }
    var client4: String { "10.78.\(index).2" }
    var probe4: String { "10.78.\(index).3" }
    var pod6: String { "fd78:\(index)::1" }
    var client6: String { "fd78:\(index)::2" }
    var probe6: String { "fd78:\(index)::3" }

    /// Deletes both namespaces (the veth pair goes with them).
    func destroy() {
        podNetns.delete()
        clientNetns.delete()
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
        let arguments =
            ["ip", "netns", "exec", namespace, "/usr/bin/python3", "-c", Self.script] + ports.map { "\($0)" }
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
        let listening = await eventuallyAsync(within: seconds) { isListening() || !isRunning }
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

/// A blocking TCP client: makes its socket in `namespace`, binds `source` if given, connects to
/// `address`:`port`, sends `request`, reads until EOF. Timeouts of 20 s on every call keep a
/// broken run from hanging (a healthy burst takes < 1 s).
func exchange(
    from namespace: FilePath,
    to address: String,
    port: UInt16,
    source: String? = nil,
    request: String
) throws -> String {
    let socket = try TestSocket.connect(
        fromNetns: namespace.string,
        to: address,
        port: port,
        source: source,
        timeout: 20
    )
    try socket.send(request)
    return String(decoding: try socket.receiveAll(), as: UTF8.self)
}

/// A kubelet TCP probe: connect, then close at once without sending.
func tcpProbe(from namespace: FilePath, to address: String, port: UInt16, source: String? = nil) throws {
    _ = try TestSocket.connect(fromNetns: namespace.string, to: address, port: port, source: source, timeout: 20)
}

/// The activator's reports and restores in an ``EventLog``.
extension EventLog where Event == ActivatorEvent {
    var reports: [ConnectionReport] { all.compactMap { if case .connectionFinished(let r) = $0 { r } else { nil } } }
    var restoresStarted: Int { count { $0 == .restoreStarted } }
}
