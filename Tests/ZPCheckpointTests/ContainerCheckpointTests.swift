import Foundation
import SystemPackage
import Testing
import ZPCheckpointTestKit
import ZPSystem
import ZPTestSupport

@testable import ZPCheckpoint

/// The repository root (scripts/rootfs.sh lives there).
let repoRoot = FilePath(#filePath).removingLastComponent().removingLastComponent().removingLastComponent().string

@Suite(
    "runc containers: checkpoint with CRIU, restore without runc",
    .serialized,
    .enabled(if: isRoot, "needs root for runc and CRIU")
)
struct ContainerCheckpointTests {
    let cc = ContainerCheckpointer()

    func restoreOptions(_ c: TestContainer) -> ContainerRestoreOptions {
        var o = ContainerRestoreOptions()
        o.stdio = c.stdio.containerSide.map { Optional($0) }
        return o
    }

    /// The container's processes once no per-request CGI process is left and two samples agree.
    func stableProcesses(_ c: TestContainer) -> [String] {
        var last: [String] = []
        _ = eventually(within: 10, every: 0.01) {
            let now = c.processes()
            defer { last = now }
            return now == last && !now.contains { $0.hasSuffix(":count") || $0.hasSuffix(":sh") }
        }
        return last
    }

    @Test(arguments: TestWorkload.allCases)
    func container_checkpointRestore_keepsStateAndRuncStillWorks(workload: TestWorkload) throws {
        let c = try TestContainer(workload, repoRoot: repoRoot)
        defer { c.destroy() }
        try c.start()
        #expect(c.waitForResponse() != nil, "\(workload) answers after runc run")
        let before = try c.get()
        if workload == .busybox { #expect(before.body.hasPrefix("count=2"), "\(before.body)") }
        let procs = stableProcesses(c)
        let mountsBefore = c.mounts()
        print("\(workload) processes before: \(procs)")
        #expect(!procs.isEmpty)
        let images = try TemporaryDirectory("zpck-ctr-img-\(workload.rawValue)")
        let cp = try cc.checkpoint(c.container, imagesDir: images.filePath)
        print(
            "\(workload) checkpoint: \(milliseconds(cp.total)) ms; CRIU \(cp.dump.timings); external mounts \(cp.manifest.externalMounts)"
        )
        #expect(c.status() == "stopped", "runc sees the dumped container stopped")
        #expect(throws: (any Error).self) { try c.get(timeout: .seconds(1)) }

        let r = try cc.restore(c.container, imagesDir: images.filePath, options: restoreOptions(c))
        print(
            "\(workload) restore: \(milliseconds(r.total)) ms (prepare \(milliseconds(r.prepare)) ms); CRIU \(r.restore.timings)"
        )
        #expect(c.status() == "running", "runc accepts the restored init")
        #expect(c.initPID() == r.pid)
        let after = try c.get()
        #expect(after.status == 200)
        if workload == .busybox {
            #expect(after.body.hasPrefix("count=3"), "the tmpfs counter survived: \(after.body)")
        }
        // A CGI child of the request just served may still be exiting: wait for the steady set.
        #expect(
            eventually(within: 10, every: 0.01) { c.processes() == procs },
            "the same processes (pids inside the container) came back: \(c.processes()) vs \(procs)"
        )
        let mountsAfter = c.mounts()
        #expect(mountsAfter == mountsBefore, "same mounts, types and options after the restore")
        if mountsAfter != mountsBefore {
            print("mounts only before: \(Set(mountsBefore).subtracting(mountsAfter).sorted())")
            print("mounts only after: \(Set(mountsAfter).subtracting(mountsBefore).sorted())")
        }
        print("\(workload) tmpfs copied in-process: \(cp.manifest.copiedTmpfs?.keys.sorted() ?? [])")
        #expect(cp.manifest.copiedTmpfs?["/tmp"] != nil, "/tmp is copied in-process")
        // /dev is a tmpfs whose /dev/null runc also binds over the masked /proc paths: still ours
        // to copy (CRIU binds the masked paths from the restored /dev, see the mount comparison).
        #expect(cp.manifest.copiedTmpfs?["/dev"] != nil, "/dev is copied in-process")
        let (nrc, nout) = try c.runc([
            "exec", c.id, "/bin/sh", "-c", "echo x > /dev/null && head -c 4 /dev/zero | wc -c",
        ])
        #expect(nrc == 0 && nout.contains("4"), "the restored /dev has working device nodes: \(nout)")

        // runc exec runs inside the restored container (its namespaces via the new init).
        let (rc, out) = try c.runc(["exec", c.id, "/bin/cat", "/proc/1/status"])
        #expect(rc == 0, "runc exec: \(out)")
        #expect(out.contains("NSpid:\t1"), "exec sees the container's pid namespace")
        let (hrc, host) = try c.runc(["exec", c.id, "/bin/hostname"])
        #expect(hrc == 0 && host.contains(c.id), "exec joined the restored uts namespace: \(host)")

        // A second checkpoint of the restored container works too (state.json stays coherent).
        let images2 = try TemporaryDirectory("zpck-ctr-img2-\(workload.rawValue)")
        _ = try cc.checkpoint(c.container, imagesDir: images2.filePath)
        let r2 = try cc.restore(c.container, imagesDir: images2.filePath, options: restoreOptions(c))
        #expect(c.initPID() == r2.pid)
        #expect(try c.get().status == 200)

        // runc kill + delete clean up.
        let (krc, kout) = try c.runc(["kill", c.id, "KILL"])
        #expect(krc == 0, "runc kill: \(kout)")
        var st: Int32 = 0
        #expect(
            eventually(every: 0.01) { waitpid(r2.pid, &st, WNOHANG) == r2.pid },
            "the restored init is our child and exits"
        )
        #expect(eventually(every: 0.01) { c.status() == "stopped" })
        let (drc, dout) = try c.runc(["delete", c.id])
        #expect(drc == 0, "runc delete: \(dout)")
        #expect(c.status() == "absent")
        #expect(
            !FileManager.default.fileExists(atPath: "/sys/fs/cgroup/pids/\(c.id)"),
            "runc delete removed the cgroups"
        )
    }

    @Test func podSandboxNamespaces_areJoinedAgainOnRestore() throws {
        let c = try TestContainer(.busybox, repoRoot: repoRoot, podSandbox: true)
        defer { c.destroy() }
        try c.start()
        #expect(c.waitForResponse() != nil)
        let sandbox = try #require(c.sandboxDir)
        func ns(_ pid: Int32, _ kind: String) -> String? { try? Files.readLink(FilePath("/proc/\(pid)/ns/\(kind)")) }
        let ipcInode = try Files.inode(of: FilePath("\(sandbox)/ipc"))
        #expect(ns(try #require(c.initPID()), "ipc") == "ipc:[\(ipcInode)]")
        let images = try TemporaryDirectory("zpck-ctr-pod")
        _ = try cc.checkpoint(c.container, imagesDir: images.filePath)
        let r = try cc.restore(c.container, imagesDir: images.filePath, options: restoreOptions(c))
        #expect(ns(r.pid, "ipc") == "ipc:[\(ipcInode)]", "the restored init is back in the sandbox's IPC namespace")
        let utsInode = try Files.inode(of: FilePath("\(sandbox)/uts"))
        #expect(ns(r.pid, "uts") == "uts:[\(utsInode)]", "and in its UTS namespace")
        let (rc, host) = try c.runc(["exec", c.id, "/bin/hostname"])
        #expect(rc == 0 && host.contains("-pod"), "exec sees the pod's hostname: \(host)")
        #expect(try c.get().status == 200)
    }

    @Test func freezerCheckpoint_works() throws {
        let c = try TestContainer(.busybox, repoRoot: repoRoot)
        defer { c.destroy() }
        try c.start()
        #expect(c.waitForResponse() != nil)
        let images = try TemporaryDirectory("zpck-ctr-frz")
        var o = ContainerCheckpointOptions()
        o.freezeWithCgroup = true
        let cp = try cc.checkpoint(c.container, imagesDir: images.filePath, options: o)
        print("busybox checkpoint with freezer: \(milliseconds(cp.total)) ms; CRIU \(cp.dump.timings)")
        #expect(cp.manifest.usedFreezer)
        let r = try cc.restore(c.container, imagesDir: images.filePath, options: restoreOptions(c))
        #expect(c.status() == "running")
        #expect(try c.get().status == 200)
        _ = r
    }

    @Test func tmpfsTurningUncopyableDuringDump_fallsBackToCRIUsArchive() throws {
        let c = try TestContainer(.busybox, repoRoot: repoRoot)
        defer { c.destroy() }
        try c.start()
        #expect(c.waitForResponse() != nil)
        #expect(try c.get().body.hasPrefix("count=2"))
        let pid = try #require(c.initPID())
        var hooks = CRIUHooks()
        var fired = 0
        hooks["post-dump"] = { _ in
            fired += 1
            if fired == 1 { _ = mkfifo("/proc/\(pid)/root/tmp/zpck-fifo", 0o600) }
        }
        let images = try TemporaryDirectory("zpck-ctr-fifo")
        let cp = try cc.checkpoint(c.container, imagesDir: images.filePath, hooks: hooks)
        #expect(fired == 2, "the first dump was aborted and redone")
        #expect(cp.manifest.copiedTmpfs == nil, "the redo lets CRIU archive every tmpfs")
        _ = try cc.restore(c.container, imagesDir: images.filePath, options: restoreOptions(c))
        #expect(try c.get().body.hasPrefix("count=3"))
        let (rc, out) = try c.runc(["exec", c.id, "/bin/ls", "-l", "/tmp/zpck-fifo"])
        #expect(rc == 0 && out.hasPrefix("p"), "the fifo came back through CRIU's archive: \(out)")
    }

    @Test(arguments: ["pre-dump", "post-dump"])
    func criuKilledDuringContainerDump_containerKeepsRunningForRunc(script: String) throws {
        let c = try TestContainer(.busybox, repoRoot: repoRoot)
        defer { c.destroy() }
        try c.start()
        #expect(c.waitForResponse() != nil)
        let pid = try #require(c.initPID())
        var hooks = CRIUHooks()
        hooks[script] = { n in _ = kill(n.workerPID, SIGKILL) }
        let images = try TemporaryDirectory("zpck-ctr-kill")
        do {
            _ = try cc.checkpoint(c.container, imagesDir: images.filePath, hooks: hooks)
            Issue.record("checkpoint survived its CRIU worker being killed")
        } catch {
            print("container, CRIU killed at \(script): \(error)")
            guard case .criu(let e) = error else {
                Issue.record("wrong error \(error)")
                return
            }
            #expect(e.code == .workerDied)
        }
        #expect(c.status() == "running" && c.initPID() == pid, "runc still sees the same init running")
        let served = eventually(within: 10, every: 0.01) { (try? c.get().body.hasPrefix("count=2")) == true }
        #expect(served, "the container still serves with its state")
        // And a normal checkpoint/restore still works afterwards.
        let again = try TemporaryDirectory("zpck-ctr-kill-again")
        _ = try cc.checkpoint(c.container, imagesDir: again.filePath)
        _ = try cc.restore(c.container, imagesDir: again.filePath, options: restoreOptions(c))
        #expect(try c.get().body.hasPrefix("count=3"))
    }

    @Test func corruptedContainerImage_failsClearly_leavesRuncStateAlone_goodImageRestores() throws {
        let c = try TestContainer(.busybox, repoRoot: repoRoot)
        defer { c.destroy() }
        try c.start()
        #expect(c.waitForResponse() != nil)
        let images = try TemporaryDirectory("zpck-ctr-corrupt")
        _ = try cc.checkpoint(c.container, imagesDir: images.filePath)
        let stateBefore = try String(contentsOfFile: "\(c.runcRoot)/\(c.id)/state.json", encoding: .utf8)
        let bad = try TemporaryDirectory("zpck-ctr-corrupt-copy")
        try shell(
            "cp -a '\(images.filePath)'/. '\(bad.filePath)'/ && f=$(ls '\(bad.filePath)'/pstree.img) && "
                + "dd if=/dev/urandom of=\"$f\" bs=1 seek=4 count=16 conv=notrunc status=none"
        )
        do {
            _ = try cc.restore(c.container, imagesDir: bad.filePath, options: restoreOptions(c))
            Issue.record("restore from a corrupted image succeeded")
        } catch {
            print("container, corrupted image: \(error)")
            guard case .criu(let e) = error else {
                Issue.record("wrong error \(error)")
                return
            }
            #expect(e.code == .requestFailed || e.code == .workerDied)
        }
        let stateAfter = try String(contentsOfFile: "\(c.runcRoot)/\(c.id)/state.json", encoding: .utf8)
        #expect(stateAfter == stateBefore, "a failed restore does not touch runc's state")
        #expect(c.status() == "stopped")
        let staging = "\(c.runcRoot)/\(c.id)/\(PreparedContainerRestore.stagingFolderName)"
        #expect(
            !FileManager.default.fileExists(atPath: staging),
            "the staging folder (rootfs bind, tmpfs copies) is gone"
        )
        #expect(MountPoints.under(staging + "/").isEmpty, "nothing stays mounted under it")
        _ = try cc.restore(c.container, imagesDir: images.filePath, options: restoreOptions(c))
        #expect(try c.get().body.hasPrefix("count=2"), "nothing lost: the intact image restores")
    }

    @Test func restore_withoutStdioDescriptors_isRejectedBeforeCRIURuns() throws {
        let c = try TestContainer(.busybox, repoRoot: repoRoot)
        defer { c.destroy() }
        try c.start()
        #expect(c.waitForResponse() != nil)
        let images = try TemporaryDirectory("zpck-ctr-nostdio")
        _ = try cc.checkpoint(c.container, imagesDir: images.filePath)
        do {
            _ = try cc.restore(c.container, imagesDir: images.filePath)
            Issue.record("restore without stdio descriptors succeeded")
        } catch {
            print("missing stdio: \(error)")
            guard case .invalidArgument(let m) = error else {
                Issue.record("wrong error \(error)")
                return
            }
            #expect(m.contains("pipe:["))
        }
        // Nothing lost: with the descriptors the same images restore.
        _ = try cc.restore(c.container, imagesDir: images.filePath, options: restoreOptions(c))
        #expect(try c.get().status == 200)
    }

    @Test func checkpoint_ofAStoppedContainer_isInvalidState() throws {
        let c = try TestContainer(.busybox, repoRoot: repoRoot)
        defer { c.destroy() }
        try c.start()
        #expect(c.waitForResponse() != nil)
        _ = try c.runc(["kill", c.id, "KILL"])
        #expect(eventually(every: 0.01) { c.status() == "stopped" })
        let images = try TemporaryDirectory("zpck-ctr-stopped")
        do {
            _ = try cc.checkpoint(c.container, imagesDir: images.filePath)
            Issue.record("checkpoint of a stopped container succeeded")
        } catch {
            guard case .invalidState = error else {
                Issue.record("wrong error \(error)")
                return
            }
        }
    }

    /// systemd removes a scope unit's cgroup once its last process left (at the dump, for runc's
    /// systemd driver); the restore must still put the container back where runc put it.
    @Test func restore_afterItsCgroupsWereRemoved_putsTheTreeBackWhereRuncHadIt() throws {
        let c = try TestContainer(.busybox, repoRoot: repoRoot)
        defer { c.destroy() }
        try c.start()
        #expect(c.waitForResponse() != nil)
        let paths = try RuncState(runcRoot: c.runcRoot, id: c.id).cgroupPaths
        #expect(paths["memory"]?.hasSuffix("/\(c.id)") == true, "\(paths)")
        let images = try TemporaryDirectory("zpck-ctr-cgroups")
        _ = try cc.checkpoint(c.container, imagesDir: images.filePath)
        var removed = 0
        for dir in Set(paths.values) where !dir.isEmpty && rmdir(dir) == 0 { removed += 1 }
        print("cgroup folders removed after the dump: \(removed) of \(Set(paths.values).count)")
        #expect(removed >= 1 && paths.values.allSatisfy { access($0, F_OK) != 0 })
        let r = try cc.restore(c.container, imagesDir: images.filePath, options: restoreOptions(c))
        let now = ProcessCgroups.folders(
            procCgroup: try Files.readText(FilePath("/proc/\(r.pid)/cgroup")),
            mounts: try MountInfo.read()
        )
        for (controller, folder) in paths where !folder.isEmpty {
            #expect(now[controller] == folder, "\(controller): \(now[controller] ?? "-") instead of \(folder)")
        }
        print("cgroup corrections after the restore: \(r.cgroupCorrections)")
        #expect(try c.get().status == 200)
    }
}
