import ArgumentParser
import Foundation
import Synchronization
import Testing
import ZPAPI
import ZPCLI
import ZPCore
import ZPTTRPC
import ZPTestSupport

// `zeropod status` in process: argument parsing, the node settings it reads, and its output
// against a fake shim (ZPTTRPC's server with canned answers) on a real unix socket. No root.

/// What a command wrote, by stream.
final class CapturedOutput: Sendable {
    private let lines = Mutex<[String]>([])
    private let problems = Mutex<[String]>([])

    var output: CommandOutput {
        CommandOutput(
            line: { [self] l in lines.withLock { $0.append(l) } },
            text: { [self] t in
                lines.withLock { $0 += t.split(separator: "\n", omittingEmptySubsequences: false).map(String.init) }
            },
            problem: { [self] p in problems.withLock { $0.append(p) } }
        )
    }

    var stdout: [String] { lines.withLock { $0 } }
    var stderr: [String] { problems.withLock { $0 } }
}

/// A shim's status service with containers c1 (scaled down) and c2 (running).
func fakeShim() -> TTRPCRouter {
    var router = TTRPCRouter()
    let time = ProtobufTimestamp(seconds: 1_700_000_000, nanos: 0)
    let c1 = StatusAPI.ContainerStatus(
        id: "c1",
        name: "web",
        podName: "p",
        podNamespace: "ns",
        lifecyclePhase: .scaledDown,
        pid: 7,
        phaseSince: time,
        checkpointErrors: 1
    )
    let c2 = StatusAPI.ContainerStatus(id: "c2", lifecyclePhase: .running, pid: 9)
    router.register(service: StatusAPI.service, method: StatusAPI.getStatus) { call in
        let id = try StatusAPI.ContainerRequest(decoding: call.payload).id
        guard let status = [c1, c2].first(where: { $0.id == id }) else {
            throw TTRPCStatusError(.notFound, "GetStatus: container \"\(id)\" is not served by this shim")
        }
        return status.encoded()
    }
    router.register(service: StatusAPI.service, method: StatusAPI.listContainers) { _ in
        StatusAPI.ListContainersResponse(containers: [c1, c2]).encoded()
    }
    router.register(service: StatusAPI.service, method: StatusAPI.metrics) { _ in
        StatusAPI.MetricsResponse(containers: [
            StatusAPI.ContainerMetrics(id: "c1", name: "web", podName: "p", podNamespace: "ns", running: false),
            StatusAPI.ContainerMetrics(id: "c2", running: true),
        ]).encoded()
    }
    router.registerServerStream(service: StatusAPI.service, method: StatusAPI.subscribeStatus) { call, writer in
        let request = try StatusAPI.SubscribeStatusRequest(decoding: call.payload)
        guard request.initialSnapshot else { throw TTRPCStatusError(.invalidArgument, "the CLI asks for a snapshot") }
        try await writer.send(StatusAPI.StatusChange(sequence: 3, time: time, status: c2, snapshot: true).encoded())
        try await writer.send(
            StatusAPI.StatusChange(
                sequence: 4,
                missed: 2,
                time: time,
                status: c1,
                event: .checkpointFinished(duration: .milliseconds(12))
            ).encoded()
        )
    }
    return router
}

/// Parses `zeropod <arguments>` into a status command.
func statusCommand(_ arguments: [String]) throws -> StatusCommand {
    let command = try ZeropodCommand.parseAsRoot(["status"] + arguments)
    return try #require(command as? StatusCommand)
}

/// 100 s after the fake containers' `phaseSince`.
let fixedNow: @Sendable () -> Int64 = { 1_700_000_100 * 1_000_000_000 }

@Suite struct StatusCommandParsingTests {
    @Test func options_areParsed() throws {
        let c = try statusCommand(["--run-dir", "/run/zp", "--id", "c1", "--watch"])
        #expect(c.node.runDirectory == "/run/zp" && c.id == "c1" && c.watch && !c.metrics && c.socket == nil)
        #expect(try statusCommand(["--socket", "/r/s/a.sock", "--metrics"]).metrics)
    }

    @Test(arguments: [
        (["--watch", "--metrics"], "--watch and --metrics cannot be combined"),
        (["--socket", "/x.sock", "--run-dir", "/run/zp"], "--socket names the status socket itself"),
        (["--id", ""], "--id: the container id is empty"),
        (["--frobnicate"], "--frobnicate"),
    ])
    func conflictingOrUnknownOptions_areRefusedByName(arguments: [String], message: String) {
        #expect {
            _ = try statusCommand(arguments)
        } throws: { error in
            ZeropodCommand.message(for: error).contains(message)
        }
    }
}

