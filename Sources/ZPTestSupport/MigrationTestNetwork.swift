// The "pod network" of a migration test bed (issue 16): each node's manager runs in a network
// namespace of its own, as in its DaemonSet pod (no hostNetwork), with a node address on a bridge
// shared by the nodes; the host side of the bridge has an address too (where the API double
// listens). The shims and containerds stay in the host's namespace, as on a real node, so the
// manager and its shims meet only through the node's run folder.
import Foundation
import Synchronization

/// A bridge in the host's namespace with one network namespace per node on it
/// (`10.87.<k>.0/24`: the host side `.254`, the nodes `.1`, `.2`, ...). Removed by ``delete()`` or
/// on deinit.
public final class MigrationTestNetwork: Sendable {
    /// The bridge's name.
    public let bridge: String
    /// The host side's address on the bridge (reachable from every node's namespace).
    public let hostAddress: String
    private let prefix: String
    private let suffix: String
    private let namespaces = Mutex<[TestNetns]>([])
    private let deleted = Atomic<Bool>(false)

    /// Makes the bridge, on a `10.87.<k>.0/24` the host does not use yet (``unusedSubnet(_:)``).
    /// - Throws: ``LabError`` when `ip` fails (not root, no iproute2).
    public init() throws {
        prefix = try unusedSubnet("10.87.")
        suffix = String(String(UInt32.random(in: 0...UInt32.max), radix: 36).suffix(5))
        bridge = "zpbr" + suffix
        hostAddress = prefix + "254"
        _ = try? run(["ip", "link", "del", bridge], timeout: 20)
        try sh(["ip", "link", "add", bridge, "type", "bridge"], timeout: 20)
        do {
            try sh(["ip", "addr", "add", hostAddress + "/24", "dev", bridge], timeout: 20)
            try sh(["ip", "link", "set", bridge, "up"], timeout: 20)
        } catch {
            delete()
            throw error
        }
    }

    deinit { delete() }

    /// Adds node number `index` (1...250): a namespace with `eth0` at `10.87.<k>.<index>/24` on the
    /// bridge, and loopback up.
    /// - Returns: the namespace and the node's address.
    /// - Throws: ``LabError`` when `ip` fails.
    public func addNode(_ index: Int) throws -> (netns: TestNetns, address: String) {
        let netns = try TestNetns(exactName: "zpnode\(index)-" + suffix)
        namespaces.withLock { $0.append(netns) }
        let host = "zpv\(index)" + suffix
        let address = prefix + "\(index)"
        _ = try? run(["ip", "link", "del", host], timeout: 20)
        try sh(["ip", "link", "add", host, "type", "veth", "peer", "name", "eth0", "netns", netns.name], timeout: 20)
        try sh(["ip", "link", "set", host, "master", bridge], timeout: 20)
        try sh(["ip", "link", "set", host, "up"], timeout: 20)
        try netns.ip(["addr", "add", address + "/24", "dev", "eth0"])
        try netns.ip(["link", "set", "eth0", "up"])
        return (netns, address)
    }

    /// Deletes the namespaces (and their veths) and the bridge, once.
    public func delete() {
        guard !deleted.exchange(true, ordering: .acquiringAndReleasing) else { return }
        for netns in namespaces.withLock({ $0 }) { netns.delete() }
        _ = try? run(["ip", "link", "del", bridge], timeout: 20)
    }
}
