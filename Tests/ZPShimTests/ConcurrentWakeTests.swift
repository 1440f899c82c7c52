import Foundation
import Testing
import ZPCore
import ZPSystem
import ZPTestSupport

/// Connects `count` clients at once from the namespace `client` to `host`:`port`, each sending one
/// GET for `/index.html` and reading to the end (python3 threads, all started before any answer).
/// Each waits up to 240 s: busybox httpd accepts with a backlog of 9, so on a loaded machine most
/// handshakes are answered with SYN cookies or dropped and the last clients get through only after
/// TCP's retransmission backoff (a 60 s limit failed 10-92 of 500 in runs that took 61 s, with no
/// connection lost: `TCPMigrateReqFailure` 0; the figures line prints the pod's counters).
/// Prints `ok=N bad=M seconds=S` and the first few bad answers.
private let burstScript = """
    import socket, sys, threading, time
    host, port, count, token = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    results = [None] * count
    go = threading.Event()
    def one(i):
        go.wait()
        began = time.time()
        try:
            s = socket.create_connection((host, port), timeout=240)
            s.sendall(b"GET /index.html HTTP/1.0\\r\\nHost: app\\r\\n\\r\\n")
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
            s.close()
            results[i] = data.decode(errors="replace")
        except Exception as e:
            results[i] = "ERROR after %.1f s: %r" % (time.time() - began, e)
    threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    start = time.time()
    go.set()
    for t in threads:
        t.join()
    good = [r for r in results if r.split("\\r\\n")[0].endswith(" 200 OK") and r.rstrip().endswith(token)]
    bad = [r for r in results if r not in good]
    print("ok=%d bad=%d seconds=%.3f" % (len(good), len(bad), time.time() - start))
    for r in bad[:5]:
        print("BAD " + repr(r[:120]))
    """

/// Issue 15 §1, the last fault-matrix row: 500 concurrent first connections during one real CRIU
/// restore, from a client in another network namespace, through a real containerd: 500 correct
/// answers, none refused, one restore. The app is busybox httpd (a process per connection)
/// serving a file with a token written at its start; the connections arrive while it is scaled
/// down, queue on the handover listener (decision 0046) and move to the restored listener.
@Suite(.serialized) struct ConcurrentWakeTests {
    static let connections = 500

