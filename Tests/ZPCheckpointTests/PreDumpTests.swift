import Foundation
import SystemPackage
import Testing
import ZPCheckpointTestKit
import ZPSystem
import ZPTestSupport

@testable import ZPCheckpoint

/// `stats-dump` of a CRIU 4.2.1 dump of `sleep` (two tasks): service and stats magic, size 37,
/// then `stats_entry { dump { freezing_time: 195 frozen_time: 21980 memdump_time: 849
/// memwrite_time: 325 pages_scanned: 206 pages_skipped_parent: 0 pages_written: 150 ... } }`.
private let sleepStatsImage: [UInt8] = [
    0x40, 0x59, 0x10, 0x55, 0x06, 0x33, 0x09, 0x57, 0x25, 0x00, 0x00, 0x00, 0x0a, 0x23, 0x08, 0xc3,
    0x01, 0x10, 0xdc, 0xab, 0x01, 0x18, 0xd1, 0x06, 0x20, 0xc5, 0x02, 0x28, 0xce, 0x01, 0x30, 0x00,
    0x38, 0x96, 0x01, 0x40, 0x00, 0x48, 0x00, 0x50, 0x0e, 0x58, 0x0e, 0x60, 0x00, 0x68, 0x00, 0x70,
    0x00,
]

/// Why the real pre-dump tests cannot run here, or nil when they can.
private func memoryTrackingMissing(_ criu: Checkpointer) -> String? {
    do {
        if try criu.supportsMemoryTracking() { return nil }
        return "CRIU's FEATURE_CHECK says mem_track is not supported: kernel \(kernelRelease()) has no "
            + "soft-dirty page tracking (CONFIG_MEM_SOFT_DIRTY)"
    } catch {
        return "CRIU's FEATURE_CHECK failed: \(error)"
    }
}

private func kernelRelease() -> String {
    ((try? String(contentsOfFile: "/proc/sys/kernel/osrelease", encoding: .utf8)) ?? "?")
        .trimmingCharacters(in: .whitespacesAndNewlines)
}

@Suite("CRIU statistics image")
struct CRIUStatsTests {
    @Test func statsImage_ofARealDump_decodesEveryCounter() throws {
        let s = try CRIUDumpStats(file: sleepStatsImage)
        #expect(s.freezingTime == .microseconds(195))
        #expect(s.frozenTime == .microseconds(21980))
        #expect(s.memdumpTime == .microseconds(849))
        #expect(s.memwriteTime == .microseconds(325))
        #expect(s.pagesScanned == 206)
        #expect(s.pagesSkippedParent == 0)
        #expect(s.pagesWritten == 150)
        #expect(
            s.description
                == "frozen 22.0 ms, memdump 0.8 ms, memwrite 0.3 ms, pages written 150 of 206 scanned (0 in parent)"
        )
    }

    @Test func statsImage_wrongMagicOrShortBody_isRefusedNamingTheFile() {
        var wrong = sleepStatsImage
        wrong[4] = 0
        #expect {
            try CRIUDumpStats(file: wrong, path: "/x/stats-dump")
        } throws: { error in
            "\(error)".contains("/x/stats-dump") && "\(error)".contains("not CRIU's stats image")
        }
        #expect(throws: CRIUStatsError.self) { try CRIUDumpStats(file: Array(sleepStatsImage.prefix(20))) }
        #expect(throws: CRIUStatsError.self) { try CRIUDumpStats(file: [0x40, 0x59]) }
    }
}

@Suite("Pre-dump and incremental dumps against the real CRIU", .serialized, .enabled(if: isRoot, "needs root for CRIU"))
struct PreDumpTests {
    let criu = Checkpointer()

    @Test func dump_reportsCRIUsStatistics_withEveryTouchedPageWritten() throws {
        let netns = try TestNetns("zpck-stats")
        let pid = try startCounterServer(netns: netns, port: 8082, touchMiB: 16)
        defer { killAndReap(pid) }
        let dir = try TemporaryDirectory("zpck-stats-img")
        var o = DumpOptions()
        o.external = [try NetworkNamespace.externalEntry(for: netns.filePath)]
        let d = try criu.dump(pid: pid, imagesDir: dir.filePath, options: o)
        let stats = try #require(d.stats, "the dump result carries stats-dump")
        print("process dump of 16 MiB touched: \(stats)")
        #expect(stats.pagesWritten >= 16 * 256, "16 MiB of touched pages are written")
        #expect(stats.pagesSkippedParent == 0)
        #expect(stats.frozenTime > .zero)
    }

