import Foundation
import SystemPackage
import Testing
import ZPSystem
import ZPTestSupport

@testable import ZPCheckpoint

/// Restore options for a process in a test netns: the netns is external and handed back.
func processRestoreOptions(netns: SharedDescriptor) -> RestoreOptions {
    var o = RestoreOptions()
    o.inheritedFiles = [InheritedFile(key: "extRootNetNS", descriptor: netns)]
    return o
}

@Suite("CRIU RPC against the real CRIU: plain processes", .serialized, .enabled(if: isRoot, "needs root for CRIU"))
struct ProcessCheckpointTests {
    let criu = Checkpointer()

    @Test func version_isAtLeast4_2() throws {
        let v = try criu.version()
        print("CRIU version \(v) (\(v.gitID ?? "-"))")
        #expect(v.number >= 40200)
    }

    @Test func check_succeedsOnThisKernel() throws {
        try criu.check()
    }

    @Test func featureCheck_lazyPagesYes_memTrackNo() throws {
        let f = try criu.features(CRIUFeatures(memoryTracking: true, lazyPages: true))
        print(
            "features: mem_track=\(String(describing: f.memoryTracking)) lazy_pages=\(String(describing: f.lazyPages))"
        )
        #expect(f.lazyPages == true)
        // mem_track as CRIU's own command line answers it (this VM's kernel has no soft-dirty).
        let dirtyTracking =
            try run([criu.criuPath.string, "check", "--feature", "mem_dirty_track"], timeout: 60).status == 0
        #expect(f.memoryTracking == dirtyTracking)
    }

    @Test(
        .enabled(if: memoryTrackingMissingHere, "this kernel has dirty memory tracking, so mem_track is supported here")
    )
    func unsupportedFeature_throwsNotSupported() throws {
        do {
            try criu.require(CRIUFeatures(memoryTracking: true))
            Issue.record("require(mem_track) did not throw")
        } catch {
            #expect(error.code == .notSupported)
            #expect(error.message.contains("mem_track"))
        }
        let netns = try TestNetns("zpck-presup")
        let pid = try startCounterServer(netns: netns, port: 8081)
        defer { killAndReap(pid) }
        let dir = try TemporaryDirectory("zpck-predump")
        #expect(throws: CRIUError.self) { try criu.preDump(pid: pid, imagesDir: dir.filePath) }
        #expect(try counter(netns: netns, port: 8081).count == 2)
    }

