import Foundation
import Synchronization
import Testing
import ZPTestSupport

@testable import zpbench

#if canImport(Glibc)
import Glibc
#endif

/// Serialized: the harness spawns from one thread (Subprocess.swift sets close-on-exec right after
/// pipe(), and a spawn in a parallel test once failed with EBADF).
@Suite("zpbench harness pieces", .serialized)
struct HarnessTests {
    @Test("medians of odd and even counts")
    func medians() {
        #expect(Report.median([]) == nil)
        #expect(Report.median([5, 1, 3]) == 3)
        #expect(Report.median([4, 1, 3, 2]) == 2.5)
    }

    @Test("the node-quiet wait reads /proc/stat and /proc/meminfo and sees a busy CPU as busy")
    func nodeQuiet() {
        let before = NodeQuiet.cpuTicks()
        // Keep this thread busy for 600 ms: the window's busy share cannot be zero.
        let end = ContinuousClock.now + .milliseconds(600)
        var spin = 0
        while ContinuousClock.now < end { spin &+= 1 }
        let after = NodeQuiet.cpuTicks()
        #expect(before.total > 0 && after.total > before.total, "no CPU time read: \(before) \(after)")
        #expect(after.busy > before.busy, "a spinning thread was not counted busy (\(spin) spins)")
        #expect(NodeQuiet.dirtyKiB() >= 0)
        let settling = NodeQuiet.waitUntilQuiet(within: .zero, busyShare: -1)
        #expect(!settling.quiet, "a negative busy share can never be met")
        #expect(settling.description.hasPrefix("gave up after"))
    }

    @Test("CRIU stats-dump as CRIU 4.2.1 wrote it for a busybox checkpoint")
    func criuDumpStats() throws {
        let hex =
            "4059105506330957230000000a2108d1950610eff10418c10320632816300038"
            + "0f400048005004580460006800700" + "0"
        var bytes: [UInt8] = []
        var i = hex.startIndex
        while i < hex.endIndex {
            let j = hex.index(i, offsetBy: 2)
            bytes.append(UInt8(hex[i..<j], radix: 16)!)
            i = j
        }
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("zpbench-stats-\(getpid())").path
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        defer { try? FileManager.default.removeItem(atPath: path) }
        let stats = try #require(CRIUStats.read(path))
        #expect(stats.freezingMs == 101.073)
        #expect(stats.frozenMs == 80.111)
        #expect(stats.memdumpMs == 0.449)
        #expect(stats.pagesWritten == 15)
        #expect(stats.restoreMs == nil)
        #expect(CRIUStats.read(path + "-missing") == nil)
    }

    @Test("wrk --latency output parses into throughput, percentiles and errors")
    func wrkOutput() throws {
        let out = """
            Running 3s test @ http://10.77.11.2:80/
              2 threads and 16 connections
              Thread Stats   Avg      Stdev     Max   +/- Stdev
                Latency     3.01ms    4.12ms  52.10ms   91.02%
                Req/Sec     1.96k   251.33     2.40k    70.00%
              Latency Distribution
                 50%  850.00us
                 75%    2.63ms
                 90%    6.93ms
                 99%   19.01ms
              11693 requests in 3.00s, 2.71MB read
              Socket errors: connect 0, read 2, write 0, timeout 1
              Non-2xx or 3xx responses: 4
            Requests/sec:   3897.52
            Transfer/sec:    924.89KB
            """
        let s = try SteadyState(workload: "busybox", runtime: "runc", wrkOutput: out)
        #expect(s.requestsPerSecond == 3897.52)
        #expect(abs(s.p50 - 0.85) < 1e-9)
        #expect(s.p99 == 19.01)
        #expect(s.errors == 7)
        #expect(s.errorDetail.contains("timeout 1") && s.errorDetail.contains("responses: 4"))
        #expect(throws: BenchError.self) { try SteadyState(workload: "x", runtime: "runc", wrkOutput: "garbage") }
    }

