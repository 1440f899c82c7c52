// zpbpf-bench: figures for ZPBPF on this machine (root; creates and deletes its own namespaces).
//   swift run -c release zpbpf-bench [iterations]
// Prints medians and p90/p99 of: load + attach (PodRedirector.init), close (detach), a socket made
// in the pod netns (ZPSystem's thread + setns), setRedirect on/off, activity() reads, TCP
// connect+accept over a veth pair, direct vs redirected, and what kubelet identification costs a
// connect from the node (decision 0040): off, on for another process, on for kubelet (this
// process plays it: recorded at connect, forgotten at close), and the same with 32 more pods
// tracking the same port.
import Foundation
import Glibc
import SystemPackage
import ZPBPF
import ZPSystem

@discardableResult
func sh(_ args: String...) -> Int32 {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    p.arguments = args
    p.standardOutput = FileHandle.nullDevice
    p.standardError = FileHandle.nullDevice
    try? p.run()
    p.waitUntilExit()
    return p.terminationStatus
}

func report(_ name: String, _ samples: [Duration]) {
    let sorted = samples.sorted()
    func pct(_ p: Double) -> Double {
        let d = sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))]
        return Double(d.components.seconds) * 1e6 + Double(d.components.attoseconds) / 1e12
    }
    let label = name.padding(toLength: 34, withPad: " ", startingAt: 0)
    print(
        label
            + String(
                format: " n=%4d  median %9.1f us  p90 %9.1f us  p99 %9.1f us",
                sorted.count,
                pct(0.5),
                pct(0.9),
                pct(0.99)
            )
    )
}

func measure(_ n: Int, _ body: () throws -> Void) rethrows -> [Duration] {
    let clock = ContinuousClock()
    var out: [Duration] = []
    for _ in 0..<n { out.append(try clock.measure(body)) }
    return out
}

let iterations = CommandLine.arguments.count > 1 ? Int(CommandLine.arguments[1]) ?? 500 : 500
let pod = "zpbpf-bench-\(getpid())-pod"
let cli = "zpbpf-bench-\(getpid())-cli"
let podPath = FilePath("/var/run/netns/\(pod)")
defer {
    sh("ip", "netns", "del", pod)
    sh("ip", "netns", "del", cli)
}
for ns in [pod, cli] {
    sh("ip", "netns", "add", ns)
    sh("ip", "-n", ns, "link", "set", "lo", "up")
}
sh("ip", "link", "add", "zpbench\(getpid() % 100000)", "netns", pod, "type", "veth", "peer", "name", "c0", "netns", cli)
sh("ip", "-n", pod, "link", "set", "zpbench\(getpid() % 100000)", "name", "p0")
sh("ip", "-n", pod, "addr", "add", "10.78.0.1/24", "dev", "p0")
sh("ip", "-n", cli, "addr", "add", "10.78.0.2/24", "dev", "c0")
sh("ip", "-n", pod, "link", "set", "p0", "up")
sh("ip", "-n", cli, "link", "set", "c0", "up")

let clientNamespace = NetworkNamespace(path: FilePath("/var/run/netns/\(cli)"))
func clientConnect(port: UInt16) throws -> CInt {
    let fd = try clientNamespace.makeTCPSocket(ipv6: false).disown()  // the caller adopts it again
    var sin = sockaddr_in()
    sin.sin_family = sa_family_t(AF_INET)
    sin.sin_port = port.bigEndian
    inet_pton(AF_INET, "10.78.0.1", &sin.sin_addr)
    let rc = withUnsafePointer(to: &sin) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
        }
    }
    precondition(rc == 0, "connect: errno \(errno)")
    return fd
}

