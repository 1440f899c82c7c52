import Foundation
import Testing
import ZPCheckpoint
import ZPTestSupport

@testable import ZPShim

/// `zeropod.ctrox.dev/pre-dump=true` through a real containerd: the shim pre-dumps the idle
/// container halfway to its scale-down — tracking dirty memory by soft-dirty, or without it by the
/// write tracking of zeropod's CRIU build (decision 0078); where neither is possible it logs why
/// and keeps to plain dumps — scales it down and brings it back with its memory; after the restore
/// only the kept images (the next checkpoint's parent) stay.
@Suite(.serialized) struct PreDumpEndToEndTests {
    /// Whether the shim's pre-dumps track writes without soft-dirty: zeropod's CRIU build (the
    /// project's setup installs it; its kernel needs asynchronous write-protect, 6.7+).
    static let criuTracksWrites = Checkpointer(tracksWrites: true).preDumpsTrackWrites()

    /// Whether this kernel has soft-dirty tracking, asked of CRIU's own check (independent of the shim).
    static let kernelTracksDirtyMemory: Bool = {
        let criu =
            FileManager.default.isExecutableFile(atPath: "/usr/local/sbin/criu")
            ? "/usr/local/sbin/criu" : "/usr/sbin/criu"
        return (try? run([criu, "check", "--feature", "mem_dirty_track"], timeout: 60).status) == 0
    }()

    @Test(arguments: ContainerdFlavor.all)
    func preDumpAnnotation_scalesDownAndRestores_withThePreDumpOrItsReasonLogged(flavor: ContainerdFlavor) throws {
        let rootfs = try TestPaths.busyboxRootfs()
        let stateDir = "/tmp/zpshim-pd-state-\(UUID().uuidString.prefix(8))"
        let nodeConfig = stateDir + ".conf"
        try Data("state-dir = \(stateDir)\n".utf8).write(to: URL(fileURLWithPath: nodeConfig))
        defer {
            try? FileManager.default.removeItem(atPath: nodeConfig)
            try? FileManager.default.removeItem(atPath: stateDir)
        }
        let containerd = try PrivateContainerd(
            flavor: flavor,
            tag: "s2zpd",
            environment: ["ZEROPOD_NODE_CONFIG": nodeConfig]
        )
        defer { containerd.stop() }
        let netns = try TestNetns("zpshim-s2zpd")
        defer { netns.delete() }
        let id = "predump1"
        try startCounter(
            containerd,
            netns: netns,
            id: id,
            rootfs: rootfs,
            extra: ["--annotation", "zeropod.ctrox.dev/pre-dump=true"]
        )
        defer { removeTask(containerd, id) }
        let images = "\(stateDir)/i/\(containerd.namespace)/\(id)"
        print(
            "[zpshim-pd] \(flavor.name): kernel tracks dirty memory: \(Self.kernelTracksDirtyMemory), "
                + "CRIU tracks writes: \(Self.criuTracksWrites)"
        )

        for cycle in 1...2 {
            try #require(
                waitScaledDown(containerd, netns: netns, checkpoints: cycle),
                "cycle \(cycle): not scaled down: \(containerd.log(tail: 30))"
            )
            let checkpoint = try #require(containerd.logLines(containing: "checkpointing done").last)
            if Self.kernelTracksDirtyMemory || Self.criuTracksWrites {
                // Pre-dumped before the deadline; the checkpoint wrote only what changed since.
                let preDumps = containerd.logLines(containing: "pre-dump done")
                #expect(preDumps.count >= cycle, "\(containerd.log(tail: 30))")
                #expect(checkpoint.contains("parent=pre-dump"), "checkpoint on the pre-dump: \(checkpoint)")
                if !Self.kernelTracksDirtyMemory {
                    // Every process of the container (the shell and its server) is tracked.
                    let held = preDumps.last.flatMap { $0.range(of: "write-tracking=") }.map {
                        preDumps.last![$0.upperBound...].split(separator: " ").prefix(3).joined(separator: " ")
                    }
                    let counts = held?.split(separator: " ").compactMap { Int($0) } ?? []
                    #expect(
                        counts.count == 2 && counts[0] >= 1 && counts[0] == counts[1],
                        "the pre-dump's tracking is held for every process: \(preDumps)"
                    )
                    #expect(!checkpoint.contains("not tracked"), "\(checkpoint)")
                }
                #expect(
                    FileManager.default.fileExists(atPath: images + "/pre-dump"),
                    "the pre-dump is the image's parent"
                )
            } else {
                // Refused once, with the reason; plain checkpoints from then on.
                let refused = containerd.logLines(containing: "pre-dump failed")
                #expect(refused.count == 1, "one refusal, then no more pre-dumps: \(refused)")
                #expect(refused.first?.contains("CONFIG_MEM_SOFT_DIRTY") == true, "the reason is logged: \(refused)")
                #expect(containerd.logLines(containing: "pre-dump done").isEmpty)
                #expect(!checkpoint.contains("parent=pre-dump"), "a plain checkpoint: \(checkpoint)")
            }
            #expect(FileManager.default.fileExists(atPath: images + "/" + "zeropod-checkpoint.json"))
            // The next request restores it with its memory; the images (with any pre-dump inside)
            // are kept as the next checkpoint's parent (decision 0077), nothing else stays.
            #expect(netns.httpGet(port: 8080) == "count=\(cycle + 1)\n", "cycle \(cycle): \(containerd.log(tail: 30))")
            #expect(
                eventually(within: 20) {
                    (try? FileManager.default.contentsOfDirectory(atPath: images)) == ["prev"]
                        && FileManager.default.fileExists(atPath: images + "/prev/inventory.img")
                },
                "images at \(images): \((try? FileManager.default.contentsOfDirectory(atPath: images)) ?? [])"
            )
        }
        let shown = ["pre-dump done", "pre-dump failed", "checkpointing done"].flatMap {
            containerd.logLines(containing: $0)
        }
        for line in shown {
            if let range = line.range(of: "container=") {
                print("[zpshim-pd]   \(line[range.lowerBound...].prefix(240))")
            }
        }
    }
}