    @Test(
        .enabled(
            if: memoryTrackingHere,
            "CRIU's FEATURE_CHECK says mem_track is not supported (no soft-dirty tracking)"
        )
    )
    func preDump_thenDumpOnIt_writesOnlyDirtiedPages_andTheChainRestores() throws {
        let netns = try TestNetns("zpck-pdchain")
        let port: UInt16 = 8083
        let pid = try startCounterServer(netns: netns, port: port, touchMiB: 32)
        var restoredPID = pid
        defer { killAndReap(restoredPID) }
        #expect(try counter(netns: netns, port: port).count == 2)
        let dir = try TemporaryDirectory("zpck-pdchain-img")
        let parent = dir.filePath.appending("pre-dump")
        var o = DumpOptions()
        o.external = [try NetworkNamespace.externalEntry(for: netns.filePath)]
        let pre = try criu.preDump(pid: pid, imagesDir: parent, options: o)
        let preStats = try #require(pre.stats)
        print("pre-dump: \(pre.timings); \(preStats)")
        #expect(isAlive(pid), "the process keeps running after a pre-dump")
        #expect(try counter(netns: netns, port: port).count == 3, "and keeps serving")
        o.parentImages = "pre-dump"
        o.trackMemory = true
        let final = try criu.dump(pid: pid, imagesDir: dir.filePath, options: o)
        let stats = try #require(final.stats)
        print("dump on the pre-dump: \(final.timings); \(stats)")
        #expect(stats.pagesSkippedParent >= 32 * 256 / 2, "the untouched heap stays in the parent")
        #expect(stats.pagesWritten * 4 < preStats.pagesWritten, "far fewer pages written than the pre-dump wrote")
        let ns = SharedDescriptor(try OwnedDescriptor.open(netns.filePath, O_RDONLY))
        let r = try criu.restore(imagesDir: dir.filePath, options: processRestoreOptions(netns: ns))
        restoredPID = r.pid
        #expect(try counter(netns: netns, port: port).count == 4, "the counter survives the chain")
    }

    @Test(
        .enabled(
            if: memoryTrackingMissingHere,
            "this kernel tracks dirty memory, so the refusal path is not taken here"
        )
    )
    func containerPreDump_withoutMemoryTracking_isRefusedBeforeCRIURuns_andTheContainerKeepsServing() throws {
        print("mem_track missing here: \(memoryTrackingMissing(criu) ?? "?")")
        let c = try TestContainer(.busybox, repoRoot: repoRoot)
        defer { c.destroy() }
        try c.start()
        #expect(c.waitForResponse() != nil)
        let dir = try TemporaryDirectory("zpck-ctr-pd-refused")
        do {
            _ = try ContainerCheckpointer(checkpointer: criu).preDump(c.container, imagesDir: dir.filePath)
            Issue.record("pre-dump did not throw on a kernel without mem_track")
        } catch {
            guard case .criu(let e) = error else {
                Issue.record("expected a CRIU error, got \(error)")
                return
            }
            #expect(e.code == .notSupported)
            #expect(e.message.contains("CONFIG_MEM_SOFT_DIRTY"), "\(e.message)")
        }
        #expect(
            !FileManager.default.fileExists(atPath: dir.filePath.appending("pre-dump.log").string),
            "CRIU was not asked to pre-dump (it aborts on such a kernel)"
        )
        #expect(c.status() == "running")
        #expect(try c.get().status == 200)
    }

    @Test(
        .enabled(
            if: memoryTrackingHere,
            "CRIU's FEATURE_CHECK says mem_track is not supported (no soft-dirty tracking)"
        )
    )
    func containerPreDump_thenIncrementalCheckpoint_restoresWithItsState() throws {
        let cc = ContainerCheckpointer(checkpointer: criu)
        let c = try TestContainer(.busybox, repoRoot: repoRoot)
        defer { c.destroy() }
        try c.start()
        #expect(c.waitForResponse() != nil)
        #expect(try c.get().body.hasPrefix("count=2"))
        let images = try TemporaryDirectory("zpck-ctr-pd-chain")
        let pre = try cc.preDump(c.container, imagesDir: images.filePath.appending("pre-dump"))
        print("container pre-dump: \(pre.timings); \(pre.stats.map(String.init(describing:)) ?? "-")")
        #expect(c.status() == "running")
        #expect(try c.get().body.hasPrefix("count=3"))
        var o = ContainerCheckpointOptions()
        o.criu.parentImages = "pre-dump"
        o.criu.trackMemory = true
        let cp = try cc.checkpoint(c.container, imagesDir: images.filePath, options: o)
        print(
            "container checkpoint on the pre-dump: \(milliseconds(cp.total)) ms; \(cp.dump.stats.map(String.init(describing:)) ?? "-")"
        )
        #expect((cp.dump.stats?.pagesSkippedParent ?? 0) > 0)
        var ro = ContainerRestoreOptions()
        ro.stdio = c.stdio.containerSide.map { Optional($0) }
        _ = try cc.restore(c.container, imagesDir: images.filePath, options: ro)
        #expect(c.status() == "running")
        #expect(try c.get().body.hasPrefix("count=4"))
    }
}