do {
    print(
        "zpbpf-bench: \(iterations) iterations; kernel \(try String(contentsOfFile: "/proc/sys/kernel/osrelease", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines))"
    )
    var closes: [Duration] = []
    let inits = try measure(max(5, iterations / 25)) {
        let r = try PodRedirector(netnsPath: podPath)
        closes.append(ContinuousClock().measure { r.close() })
    }
    report("PodRedirector.init (load+attach)", inits)
    report("PodRedirector.close (detach)", closes)
    // ZPSystem's netns runner: a thread that joins the pod netns, makes a socket, ends (what the
    // activator does per dial attempt, and ZPBPF per listener).
    let podNamespace = NetworkNamespace(path: podPath)
    report(
        "netns socket (thread+setns+socket)",
        try measure(iterations) { _ = try podNamespace.makeTCPSocket(ipv6: true) }
    )

    let redirector = try PodRedirector(netnsPath: podPath)
    defer { redirector.close() }
    let port: UInt16 = 8080
    let app = try PodRedirector.makeListener(inNamespaceAt: podPath, port: port)
    let activator = try PodRedirector.makeListener(inNamespaceAt: podPath)
    try redirector.trackPort(port)
    try redirector.registerListener(port: port, socket: activator)
    var flag = false
    report(
        "setRedirect (toggle)",
        try measure(iterations) {
            flag.toggle()
            try redirector.setRedirect(port: port, enabled: flag)
        }
    )
    report("activity(port:)", try measure(iterations) { _ = try redirector.activity(port: port) })

    func connectAccept(_ listener: borrowing OwnedDescriptor) throws -> [Duration] {
        try measure(iterations) {
            let c = OwnedDescriptor(adopting: try clientConnect(port: port))
            let s = accept(listener.rawValue, nil, nil)
            precondition(s >= 0)
            _ = OwnedDescriptor(adopting: s)  // closed at once
            _ = consume c
        }
    }
    try redirector.setRedirect(port: port, enabled: false)
    report("connect+accept, direct to app", try connectAccept(app))
    try redirector.setRedirect(port: port, enabled: true)
    report("connect+accept, redirected", try connectAccept(activator))
    try redirector.setRedirect(port: port, enabled: false)
    report("connect+accept, direct again", try connectAccept(app))

    // kubelet identification: the client namespace plays the node, this process (comm
    // "zpbpf-bench") plays kubelet when its name is listed.
    let node = FilePath("/var/run/netns/\(cli)")
    try redirector.setIdentifyKubelet(false)
    report("connect+accept, identification off", try connectAccept(app))
    let notKubelet = try PodRedirector(netnsPath: podPath, options: .init(kubeletNamespace: node))
    try notKubelet.trackPort(port)
    redirector.close()
    report("connect+accept, another process", try connectAccept(app))
    notKubelet.close()
    let asKubelet = try PodRedirector(
        netnsPath: podPath,
        options: .init(kubeletProcessNames: ["zpbpf-bench"], kubeletNamespace: node)
    )
    try asKubelet.trackPort(port)
    report("connect+accept, as kubelet", try connectAccept(app))
    let leftOver = try asKubelet.kubeletConnections()
    precondition(leftOver.isEmpty, "closed kubelet connections are forgotten: \(leftOver)")
    // 32 more pods tracking the same port (each loads its own programs): every connect from the
    // node to that port runs 33 sockops programs, and a kubelet connect is recorded in 33 maps.
    let others = (0..<32).map { "zpbpf-bench-\(getpid())-o\($0)" }
    for name in others { sh("ip", "netns", "add", name) }
    defer { for name in others { sh("ip", "netns", "del", name) } }
    func morePods(kubeletNames: [String]) throws -> [PodRedirector] {
        try others.map { name in
            let other = try PodRedirector(
                netnsPath: FilePath("/var/run/netns/\(name)"),
                options: .init(kubeletProcessNames: kubeletNames, kubeletNamespace: node)
            )
            try other.trackPort(port)
            return other
        }
    }
    var more = try morePods(kubeletNames: ["zpbpf-bench"])
    report("connect+accept, as kubelet, 33 pods", try connectAccept(app))
    asKubelet.close()
    for other in more { other.close() }
    more = try morePods(kubeletNames: PodRedirector.kubeletProcessNames)
    let anotherProcess = try PodRedirector(netnsPath: podPath, options: .init(kubeletNamespace: node))
    try anotherProcess.trackPort(port)
    report("connect+accept, other process, 33 pods", try connectAccept(app))
    anotherProcess.close()
    for other in more { other.close() }
} catch {
    print("zpbpf-bench: \(error)")
    exit(1)
}
