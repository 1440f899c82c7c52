import Logging
import Synchronization
import SystemPackage
import ZPBPF
import ZPCore

/// The pod redirectors of this shim (one shim serves one pod group), by network namespace path:
/// created at the first Create of a scale-down container (loading and attaching the programs
/// takes tens of milliseconds: never on the scale-down path), removed with the last container.
final class PodNetworks: Sendable {
    private struct Entry {
        var redirector: PodRedirector
        var users: Set<String>
    }

    private let entries = Mutex<[String: Entry]>([:])

    /// The redirector for `netnsPath`, created if this is its first container.
    /// - Throws: `BPFError` when the programs cannot be loaded or attached.
    func acquire(netnsPath: String, container: String, node: NodeConfig) throws(BPFError) -> PodRedirector {
        if let existing = entries.withLock({ table -> PodRedirector? in
            table[netnsPath]?.users.insert(container)
            return table[netnsPath]?.redirector
        }) {
            return existing
        }
        let redirector = try PodRedirector(netnsPath: FilePath(netnsPath), options: Self.options(node))
        let winner = entries.withLock { table -> PodRedirector in
            if let other = table[netnsPath] {
                table[netnsPath]?.users.insert(container)
                return other.redirector
            }
            table[netnsPath] = Entry(redirector: redirector, users: [container])
            return redirector
        }
        if winner !== redirector { redirector.remove() }
        return winner
    }

    /// The redirector's settings from the node settings: `probe-source-addresses`,
    /// `loopback-is-activity` and `learn-probe-sources` (kubelet's own connections, recognised by
    /// the process that opens them, never count; decision 0040).
    static func options(_ node: NodeConfig) -> PodRedirector.Options {
        PodRedirector.Options(
            probeSources: node.probeSourceAddresses, ignoreLoopback: !node.loopbackIsActivity,
            identifyKubelet: node.learnProbeSources)
    }

    /// Drops `container` from its pod; the last one removes the redirector (links, maps, pins).
    func release(netnsPath: String, container: String) {
        let last = entries.withLock { table -> PodRedirector? in
            guard var entry = table[netnsPath] else { return nil }
            entry.users.remove(container)
            if entry.users.isEmpty {
                table[netnsPath] = nil
                return entry.redirector
            }
            table[netnsPath] = entry
            return nil
        }
        last?.remove()
    }
}
