import Foundation
import ZPCore

#if canImport(Glibc)
import Glibc
#endif

/// A loopback TCP port nobody listens on right now (bound and released).
public func freeLoopbackPort() -> Int {
    let s = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(s) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    _ = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(s, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(s, $0, &length) }
    }
    return Int(UInt16(bigEndian: address.sin_port))
}

/// A node of a migration test: its folders (run-dir, state-dir, node.conf) and its
/// `zeropod-manager -migration` process on them, with its own pod IP (the address the manager's
/// leaf certificate names): a loopback address, or with `netns` the node's address on a
/// ``MigrationTestNetwork`` bridge, the manager then running in that namespace as in its pod.
public struct MigrationTestNode {
    /// The node name (`NODE_NAME`).
    public let name: String
    /// The manager's pod IP (`POD_IP`).
    public let podIP: String
    /// The node's scratch folder.
    public let folder: String
    /// The node's run-dir and state-dir.
    public let layout: NodeLayout
    /// The node.conf the node's shims and manager read.
    public let nodeConfig: String
    /// The manager's metrics port on ``podIP``.
    public let metricsPort = freeLoopbackPort()
    /// The manager's network namespace (its pod's); nil: the host's.
    public let netns: TestNetns?

    /// Makes `<scratch>/<name>` with the node's folders and node.conf.
    /// - Parameter netns: the namespace the manager runs in (`ip netns exec`); its address on the
    ///   test's bridge is `podIP`.
    public init(name: String, podIP: String, scratch: String, netns: TestNetns? = nil) throws {
        self.name = name
        self.podIP = podIP
        self.netns = netns
        folder = scratch + "/" + name
        layout = NodeLayout(runDirectory: folder + "/run", stateDirectory: folder + "/state")
        nodeConfig = folder + "/node.conf"
        try FileManager.default.createDirectory(atPath: layout.runDirectory, withIntermediateDirectories: true)
        try "run-dir = \(layout.runDirectory)\nstate-dir = \(layout.stateDirectory)\n".write(
            toFile: nodeConfig,
            atomically: true,
            encoding: .utf8
        )
    }

    /// Starts `zeropod-manager -migration` for this node, logging to `<folder>/manager.log`; in
    /// ``netns`` when set (`ip netns exec` execs the manager: the process is the manager's).
    public func startManager(kubeconfig: String) throws -> Process {
        let manager = Process()
        let binary = TestPaths.buildDirectory + "/zeropod-manager"
        manager.executableURL = URL(fileURLWithPath: netns == nil ? binary : "/usr/sbin/ip")
        manager.arguments = (netns.map { ["netns", "exec", $0.name, binary] } ?? []) + [
            "-migration", "-metrics-addr=\(podIP):\(metricsPort)",
            "-node-server-addr=\(podIP):\(freeLoopbackPort())", "-kubeconfig=\(kubeconfig)",
            "-node-config=\(nodeConfig)", "-migration-claim-timeout=20s", "-migration-servers-timeout=60s",
        ]
        manager.environment = ["NODE_NAME": name, "POD_IP": podIP, "PATH": "/usr/bin:/bin"]
        _ = FileManager.default.createFile(atPath: folder + "/manager.log", contents: nil)
        manager.standardOutput = FileHandle(forWritingAtPath: folder + "/manager.log")
        manager.standardError = FileHandle(forWritingAtPath: folder + "/manager.log")
        try manager.run()
        return manager
    }

    /// The manager's metrics page (empty when it does not answer).
    public func managerMetrics() -> String {
        guard
            let result = try? run(["curl", "-s", "-m", "5", "http://\(podIP):\(metricsPort)/metrics"], timeout: 15),
            result.status == 0
        else { return "" }
        return result.stdout
    }

    /// Whether the manager's `zeropod_running` gauge of container `container` of pod `pod` says
    /// `running` (what it decides a Migration's first phase from).
    public func managerSees(pod: String, container: String, running: Bool) -> Bool {
        managerMetrics().split(separator: "\n").contains { line in
            line.hasPrefix("zeropod_running{") && line.contains("container=\"\(container)\"")
                && line.contains("pod=\"\(pod)\"")
                && (line.hasSuffix(running ? " 1" : " 0") || line.hasSuffix(running ? " 1.0" : " 0.0"))
        }
    }

    /// The last lines of the manager's log.
    public func managerLog(tail: Int = 25) -> String {
        ((try? String(contentsOfFile: folder + "/manager.log", encoding: .utf8)) ?? "").split(separator: "\n")
            .suffix(tail).joined(separator: "\n")
    }
}
