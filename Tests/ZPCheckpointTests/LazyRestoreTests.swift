import Foundation
import SystemPackage
import Testing
import ZPSystem
import ZPTestSupport

@testable import ZPCheckpoint

@Suite("Lazy restore (userfaultfd + criu lazy-pages)", .serialized, .enabled(if: isRoot, "needs root for CRIU"))
struct LazyRestoreTests {
    let criu = Checkpointer()

    /// Restores `images` (full or lazy) and returns the time from the restore call to the first
    /// answer, and for lazy the time the lazy-pages daemon took to start (before the restore call).
    func restoreAndTime(
        _ images: FilePath,
        netns: TestNetns,
        port: UInt16,
        lazy: Bool,
        expectCount: Int
    )
        throws -> (Duration, Duration, Int32, LazyPagesDaemon?)
    {
        let ns = SharedDescriptor(try OwnedDescriptor.open(netns.filePath, O_RDONLY))
        var o = processRestoreOptions(netns: ns)
        o.lazyPages = lazy
        let daemonStart = ContinuousClock.now
        var daemon: LazyPagesDaemon?
        if lazy { daemon = try LazyPagesDaemon(criuPath: criu.criuPath, imagesDir: images) }
        let start = ContinuousClock.now
        let r = try criu.restore(imagesDir: images, options: o)
        let c = try counter(netns: netns, port: port)
        let elapsed = ContinuousClock.now - start
        #expect(c.count == expectCount, "state intact after \(lazy ? "lazy" : "full") restore")
        return (elapsed, start - daemonStart, r.pid, daemon)
    }

    @Test(.enabled(if: lazyPagesHere, "CRIU reports no lazy_pages support (userfaultfd) on this kernel"))
    func lazyRestore_of256MiB_answersBeforeAFullRestoreWould() throws {
        let netns = try TestNetns("zpck-lazy")
        let port: UInt16 = 8090
        let pid = try startCounterServer(netns: netns, port: port, touchMiB: 256)
        var live: Int32 = pid
        defer { killAndReap(live) }
        let images = try TemporaryDirectory("zpck-lazy-img")
        var dump = DumpOptions()
        dump.external = [try NetworkNamespace.externalEntry(for: netns.filePath)]
        let d = try criu.dump(pid: pid, imagesDir: images.filePath, options: dump)
        _ = eventually(every: 0.01) { !isAlive(pid) }
        var st: Int32 = 0
        _ = waitpid(pid, &st, WNOHANG)
        let size = try shell("du -sm '\(images.filePath)' | cut -f1").trimmingCharacters(in: .whitespacesAndNewlines)
        print("lazy: dumped \(size) MiB in \(milliseconds(d.timings.total)) ms")

        let (full, _, fullPID, _) = try restoreAndTime(
            images.filePath,
            netns: netns,
            port: port,
            lazy: false,
            expectCount: 2
        )
        live = fullPID
        killAndReap(fullPID)
        let (lazy, daemonStart, lazyPID, daemon) = try restoreAndTime(
            images.filePath,
            netns: netns,
            port: port,
            lazy: true,
            expectCount: 2
        )
        live = lazyPID
        #expect(try counter(netns: netns, port: port).count == 3)
        let finished = daemon?.waitForExit(timeout: .seconds(60)) ?? false
        print(
            "lazy: restore call → first response: full \(milliseconds(full)) ms, lazy \(milliseconds(lazy)) ms "
                + "(+ \(milliseconds(daemonStart)) ms to start the lazy-pages daemon beforehand) "
                + "(lazy/full = \(String(format: "%.2f", Double(lazy.components.attoseconds + lazy.components.seconds * 1_000_000_000_000_000_000) / Double(full.components.attoseconds + full.components.seconds * 1_000_000_000_000_000_000))); "
                + "lazy-pages daemon finished the remaining pages: \(finished))"
        )
        #expect(try counter(netns: netns, port: port).count == 4, "still serving after all pages arrived")
        // Outside a shim nobody else reaps the daemon: its own status says it finished, and so does its log.
        #expect(
            daemon?.termination == .exited(code: 0),
            "lazy-pages ended with \(String(describing: daemon?.termination))"
        )
        if let daemon {
            #expect(
                LazyPagesDaemon.logShowsEveryProcessServed(daemon.logPath),
                "no transfer summary in \(daemon.logPath)"
            )
        }
        daemon?.stop()
    }

    @Test(.enabled(if: lazyPagesHere, "CRIU reports no lazy_pages support (userfaultfd) on this kernel"))
    func lazyPagesDaemon_stop_recordsItsKill() throws {
        let netns = try TestNetns("zpck-lazystop")
        let port: UInt16 = 8091
        let pid = try startCounterServer(netns: netns, port: port, touchMiB: 8)
        defer { killAndReap(pid) }
        let images = try TemporaryDirectory("zpck-lazy-stop")
        var dump = DumpOptions()
        dump.external = [try NetworkNamespace.externalEntry(for: netns.filePath)]
        _ = try criu.dump(pid: pid, imagesDir: images.filePath, options: dump)
        let daemon = try LazyPagesDaemon(criuPath: criu.criuPath, imagesDir: images.filePath)
        #expect(daemon.termination == nil)
        #expect(!daemon.waitForExit(timeout: .milliseconds(200)), "lazy-pages exited with no restore to serve")
        daemon.stop()
        #expect(daemon.termination == .signalled(signal: SIGKILL))
        #expect(daemon.termination?.isClean == false)
        #expect(!LazyPagesDaemon.logShowsEveryProcessServed(daemon.logPath), "a daemon that served nobody")
    }

    @Test func lazyPagesLog_everyReceivedProcessNeedsASummary() {
        let twoServed = """
            (00.001000) uffd: Waiting for incoming connections on lazy-pages.socket
            (00.020000) uffd: Received PID: 41, uffd: 7
            (00.020100) uffd: 41-7: Found 300 pages to be handled by UFFD
            (00.020500) uffd: Received PID: 42, uffd: 8
            (00.090000) uffd: 42-8: UFFD transferred pages: (12/12)
            (00.120000) uffd: 41-7: UFFD transferred pages: (300/300)
            """
        #expect(LazyPagesDaemon.logShowsEveryProcessServed(text: twoServed))
        let cut = twoServed.split(separator: "\n").dropLast().joined(separator: "\n")
        #expect(!LazyPagesDaemon.logShowsEveryProcessServed(text: cut), "pid 41 has no summary")
        #expect(!LazyPagesDaemon.logShowsEveryProcessServed(text: ""), "an empty log names no process")
        #expect(
            LazyPagesDaemon.logShowsEveryProcessServed(
                text: "Received PID: 5, uffd: 3\n5-3: UFFD transferred pages: (0/4)"
            ),
            "a process that exited before its pages were pushed needs none"
        )
        #expect(LazyPagesDaemon.Termination(waitStatus: 0) == .exited(code: 0))
        #expect(LazyPagesDaemon.Termination(waitStatus: 1 << 8) == .exited(code: 1))
        #expect(LazyPagesDaemon.Termination(waitStatus: 9) == .signalled(signal: 9))
    }
}
