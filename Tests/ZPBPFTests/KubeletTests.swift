import Foundation
import Glibc
import SystemPackage
import Testing
import ZPCore
import ZPSystem
import ZPTestSupport

@testable import ZPBPF

/// A copy of scripts/cri/kubelet-prober.py named `name` in `folder`: the kernel names a script's
/// process after its file (with the interpreter on the #! line, not through env).
private func prober(named name: String, in folder: TemporaryDirectory) throws -> String {
    let source = try String(contentsOfFile: TestPaths.packageRoot + "/scripts/cri/kubelet-prober.py", encoding: .utf8)
    let body = source.split(separator: "\n", maxSplits: 1, omittingEmptySubsequences: false).last.map(String.init) ?? ""
    let program = try folder.write(name, "#!/usr/bin/python3\n" + body)
    guard chmod(program, 0o755) == 0 else { throw LabError("chmod \(program): errno \(errno)") }
    return program
}

/// The prober named `name`, run with `ip netns exec NS` (which execs it: the name stays) until it exits.
/// - Returns: its output lines (`<time> <kind> <result>`).
private func probe(
    as name: String,
    from namespace: String,
    _ arguments: [String],
    folder: TemporaryDirectory
) throws -> [String] {
    let program = try prober(named: name, in: folder)
    let result = try run(["ip", "netns", "exec", namespace, program] + arguments, timeout: 60)
    guard result.status == 0 else { throw LabError("\(name) \(arguments): \(result.stderr)") }
    return result.stdout.split(separator: "\n").map(String.init).filter { !$0.contains(" start pid ") }
}

/// A Python HTTP server in `namespace` on `[::]:port` (dual-stack); the caller kills it.
private func httpServer(in namespace: String, port: UInt16) throws -> Process {
    let server = Process()
    server.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
    server.arguments = ["netns", "exec", namespace, "python3", "-m", "http.server", "\(port)", "--bind", "::"]
    server.standardOutput = FileHandle.nullDevice
    server.standardError = FileHandle.nullDevice
    try server.run()
    guard
        eventually(
            within: 20,
            {
                (try? run(["ip", "netns", "exec", namespace, "ss", "-Htln", "sport = :\(port)"]).stdout.isEmpty)
                    == false
            }
        )
    else {
        killAndReap(server.processIdentifier)
        throw LabError("the HTTP server in \(namespace) never listened")
    }
    return server
}

