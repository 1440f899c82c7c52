import Foundation
import Synchronization
import SystemPackage
import Testing
import ZPCheckpointTestKit
import ZPSystem
import ZPTestSupport

@testable import ZPCheckpoint

/// Decision 0069: the caller of a lazy restore holds the lazy-pages daemon's userfaultfds from
/// CRIU's `post-restore` on, so a daemon that ends early leaves the restored processes waiting on
/// their missing pages (until the caller kills them) instead of letting the kernel hand them zero
/// pages. Real CRIU, a real python server in its own network namespace, a real client.
@Suite(
    "Lazy restore: the daemon's userfaultfds are held",
    .serialized,
    .enabled(if: isRoot, "needs root for CRIU"),
    .enabled(if: lazyPagesHere, "CRIU reports no lazy_pages support (userfaultfd) on this kernel")
)
struct LazyPagesHoldTests {
    let criu = Checkpointer()

    /// Dumps a counter server touching `touchMiB` MiB into a fresh folder; returns the folder once
    /// the server is gone.
    func dumpedServer(
        _ netns: TestNetns,
        port: UInt16,
        touchMiB: Int,
        name: String
    ) throws -> (images: TemporaryDirectory, pid: Int32) {
        let pid = try startCounterServer(netns: netns, port: port, touchMiB: touchMiB)
        defer { killAndReap(pid) }
        #expect(try counter(netns: netns, port: port).count == 2, "the server counts (its start asked once)")
        let images = try TemporaryDirectory(name)
        var dump = DumpOptions()
        dump.external = [try NetworkNamespace.externalEntry(for: netns.filePath)]
        _ = try criu.dump(pid: pid, imagesDir: images.filePath, options: dump)
        #expect(waitGoneAndReap(pid, within: 30), "the dumped server \(pid) is still there")
        return (images, pid)
    }

    /// A dumped counter server in a fresh netns, a `criu lazy-pages` daemon serving its images,
    /// and the options of a lazy restore of it (the caller stops the daemon).
    struct LazyLab {
        let netns: TestNetns
        let images: TemporaryDirectory
        let pid: Int32
        let daemon: LazyPagesDaemon
        let options: RestoreOptions
    }

    func lazyLab(_ tag: String, port: UInt16, touchMiB: Int) throws -> LazyLab {
        let netns = try TestNetns("zpck-\(tag)")
        let (images, pid) = try dumpedServer(netns, port: port, touchMiB: touchMiB, name: "zpck-\(tag)-img")
        let daemon = try LazyPagesDaemon(criuPath: criu.criuPath, imagesDir: images.filePath)
        let ns = SharedDescriptor(try OwnedDescriptor.open(netns.filePath, O_RDONLY))
        var options = processRestoreOptions(netns: ns)
        options.lazyPages = true
        return LazyLab(netns: netns, images: images, pid: pid, daemon: daemon, options: options)
    }

    /// The daemon is stopped at `post-restore` (after the hold took its userfaultfds), so the
    /// restored server's pages stay where they are, and SIGKILLed once the restore answered: a
    /// client then wakes the server, which faults on a page no one will serve. With the hold it
    /// waits in `handle_userfault` (alive, no answer) until it is killed; without, the kernel
    /// would fill the page with zeros and the server would run on them (crash or answer).
    @Test func daemonKilledMidTransfer_restoredProcessWaitsOnItsPages_neverOnZeroPages() throws {
        let port: UInt16 = 8094
        let lab = try lazyLab("hold", port: port, touchMiB: 64)
        let (netns, images, daemon, options) = (lab.netns, lab.images, lab.daemon, lab.options)
        defer { daemon.stop() }
        var hooks = CRIUHooks()
        let daemonPID = daemon.pid
        hooks["post-restore"] = { _ in _ = kill(daemonPID, SIGSTOP) }
        hooks.holdingFaultHandlers(of: daemon)  // runs before the SIGSTOP above
        let restored = try criu.restore(imagesDir: images.filePath, options: options, hooks: hooks)
        defer { killAndReap(restored.pid) }
        #expect(daemon.heldFaultHandlers == 1, "one restored process, one userfaultfd held")

        _ = kill(daemon.pid, SIGKILL)
        #expect(daemon.waitForExit(timeout: .seconds(30)), "criu lazy-pages \(daemon.pid) did not die")
        #expect(daemon.termination == .signalled(signal: SIGKILL))
        #expect(daemon.heldFaultHandlers == 1, "the hold survives the daemon")

        // A client wakes the server: its interpreter needs pages the dead daemon never served.
        let answer = Mutex<String?>(nil)
        let asked = DispatchSemaphore(value: 0)
        let path = netns.filePath
        Thread.detachNewThread {
            let reply = try? NetworkNamespace.httpGet(netns: path, port: port, timeout: .seconds(120))
            answer.withLock { $0 = reply.map { "\($0.status) \($0.body)" } ?? "no answer" }
            asked.signal()
        }
        let waiting = eventually(within: 60) { wchan(restored.pid) == "handle_userfault" }
        #expect(waiting, "the server is not waiting on its missing pages: wchan \(wchan(restored.pid) ?? "gone")")
        #expect(isAlive(restored.pid), "the server died: it ran on zero-filled pages")
        #expect(
            answer.withLock { $0 } == nil,
            "the server answered without its memory: \(answer.withLock { $0 } ?? "")"
        )

