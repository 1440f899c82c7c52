import Logging
import NIOPosix
import Synchronization
import SystemPackage
import ZPBPF
import ZPCore
import ZPSystem

/// The pod redirectors of this shim (one shim serves one pod group), by network namespace path:
/// set up for the first scale-down container of a pod, removed with the last one. Create only
/// joins the pod (``join(netnsPath:container:)``) and starts the setup as a background job
/// (``setUp(_:netnsPath:node:)``) that runs beside `runc create` (decision 0060); the load itself
/// (the verifier's part) is done ahead by ``preload()`` when the shim starts (decision 0037).
final class PodNetworks: Sendable {
    private struct Entry {
        var setup: RedirectorSetup
        var users: Set<String>
        /// Each container's tag in the pod's maps and wake events (decision 0045).
        var owners: [String: UInt32] = [:]
        var nextOwner: UInt32 = 1
    }

    /// What a container gets when it joins its pod.
    struct Membership: Sendable {
        /// The pod's redirector setup, pending or settled, shared by the pod's containers.
        var setup: RedirectorSetup
        /// The container's tag in the pod's maps and wake events: unique among the pod's
        /// containers, the same for the container's life.
        var owner: UInt32
        /// The container is the pod's first: its Create must start ``setUp(_:netnsPath:node:)``.
        var startsSetup: Bool
    }

    /// The programs loaded ahead for the next pod: none, being loaded (with the Creates waiting
    /// for them), or ready.
    private enum Preload {
        case idle
        case loading([CheckedContinuation<PodRedirector.Programs?, Never>])
        case ready(PodRedirector.Programs)
    }

    private let entries = Mutex<[String: Entry]>([:])
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

    /// Joins `container` to the pod at `netnsPath`: the pod's setup (pending or settled), or a
    /// new pending one that the caller must start with ``setUp(_:netnsPath:node:)``.
    func join(netnsPath: String, container: String) -> Membership {
        entries.withLock { table -> Membership in
            let startsSetup = table[netnsPath] == nil
            var entry = table[netnsPath] ?? Entry(setup: RedirectorSetup(), users: [])
            entry.users.insert(container)
            let owner = entry.owners[container] ?? entry.nextOwner
            if entry.owners[container] == nil {
                entry.owners[container] = owner
                entry.nextOwner &+= 1
            }
            table[netnsPath] = entry
            return Membership(setup: entry.setup, owner: owner, startsSetup: startsSetup)
        }
    }

    /// Sets up the redirector of a pod that ``join(netnsPath:container:)`` started: waits for the
    /// programs loaded ahead (or loads them), attaches and registers them on a thread of NIO's
    /// pool (the kernel's RCU waits block it for tens of milliseconds), and settles `setup`. A
    /// failed setup leaves the pod, so that its next container tries again.
    /// - Returns: where the time went, or why it failed, for the log.
    func setUp(_ setup: RedirectorSetup, netnsPath: String, node: NodeConfig) async -> Result<String, any Error> {
        let waitStart = ContinuousClock.now
        let programs = await takePreloaded()
        let waited = waitStart.duration(to: .now)
        let options = Self.options(node)
        do {
            let redirector = try await NIOThreadPool.singleton.runIfActive {
                try PodRedirector(netnsPath: FilePath(netnsPath), options: options, programs: programs)
            }
            let t = redirector.setupTimings
            // Every container of the pod left meanwhile (a Delete that stopped waiting): nobody
            // will release this redirector.
            guard entries.withLock({ $0[netnsPath]?.setup === setup }) else {
                redirector.remove()
                setup.settle(.failed("every container of the pod was deleted during the setup"))
                return .failure(ShimError.failedPrecondition("every container of the pod was deleted during the setup"))
            }
            setup.settle(.ready(redirector))
            return .success(
                "total \(milliseconds(waitStart.duration(to: .now))): preload wait \(milliseconds(waited)), load \(milliseconds(t.load)), attach \(milliseconds(t.attach)), node registration \(milliseconds(t.nodeRegistration))"
            )
        } catch {
            entries.withLock { table in
                if table[netnsPath]?.setup === setup { table[netnsPath] = nil }
            }
            setup.settle(.failed("\(error)"))
            return .failure(error)
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

    /// Drops `container` from its pod, once the pod's setup settled; the last one removes the
    /// redirector (links, maps, pins).
    func release(netnsPath: String, container: String) async {
        guard let setup = entries.withLock({ table in
            table[netnsPath].flatMap { $0.users.contains(container) ? $0.setup : nil }
        })
        else { return }
        _ = await setup.outcome()  // a cancelled wait leaves the removal to the setup
        let last = entries.withLock { table -> PodRedirector? in
            guard var entry = table[netnsPath], entry.setup === setup, entry.users.contains(container) else {
                return nil
            }
            entry.users.remove(container)
            entry.owners[container] = nil
            if entry.users.isEmpty {
                table[netnsPath] = nil
                if case .ready(let redirector) = setup.settled { return redirector }
                return nil
            }
            table[netnsPath] = entry
            return nil
        }
        last?.remove()
    }
}