/// kubelet recognised by the process that opens the connection (decision 0040): the pod's
/// sockops program records kubelet's connections at connect time in the node's namespace (here the
/// client namespace), and neither the timestamp nor the open count moves for them; another process
/// from the very same address counts.
@Suite(.serialized, .enabled(if: Privileges.isRoot, "needs root: creates network namespaces and loads BPF programs"))
struct KubeletTests {
    @Test func kubeletConnections_neverCount_otherProcessesFromTheSameAddressDo() throws {
        let lab = Lab(index: 15)
        let pod = try lab.namespace("pod")
        let client = try lab.namespace("node")
        let a = try lab.veth(pod: pod, client: client)
        let port: UInt16 = 8090
        let server = try httpServer(in: pod, port: port)
        defer { killAndReap(server.processIdentifier) }
        let folder = try TemporaryDirectory("zpbpf-kubelet")
        let redirector = try PodRedirector(netnsPath: Lab.path(pod), options: .init(kubeletNamespace: Lab.path(client)))
        defer { redirector.close() }
        try redirector.trackPort(port)

        // kubelet over IPv4, IPv4-mapped IPv6 (AF_INET6 sockets, as on EKS) and IPv6: HTTP and TCP probes.
        var lines: [String] = []
        for (family, target) in [("4", a.pod4), ("mapped", a.pod4), ("6", a.pod6)] {
            lines += try probe(
                as: "kubelet",
                from: client,
                [target, "\(port)", "--http", "/", "--tcp", "--count", "3", "--interval", "0.1", "--family", family],
                folder: folder
            )
        }
        #expect(
            lines.count == 18 && lines.allSatisfy { $0.hasSuffix(" http 200") || $0.hasSuffix(" tcp ok") },
            "\(lines)"
        )
        #expect(
            try redirector.activity(port: port) == PortActivity(lastActivity: nil, openConnections: 0),
            "18 kubelet probes changed nothing"
        )
        #expect(try eventually { try redirector.kubeletConnections().isEmpty }, "closed connections are forgotten")

        // An open kubelet connection is recorded with its 4-tuple (the pod sees the same addresses).
        let held = Process()
        held.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
        let program = try prober(named: "k3s", in: folder)
        let heldOutput = folder.path + "/held.log"
        FileManager.default.createFile(atPath: heldOutput, contents: nil)
        held.arguments = ["netns", "exec", client, program, a.pod4, "\(port)", "--tcp", "--count", "1", "--hold", "3"]
        held.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: heldOutput))
        try held.run()
        var connected: [Substring] = []
        #expect(
            eventually(within: 20) {
                connected =
                    ((try? String(contentsOfFile: heldOutput, encoding: .utf8)) ?? "").split(separator: "\n")
                    .first { $0.contains(" tcp connected ") }?.split(separator: " ") ?? []
                return connected.count == 5
            }
        )
        let clientPort = UInt16(connected.last ?? "") ?? 0
        #expect(
            try redirector.kubeletConnections() == [
                KubeletConnection(
                    client: IPAddress(a.client4)!,
                    clientPort: clientPort,
                    server: IPAddress(a.pod4)!,
                    serverPort: port
                )
            ]
        )
        #expect(try redirector.activity(port: port)?.openConnections == 0, "the open kubelet connection is not counted")
        // The activator's check for ports that speak first (decision 0055) knows it by its 4-tuple.
        let kubelet = IPAddress(a.client4)!
        let podAddress = IPAddress(a.pod4)!
        #expect(
            try redirector.isProbeConnection(client: kubelet, clientPort: clientPort, server: podAddress, serverPort: port)
        )
        #expect(
            try !redirector.isProbeConnection(
                client: kubelet,
                clientPort: clientPort &+ 1,
                server: podAddress,
                serverPort: port
            ),
            "another connection from kubelet's address is not kubelet's"
        )
        // ... and the pod's probe sources by address, in either IPv4 form.
        try redirector.setProbeSources([IPAddress("10.9.9.9")!])
        #expect(
            try redirector.isProbeConnection(
                client: IPAddress("::ffff:10.9.9.9")!,
                clientPort: 1,
                server: podAddress,
                serverPort: port
            )
        )
        try redirector.setProbeSources([])
        held.waitUntilExit()
        #expect(try eventually { try redirector.kubeletConnections().isEmpty })

        // The same address, another process (a host-network proxy): counts.
        let other = try probe(
            as: "nginx",
            from: client,
            [a.pod4, "\(port)", "--http", "/", "--count", "1"],
            folder: folder
        )
        #expect(other.count == 1 && other[0].hasSuffix(" http 200"), "\(other)")
        #expect(
            try redirector.activity(port: port)?.lastActivity != nil,
            "another process from the node's address is activity"
        )
    }

    @Test func identificationOff_kubeletIsActivity_andNamesAreChecked() throws {
        let lab = Lab(index: 16)
        let pod = try lab.namespace("pod")
        let client = try lab.namespace("node")
        let a = try lab.veth(pod: pod, client: client)
        let port: UInt16 = 8091
        let server = try httpServer(in: pod, port: port)
        defer { killAndReap(server.processIdentifier) }
        let folder = try TemporaryDirectory("zpbpf-kubelet")
        let redirector = try PodRedirector(
            netnsPath: Lab.path(pod),
            options: .init(identifyKubelet: false, kubeletNamespace: Lab.path(client))
        )
        defer { redirector.close() }
        try redirector.trackPort(port)
        _ = try probe(as: "kubelet", from: client, [a.pod4, "\(port)", "--http", "/", "--count", "1"], folder: folder)
        #expect(try redirector.activity(port: port)?.lastActivity != nil, "learn-probe-sources = false: kubelet counts")

        // Switched on at run time: kubelet no longer moves the stamp.
        try redirector.setIdentifyKubelet(true)
        let before = try redirector.activity(port: port)?.lastActivity
        _ = try probe(
            as: "kubelet",
            from: client,
            [a.pod4, "\(port)", "--http", "/", "--tcp", "--count", "2"],
            folder: folder
        )
        #expect(try redirector.activity(port: port)?.lastActivity == before)

        // A process named kubelet in another namespace (a pod's) is not the node's kubelet.
        _ = try probe(
            as: "kubelet",
            from: pod,
            ["127.0.0.1", "\(port)", "--http", "/", "--count", "1"],
            folder: folder
        )
        #expect(
            try redirector.activity(port: port)?.lastActivity != before,
            "kubelet outside the node's namespace counts"
        )
    }

    @Test func kubeletNames_areValidated() throws {
        #expect(
            try PodRedirector.kubeletNameKeys(["kubelet"]) == [Array("kubelet".utf8) + [UInt8](repeating: 0, count: 9)]
        )
        #expect(throws: BPFError.self) { try PodRedirector.kubeletNameKeys([""]) }
        #expect(throws: BPFError.self) { try PodRedirector.kubeletNameKeys(["a-name-of-16-byte"]) }
        #expect(throws: BPFError.self) { try PodRedirector.kubeletNameKeys(Array(repeating: "k", count: 17)) }
        #expect(PodRedirector.kubeletProcessNames.allSatisfy { (1...15).contains($0.utf8.count) })
    }
}