        // Kill it as the shim does, then release: it never runs on.
        _ = kill(restored.pid, SIGKILL)
        daemon.releaseFaultHandlers()
        #expect(waitGoneAndReap(restored.pid, within: 30), "the restored server \(restored.pid) is still there")
        #expect(daemon.heldFaultHandlers == 0)
        #expect(asked.wait(timeout: .now() + 60) == .success, "the client never returned")
        #expect(answer.withLock { $0 } == "no answer")
    }

    /// A daemon that serves everything: the hold follows its table and is released after its
    /// clean end; the restored server answers with its memory before and after, and can still
    /// give memory back (no event waits on a held userfaultfd nobody reads).
    @Test func daemonFinishes_holdReleased_serverKeepsServing() throws {
        let port: UInt16 = 8095
        let lab = try lazyLab("hold2", port: port, touchMiB: 32)
        let (netns, images, daemon, options) = (lab.netns, lab.images, lab.daemon, lab.options)
        defer { daemon.stop() }
        var hooks = CRIUHooks()
        hooks.holdingFaultHandlers(of: daemon)
        let restored = try criu.restore(imagesDir: images.filePath, options: options, hooks: hooks)
        defer { killAndReap(restored.pid) }
        #expect(daemon.heldFaultHandlers == 1)
        #expect(try counter(netns: netns, port: port).count == 3, "state intact after the lazy restore")
        #expect(daemon.waitForExit(timeout: .seconds(60)), "criu lazy-pages did not finish")
        #expect(daemon.termination == .exited(code: 0))
        daemon.releaseFaultHandlers()
        #expect(daemon.heldFaultHandlers == 0)
        #expect(try counter(netns: netns, port: port).count == 4, "still serving after the release")
        #expect(isAlive(restored.pid))
    }

    /// A daemon that dies at `post-restore`, before the hold took its userfaultfds: the hold
    /// fails, so CRIU aborts the restore before any restored process runs.
    @Test func daemonDeadAtTheHold_restoreAborted() throws {
        let port: UInt16 = 8096
        let lab = try lazyLab("hold3", port: port, touchMiB: 8)
        let (images, pid, daemon, options) = (lab.images, lab.pid, lab.daemon, lab.options)
        defer { daemon.stop() }
        var hooks = CRIUHooks()
        hooks["post-restore"] = { note in
            _ = kill(daemon.pid, SIGKILL)
            _ = daemon.waitForExit(timeout: .seconds(30))
            _ = try daemon.holdFaultHandlers(treeAt: note.pid ?? -1, timeout: .seconds(5))
        }
        var failure: CRIUError?
        do throws(CRIUError) {
            let restored = try criu.restore(imagesDir: images.filePath, options: options, hooks: hooks)
            killAndReap(restored.pid)
        } catch {
            failure = error
        }
        #expect(failure?.code == .hookFailed, "the restore went on without the daemon: \(String(describing: failure))")
        #expect(
            "\(String(describing: failure))".contains(
                "ended during the restore, before the restored processes resumed"
            ),
            "\(String(describing: failure))"
        )
        #expect(daemon.termination == .signalled(signal: SIGKILL))
        #expect(daemon.heldFaultHandlers == 0)
        // CRIU restores a plain process with its old pid; the aborted restore killed it.
        #expect(eventually(within: 30) { !isAlive(pid) }, "the restored server \(pid) is left")
    }
}

/// `/proc/<pid>/wchan`: where a sleeping process waits; nil when it is gone.
private func wchan(_ pid: Int32) -> String? {
    try? String(contentsOfFile: "/proc/\(pid)/wchan", encoding: .utf8)
}
