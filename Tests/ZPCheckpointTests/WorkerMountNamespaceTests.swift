import Foundation
import SystemPackage
import Testing
import ZPCheckpointTestKit
import ZPSystem
import ZPTestSupport

@testable import ZPCheckpoint

/// The restore worker's own mount namespace (decision 0067): CRIU's restore copies, walks and
/// detaches the mount namespace it runs in; on a node with many pods that is thousands of mounts.
@Suite(
    "restore worker in a mount namespace of its own",
    .serialized,
    .enabled(if: isRoot, "needs root for runc, CRIU and mount namespaces")
)
struct WorkerMountNamespaceTests {
    let cc = ContainerCheckpointer()

    /// Extra mounts of the namespace the restores run in, as a node with ~100 pods has.
    static let crowd = 2000

    /// In a copy of the host's mount namespace with 2,000 extra tmpfs mounts (the test's own,
    /// gone with it), restores with the worker in that namespace and in its own alternate. Every
    /// restore comes back with the same mounts inside the container and answers; the confined
    /// worker's namespace holds a few dozen mounts and none of the 2,000. CRIU's phases of both
    /// are printed (a comparison, not an assertion).
    @Test func restore_amongThousandsOfMounts_workerHasFewMounts() throws {
        let c = try TestContainer(.busybox, repoRoot: repoRoot)
        defer { c.destroy() }
        try c.start()
        #expect(c.waitForResponse() != nil)
        let crowd = try TemporaryDirectory("zpck-crowd")
        let mountsBefore = c.mounts()
        let hostHasKdatMount = try MountPoints.ofThisThread().contains { $0.mountPoint == "/run/criu" }
        // Swift Testing's expectations are checked here, on the test's own task: the closure
        // runs on a thread of its own and only collects what it saw.
        struct Cycle {
            var confined: Bool
            var namespace: WorkerMountNamespace
            var workerMounts: [String]
            var crowdSeen: Int
            var pidMatches: Bool
            var status: Int
            var mountsAfter: [String]
            var line: String
        }
        let (copyMounts, cycles) = try MountPoints.performInNamespaceCopy { () -> Result<(Int, [Cycle]), any Error> in
            Result { () throws -> (Int, [Cycle]) in
                for i in 0..<Self.crowd {
                    let dir = crowd.path + "/\(i)"
                    mkdir(dir, 0o700)
                    try MountPoints.mount(source: "crowd", target: dir, type: "tmpfs", flags: 0, data: "size=4k")
                }
                var cycles: [Cycle] = []
                for confined in [false, true, false, true] {
                    let images = try TemporaryDirectory("zpck-crowd-img")
                    _ = try cc.checkpoint(c.container, imagesDir: images.filePath)
                    var o = ContainerRestoreOptions()
                    o.stdio = c.stdio.containerSide.map { Optional($0) }
                    o.workerMountNamespace = confined
                    let prepared = try cc.prepareRestore(c.container, imagesDir: images.filePath, options: o)
                    let workerMounts = try MountInfo.read(pid: prepared.workerPID ?? -1).map(\.mountPoint)
                    let namespace = prepared.workerMountNamespace
                    let r = try prepared.run()
                    cycles.append(
                        Cycle(
                            confined: confined,
                            namespace: namespace,
                            workerMounts: workerMounts,
                            crowdSeen: workerMounts.filter { $0.hasPrefix(crowd.path) }.count,
                            pidMatches: c.initPID() == r.pid,
                            status: (try? c.get().status) ?? -1,
                            mountsAfter: c.mounts(),
                            line: "worker in \(r.workerMountNamespace) (\(workerMounts.count) seen): restore "
                                + "\(milliseconds(r.total)) ms; CRIU \(r.restore.timings)"
                        )
                    )
                }
                return (try MountPoints.ofThisThread().count, cycles)
            }
        }.get()
        print("mounts where the restores ran: \(copyMounts)")
        #expect(copyMounts > Self.crowd)
        for (i, cycle) in cycles.enumerated() {
            print("cycle \(i): \(cycle.line)")
            if cycle.confined {
                #expect(cycle.namespace == .own(mounts: cycle.workerMounts.count))
                // CRIU's kernel-feature cache (decision 0012) stays where it is, a tmpfs of its own here.
                if hostHasKdatMount { #expect(cycle.workerMounts.contains("/run/criu"), "\(cycle.workerMounts)") }
                #expect(cycle.workerMounts.count < 100, "a few dozen mounts: \(cycle.workerMounts)")
                #expect(cycle.crowdSeen == 0, "none of the \(Self.crowd) extra mounts")
            } else {
                #expect(cycle.namespace == .caller)
                #expect(cycle.crowdSeen == Self.crowd)
            }
            #expect(cycle.pidMatches, "runc's state names the restored init (cycle \(i))")
            #expect(cycle.status == 200, "cycle \(i) answers")
            #expect(cycle.mountsAfter == mountsBefore, "the same mounts inside the container (cycle \(i))")
        }
        #expect(try MountPoints.ofThisThread().allSatisfy { !$0.mountPoint.hasPrefix(crowd.path) })
    }

    /// When the worker's namespace cannot be made (here its assembly folder is a file), the worker
    /// starts in the caller's namespace, says why, and the restore works as before.
    @Test func namespaceThatCannotBeMade_workerStartsInTheCallers() throws {
        let c = try TestContainer(.busybox, repoRoot: repoRoot)
        defer { c.destroy() }
        try c.start()
        #expect(c.waitForResponse() != nil)
        let images = try TemporaryDirectory("zpck-confine-fail")
        _ = try cc.checkpoint(c.container, imagesDir: images.filePath)
        let staging = c.container.stateDir.appending(PreparedContainerRestore.stagingFolderName)
        try Files.makeOwnerOnlyDirectory(staging)
        let blocker = staging.appending("worker-root")
        try Files.write(blocker, Array("not a folder".utf8))
        defer {
            _ = unlink(blocker.string)
            _ = rmdir(staging.string)
        }
        var o = ContainerRestoreOptions()
        o.stdio = c.stdio.containerSide.map { Optional($0) }
        let prepared = try cc.prepareRestore(c.container, imagesDir: images.filePath, options: o)
        let namespace = prepared.workerMountNamespace
        let workerNamespace = try Files.readLink(FilePath("/proc/\(prepared.workerPID ?? -1)/ns/mnt"))
        let r = try prepared.run()
        guard case .callerAfterFailure(let why) = namespace else {
            Issue.record("the worker's namespace: \(namespace)")
            return
        }
        print("worker in \(namespace)")
        #expect(why.contains("mount"), "names the call that failed: \(why)")
        #expect(workerNamespace == (try Files.readLink(FilePath("/proc/self/ns/mnt"))), "the caller's namespace")
        #expect(r.workerMountNamespace == namespace)
        #expect(c.initPID() == r.pid)
        #expect(try c.get().status == 200, "the restore worked as before")
    }
}
