import Testing
@testable import zpbench

/// The pieces of the zeropod-swift columns that do not need a containerd: reading the shim's log
/// lines and the targets' verdicts.
@Suite("zpbench zeropod-swift report pieces")
struct ZeropodReportTests {
    /// A line as containerd 2.x copies it from the shim's stderr (swift-log's stream handler).
    static let checkpointLine = "2026-11-29T13:42:01+0000 info containerd-shim-zeropod-v2: container=zpbench-busybox "
        + "criu=total 101.3 ms (spawn 10.9, request 90.3; pre-dump@44.6 post-dump@88.8) id=zpbench-busybox "
        + "[ZPShim] checkpointing done in 104.1 ms"

    @Test("the checkpoint time and CRIU's timings come out of the shim's log line")
    func parsesShimLogLine() {
        #expect(ZeropodRuntime.number(after: "checkpointing done in ", in: Self.checkpointLine) == 104.1)
        #expect(ZeropodRuntime.metadata("criu", in: Self.checkpointLine)
            == "total 101.3 ms (spawn 10.9, request 90.3; pre-dump@44.6 post-dump@88.8)")
        #expect(ZeropodRuntime.number(after: "restored process: ", in: Self.checkpointLine) == nil)
        #expect(ZeropodRuntime.metadata("nothing", in: Self.checkpointLine) == nil)
    }

    @Test("targets print the ratio and by how much a miss misses")
    func targetVerdicts() {
        func sample(_ rt: String, ck: Double, rf: Double) -> Sample {
            var s = Sample(workload: "nginx", runtime: rt, cycle: 1)
            s.checkpointMs = ck
            s.restoreFirstResponseMs = rf
            return s
        }
        let report = Report(samples: [sample("runc", ck: 200, rf: 100), sample(Report.zeropod, ck: 100, rf: 80)],
                            failures: [], cycles: 1, runtimes: ["runc", Report.zeropod])
        let text = report.zeropodMarkdown().joined(separator: "\n")
        #expect(text.contains("nginx checkpoint zp/runc: 0.50 (target ≤ 0.60) met"))
        #expect(text.contains("nginx restore → 1st response zp/runc: 0.80 (target ≤ 0.70) MISSED by 14 %"))
        #expect(Report(samples: [sample("runc", ck: 1, rf: 1)], failures: [], cycles: 1, runtimes: ["runc"])
            .zeropodMarkdown().isEmpty)
    }
}
