import Foundation
import SystemPackage
import Testing
import ZPSystem

@testable import ZPCheckpoint

/// True when the tests run as root (CRIU, netns and runc need it).
let isRoot = getuid() == 0

/// Runs a program and returns its stdout; throws when it exits non-zero.
@discardableResult
func runCapturing(_ path: String, _ args: [String], allowFailure: Bool = false) throws -> [UInt8] {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: path)
    p.arguments = args
    let out = Pipe()
    let err = Pipe()
    p.standardOutput = out
    p.standardError = err
    p.standardInput = FileHandle.nullDevice
    try p.run()
    let data = out.fileHandleForReading.readDataToEndOfFile()
    let errData = err.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    if p.terminationStatus != 0 && !allowFailure {
        throw TestFailure("\(path) \(args.joined(separator: " ")) exited \(p.terminationStatus): "
            + String(decoding: errData, as: UTF8.self) + String(decoding: data, as: UTF8.self))
    }
    return Array(data)
}

/// Runs a shell command and returns its stdout as text.
@discardableResult
func sh(_ command: String, allowFailure: Bool = false) throws -> String {
    String(decoding: try runCapturing("/bin/sh", ["-c", command], allowFailure: allowFailure), as: UTF8.self)
}

/// A plain error with a message, for test helpers.
struct TestFailure: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}

/// Polls `condition` every 10 ms until it holds or `timeout` passes.
func waitUntil(timeout: Duration = .seconds(20), _ condition: () -> Bool) -> Bool {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if condition() { return true }
        usleep(10_000)
    }
    return condition()
}

/// A unique name with the module prefix, e.g. zpck-proc-1a2b3c.
func uniqueName(_ what: String) -> String {
    "zpck-\(what)-\(String(UInt32.random(in: 0...UInt32.max), radix: 36))"
}

/// A network namespace created for one test (`ip netns add`), loopback up; deleted on deinit.
final class TestNetns {
    let name: String
    var path: FilePath { FilePath("/run/netns/\(name)") }

    init(_ what: String) throws {
        name = uniqueName(what)
        try sh("ip netns add \(name) && ip -n \(name) link set lo up")
    }

    deinit { _ = try? sh("ip netns delete \(name)", allowFailure: true) }
}

/// A scratch directory under /tmp (tmpfs or not), removed on deinit.
final class TempDir {
    let path: FilePath
    init(_ what: String) throws {
        path = FilePath("/tmp/\(uniqueName(what))")
        try sh("mkdir -p '\(path)'")
    }
    deinit { _ = try? sh("rm -rf '\(path)'", allowFailure: true) }
}

/// Whether `pid` exists and is not a zombie.
func isAlive(_ pid: Int32) -> Bool {
    guard kill(pid, 0) == 0 else { return false }
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
          let close = stat.lastIndex(of: ")") else { return false }
    let state = stat[stat.index(close, offsetBy: 2)]
    return state != "Z" && state != "X"
}

/// Kills and reaps a child (or just kills a non-child).
func killAndReap(_ pid: Int32) {
    kill(pid, SIGKILL)
    var status: Int32 = 0
    _ = waitUntil(timeout: .seconds(10)) { waitpid(pid, &status, WNOHANG) != 0 || !isAlive(pid) }
}

/// A python TCP server answering HTTP with an in-memory request counter: "count=N pid=P".
/// `touchMiB` allocates and writes that much memory before listening.
func counterServerScript(port: UInt16, touchMiB: Int = 0) -> String {
    """
    import os, socket
    mem = bytearray(\(touchMiB) << 20)
    for i in range(0, len(mem), 4096):
        mem[i] = 1
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", \(port)))
    s.listen(64)
    n = 0
    while True:
        c, _ = s.accept()
        try:
            c.recv(4096)
            n += 1
            b = ("count=%d pid=%d" % (n, os.getpid())).encode()
            c.sendall(b"HTTP/1.0 200 OK\\r\\nContent-Length: %d\\r\\n\\r\\n" % len(b) + b)
        finally:
            c.close()
    """
}

/// Starts the counter server in its own session inside `netns`, stdio on /dev/null; returns its pid
/// (a child of the test process) once it answers.
func startCounterServer(netns: TestNetns, port: UInt16, touchMiB: Int = 0) throws -> Int32 {
    let devnull = SharedDescriptor(try OwnedDescriptor.open("/dev/null", O_RDWR))
    let pid = try ChildProcess.spawn("/usr/bin/setsid",
                                     arguments: ["/usr/bin/nsenter", "--net=\(netns.path)", "/usr/bin/python3", "-c",
                                                 counterServerScript(port: port, touchMiB: touchMiB)],
                                     stdin: devnull, stdout: devnull, stderr: devnull)
    let up = waitUntil(timeout: .seconds(30)) { (try? NetworkNamespace.httpGet(netns: netns.path, port: port)) != nil }
    guard up else {
        killAndReap(pid)
        throw TestFailure("counter server on port \(port) in \(netns.name) did not come up")
    }
    return pid
}

/// GET / and parse "count=N pid=P".
func counter(netns: TestNetns, port: UInt16) throws -> (count: Int, pid: Int32) {
    let r = try NetworkNamespace.httpGet(netns: netns.path, port: port)
    var count = -1, pid: Int32 = -1
    for part in r.body.split(separator: " ") {
        let kv = part.split(separator: "=")
        if kv.count == 2 && kv[0] == "count" { count = Int(kv[1]) ?? -1 }
        if kv.count == 2 && kv[0] == "pid" { pid = Int32(kv[1]) ?? -1 }
    }
    return (count, pid)
}