    private func burst(lazy: Bool, flavor: ContainerdFlavor, subnet: Int) throws {
        let rootfs = try TestPaths.busyboxRootfs()
        var environment: [String: String] = [:]
        let nodeConfig = "/tmp/zpshim-burst-\(UUID().uuidString.prefix(8)).conf"
        if lazy {
            try Data("lazy-restore = on\n".utf8).write(to: URL(fileURLWithPath: nodeConfig))
            environment["ZEROPOD_NODE_CONFIG"] = nodeConfig
        }
        defer { try? FileManager.default.removeItem(atPath: nodeConfig) }
        let containerd = try PrivateContainerd(flavor: flavor, tag: "burst", environment: environment)
        defer { containerd.stop() }
        let pod = try TestNetns("zpburst-pod")
        defer { pod.delete() }
        let client = try TestNetns("zpburst-cli")
        defer { client.delete() }
        try connectVeth(
            pod,
            "zpbp0",
            addresses: ["10.84.\(subnet).1/24"],
            to: client,
            "zpbq0",
            addresses: ["10.84.\(subnet).2/24"]
        )
        let token = "token-\(UUID().uuidString.prefix(8))"
        let id = "burst1"
        try startCounter(
            containerd,
            netns: pod,
            id: id,
            rootfs: rootfs,
            // 5 s (not startCounter's 2 s): the burst, slow on a loaded 2-core VM, must not meet a
            // second scale-down (one was seen with 2 s, see the issue 15 note).
            extra: ["--annotation", "zeropod.ctrox.dev/scaledown-duration=5s"],
            command: "mkdir -p /tmp/w && echo \(token) > /tmp/w/index.html && exec httpd -f -p 8080 -h /tmp/w"
        )
        defer { removeTask(containerd, id) }
        try #require(
            waitScaledDown(containerd, netns: pod, checkpoints: 1),
            "not scaled down: \(containerd.log(tail: 30))"
        )
        if lazy {
            #expect(
                eventually(within: 20) { !processes(matching: ["lazy-pages"]).isEmpty },
                "no lazy-pages daemon while scaled down: \(containerd.log(tail: 20))"
            )
        }
        let result = try run(
            [
                "ip", "netns", "exec", client.name, "python3", "-c", burstScript, "10.84.\(subnet).1", "8080",
                "\(Self.connections)", token,
            ],
            timeout: 600
        )
        let summary = result.stdout.split(separator: "\n").first.map(String.init) ?? ""
        // What the pod's TCP stack did: handshakes dropped or answered with cookies, and requests
        // migrated from the handover listener to the restored one (decision 0046).
        let counters = (try? run(["ip", "netns", "exec", pod.name, "cat", "/proc/net/netstat"]))?.stdout ?? ""
        let lines = counters.split(separator: "\n").filter { $0.hasPrefix("TcpExt:") }
        var tcp: [String: String] = [:]
        if lines.count >= 2 {
            for (name, value) in zip(lines[0].split(separator: " ").dropFirst(), lines[1].split(separator: " ").dropFirst()) {
                tcp[String(name)] = String(value)
            }
        }
        let stack = ["ListenOverflows", "ListenDrops", "SyncookiesSent", "TCPMigrateReqSuccess", "TCPMigrateReqFailure"]
            .map { "\($0) \(tcp[$0] ?? "-")" }.joined(separator: ", ")
        let nonzero = tcp.filter { $0.value != "0" }.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }
            .joined(separator: ", ")
        #expect(
            summary.hasPrefix("ok=\(Self.connections) bad=0"),
            "\(result.stdout)\n\(result.stderr)\npod netns: \(nonzero)\n\(containerd.log(tail: 40))"
        )
        let restores = containerd.logLines(containing: "restored process:")
        // Decision 0056: the restored listener's backlog raised while it takes the queue over.
        let moved = containerd.logLines(containing: "queues moved to the application").map {
            ($0.components(separatedBy: "queued=").last ?? $0).components(separatedBy: "]").first.map { $0 + "]" } ?? $0
        }
        let widened = containerd.logLines(containing: "backlog raised while").map {
            ($0.components(separatedBy: "widened=").last ?? $0).components(separatedBy: "]").first.map { $0 + "]" } ?? $0
        }
        // A raised backlog is set back by the driver's watch, which runs only while something
        // waits to be settled (it idles without a timer otherwise): it must come.
        if !widened.isEmpty {
            #expect(
                eventually(within: 60) { !containerd.logLines(containing: "own backlog set back").isEmpty },
                "raised \(widened), never set back: \(containerd.log(tail: 20))"
            )
        }
        let settled = containerd.logLines(containing: "own backlog set back").map {
            ($0.components(separatedBy: "after=").last ?? $0).components(separatedBy: " ").prefix(2).joined(separator: " ")
        }
        #expect(restores.count == 1, "one restore: \(restores)")
        #expect(containerd.logLines(containing: "cold started process").isEmpty)
        print(
            "[fault-matrix] \(flavor.name) | \(Self.connections) concurrent first connections during one "
                + "\(lazy ? "lazy" : "eager") restore | \(summary), \(restores.count) restore "
                + "(\(restores.first.map { String($0.suffix(40)) } ?? "-")); pod netns: \(stack); moved \(moved), raised \(widened), set back after \(settled)"
        )
    }

    @Test(arguments: ContainerdFlavor.all)
    func fiveHundredFirstConnections_duringOneEagerRestore_allAnswered(flavor: ContainerdFlavor) throws {
        try burst(lazy: false, flavor: flavor, subnet: ContainerdFlavor.all.firstIndex { $0.name == flavor.name } ?? 0)
    }

    @Test func fiveHundredFirstConnections_duringOneLazyRestore_allAnswered() throws {
        try burst(lazy: true, flavor: ContainerdFlavor.all[ContainerdFlavor.all.count - 1], subnet: 5)
    }
}
