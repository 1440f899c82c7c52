import Testing

@testable import zpbench

/// The pieces of the zeropod-swift columns that do not need a containerd: reading the shim's log
/// lines and the targets' verdicts.
@Suite("zpbench zeropod-swift report pieces")
struct ZeropodReportTests {
    @Test("a lazy-pages log's page faults become merged working-set runs per task")
    func workingSetFromLazyPagesLog() {
        let log = """
            (00.010000) uffd: 7-12: #PF at 0x7f0000002000
            (00.010100) uffd: 7-12: #PF at 0x7f0000001000
            (00.010200) uffd: 7-12: #PF at 0x7f0000003abc
            (00.010300) uffd: 7-12: uffd_copy: 0x7f0000005000/4096
            (00.010400) uffd: 9-14: #PF at 0x55000000a000
            (00.010500) uffd: 7-12: #PF at 0x7f0000009000
            """
        let ws = RestoreVariantsBench.workingSet(fromLazyPagesLog: log)
        #expect(ws.text == "7 7f0000001000 3\n7 7f0000009000 1\n9 55000000a000 1\n")
        #expect(ws.pages == 5 && ws.runs == 3)
    }

    @Test("restore variants parse; a working set needs a lazy restore")
    func restoreVariants() throws {
        let v = try RestoreVariant(parsing: "lazy-v2-ws@/opt/criu")
        #expect(v.lazy && v.logLevel == 2 && v.workingSet && v.criu == "/opt/criu")
        #expect(try RestoreVariant(parsing: "full").logLevel == 4)
        #expect(throws: BenchError.self) { try RestoreVariant(parsing: "full-ws") }
        #expect(throws: BenchError.self) { try RestoreVariant(parsing: "full-v9") }
        #expect(throws: BenchError.self) { try RestoreVariant(parsing: "eager") }
    }

    /// A line as containerd 2.x copies it from the shim's stderr (swift-log's stream handler).
    static let checkpointLine =
        "2026-11-29T13:42:01+0000 info containerd-shim-zeropod-v2: container=zpbench-busybox "
        + "criu=total 101.3 ms (spawn 10.9, request 90.3; pre-dump@44.6 post-dump@88.8) id=zpbench-busybox "
        + "[ZPShim] checkpointing done in 104.1 ms"

    @Test("the checkpoint time and CRIU's timings come out of the shim's log line")
    func parsesShimLogLine() {
        #expect(ZeropodRuntime.number(after: "checkpointing done in ", in: Self.checkpointLine) == 104.1)
        #expect(
            ZeropodRuntime.metadata("criu", in: Self.checkpointLine)
                == "total 101.3 ms (spawn 10.9, request 90.3; pre-dump@44.6 post-dump@88.8)"
        )
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
        let report = Report(
            samples: [sample("runc", ck: 200, rf: 100), sample(Report.zeropod, ck: 100, rf: 80)],
            failures: [],
            cycles: 1,
            runtimes: ["runc", Report.zeropod]
        )
        let text = report.zeropodMarkdown().joined(separator: "\n")
        #expect(text.contains("nginx checkpoint zp/runc (decision → process gone): 0.50 (target ≤ 0.50) met"))
        #expect(
            text.contains(
                "nginx restore → 1st response zp/runc (preparation excluded: done while scaled down): 0.80 (target ≤ 0.50) MISSED by 60 %"
            )
        )
        #expect(text.contains("nginx restore → 1st response zp/runc (preparation included for both): n/a"))
        #expect(
            Report(samples: [sample("runc", ck: 1, rf: 1)], failures: [], cycles: 1, runtimes: ["runc"])
                .zeropodMarkdown().isEmpty
        )
    }

    @Test("a variant runtime is parsed from NAME:key=value+key=value, and bad specs name the problem")
    func variantSpecs() throws {
        let (name, annotations) = try BenchCommand.parseVariant(
            "proxy-sf:zeropod-swift/listener-handover=false+zeropod-swift/speaks-first-ports=80,3306"
        )
        #expect(name == "proxy-sf")
        #expect(
            annotations == [
                "zeropod-swift/listener-handover": "false", "zeropod-swift/speaks-first-ports": "80,3306",
            ]
        )
        for (bad, says) in [
            ("proxy", "expected NAME:key=value"), (":a=b", "expected NAME:key=value"),
            ("pro xy:a=b", "may hold only letters"), ("proxy:", "no annotation"), ("proxy:a", "is not key=value"),
        ] {
            let error = #expect(throws: BenchError.self) { try BenchCommand.parseVariant(bad) }
            #expect("\(error.map { "\($0)" } ?? "")".contains(says), "\(bad)")
        }
    }

    @Test("variants are compared with runc and the default in one table")
    func variantTable() {
        func sample(_ rt: String, ck: Double, rf: Double) -> Sample {
            var s = Sample(workload: "mariadb", runtime: rt, cycle: 1)
            s.checkpointMs = ck
            s.restoreFirstResponseMs = rf
            return s
        }
        let proxy = Report.zeropod + "/proxy"
        let report = Report(
            samples: [
                sample("runc", ck: 200, rf: 100), sample(Report.zeropod, ck: 100, rf: 50),
                sample(proxy, ck: 120, rf: 80),
            ],
            failures: [],
            cycles: 1,
            runtimes: ["runc", Report.zeropod, proxy]
        )
        let text = report.variantMarkdown().joined(separator: "\n")
        #expect(
            text.contains(
                "| mariadb | zeropod-swift/proxy | 80.0 [80–80] | n/a | 120.0 [120–120] | 0.80 | 1.60 | 0.60 | 1 |"
            )
        )
        #expect(text.contains("| mariadb | runc | 100.0 [100–100] |"))
        #expect(
            Report(
                samples: [sample("runc", ck: 1, rf: 1)],
                failures: [],
                cycles: 1,
                runtimes: ["runc", Report.zeropod]
            )
            .variantMarkdown().isEmpty
        )
    }
}

