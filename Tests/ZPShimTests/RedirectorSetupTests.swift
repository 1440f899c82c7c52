import Foundation
import Testing
import ZPCore
import ZPTestSupport

@testable import ZPShim

/// The pod's redirector set up beside `runc create` (decision 0060): the setup's waiters, the pod's
/// containers sharing one setup, a failed setup (the container then runs without scale-down, as
/// before), and a release that waits for a setup still under way.
@Suite struct RedirectorSetupTests {
    @Test func setup_resumesEveryWaiterOnce_andACancelledWaiterGetsNil() async throws {
        let setup = RedirectorSetup()
        #expect(setup.settled == nil)
        let cancelled = await withTaskGroup(of: RedirectorSetup.Outcome?.self) { waiting in
            waiting.addTask { await setup.outcome() }
            waiting.cancelAll()
            return await waiting.next() ?? nil
        }
        #expect(cancelled == nil, "a cancelled waiter must not wait for the setup")
        let reasons = try await withThrowingTaskGroup(of: String?.self) { group in
            for _ in 0..<3 {
                group.addTask {
                    guard case .failed(let why) = await setup.outcome() else { return nil }
                    return why
                }
            }
            // The waiters are registered, or will find the setup settled: settle it once.
            try await Task.sleep(for: .milliseconds(50))
            setup.settle(.failed("no tcx"))
            var reasons: [String?] = []
            for try await reason in group { reasons.append(reason) }
            return reasons
        }
        #expect(reasons == ["no tcx", "no tcx", "no tcx"])
        guard case .failed("no tcx") = await setup.outcome() else {
            Issue.record("a settled setup answers at once with its outcome")
            return
        }
    }

    @Test func join_theFirstContainerStartsTheSetup_theOthersShareIt() {
        let pods = PodNetworks()
        let a = pods.join(netnsPath: "/var/run/netns/zp-rs-pod", container: "a")
        let b = pods.join(netnsPath: "/var/run/netns/zp-rs-pod", container: "b")
        let again = pods.join(netnsPath: "/var/run/netns/zp-rs-pod", container: "a")
        let other = pods.join(netnsPath: "/var/run/netns/zp-rs-other", container: "c")
        #expect(a.startsSetup && !b.startsSetup && !again.startsSetup && other.startsSetup)
        #expect(a.setup === b.setup && a.setup !== other.setup)
        #expect(a.owner != b.owner && again.owner == a.owner, "tags: unique in the pod, stable for a container")
    }

    /// A setup that fails (here: no such namespace) leaves the pod, so that its next container
    /// tries again; the container's redirect refuses the activator with the reason, which the
    /// driver logs as "scale-down is off" before it feeds `redirectUnavailable` (the container
    /// runs on without scale-down, as when Create itself set the redirector up); its release does
    /// not wait.
    @Test func setUp_failure_refusesTheActivator_andTheNextContainerTriesAgain() async throws {
        let pods = PodNetworks()
        let netns = "/var/run/netns/zp-rs-missing-\(UUID().uuidString.prefix(8))"
        let pod = pods.join(netnsPath: netns, container: "a")
        let redirect = DeferredPodRedirect(location: netns, setup: pod.setup) { _ in
            preconditionFailure("parts made from a failed setup")
        }
        let outcome = await pods.setUp(pod.setup, netnsPath: netns, node: NodeConfig())
        guard case .failure(let error) = outcome else {
            Issue.record("a setup in a missing namespace succeeded")
            return
        }
        #expect("\(error)".contains(netns))
        await #expect {
            _ = try await redirect.makeActivator(ports: [8080]) {}
        } throws: { error in
            "\(error)".contains("the pod's redirector for \(netns) could not be set up") && "\(error)".contains("\(netns)")
        }
        #expect(redirect.connections == nil)
        #expect(redirect.activity(ports: [8080]).lastActivity == nil)
        try redirect.redirectOff(ports: [8080])
        await pods.release(netnsPath: netns, container: "a")
        #expect(pods.join(netnsPath: netns, container: "b").startsSetup, "the failed setup must not stay the pod's")
    }

    /// On the real kernel: two containers of a pod share the redirector set up for the first;
    /// a release while the setup runs waits for it; the last release removes it.
    @Test(.enabled(if: Privileges.isRoot, "needs root: a network namespace and BPF programs"))
    func setUp_realNamespace_sharedByThePod_releasedByTheLastContainer() async throws {
        let netns = try TestNetns("zprs")
        defer { netns.delete() }
        let pods = PodNetworks()
        let a = pods.join(netnsPath: netns.path, container: "a")
        let b = pods.join(netnsPath: netns.path, container: "b")
        let (setUp, released) = await withTaskGroup(of: (String, Bool).self) { group in
            group.addTask {
                switch await pods.setUp(a.setup, netnsPath: netns.path, node: NodeConfig()) {
                case .success(let timings): return ("setup: " + timings, true)
                case .failure(let error): return ("setup failed: \(error)", false)
                }
            }
            // Released while the setup may still run: waits for it, and b keeps the pod.
            group.addTask {
                await pods.release(netnsPath: netns.path, container: "a")
                return ("released a", a.setup.settled != nil)
            }
            var setUp = ""
            var released = false
            for await (line, ok) in group {
                if line.hasPrefix("setup") { setUp = ok ? line : "" } else { released = ok }
                if !ok { Issue.record("\(line)") }
            }
            return (setUp, released)
        }
        #expect(setUp.contains("node registration"), "\(setUp)")
        #expect(released, "the release returned before the setup settled")
        guard case .ready(let redirector) = b.setup.settled else {
            Issue.record("b has no redirector")
            return
        }
        #expect(try redirector.trackedPorts() == [], "the redirector was removed with a")
        await pods.release(netnsPath: netns.path, container: "b")
        #expect(throws: (any Error).self, "the last release must remove the redirector") {
            try redirector.trackedPorts()
        }
    }
}