@Suite struct NodeOptionsTests {
    func scratch() throws -> String {
        let dir = "/tmp/zpcli-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        return dir
    }

    @Test func file_thenRunDirOverride() throws {
        let dir = try scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try "run-dir = /run/a\nstate-dir = /var/lib/b\n".write(
            toFile: dir + "/node.conf",
            atomically: true,
            encoding: .utf8
        )
        let fromEnv = try statusCommand([]).node.nodeConfig(environment: ["ZEROPOD_NODE_CONFIG": dir + "/node.conf"])
        #expect(fromEnv.layout == NodeLayout(runDirectory: "/run/a", stateDirectory: "/var/lib/b"))
        let overridden = try statusCommand(["--node-config", dir + "/node.conf", "--run-dir", "/run/c"]).node
            .nodeConfig(environment: [:])
        #expect(overridden.runDirectory == "/run/c" && overridden.stateDirectory == "/var/lib/b")
        // A missing file that was not named explicitly means the defaults (as for the shim).
        let defaults = try statusCommand([]).node.nodeConfig(environment: ["ZEROPOD_NODE_CONFIG": dir + "/none.conf"])
        #expect(defaults == NodeConfig())
    }

    @Test func badFileOrOption_isAnErrorNamingIt() throws {
        let dir = try scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try "# node\nrun-dir = relative/path\n".write(toFile: dir + "/bad.conf", atomically: true, encoding: .utf8)
        #expect(
            throws: NodeOptionsError(
                message: "node settings \(dir)/bad.conf:2: run-dir: invalid path \"relative/path\": must be absolute"
            )
        ) {
            try statusCommand(["--node-config", dir + "/bad.conf"]).node.nodeConfig(environment: [:])
        }
        #expect {
            try statusCommand(["--node-config", dir + "/none.conf"]).node.nodeConfig(environment: [:])
        } throws: { error in
            "\(error)".hasPrefix("--node-config \(dir)/none.conf: cannot be read: ")
                && "\(error)".contains("No such file")
        }
        // A default file that exists but cannot be read is an error too (a folder here), not the defaults.
        #expect {
            try statusCommand([]).node.nodeConfig(environment: ["ZEROPOD_NODE_CONFIG": dir])
        } throws: { error in
            "\(error)".hasPrefix("node settings \(dir): cannot be read: ")
        }
        #expect(throws: NodeOptionsError(message: "--run-dir: invalid path \"run\": must be absolute")) {
            try statusCommand(["--run-dir", "run"]).node.nodeConfig(environment: [
                "ZEROPOD_NODE_CONFIG": dir + "/none.conf"
            ])
        }
        let long = "/" + String(repeating: "r", count: NodeLayout.maximumRunDirectoryLength)
        #expect {
            try statusCommand(["--run-dir", long]).node.nodeConfig(environment: [
                "ZEROPOD_NODE_CONFIG": dir + "/none.conf"
            ])
        } throws: { error in
            "\(error)".hasPrefix("--run-dir: invalid path")
                && "\(error)".contains("at most \(NodeLayout.maximumRunDirectoryLength)")
        }
    }
}