@Suite struct WarmRequestsOptionTests {
    @Test("--warm-requests is parsed, and a negative count is refused by name")
    func warmRequests() throws {
        #expect(try BenchCommand.parse(["--warm-requests", "20"]).warmRequests == 20)
        #expect(try BenchCommand.parse([]).warmRequests == 0)
        do {
            _ = try BenchCommand.parse(["--warm-requests=-1"])
            Issue.record("--warm-requests=-1 was accepted")
        } catch {
            #expect(BenchCommand.message(for: error).contains("--warm-requests -1: must be 0 or more"))
        }
    }
}

@Suite struct SecondCheckpointOptionTests {
    @Test("--second-checkpoint is parsed; its section shows both runtimes' medians and the ratio, only when asked")
    func secondCheckpoint() throws {
        #expect(try BenchCommand.parse(["--second-checkpoint"]).secondCheckpoint)
        #expect(try !BenchCommand.parse([]).secondCheckpoint)
        func sample(_ rt: String, cycle: Int, second: Double, pages: UInt64) -> Sample {
            var s = Sample(workload: "nginx", runtime: rt, cycle: cycle)
            s.checkpointMs = 100
            s.secondCheckpointMs = second
            s.secondRestoreFirstResponseMs = second / 2
            var stats = CRIUStats()
            stats.pagesWritten = pages
            s.secondCriuDump = stats
            return s
        }
        let samples = [
            sample("runc", cycle: 1, second: 200, pages: 900), sample(Report.zeropod, cycle: 1, second: 40, pages: 30),
            sample("runc", cycle: 2, second: 220, pages: 910), sample(Report.zeropod, cycle: 2, second: 60, pages: 34),
        ]
        var report = Report(samples: samples, failures: [], cycles: 2, runtimes: ["runc", Report.zeropod])
        #expect(report.secondCheckpointMarkdown().isEmpty, "nothing without the option")
        report.secondCheckpoint = true
        let text = report.secondCheckpointMarkdown().joined(separator: "\n")
        #expect(text.contains("| nginx | 210.0 [200–220] | 50.0 [40–60] | 0.24 | 905 / 32 |"), "\(text)")
        #expect(text.contains("- nginx checkpoint after a restore zp/runc: 0.24 (target ≤ 0.50) met"), "\(text)")
    }
}
