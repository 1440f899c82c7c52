import Foundation
import SystemPackage
import Testing
import ZPSystem
import ZPTestSupport

@testable import ZPCheckpoint

/// True when the tests run as root (CRIU, netns and runc need it).
let isRoot = Privileges.isRoot

/// CRIU's FEATURE_CHECK answers for mem_track and lazy_pages on this machine, asked once (nil when
/// not root or when CRIU could not be asked): the conditions of the tests that need either.
let criuFeaturesHere: CRIUFeatures? =
    isRoot ? try? Checkpointer().features(CRIUFeatures(memoryTracking: true, lazyPages: true)) : nil

/// Whether CRIU can track dirty memory here (pre-dump and incremental dumps need soft-dirty pages).
let memoryTrackingHere = criuFeaturesHere?.memoryTracking == true

/// Whether CRIU reports that dirty memory tracking is missing here (the refusal paths run).
let memoryTrackingMissingHere = criuFeaturesHere?.memoryTracking == false

/// Whether CRIU can restore lazily (userfaultfd) here.
let lazyPagesHere = criuFeaturesHere?.lazyPages == true

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
    try startPythonServer(
        netns: netns,
        port: port,
        script: counterServerScript(port: port, touchMiB: touchMiB),
        name: "counter server"
    )
}

/// Starts `python3 -c script` (an HTTP server on `port`) in its own session inside `netns`, stdio on
/// /dev/null; returns its pid (a child of the test process) once it answers a GET.
func startPythonServer(netns: TestNetns, port: UInt16, script: String, name: String) throws -> Int32 {
    let devnull = SharedDescriptor(try OwnedDescriptor.open("/dev/null", O_RDWR))
    let pid = try ChildProcess.spawn(
        "/usr/bin/setsid",
        arguments: ["/usr/bin/nsenter", "--net=\(netns.filePath)", "/usr/bin/python3", "-c", script],
        stdin: devnull,
        stdout: devnull,
        stderr: devnull
    )
    let up = eventually(within: 30, every: 0.01) {
        (try? NetworkNamespace.httpGet(netns: netns.filePath, port: port)) != nil
    }
    guard up else {
        killAndReap(pid)
        throw LabError("\(name) on port \(port) in \(netns.name) did not come up")
    }
    return pid
}

/// GET / and parse "count=N pid=P".
func counter(netns: TestNetns, port: UInt16) throws -> (count: Int, pid: Int32) {
    let r = try NetworkNamespace.httpGet(netns: netns.filePath, port: port)
    var count = -1
    var pid: Int32 = -1
    for part in r.body.split(separator: " ") {
        let kv = part.split(separator: "=")
        if kv.count == 2 && kv[0] == "count" { count = Int(kv[1]) ?? -1 }
        if kv.count == 2 && kv[0] == "pid" { pid = Int32(kv[1]) ?? -1 }
    }
    return (count, pid)
}

/// The first child of `pid`: the forked process of a test's two-process tree.
func forkedChild(of pid: Int32) throws -> Int32 {
    try #require(
        Int32(try shell("pgrep -P \(pid)").split(separator: "\n").first.map(String.init) ?? ""),
        "no forked child of \(pid)"
    )
}

/// Dumps the tree of `root` and its forked `child` into `images` with zero pages left out, then waits
/// until both are gone and reaped (the child by whoever inherited it), before their pids are restored.
func dumpForkedPair(root: Int32, child: Int32, into images: TemporaryDirectory) throws {
    _ = try Checkpointer(leavesZeroPagesOut: true).dump(pid: root, imagesDir: images.filePath)
    var status: Int32 = 0
    #expect(
        eventually(within: 30, every: 0.01) {
            _ = waitpid(root, &status, WNOHANG)
            _ = waitpid(child, &status, WNOHANG)
            return kill(root, 0) != 0 && kill(child, 0) != 0
        },
        "dumped processes are gone"
    )
}

/// Bytes of the `pages-*.img` files in `images` (what a dump wrote of the processes' memory).
func pageImageBytes(_ images: FilePath) throws -> Int {
    let names = try FileManager.default.contentsOfDirectory(atPath: images.string)
    return try names.filter { $0.hasPrefix("pages-") && $0.hasSuffix(".img") }.reduce(0) { total, name in
        let attributes = try FileManager.default.attributesOfItem(atPath: images.appending(name).string)
        return total + ((attributes[.size] as? NSNumber)?.intValue ?? 0)
    }
}