@Suite struct StatusCommandOutputTests {
    @Test func list_oneLinePerContainer_fromTheRunDirectory() async throws {
        try await withTTRPCTestServer(fakeShim(), socketName: "run/s/abc.sock") { folder, _ in
            let out = CapturedOutput()
            let status = await (try statusCommand(["--run-dir", folder + "/run"])).execute(
                output: out.output,
                environment: [:],
                now: fixedNow
            )
            #expect(status == 0 && out.stderr.isEmpty, "\(out.stderr)")
            #expect(
                out.stdout == [
                    "c1 pod=ns/p container=web phase=SCALED_DOWN lifecycle=SCALED_DOWN since=100s-ago pid=7 checkpoint-errors=1 restore-errors=0",
                    "c2 phase=RUNNING lifecycle=RUNNING pid=9 checkpoint-errors=0 restore-errors=0",
                ]
            )
        }
    }

    @Test func nodeConfigFile_fromTheEnvironment_namesTheRunDirectory() async throws {
        try await withTTRPCTestServer(fakeShim(), socketName: "run/s/abc.sock") { folder, _ in
            try "run-dir = \(folder)/run\n".write(toFile: folder + "/node.conf", atomically: true, encoding: .utf8)
            let out = CapturedOutput()
            let status = await (try statusCommand(["--id", "c2"]))
                .execute(output: out.output, environment: ["ZEROPOD_NODE_CONFIG": folder + "/node.conf"], now: fixedNow)
            #expect(
                status == 0
                    && out.stdout == ["c2 phase=RUNNING lifecycle=RUNNING pid=9 checkpoint-errors=0 restore-errors=0"],
                "\(out.stderr)"
            )
        }
    }

    @Test func aDeadSocket_isReported_andTheOthersStillShown() async throws {
        try await withTTRPCTestServer(fakeShim(), socketName: "run/s/abc.sock") { folder, socket in
            // A socket file left by a shim that is gone (nothing listens), sorted before the live one.
            #expect(FileManager.default.createFile(atPath: folder + "/run/s/aaa.sock", contents: nil))
            #expect(FileManager.default.createFile(atPath: folder + "/run/s/not-a-socket.txt", contents: nil))
            let out = CapturedOutput()
            let status = await (try statusCommand(["--run-dir", folder + "/run"])).execute(
                output: out.output,
                environment: [:],
                now: fixedNow
            )
            #expect(status == 1)
            #expect(
                out.stderr.count == 1 && out.stderr[0].hasPrefix("zeropod status \(folder)/run/s/aaa.sock: "),
                "\(out.stderr)"
            )
            #expect(out.stdout.first == "# \(socket)" && out.stdout.count == 3, "\(out.stdout)")
        }
    }

    @Test func id_notServed_isExitOne_withTheShimsMessage() async throws {
        try await withTTRPCTestServer(fakeShim()) { _, socket in
            let out = CapturedOutput()
            let status = await (try statusCommand(["--socket", socket, "--id", "nope"])).execute(
                output: out.output,
                environment: [:],
                now: fixedNow
            )
            #expect(status == 1 && out.stdout.isEmpty)
            #expect(
                out.stderr.count == 1 && out.stderr[0].contains(#"container "nope" is not served by this shim"#),
                "\(out.stderr)"
            )
        }
    }

    @Test func metrics_prometheusText_filteredByID() async throws {
        try await withTTRPCTestServer(fakeShim()) { _, socket in
            let all = CapturedOutput()
            let allCommand = try statusCommand(["--socket", socket, "--metrics"])
            #expect(await allCommand.execute(output: all.output, environment: [:], now: fixedNow) == 0)
            #expect(all.stdout.contains(#"zeropod_running{container="web",pod="p",namespace="ns"} 0"#))
            #expect(all.stdout.contains(#"zeropod_running{container="c2",pod="",namespace=""} 1"#))
            let one = CapturedOutput()
            let oneCommand = try statusCommand(["--socket", socket, "--metrics", "--id", "c2"])
            #expect(await oneCommand.execute(output: one.output, environment: [:], now: fixedNow) == 0)
            #expect(one.stdout.contains(#"zeropod_running{container="c2",pod="",namespace=""} 1"#))
            #expect(!one.stdout.contains { $0.contains(#"container="web""#) })
        }
    }

    @Test func watch_printsTheSnapshotThenEachChange_untilTheShimEndsTheStream() async throws {
        try await withTTRPCTestServer(fakeShim()) { _, socket in
            let out = CapturedOutput()
            let status = await (try statusCommand(["--socket", socket, "--watch"])).execute(
                output: out.output,
                environment: [:],
                now: fixedNow
            )
            #expect(status == 0, "\(out.stderr)")
            #expect(
                out.stdout == [
                    "snapshot | c2 phase=RUNNING lifecycle=RUNNING pid=9 checkpoint-errors=0 restore-errors=0",
                    "#4 (missed 2) checkpointed in 12ms | c1 pod=ns/p container=web phase=SCALED_DOWN lifecycle=SCALED_DOWN since=100s-ago pid=7 checkpoint-errors=1 restore-errors=0",
                ]
            )
        }
    }

    @Test func watch_withSeveralShims_isAUsageError() async throws {
        try await withTTRPCTestServer(fakeShim(), socketName: "run/s/abc.sock") { folder, _ in
            #expect(FileManager.default.createFile(atPath: folder + "/run/s/other.sock", contents: nil))
            let out = CapturedOutput()
            let status = await (try statusCommand(["--run-dir", folder + "/run", "--watch"])).execute(
                output: out.output,
                environment: [:],
                now: fixedNow
            )
            #expect(
                status == 2 && out.stderr == ["zeropod status --watch: 2 shims run here; name one with --socket PATH"]
            )
        }
    }

    @Test func noShim_isExitOne_namingTheFolder() async throws {
        let out = CapturedOutput()
        let status = await (try statusCommand(["--run-dir", "/tmp/zpcli-none-\(getpid())"])).execute(
            output: out.output,
            environment: [:],
            now: fixedNow
        )
        #expect(status == 1 && out.stderr == ["zeropod status: no shim status socket in /tmp/zpcli-none-\(getpid())/s"])
    }
}
