import Testing
import ZPCore

// NodeLayout: every path the shim, its delete command, the driver and the CLI derive from
// `run-dir` and `state-dir`, and the run-dir length that keeps status sockets addressable.

@Test func nodeLayout_defaults_matchTheDocumentedFolders() {
    let layout = NodeLayout(NodeConfig())
    #expect(layout.statusSocketDirectory == "/run/zeropod-swift/s")
    #expect(layout.statusSocket(forShimSocket: "unix:///run/containerd/s/abc123") == "/run/zeropod-swift/s/abc123.sock")
    #expect(layout.statusSocket(forShimSocket: "/run/containerd/s/abc123") == "/run/zeropod-swift/s/abc123.sock")
    #expect(layout.wakeGroupDirectory == "/run/zeropod-swift/wake-groups")
    #expect(layout.nodeSocket == "/run/zeropod-swift/node.sock")
    #expect(layout.imageRoot == "/var/lib/zeropod-swift/i")
    #expect(layout.imageDirectory(containerdNamespace: "k8s.io") == "/var/lib/zeropod-swift/i/k8s.io")
    #expect(
        layout.imageDirectory(containerdNamespace: "k8s.io", containerID: "c1") == "/var/lib/zeropod-swift/i/k8s.io/c1"
    )
    #expect(NodeLayout() == layout && NodeConfig().layout == layout)
}

@Test func nodeLayout_followsTheConfiguredFolders() throws {
    let config = try NodeConfig(parsing: "run-dir = /run/zp\nstate-dir = /srv/zp\n")
    let layout = config.layout
    #expect(layout == NodeLayout(runDirectory: "/run/zp", stateDirectory: "/srv/zp"))
    #expect(layout.statusSocket(forShimSocket: "/run/containerd/s/h") == "/run/zp/s/h.sock")
    #expect(layout.wakeGroupDirectory == "/run/zp/wake-groups")
    #expect(layout.imageDirectory(containerdNamespace: "default", containerID: "web") == "/srv/zp/i/default/web")
}

@Test func nodeLayout_isStatusSocket_onlyForSockFilesDirectlyInTheFolder() {
    let layout = NodeLayout(runDirectory: "/run/zp")
    #expect(layout.isStatusSocket("/run/zp/s/abc.sock"))
    #expect(!layout.isStatusSocket("/run/zp/s/abc.txt"))
    #expect(!layout.isStatusSocket("/run/zp/s/x/abc.sock"))
    #expect(!layout.isStatusSocket("/run/zp/abc.sock"))
    #expect(!layout.isStatusSocket("/run/zpx/s/abc.sock"))
}

@Test func runDirectory_longestAllowed_keepsAStatusSocketReachable() throws {
    // SwiftNIO connects to unix socket paths of at most 103 bytes; shim socket names are 64 hex digits.
    #expect(NodeLayout.maximumRunDirectoryLength == 31)
    let longest = "/" + String(repeating: "r", count: NodeLayout.maximumRunDirectoryLength - 1)
    let config = try NodeConfig(parsing: "run-dir = \(longest)")
    let socket = config.layout.statusSocket(forShimSocket: "/run/containerd/s/" + String(repeating: "a", count: 64))
    #expect(socket.utf8.count == 103)
    // Both ends' page sockets (decisions 0063, 0064) are as long.
    let id = String(repeating: "b", count: 64)
    #expect(config.layout.pageSocket(containerID: id).utf8.count == 103)
    #expect(config.layout.targetPageSocket(containerID: id) == longest + "/t/" + id + ".sock")
    #expect(config.layout.targetPageSocket(containerID: id).utf8.count == 103)
    #expect(
        throws: ConfigError(
            key: "run-dir",
            value: longest + "r",
            reason: .invalidPath(
                "is 32 bytes long; at most 31, so that <run-dir>/s/<64-character shim name>.sock stays within the 103 bytes "
                    + "a unix socket client (SwiftNIO) accepts"
            ),
            location: "node.conf:1"
        )
    ) {
        try NodeConfig(parsing: "run-dir = \(longest)r", source: "node.conf")
    }
}
