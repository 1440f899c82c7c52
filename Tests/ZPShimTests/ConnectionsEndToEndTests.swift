import Foundation
import Testing
import ZPCore
import ZPTestSupport

// Connections across a scale-down, end to end through containerd and the shim (decisions 0045,
// 0046, 0047): an app with a pooled connection to a peer in another network namespace keeps that
// connection over every checkpoint and restore; its clients' connections reach its own listener
// with their own address; an idle open connection keeps it up.

/// The pooled-app test program (scripts/testapps/pooled-app.c) in a copy of the busybox root
/// filesystem, built statically with the host's gcc.
enum PooledApp {
    static let source = TestPaths.packageRoot + "/scripts/testapps/pooled-app.c"

    /// A root filesystem with `/bin/pooled-app`, under `directory`.
    static func rootfs(in directory: String) throws -> String {
        let rootfs = directory + "/app-rootfs"
        try sh(["cp", "-a", try TestPaths.busyboxRootfs(), rootfs], timeout: 120)
        try sh(["gcc", "-static", "-O2", "-o", rootfs + "/bin/pooled-app", source], timeout: 300)
        return rootfs
    }
}

/// A plain TCP peer in its own namespace (python3): numbers its connections and answers each
/// line "q" with `conn=<id> n=<count>`; keeps TCP keepalive on every connection (a probe every
/// second after one idle second), so a dumped socket's peer would get a reset at once without
/// the hold. On its stats port: `stats` → `connections=N resets=R eofs=E errors=X`; `ping` → writes
/// an unsolicited `ping` line on every open connection.
final class LinePeer {
    static let script = #"""
        import socket, sys, threading
        port, stats_port = int(sys.argv[1]), int(sys.argv[2])
        lock = threading.Lock()
        st = {"connections": 0, "resets": 0, "eofs": 0, "errors": 0}
        conns = []
        def serve(c, i):
            c.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            c.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 1)
            c.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 1)
            c.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 120)
            f = c.makefile("rb")
            n = 0
            try:
                while True:
                    line = f.readline()
                    if not line:
                        with lock: st["eofs"] += 1
                        break
                    n += 1
                    with lock: c.sendall(f"conn={i} n={n}\n".encode())
            except ConnectionResetError:
                with lock: st["resets"] += 1
            except OSError as e:
                with lock: st["errors"] += 1
                print(f"conn {i}: {e!r}", flush=True)
        def stats():
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("0.0.0.0", stats_port)); s.listen(8)
            while True:
                c, _ = s.accept()
                cmd = c.recv(100).strip()
                with lock:
                    if cmd == b"ping":
                        for x in conns: x.sendall(b"ping\n")
                    c.sendall(" ".join(f"{k}={v}" for k, v in st.items()).encode() + b"\n")
                c.close()
        threading.Thread(target=stats, daemon=True).start()
        srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(("0.0.0.0", port)); srv.listen(16)
        print("listening", flush=True)
        while True:
            c, a = srv.accept()
            with lock:
                st["connections"] += 1
                i = st["connections"]
                conns.append(c)
            print(f"conn {i} from {a}", flush=True)
            threading.Thread(target=serve, args=(c, i), daemon=True).start()
        """#

    let process: Process
    let netns: TestNetns
    let address: String
    let log: String

    init(netns: TestNetns, address: String, directory: TemporaryDirectory) throws {
        self.netns = netns
        self.address = address
        let script = try directory.write("peer.py", Self.script)
        log = directory.path + "/peer.log"
        FileManager.default.createFile(atPath: log, contents: nil)
        process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
        process.arguments = ["netns", "exec", netns.name, "python3", script, "7000", "7001"]
        process.standardOutput = FileHandle(forWritingAtPath: log)
        process.standardError = FileHandle(forWritingAtPath: log)
        try process.run()
        let up = eventually(within: 30) {
            (try? String(contentsOfFile: log, encoding: .utf8))?.contains("listening") == true
        }
        try #require(up, "the peer did not start: \((try? String(contentsOfFile: log, encoding: .utf8)) ?? "")")
    }

    /// `stats` or `ping` on the stats port, from the peer's own namespace.
    func command(_ text: String) -> [String: Int] {
        let answer = try? netns.run { () -> String in
            let socket = try TestSocket.connect(fromNetns: nil, to: "127.0.0.1", port: 7001, timeout: 5)
            try socket.send(text)
            return String(decoding: try socket.receiveAll(), as: UTF8.self)
        }
        var result: [String: Int] = [:]
        for pair in (answer ?? "").split(whereSeparator: { $0 == " " || $0 == "\n" }) {
            let parts = pair.split(separator: "=")
            if parts.count == 2, let value = Int(parts[1]) { result[String(parts[0])] = value }
        }
        return result
    }

    func stop() {
        // SIGKILL: a child of the test process inherits its blocked SIGTERM.
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }
}

/// A real MariaDB (the `mariadb` root filesystem of scripts/rootfs.sh, on an overlay so the cached
/// folder stays untouched) in its own namespace, run with chroot as rootfs.sh's build step does.
final class MariaDBPeer {
    let netns: TestNetns
    let root: String
    let merged: String
    let process: Process

    init(netns: TestNetns, directory: TemporaryDirectory) throws {
        self.netns = netns
        root = directory.path + "/mariadb"
        merged = root + "/merged"
        for d in ["upper", "work", "merged"] {
            try FileManager.default.createDirectory(atPath: root + "/" + d, withIntermediateDirectories: true)
        }
        let lower = try TestPaths.rootfs("mariadb")
        try sh([
            "mount", "-t", "overlay", "overlay", "-o", "lowerdir=\(lower),upperdir=\(root)/upper,workdir=\(root)/work",
            merged,
        ])
        process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
        process.arguments = [
            "netns", "exec", netns.name, "chroot", merged, "/usr/sbin/mariadbd", "--user=mysql",
            "--innodb-use-native-aio=0", "--skip-log-bin", "--bind-address=0.0.0.0", "--port=3306",
        ]
        process.standardOutput = FileHandle(forWritingAtPath: "/dev/null")
        process.standardError = FileHandle(forWritingAtPath: "/dev/null")
        try process.run()
        let up = eventually(within: 90, every: 0.2) {
            (try? run(["chroot", merged, "mariadb-admin", "--socket=/run/mysqld/mysqld.sock", "ping"], timeout: 10))?
                .status == 0
        }
        if !up { stop() }
        try #require(up, "mariadbd did not start in \(merged)")
    }

    /// `SHOW GLOBAL STATUS` values by name.
    func status(_ names: [String]) -> [String: Int] {
        let list = names.map { "'\($0)'" }.joined(separator: ",")
        guard
            let out = try? sh(
                [
                    "chroot", merged, "mariadb", "--socket=/run/mysqld/mysqld.sock", "-uroot", "-N", "-B", "-e",
                    "SHOW GLOBAL STATUS WHERE Variable_name IN (\(list))",
                ],
                timeout: 30
            )
        else { return [:] }
        var result: [String: Int] = [:]
        for line in out.split(separator: "\n") {
            let parts = line.split(separator: "\t")
            if parts.count == 2, let value = Int(parts[1]) { result[String(parts[0])] = value }
        }
        return result
    }

    func stop() {
        _ = try? run(["chroot", merged, "mariadb-admin", "--socket=/run/mysqld/mysqld.sock", "shutdown"], timeout: 60)
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
        _ = try? run(["umount", merged], timeout: 30)
    }
}

/// The three namespaces of one test: the pod (the app), the peer and the client, joined by two
/// veth pairs: pod 10.81.<n>.1 ↔ peer 10.81.<n>.2, pod 10.81.<n+1>.1 ↔ client 10.81.<n+1>.2.
struct ConnectionLab {
    let pod: TestNetns
    let peer: TestNetns
    let client: TestNetns
    let subnet: Int

    init(_ tag: String, subnet: Int) throws {
        pod = try TestNetns("zpconn-\(tag)-pod")
        peer = try TestNetns("zpconn-\(tag)-peer")
        client = try TestNetns("zpconn-\(tag)-cli")
        self.subnet = subnet
        try connectVeth(
            pod,
            "zpcp0",
            addresses: ["10.81.\(subnet).1/24"],
            to: peer,
            "zpcq0",
            addresses: ["10.81.\(subnet).2/24"]
        )
        try connectVeth(
            pod,
            "zpcp1",
            addresses: ["10.81.\(subnet + 1).1/24"],
            to: client,
            "zpcq1",
            addresses: ["10.81.\(subnet + 1).2/24"]
        )
    }

    var peerAddress: String { "10.81.\(subnet).2" }
    var podClientSide: String { "10.81.\(subnet + 1).1" }
    var clientAddress: String { "10.81.\(subnet + 1).2" }

    func delete() {
        pod.delete()
        peer.delete()
        client.delete()
    }

    /// One request from the client namespace: the app's answer line, or nil.
    func request(port: Int = 8080) -> String? {
        client.httpGet(port: port, host: podClientSide)?.trimmingCharacters(in: .whitespacesAndNewlines)
    }
}

/// The `key=value` fields of one pooled-app answer.
func fields(_ answer: String?) -> [String: String] {
    var result: [String: String] = [:]
    for pair in (answer ?? "").split(separator: " ") {
        guard let eq = pair.firstIndex(of: "=") else { continue }
        result[String(pair[..<eq])] = String(pair[pair.index(after: eq)...])
    }
    return result
}

@Suite(.serialized, .enabled(if: Privileges.isRoot, "needs root: containerd, CRIU, network namespaces"))
struct ConnectionsEndToEndTests {
    @Test(arguments: ContainerdFlavor.all)
    func pooledConnection_toPlainTCPPeer_survivesFiveCycles_noReset_realClientAddress(flavor: ContainerdFlavor) throws {
        let directory = try TemporaryDirectory("zpconn-tcp")
        let containerd = try PrivateContainerd(flavor: flavor, tag: "conn")
        defer { containerd.stop() }
        let lab = try ConnectionLab("tcp", subnet: 10)
        defer { lab.delete() }
        let peer = try LinePeer(netns: lab.peer, address: lab.peerAddress, directory: directory)
        defer { peer.stop() }
        let rootfs = try PooledApp.rootfs(in: directory.path)
        let id = "pooled1"
        let created = try containerd.ctr([
            "run", "-d", "--runtime", "io.containerd.zeropod.v2", "--annotation",
            "zeropod.ctrox.dev/scaledown-duration=2s",
            // No probe sources on the test node: the handover applies without probe detection.
            "--annotation", "zeropod.ctrox.dev/disable-probe-detection=true",
            "--with-ns", "network:\(lab.pod.path)", "--log-uri", "file://\(containerd.directory)/\(id).out",
            "--rootfs", rootfs, id, "/bin/pooled-app", "tcp", lab.peerAddress, "7000", "8080",
        ])
        try #require(created.status == 0, "ctr run: \(created.stderr)\n\(containerd.log(tail: 20))")
        defer { removeTask(containerd, id) }
        var first: String?
        _ = eventually(within: 30) {
            first = lab.request()
            return first != nil
        }
        #expect(fields(first)["peer"] == "conn=1", "first answer: \(first ?? "none"); log: \(containerd.log(tail: 30))")
        var expectedCount = 1
        var wakeTimes: [String] = []

        for cycle in 1...5 {
            let down = waitScaledDown(containerd, netns: lab.pod, checkpoints: cycle)
            #expect(down, "cycle \(cycle): not scaled down; log: \(containerd.log(tail: 30))")
            guard down else { return }
            #expect(
                containerd.logLines(containing: "holding 1 connection(s) while scaled down").count >= cycle,
                "cycle \(cycle): the pooled connection is not held; log: \(containerd.log(tail: 20))"
            )
            let restoresBefore = containerd.logLines(containing: "restored process:").count
            if cycle % 2 == 1 {
                // The peer writes on the idle pooled connection while the app is down: the segment
                // is dropped (no reset) and wakes the app; the peer's retransmission reaches it.
                #expect(peer.command("ping")["resets"] == 0)
                let woken = eventually(within: 30) {
                    containerd.logLines(containing: "restored process:").count > restoresBefore
                }
                #expect(woken, "cycle \(cycle): the peer's data did not wake the app; log: \(containerd.log(tail: 30))")
            }
            // The client's request (the wake on even cycles) reaches the app's own listener.
            let started = Date()
            let answer = lab.request()
            wakeTimes.append(String(format: "%.0f", Date().timeIntervalSince(started) * 1000))
            expectedCount += 1
            let f = fields(answer)
            #expect(
                f["peer"] == "conn=1",
                "cycle \(cycle): not the old connection: \(answer ?? "none"); log: \(containerd.log(tail: 30))"
            )
            #expect(
                f["client"] == lab.clientAddress,
                "cycle \(cycle): the app saw \(f["client"] ?? "nothing"), not the client"
            )
            #expect(f["reconnects"] == "0", "cycle \(cycle): \(answer ?? "none")")
            #expect(answer?.contains("n=\(expectedCount)") == true, "cycle \(cycle): \(answer ?? "none")")
        }
        let stats = peer.command("stats")
        #expect(
            stats["connections"] == 1 && stats["resets"] == 0 && stats["errors"] == 0 && stats["eofs"] == 0,
            "peer: \(stats); peer log: \((try? String(contentsOfFile: peer.log, encoding: .utf8)) ?? "")"
        )
        let released = containerd.logLines(containing: "released 1 held connection(s): sockets restored")
        #expect(released.count >= 5, "log: \(containerd.log(tail: 30))")
        print(
            "[zpconn] \(flavor.name) tcp peer: 5 cycles on connection 1, peer stats \(stats); "
                + "request ms (restores on even cycles): \(wakeTimes.joined(separator: " "))"
        )
        for line in released.prefix(5) {
            if let range = line.range(of: "released") { print("[zpconn]   \(line[range.lowerBound...].prefix(120))") }
        }
    }

    @Test(arguments: ContainerdFlavor.all)
    func pooledConnection_toRealMariaDB_survivesFiveCycles_noAbortedClient(flavor: ContainerdFlavor) throws {
        let directory = try TemporaryDirectory("zpconn-db")
        let containerd = try PrivateContainerd(flavor: flavor, tag: "conndb")
        defer { containerd.stop() }
        let lab = try ConnectionLab("db", subnet: 20)
        defer { lab.delete() }
        let db = try MariaDBPeer(netns: lab.peer, directory: directory)
        defer { db.stop() }
        let before = db.status(["Connections", "Aborted_clients", "Aborted_connects"])
        let rootfs = try PooledApp.rootfs(in: directory.path)
        let id = "pooled2"
        let created = try containerd.ctr([
            "run", "-d", "--runtime", "io.containerd.zeropod.v2", "--annotation",
            "zeropod.ctrox.dev/scaledown-duration=2s",
            // No probe sources on the test node: the handover applies without probe detection.
            "--annotation", "zeropod.ctrox.dev/disable-probe-detection=true",
            "--with-ns", "network:\(lab.pod.path)", "--log-uri", "file://\(containerd.directory)/\(id).out",
            "--rootfs", rootfs, id, "/bin/pooled-app", "mysql", lab.peerAddress, "3306", "8080",
        ])
        try #require(created.status == 0, "ctr run: \(created.stderr)\n\(containerd.log(tail: 20))")
        defer { removeTask(containerd, id) }
        var first: String?
        _ = eventually(within: 60) {
            first = lab.request()
            return first != nil
        }
        let connectionID = try #require(
            fields(first)["peer"],
            "first answer: \(first ?? "none"); log: \(containerd.log(tail: 30))"
        )
        #expect(connectionID.hasPrefix("mysql-connection-id="))
        for cycle in 1...5 {
            let down = waitScaledDown(containerd, netns: lab.pod, checkpoints: cycle)
            #expect(down, "cycle \(cycle): not scaled down; log: \(containerd.log(tail: 30))")
            guard down else { return }
            let answer = lab.request()
            let f = fields(answer)
            #expect(f["peer"] == connectionID, "cycle \(cycle): \(answer ?? "none"); log: \(containerd.log(tail: 30))")
            #expect(
                f["client"] == lab.clientAddress && f["reconnects"] == "0",
                "cycle \(cycle): \(answer ?? "none"); log: \(containerd.log(tail: 40))"
            )
        }
        let after = db.status(["Connections", "Aborted_clients", "Aborted_connects"])
        // Connections counts every login: the app's one, plus this status query's own.
        #expect(
            after["Connections", default: -1] - before["Connections", default: 0] == 2,
            "MariaDB: before \(before), after \(after)"
        )
        #expect(
            after["Aborted_clients"] == before["Aborted_clients"]
                && after["Aborted_connects"] == before["Aborted_connects"],
            "MariaDB: before \(before), after \(after)"
        )
        print(
            "[zpconn] \(flavor.name) MariaDB peer: 5 cycles on \(connectionID); status before \(before), after \(after)"
        )
    }

    /// Issue 14 part 3: an idle open connection from a real client in another namespace counts as
    /// activity (node setting `open-connections-are-activity`, default on): held for 3 ×
    /// scaledown-duration it keeps the app up; after the client closes it, the app scales down
    /// within scaledown-duration + 1 s (measured to the start of the checkpoint: the log line
    /// comes after the dump, whose own time is subtracted).
    @Test(arguments: ContainerdFlavor.all)
    func idleOpenConnection_keepsTheAppUp_closeScalesItDown(flavor: ContainerdFlavor) throws {
        let containerd = try PrivateContainerd(flavor: flavor, tag: "connidle")
        defer { containerd.stop() }
        let lab = try ConnectionLab("idle", subnet: 30)
        defer { lab.delete() }
        let id = "idle1"
        // busybox httpd keeps listening; its child for the connection waits for a request head
        // (up to 60 s) while the client sends nothing.
        let created = try containerd.ctr([
            "run", "-d", "--runtime", "io.containerd.zeropod.v2", "--annotation",
            "zeropod.ctrox.dev/scaledown-duration=2s",
            "--with-ns", "network:\(lab.pod.path)", "--log-uri", "file://\(containerd.directory)/\(id).out",
            "--rootfs", try TestPaths.busyboxRootfs(), id, "/bin/httpd", "-f", "-p", "8080", "-h", "/",
        ])
        try #require(created.status == 0, "ctr run: \(created.stderr)\n\(containerd.log(tail: 20))")
        defer { removeTask(containerd, id) }
        // The port is tracked (found by port discovery) before the connection opens.
        try #require(
            eventually(within: 30) { !containerd.logLines(containing: "scale-down armed").isEmpty },
            "scale-down never armed; log: \(containerd.log(tail: 20))"
        )
        var client: TestSocket?
        _ = eventually(within: 30) {
            client = try? TestSocket.connect(fromNetns: lab.client.path, to: lab.podClientSide, port: 8080, timeout: 5)
            return client != nil
        }
        let open = try #require(client, "no connection to the app; log: \(containerd.log(tail: 30))")
        // Settled: the app runs (a checkpoint that raced the connect was woken by it).
        #expect(eventually(within: 30) { !processes(inNetns: lab.pod.path).isEmpty })
        let checkpointsBefore = containerd.logLines(containing: "checkpointing done").count
        let heldSince = Date()
        while Date().timeIntervalSince(heldSince) < 6 {  // 3 × scaledown-duration, idle
            Thread.sleep(forTimeInterval: 0.5)
            #expect(!processes(inNetns: lab.pod.path).isEmpty, "the app went down while a connection was open")
        }
        #expect(
            containerd.logLines(containing: "checkpointing done").count == checkpointsBefore,
            "checkpointed during the open connection; log: \(containerd.log(tail: 20))"
        )
        open.descriptor.close()
        let closed = Date()
        var doneAfter: Double?
        _ = eventually(within: 30, every: 0.05) {
            guard containerd.logLines(containing: "checkpointing done").count > checkpointsBefore else { return false }
            doneAfter = Date().timeIntervalSince(closed)
            return true
        }
        let after = try #require(doneAfter, "not scaled down after the close; log: \(containerd.log(tail: 30))")
        let line = containerd.logLines(containing: "checkpointing done").last ?? ""
        let dumpMs = line.firstMatch(of: /checkpointing done in ([0-9.]+) ms/).flatMap { Double($0.1) } ?? 0
        let startedAfter = after - dumpMs / 1000
        #expect(
            startedAfter <= 3.0,
            "checkpoint started \(startedAfter) s after the close (done after \(after) s, dump \(dumpMs) ms)"
        )
        print(
            "[zpconn] \(flavor.name) idle connection: app up for 6 s with an open idle connection; "
                + String(
                    format: "checkpoint started %.2f s after the close (done %.2f s, dump %.0f ms)",
                    startedAfter,
                    after,
                    dumpMs
                )
        )
    }
}