    @Test("config.json edits on a real `runc spec` document")
    func ociEdits() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("zpbench-spec-\(getpid())").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try runChecked(["runc", "spec", "--bundle", dir])
        var spec = try #require(
            try JSONSerialization.jsonObject(
                with: Data(contentsOf: URL(fileURLWithPath: dir + "/config.json"))
            ) as? [String: Any]
        )
        try Bundle.edit(&spec, workload: .mariadb, uid: 101, gid: 102, criuConfigPath: "/b/criu.conf")

        let process = try #require(spec["process"] as? [String: Any])
        #expect(process["terminal"] as? Bool == false)
        #expect((process["args"] as? [String])?.contains("--innodb-use-native-aio=0") == true)
        let user = try #require(process["user"] as? [String: Any])
        #expect(user["uid"] as? Int == 101 && user["gid"] as? Int == 102)
        let rlimits = try #require(process["rlimits"] as? [[String: Any]])
        #expect(rlimits.allSatisfy { ($0["hard"] as? Int ?? .max) <= 20000 })
        let linux = try #require(spec["linux"] as? [String: Any])
        let namespaces = try #require(linux["namespaces"] as? [[String: Any]])
        let net = namespaces.filter { $0["type"] as? String == "network" }
        #expect(net.count == 1 && net[0]["path"] as? String == "/var/run/netns/zpbench-mariadb")
        #expect(namespaces.contains { $0["type"] as? String == "mount" })
        #expect(linux["cgroupsPath"] as? String == "/zpbench/mariadb")
        #expect((spec["annotations"] as? [String: String])?["org.criu.config"] == "/b/criu.conf")
        #expect((spec["root"] as? [String: Any])?["readonly"] as? Bool == false)
    }

    @Test("passwd lookup names the missing user")
    func passwd() throws {
        let scratch = try TemporaryDirectory("zpbench-passwd")
        let path = scratch.path + "/passwd"
        try "root:x:0:0:root:/root:/bin/sh\nmysql:x:101:104::/nonexistent:/bin/false\n"
            .write(toFile: path, atomically: true, encoding: .utf8)
        let (uid, gid) = try Bundle.lookupUser("mysql", passwd: path)
        #expect(uid == 101 && gid == 104)
        let error = #expect(throws: BenchError.self) { try Bundle.lookupUser("www-data", passwd: path) }
        #expect(error?.description.contains("www-data") == true)
    }

    @Test("HTTP probe: passes on 200 with the expected body, fails on other status or body, and when nothing listens")
    func httpProbe() throws {
        let server = try LoopbackHTTPServer(responses: [
            "/ok": "HTTP/1.1 200 OK\r\nContent-Length: 16\r\n\r\nhello zeropod ok",
            "/missing": "HTTP/1.1 404 Not Found\r\nContent-Length: 7\r\n\r\nzeropod",
            "/other": "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
        ])
        defer { server.close() }
        #expect(
            Probe.http(path: "/ok", host: "t", expect: "zeropod").attempt(address: "127.0.0.1", port: server.port)
                == nil
        )
        let notFound = Probe.http(path: "/missing", host: "t", expect: "zeropod").attempt(
            address: "127.0.0.1",
            port: server.port
        )
        #expect(notFound?.contains("404") == true)
        let wrongBody = Probe.http(path: "/other", host: "t", expect: "zeropod").attempt(
            address: "127.0.0.1",
            port: server.port
        )
        #expect(wrongBody?.contains("zeropod") == true)
        let closedPort = server.port
        server.close()
        var why = ""
        #expect(
            !Probe.http(path: "/ok", host: "t", expect: "zeropod")
                .poll(address: "127.0.0.1", port: closedPort, deadline: .now + .milliseconds(50), lastError: &why)
        )
        #expect(why.contains("connect"))
    }
}

/// A loopback HTTP server on an ephemeral port answering canned responses by path, one thread.
private final class LoopbackHTTPServer: Sendable {
    private let fd: Int32
    let port: UInt16
    /// Set when the listening socket has been closed (exactly once).
    private let closed = Mutex(false)

    init(responses: [String: String]) throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        self.fd = fd
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var sa = sockaddr_in()
        sa.sin_family = sa_family_t(AF_INET)
        sa.sin_addr.s_addr = inet_addr("127.0.0.1")
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &sa) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, len) == 0 && listen(fd, 16) == 0
                    && getsockname(fd, $0, &len) == 0
            }
        }
        guard bound else {
            _ = Glibc.close(fd)
            throw BenchError("loopback server: \(String(cString: strerror(errno)))")
        }
        port = UInt16(bigEndian: sa.sin_port)
        let listener = fd
        Thread {
            while true {
                let c = accept(listener, nil, nil)
                guard c >= 0 else { return }
                var buf = [UInt8](repeating: 0, count: 4096)
                let n = read(c, &buf, buf.count)
                let request = n > 0 ? String(decoding: buf[0..<n], as: UTF8.self) : ""
                let path = request.split(separator: " ").dropFirst().first.map(String.init) ?? "/"
                let reply = Array((responses[path] ?? "HTTP/1.1 500 Internal Server Error\r\n\r\n").utf8)
                _ = reply.withUnsafeBytes { write(c, $0.baseAddress, $0.count) }
                _ = Glibc.close(c)
            }
        }.start()
    }

    func close() {
        guard
            closed.withLock({ wasClosed in
                defer { wasClosed = true }
                return !wasClosed
            })
        else { return }
        shutdown(fd, Int32(SHUT_RDWR))
        _ = Glibc.close(fd)
    }
}
