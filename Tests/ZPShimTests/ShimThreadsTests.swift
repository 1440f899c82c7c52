import Foundation
import Testing
import ZPTestSupport

@testable import ZPShim

/// A shim's threads do not grow with the node's cores: NIO's blocking pool keeps
/// ``ShimDaemon/blockingPoolThreads`` threads where NIO would start one per core (decision 0061).
/// NIO takes `NIO_SINGLETON_BLOCKING_POOL_THREAD_COUNT` when nothing set the count, so the variable
/// stands in for a node with more cores than this machine.
@Suite(.serialized) struct ShimThreadsTests {
    @Test func blockingPool_keepsItsTwoThreads_onANodeWithMoreCores() throws {
        let rootfs = try TestPaths.busyboxRootfs()
        let containerd = try PrivateContainerd(
            flavor: .debian,
            tag: "thr",
            environment: ["NIO_SINGLETON_BLOCKING_POOL_THREAD_COUNT": "6"]
        )
        defer { containerd.stop() }
        let netns = try TestNetns("zpshim-thr")
        defer { netns.delete() }
        let id = "threads1"
        try startCounter(containerd, netns: netns, id: id, rootfs: rootfs)
        defer { removeTask(containerd, id) }
        // The scale-down runs CRIU on the blocking pool: it has started by then.
        try #require(
            waitScaledDown(containerd, netns: netns, checkpoints: 1),
            "not scaled down: \(containerd.log(tail: 30))"
        )
        let shim = try #require(shimPid(containerd, group: id))
        let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(shim)/task")) ?? []
        let names = tasks.compactMap { try? String(contentsOfFile: "/proc/\(shim)/task/\($0)/comm", encoding: .utf8) }
        let pool = names.filter { $0.hasPrefix("SGLTN-TP-#") }
        #expect(pool.count == ShimDaemon.blockingPoolThreads, "threads of the shim: \(names)")
    }
}