    @Test func counterServer_dumpAndRestore_keepsCountAndPid() throws {
        let netns = try TestNetns("zpck-proc")
        let port: UInt16 = 8080
        let pid = try startCounterServer(netns: netns, port: port)
        var restoredPID: Int32 = pid
        defer { killAndReap(restoredPID) }
        for i in 2...4 { #expect(try counter(netns: netns, port: port).count == i) }
        let dir = try TemporaryDirectory("zpck-proc-img")
        var dump = DumpOptions()
        dump.external = [try NetworkNamespace.externalEntry(for: netns.filePath)]
        let d = try criu.dump(pid: pid, imagesDir: dir.filePath, options: dump)
        print("process dump: \(d.timings)")
        #expect(waitGoneAndReap(pid), "dumped process is gone")
        #expect(throws: SystemError.self) { try NetworkNamespace.httpGet(netns: netns.filePath, port: port) }

        let ns = SharedDescriptor(try OwnedDescriptor.open(netns.filePath, O_RDONLY))
        let r = try criu.restore(imagesDir: dir.filePath, options: processRestoreOptions(netns: ns))
        restoredPID = r.pid
        print("process restore: pid \(r.pid) \(r.timings)")
        #expect(r.pid == pid)
        let c = try counter(netns: netns, port: port)
        #expect(c.count == 5, "counter survives the checkpoint")
        #expect(c.pid == pid)
        #expect(r.timings.phases.contains { $0.script == "post-restore" })
    }

    @Test func hooks_seeRestoredPid_andAFailingHookAbortsTheRestore() throws {
        let netns = try TestNetns("zpck-hook")
        let pid = try startCounterServer(netns: netns, port: 8082)
        var restoredPID: Int32 = pid
        defer { killAndReap(restoredPID) }
        let dir = try TemporaryDirectory("zpck-hook-img")
        var dump = DumpOptions()
        dump.external = [try NetworkNamespace.externalEntry(for: netns.filePath)]
        var seen: [String] = []
        var hooks = CRIUHooks()
        hooks["post-dump"] = { n in seen.append(n.script) }
        _ = try criu.dump(pid: pid, imagesDir: dir.filePath, options: dump, hooks: hooks)
        #expect(seen == ["post-dump"])
        _ = eventually(every: 0.01) { !isAlive(pid) }
        var st: Int32 = 0
        _ = waitpid(pid, &st, WNOHANG)

        let ns = SharedDescriptor(try OwnedDescriptor.open(netns.filePath, O_RDONLY))
        struct Refused: Error {}
        var failing = CRIUHooks()
        failing["post-restore"] = { _ in throw Refused() }
        do {
            let r = try criu.restore(imagesDir: dir.filePath, options: processRestoreOptions(netns: ns), hooks: failing)
            restoredPID = r.pid
            Issue.record("restore with a failing hook succeeded")
        } catch {
            #expect(error.code == .hookFailed, "\(error)")
        }
        #expect(!isAlive(pid), "an aborted restore leaves no process")
        var ignored = CRIUHooks()
        ignored["pre-resume"] = { _ in throw Refused() }
        let survivor = try criu.restore(
            imagesDir: dir.filePath,
            options: processRestoreOptions(netns: ns),
            hooks: ignored
        )
        #expect(survivor.hookFailures.count == 1, "CRIU carries on past a failed pre-resume hook; it is reported")
        #expect(try counter(netns: netns, port: 8082).count == 2)
        killAndReap(survivor.pid)
        var postRestorePID: Int32?
        var ok = CRIUHooks()
        ok["post-restore"] = { n in postRestorePID = n.pid }
        let r = try criu.restore(imagesDir: dir.filePath, options: processRestoreOptions(netns: ns), hooks: ok)
        restoredPID = r.pid
        #expect(postRestorePID == r.pid)
        #expect(try counter(netns: netns, port: 8082).count == 2)
    }

    @Test func missingImageDir_isInvalidArgument() {
        do {
            _ = try criu.restore(imagesDir: FilePath("/tmp/zpck-does-not-exist-\(UInt32.random(in: 0...UInt32.max))"))
            Issue.record("restore from a missing directory succeeded")
        } catch {
            #expect(error.code == .invalidArgument)
            #expect(error.message.contains("zpck-does-not-exist"))
        }
    }

    @Test func emptyImageDir_failsWithCRIUsReasonAndLog() throws {
        let dir = try TemporaryDirectory("zpck-empty-img")
        do {
            _ = try criu.restore(imagesDir: dir.filePath)
            Issue.record("restore from an empty directory succeeded")
        } catch {
            print("empty image dir: \(error)")
            #expect(error.code == .requestFailed)
            #expect(!error.logTail.isEmpty, "the error carries CRIU's log tail")
        }
    }

    @Test func corruptedImage_failsClearly_andTheGoodImageStillRestores() throws {
        let netns = try TestNetns("zpck-corrupt")
        let pid = try startCounterServer(netns: netns, port: 8083)
        var restoredPID: Int32 = pid
        defer { killAndReap(restoredPID) }
        let dir = try TemporaryDirectory("zpck-corrupt-img")
        var dump = DumpOptions()
        dump.external = [try NetworkNamespace.externalEntry(for: netns.filePath)]
        _ = try criu.dump(pid: pid, imagesDir: dir.filePath, options: dump)
        _ = eventually(every: 0.01) { !isAlive(pid) }
        var st: Int32 = 0
        _ = waitpid(pid, &st, WNOHANG)

        let bad = try TemporaryDirectory("zpck-corrupt-copy")
        try shell("cp -a '\(dir.filePath)'/. '\(bad.filePath)'/ && rm -f '\(bad.filePath)'/*.log")
        // Overwrite the middle of the core image of the root task with garbage.
        try shell(
            "f=$(ls '\(bad.filePath)'/core-*.img | head -n1); sz=$(stat -c %s \"$f\"); "
                + "dd if=/dev/urandom of=\"$f\" bs=1 seek=$((sz/3)) count=$((sz/3)) conv=notrunc status=none"
        )
        let ns = SharedDescriptor(try OwnedDescriptor.open(netns.filePath, O_RDONLY))
        do {
            let r = try criu.restore(imagesDir: bad.filePath, options: processRestoreOptions(netns: ns))
            restoredPID = r.pid
            Issue.record("restore from a corrupted image succeeded")
        } catch {
            print("corrupted image: \(error)")
            #expect(error.code == .requestFailed || error.code == .workerDied)
            #expect(!error.logTail.isEmpty)
        }
        #expect(!isAlive(pid))
        let r = try criu.restore(imagesDir: dir.filePath, options: processRestoreOptions(netns: ns))
        restoredPID = r.pid
        #expect(try counter(netns: netns, port: 8083).count == 2, "nothing lost: the intact image restores")
    }

    @Test func dumpPastItsDeadline_isTimedOut_andTheProcessKeepsServing() throws {
        let netns = try TestNetns("zpck-deadline")
        let pid = try startCounterServer(netns: netns, port: 8086)
        defer { killAndReap(pid) }
        let dir = try TemporaryDirectory("zpck-deadline-img")
        var dump = DumpOptions()
        dump.external = [try NetworkNamespace.externalEntry(for: netns.filePath)]
        dump.timeout = .milliseconds(5)
        do {
            _ = try criu.dump(pid: pid, imagesDir: dir.filePath, options: dump)
            Issue.record("a 5 ms dump deadline was met")
        } catch {
            #expect(error.code == .timedOut, "\(error)")
            // CRIU was stopped at a notification (and undid its work), not killed mid-dump: killing
            // it while its parasite runs inside the task could kill the task (seen under load).
            #expect(error.message.contains("stopped at its"), "\(error)")
        }
        #expect(isAlive(pid))
        #expect(eventually(within: 10, every: 0.01) { (try? counter(netns: netns, port: 8086).count) == 2 })
    }

    @Test(arguments: ["pre-dump", "post-dump"])
    func criuKilledDuringDump_processKeepsServing(script: String) throws {
        let netns = try TestNetns("zpck-kill")
        let port: UInt16 = script == "pre-dump" ? 8084 : 8085
        let pid = try startCounterServer(netns: netns, port: port)
        defer { killAndReap(pid) }
        let dir = try TemporaryDirectory("zpck-kill-img")
        var dump = DumpOptions()
        dump.external = [try NetworkNamespace.externalEntry(for: netns.filePath)]
        var hooks = CRIUHooks()
        hooks[script] = { n in
            _ = kill(n.workerPID, SIGKILL)
            usleep(50_000)
        }
        do {
            _ = try criu.dump(pid: pid, imagesDir: dir.filePath, options: dump, hooks: hooks)
            Issue.record("dump survived its worker being killed")
        } catch {
            print("CRIU killed at \(script): \(error.code): \(error.message)")
            #expect(error.code == .workerDied)
        }
        #expect(isAlive(pid), "the process survives")
        let served = eventually(within: 10, every: 0.01) { (try? counter(netns: netns, port: port).count) == 2 }
        #expect(served, "the process still serves after CRIU died at \(script)")
        let state =
            try String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)
            .split(separator: "\n").first { $0.hasPrefix("State:") } ?? ""
        print("after kill at \(script): \(state)")
    }
}
