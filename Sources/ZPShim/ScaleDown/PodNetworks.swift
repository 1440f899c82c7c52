import Logging
import NIOPosix
import Synchronization
import SystemPackage
import ZPBPF
import ZPCore
import ZPSystem

/// The pod redirectors of this shim (one shim serves one pod group), by network namespace path:
/// set up for the scale-down containers of a pod, removed with the last one. Create only joins
/// the pod (``join(netnsPath:container:starter:)``); the setup (``setUp(_:netnsPath:node:)``)
/// runs as a background job when a container's driver first needs the redirector, off the
/// Create path (decision 0060), and loads the programs then (the verifier's part): loading them
/// when the shim started competed with Create and Start for the CPU (decision 0070).
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
    }

    private let entries = Mutex<[String: Entry]>([:])

    /// Joins `container` to the pod at `netnsPath`: the pod's setup (pending or settled), or a
    /// new one that `starter` carries out (with ``setUp(_:netnsPath:node:)``) when a container
    /// first needs the redirector.
    func join(
        netnsPath: String,
        container: String,
        starter: @escaping @Sendable (RedirectorSetup) -> Void
    ) -> Membership {
        entries.withLock { table -> Membership in
            var entry = table[netnsPath] ?? Entry(setup: RedirectorSetup(starter: starter), users: [])
            entry.users.insert(container)
            let owner = entry.owners[container] ?? entry.nextOwner
            if entry.owners[container] == nil {
                entry.owners[container] = owner
                entry.nextOwner &+= 1
            }
            table[netnsPath] = entry
            return Membership(setup: entry.setup, owner: owner)
        }
    }

    /// Sets up the redirector of a pod that ``join(netnsPath:container:)`` started: loads, attaches
    /// and registers the programs on a thread of NIO's pool (the verifier and the kernel's RCU
    /// waits block it for tens of milliseconds), and settles `setup`. A failed setup leaves the
    /// pod, so that its next container tries again.
    /// - Returns: where the time went, or why it failed, for the log.
    func setUp(_ setup: RedirectorSetup, netnsPath: String, node: NodeConfig) async -> Result<String, any Error> {
        let start = ContinuousClock.now
        let options = Self.options(node)
        do {
            let redirector = try await NIOThreadPool.singleton.runIfActive {
                try PodRedirector(netnsPath: FilePath(netnsPath), options: options)
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
                "total \(milliseconds(start.duration(to: .now))): load \(milliseconds(t.load)), attach \(milliseconds(t.attach)), node registration \(milliseconds(t.nodeRegistration))"
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

    /// Drops `container` from its pod, once the pod's setup settled if it was started; the last
    /// one removes the redirector (links, maps, pins).
    func release(netnsPath: String, container: String) async {
        guard
            let setup = entries.withLock({ table in
                table[netnsPath].flatMap { $0.users.contains(container) ? $0.setup : nil }
            })
        else { return }
        // A setup started later, or a cancelled wait, leaves the removal to the setup, which
        // finds its pod gone.
        if setup.started { _ = await setup.outcome() }
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
