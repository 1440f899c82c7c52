import Logging
import Synchronization
import SystemPackage
import ZPBPF
import ZPCore
import ZPSystem

/// The pod redirectors of this shim (one shim serves one pod group), by network namespace path:
/// created at the first Create of a scale-down container (loading and attaching the programs
/// takes tens of milliseconds: never on the scale-down path), removed with the last container.
/// The load itself (the verifier's part) is done ahead by ``preload()`` when the shim starts
/// (decision 0037), so that Create only attaches.
final class PodNetworks: Sendable {
    private struct Entry {
        var redirector: PodRedirector
        var users: Set<String>
        /// Each container's tag in the pod's maps and wake events (decision 0045).
        var owners: [String: UInt32] = [:]
        var nextOwner: UInt32 = 1
    }

    /// The programs loaded ahead for the next pod: none, being loaded (with the Creates waiting
    /// for them), or ready.
    private enum Preload {
        case idle
        case loading([CheckedContinuation<PodRedirector.Programs?, Never>])
        case ready(PodRedirector.Programs)
    }

    private let entries = Mutex<[String: Entry]>([:])
    /// Where each container's redirector setup spent its time, until its Create logs it
    /// (``takeSetup(container:)``); none for a container that joined an existing redirector.
    private let setups = Mutex<[String: String]>([:])

    /// The setup figures of `container`'s redirector, once (nil when its Create made none).
    func takeSetup(container: String) -> String? { setups.withLock { $0.removeValue(forKey: container) } }
    private let preloaded = Mutex<Preload>(.idle)

    /// Loads one copy of the programs for the next pod, unless one is loaded or loading. A
    /// failure is not reported here: the Create that needs the programs loads them again and
    /// reports its own error.
    func preload() {
        let start = preloaded.withLock { state -> Bool in
            guard case .idle = state else { return false }
            state = .loading([])
            return true
        }
        guard start else { return }
        let programs = try? PodRedirector.Programs.load()
        let waiters = preloaded.withLock { state -> [CheckedContinuation<PodRedirector.Programs?, Never>] in
            guard case .loading(let waiters) = state else { return [] }
            if let programs, waiters.isEmpty { state = .ready(programs) } else { state = .idle }
            return waiters
        }
        // The first waiter gets the programs; any other loads its own (another pod).
        for (index, waiter) in waiters.enumerated() { waiter.resume(returning: index == 0 ? programs : nil) }
    }

    /// The programs loaded ahead, waiting for a load under way; nil when none was started.
    private func takePreloaded() async -> PodRedirector.Programs? {
        await withCheckedContinuation { (waiter: CheckedContinuation<PodRedirector.Programs?, Never>) in
            let now = preloaded.withLock { state -> PodRedirector.Programs?? in
                switch state {
                case .idle:
                    return .some(nil)
                case .ready(let programs):
                    state = .idle
                    return .some(programs)
                case .loading(var waiters):
                    waiters.append(waiter)
                    state = .loading(waiters)
                    return .none
                }
            }
            if let now { waiter.resume(returning: now) }
        }
    }

    /// The redirector for `netnsPath`, created if this is its first container (with the
    /// programs loaded ahead when there are some).
    /// - Throws: `BPFError` when the programs cannot be loaded or attached.
    func acquire(netnsPath: String, container: String, node: NodeConfig) async throws(BPFError) -> PodRedirector {
        if let existing = entries.withLock({ table -> PodRedirector? in
            table[netnsPath]?.users.insert(container)
            return table[netnsPath]?.redirector
        }) {
            return existing
        }
        let waitStart = ContinuousClock.now
        let programs = await takePreloaded()
        let waited = waitStart.duration(to: .now)
        let redirector = try PodRedirector(
            netnsPath: FilePath(netnsPath),
            options: Self.options(node),
            programs: programs
        )
        let t = redirector.setupTimings
        setups.withLock {
            $0[container] =
                "preload wait \(milliseconds(waited)), load \(milliseconds(t.load)), attach \(milliseconds(t.attach)), node registration \(milliseconds(t.nodeRegistration))"
        }
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

    /// The tag of `container` in its pod's maps and wake events: unique among the pod's
    /// containers, the same for the container's life. Nil when the container holds no redirector.
    func owner(netnsPath: String, container: String) -> UInt32? {
        entries.withLock { table -> UInt32? in
            guard var entry = table[netnsPath], entry.users.contains(container) else { return nil }
            if let known = entry.owners[container] { return known }
            let tag = entry.nextOwner
            entry.nextOwner &+= 1
            entry.owners[container] = tag
            table[netnsPath] = entry
            return tag
        }
    }

    /// The redirector's settings from the node settings: `probe-source-addresses`,
    /// `loopback-is-activity` and `learn-probe-sources` (kubelet's own connections, recognised by
    /// the process that opens them, never count; decision 0040).
    static func options(_ node: NodeConfig) -> PodRedirector.Options {
        PodRedirector.Options(
            probeSources: node.probeSourceAddresses,
            ignoreLoopback: !node.loopbackIsActivity,
            identifyKubelet: node.learnProbeSources
        )
    }

    /// Drops `container` from its pod; the last one removes the redirector (links, maps, pins).
    func release(netnsPath: String, container: String) {
        setups.withLock { $0[container] = nil }
        let last = entries.withLock { table -> PodRedirector? in
            guard var entry = table[netnsPath] else { return nil }
            entry.users.remove(container)
            entry.owners[container] = nil
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
