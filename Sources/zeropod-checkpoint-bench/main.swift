import ArgumentParser
import Foundation
import ZPCheckpointTestKit
import ZPSystem
import ZPTestSupport

/// `zeropod-checkpoint-bench`: our container checkpoint/restore against runc's, side by side.
struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "zeropod-checkpoint-bench",
        abstract: "Container checkpoint and restore → first response: ZPCheckpoint vs runc, interleaved trials."
    )

    @Option(help: "Trials per workload (each trial runs both paths).")
    var trials = 5

    @Option(help: "Comma-separated workloads: busybox, nginx.")
    var workloads = "busybox,nginx"

    @Option(help: "Repository root (for scripts/rootfs.sh).")
    var repoRoot = FileManager.default.currentDirectoryPath

    @Option(
        help: """
            Run every trial in a copy of this mount namespace holding this many extra tmpfs mounts \
            (a node with many pods holds thousands; decision 0067). The copy goes away with the run.
            """
    )
    var crowdMounts = 0

    func run() throws {
        guard getuid() == 0 else { throw ValidationError("run as root (runc, CRIU, network namespaces)") }
        let ws = try workloads.split(separator: ",").map { name -> TestWorkload in
            guard let w = TestWorkload(rawValue: String(name)) else {
                throw ValidationError("unknown workload \(name)")
            }
            return w
        }
        var bench = CheckpointBench(trials: trials, workloads: ws, repoRoot: repoRoot, keepImages: false)
        let env = ProcessInfo.processInfo.environment
        let compat = env["ZPCK_MNTNS_COMPAT"] == "1"
        let level = env["ZPCK_LOG_LEVEL"].flatMap { Int32($0) }
        // Decision 0067: the restore worker in a mount namespace of its own ("own", the default)
        // or in this process's ("host"), for comparisons.
        let workerMounts = env["ZPCK_WORKER_MNTNS"] ?? "own"
        guard workerMounts == "own" || workerMounts == "host" else {
            throw ValidationError("ZPCK_WORKER_MNTNS must be own or host, not \(workerMounts)")
        }
        // Decision 0072: the restores' CRIU gets a cgroup yard of links ("links") or mounts its own
        // ("own", the library's default for restores).
        let yard = env["ZPCK_CGROUP_YARD"] ?? "own"
        guard yard == "links" || yard == "own" else {
            throw ValidationError("ZPCK_CGROUP_YARD must be links or own, not \(yard)")
        }
        bench.restoreOverrides = { o in
            o.cgroupYard = yard == "links"
            o.workerMountNamespace = workerMounts == "own"
            o.criu.mountNamespaceCompatMode = compat
            if let level { o.criu.logLevel = level }
        }
        let table: String
        if crowdMounts > 0 {
            let crowd = "/tmp/\(uniqueName("zpck-crowd"))"
            mkdir(crowd, 0o700)
            defer { _ = try? FileManager.default.removeItem(atPath: crowd) }
            let count = crowdMounts
            table = try MountPoints.performInNamespaceCopy { () -> Result<String, any Error> in
                Result { () throws -> String in
                    for i in 0..<count {
                        mkdir("\(crowd)/\(i)", 0o700)
                        try MountPoints.mount(
                            source: "crowd",
                            target: "\(crowd)/\(i)",
                            type: "tmpfs",
                            flags: 0,
                            data: "size=4k"
                        )
                    }
                    let total = try MountPoints.ofThisThread().count
                    FileHandle.standardError.write(Data("mounts where the trials run: \(total)\n".utf8))
                    return try bench.run()
                }
            }.get()
        } else {
            table = try bench.run()
        }
        print(
            "zeropod-checkpoint-bench: \(trials) interleaved trials per workload (extra mounts \(crowdMounts), worker mounts \(workerMounts), mntns compat \(compat), "
                + "restore log level \(level.map(String.init) ?? "4"))"
        )
        print(table)
    }
}

BenchCommand.main()
