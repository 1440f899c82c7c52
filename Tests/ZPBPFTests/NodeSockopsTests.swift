import CZPBPF
import Foundation
import Glibc
import SystemPackage
import Testing
import ZPCore
import ZPSystem
import ZPTestSupport

@testable import ZPBPF

/// One sockops program per node (decision 0052): a cgroup takes at most 64 programs per attach
/// type, so with one per pod the 65th pod failed with E2BIG. Here 70 pods share one node object
/// (under a private pin root, so no other test's or shim's pods share it), connections are counted
/// in the first and the last pod, and the node object goes away with the last pod.
@Suite(.enabled(if: Privileges.isRoot, "needs root: creates network namespaces and loads BPF programs"))
struct NodeSockopsTests {
    @Test func seventyPods_shareOneSockopsProgram_andTheLastPodRemovesIt() throws {
        let root = FilePath("/sys/fs/bpf/zpbpf-test-\(getpid())-node")
        defer {
            for name in (try? Files.list(root)) ?? [] { PodRedirector.unpin(root.appending(name)) }
            _ = rmdir(root.string)
        }
        let lab = Lab(index: 24)
        let options = PodRedirector.Options(nodePinRoot: root)
        var pods: [String] = []
        var redirectors: [PodRedirector] = []
        for i in 0..<70 {
            let pod = try lab.namespace("p\(i)")
            pods.append(pod)
            redirectors.append(try PodRedirector(netnsPath: Lab.path(pod), options: options))
        }

        // One node directory, one sockops link, 70 pods registered.
        let directories = try Files.list(root).filter { $0.hasPrefix("n-") }
        #expect(directories.count == 1, "\(directories)")
        let directory = root.appending(try #require(directories.first))
        let linkPath = directory.appending("link_sockops").string
        let linkFD = bpf_obj_get(linkPath)
        try #require(linkFD >= 0, "\(linkPath) is a pinned link")
        let link = SharedDescriptor(OwnedDescriptor(adopting: linkFD))
        let linkID = try PodRedirector.kernelID(link)
        link.close()
        let links = try bpftoolIDs("link")
        #expect(linkID != 0 && links.contains(linkID))
        let node = try #require(NodeSockops.find(podCookie: try cookie(of: pods[0]), pinRoot: root))
        #expect(try node.podCookies().count == 70)
        #expect(NodeSockops.find(podCookie: try cookie(of: pods[69]), pinRoot: root) != nil)

        // The one program counts open connections in the first pod and in the 70th.
        for index in [0, 69] {
            let port: UInt16 = 9000
            let server = try TestSocket.listener(in: pods[index], port: port)
            try redirectors[index].trackPort(port)
            let client = try TestSocket.connect(from: pods[index], to: "127.0.0.1", port: port)
            let accepted = try #require(server.accept())
            #expect(
                try eventually { try redirectors[index].activity(port: port)?.openConnections == 1 },
                "pod \(index): the node's sockops program counted the connection"
            )
            _ = (client, accepted)
        }
        #expect(
            try redirectors[1].activity(port: 9000) == nil,
            "a pod that does not track the port has no figures"
        )
        #expect(
            try eventually { try redirectors[0].activity(port: 9000)?.openConnections == 0 },
            "closing both ends uncounts the connection"
        )

        // All but the last pod leave: the node object stays; the last one removes it.
        for redirector in redirectors.dropLast() { redirector.close() }
        #expect(try node.podCookies().count == 1)
        #expect(access(directory.string, F_OK) == 0)
        redirectors.last?.close()
        #expect(access(directory.string, F_OK) != 0, "the last pod removed the node's pins")
        #expect(try eventually { try !bpftoolIDs("link").contains(linkID) }, "the sockops link detached")
    }

    @Test func podOfADeadProcess_isCollected_whenAnotherNodeObjectIsOpened() throws {
        let root = FilePath("/sys/fs/bpf/zpbpf-test-\(getpid())-gc")
        defer {
            for name in (try? Files.list(root)) ?? [] { PodRedirector.unpin(root.appending(name)) }
            _ = rmdir(root.string)
        }
        let lab = Lab(index: 25)
        let pod = try lab.namespace("pod")
        let other = try lab.namespace("other")
        // A node object whose only pod belongs to a process that is gone: registered here, then its
        // owner entry rewritten to a pid that cannot be alive (as a SIGKILLed shim leaves it).
        let stale = try PodRedirector(
            netnsPath: Lab.path(pod),
            options: .init(kubeletNamespace: Lab.path(other), nodePinRoot: root)
        )
        let podCookie = try cookie(of: pod)
        let staleNode = try #require(NodeSockops.find(podCookie: podCookie, pinRoot: root))
        let staleDirectory = try #require(staleNode.directory)
        var key = podCookie
        var owner: (UInt32, UInt32, UInt64) = (0x7fff_fff0, 0, 1)
        #expect(bpf_map_update_elem(staleNode.maps.podOwner.rawValue, &key, &owner, UInt64(BPF_EXIST)) == 0)

        // Another node setting (the default node namespace) opens a second node object; the first
        // one, with only a dead pod, is removed on the way.
        let live = try PodRedirector(netnsPath: Lab.path(other), options: .init(nodePinRoot: root))
        defer { live.close() }
        #expect(access(staleDirectory.string, F_OK) != 0, "the dead pod's node object was removed")
        #expect(try Files.list(root).filter { $0.hasPrefix("n-") }.count == 1)
        stale.close()  // its node object is gone: nothing left to do, nothing fails
    }

    @Test func lastLivePodLeaving_dropsTheDeadOnes_andRemovesTheNodeObject() throws {
        let root = FilePath("/sys/fs/bpf/zpbpf-test-\(getpid())-last")
        defer {
            for name in (try? Files.list(root)) ?? [] { PodRedirector.unpin(root.appending(name)) }
            _ = rmdir(root.string)
        }
        let lab = Lab(index: 26)
        let podA = try lab.namespace("a")
        let podB = try lab.namespace("b")
        let a = try PodRedirector(netnsPath: Lab.path(podA), options: .init(nodePinRoot: root))
        let b = try PodRedirector(netnsPath: Lab.path(podB), options: .init(nodePinRoot: root))
        let cookieA = try cookie(of: podA)
        let node = try #require(NodeSockops.find(podCookie: cookieA, pinRoot: root))
        let directory = try #require(node.directory)
        #expect(try node.podCookies().count == 2)
        // Pod A's process "dies" (a SIGKILLed shim cannot unregister): its owner entry names a pid
        // that cannot be alive.
        var key = cookieA
        var owner: (UInt32, UInt32, UInt64) = (0x7fff_fff0, 0, 1)
        #expect(bpf_map_update_elem(node.maps.podOwner.rawValue, &key, &owner, UInt64(BPF_EXIST)) == 0)
        b.close()
        #expect(access(directory.string, F_OK) != 0, "the last live pod removed the node object, dead pod and all")
        a.close()  // the node object is gone: nothing left to do, nothing fails
    }

    /// The netns cookie of a lab namespace (SO_NETNS_COOKIE of a socket made inside it).
    private func cookie(of namespace: String) throws -> UInt64 {
        try NetworkNamespace(path: Lab.path(namespace)).perform { () -> Result<UInt64, SystemError> in
            Result { () throws(SystemError) -> UInt64 in
                let probe = try OwnedDescriptor.socket(domain: AF_INET, type: CInt(SOCK_DGRAM.rawValue), subject: "")
                var cookie: UInt64 = 0
                var length = socklen_t(8)
                try systemCall("getsockopt(SO_NETNS_COOKIE)", namespace) {
                    getsockopt(probe.rawValue, SOL_SOCKET, 71, &cookie, &length)
                }
                return cookie
            }
        }.get()
    }
}
