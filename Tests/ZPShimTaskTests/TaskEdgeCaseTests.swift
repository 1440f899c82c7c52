// Task API edge cases (issue 15): each test drives the real TaskService through its ttrpc router,
// with a fake runc (a shell script that logs its calls) so that the shim's own behaviour is what is
// checked. A test target of its own: runc calls go through the shim's process-wide reaper
// (`wait4(-1)`), which would take the exits of other targets' Foundation subprocesses.
import Foundation
import Logging
import NIOPosix
import Testing
import ZPAPI
import ZPCore
import ZPSystem

@testable import ZPShim
@testable import ZPTTRPC

/// A scratch folder with a fake runc in it, and the task service under test.
struct FakeRuncBed: Sendable {
    let folder: String
    let runc: String
    let service: TaskService

    /// - Parameters:
    ///   - createDelay: seconds `runc create` sleeps before it answers.
    ///   - createFails: `runc create` exits 1 (after the delay).
    ///   - execDelay: seconds `runc exec` sleeps before it reads its process file.
    ///   - settings: the node settings; nil uses this runc as `runc-path`.
    init(
        createDelay: Double = 0,
        createFails: Bool = false,
        execDelay: Double = 0,
        settings: NodeSettings? = nil
    ) throws {
        folder =
            FileManager.default.temporaryDirectory.appendingPathComponent("zptask-\(UUID().uuidString.prefix(8))").path
        try FileManager.default.createDirectory(atPath: folder + "/bundle", withIntermediateDirectories: true)
        runc = folder + "/runc"
        let script = """
            #!/bin/sh
            # fake runc: logs each call; create/exec start a sleeping stand-in process.
            printf '%s\\n' "$*" >> '\(folder)/calls.log'
            while [ $# -gt 0 ]; do case "$1" in --root|--log|--log-format) shift 2;; *) break;; esac; done
            cmd=$1; shift
            case "$cmd" in
              create)
                sleep \(createDelay)
                \(createFails ? "echo 'fake runc: create refused' >&2; exit 1" : ":")
                sleep 600 </dev/null >/dev/null 2>&1 &
                echo $! > "$4"; echo $! >> '\(folder)/pids' ;;
              exec)
                sleep \(execDelay)
                printf '%s %s\\n' "$3" "$(cat "$3")" >> '\(folder)/exec.log'
                sleep 600 </dev/null >/dev/null 2>&1 &
                echo $! > "$5"; echo $! >> '\(folder)/pids' ;;
              kill|delete)
                for p in $(cat '\(folder)/pids' 2>/dev/null); do kill -9 "$p" 2>/dev/null; done ;;
            esac
            exit 0
            """
        try Data(script.utf8).write(to: URL(fileURLWithPath: runc))
        chmod(runc, 0o755)
        var node = NodeConfig()
        node.runcPath = runc
        node.runDirectory = folder + "/run"
        let group = MultiThreadedEventLoopGroup.singleton
        service = TaskService(
            namespace: "zptask",
            publisher: EventPublisher(address: "", group: group, logger: Logger(label: "test")),
            group: group,
            node: settings ?? NodeSettings(config: node),
            logger: Logger(label: "test")
        )
    }

    var bundle: String { folder + "/bundle" }

    /// The fake runc's calls so far (one line each, global flags included).
    var calls: [String] { lines(folder + "/calls.log") }
    /// `<process file> <its content>` for each `runc exec`.
    var execs: [String] { lines(folder + "/exec.log") }

    private func lines(_ path: String) -> [String] {
        ((try? String(contentsOfFile: path, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
    }

    /// Calls task method `method` with `request` the way containerd does (through the router).
    func call(_ method: TaskAPI.Method, _ request: some ProtobufMessage) async throws -> [UInt8] {
        let handler = try #require(
            service.router().unaryHandler(service: TaskAPI.serviceNames[0], method: method.rawValue)
        )
        return try await handler(
            TTRPCCall(
                service: TaskAPI.serviceNames[0],
                method: method.rawValue,
                payload: request.encoded(),
                metadata: [(TaskAPI.namespaceMetadataKey, "zptask")],
                timeoutNanoseconds: 0
            )
        )
    }

    /// Kills the stand-in processes and removes the folder.
    func remove() {
        for pid in lines(folder + "/pids").compactMap({ Int32($0) }) { kill(pid, SIGKILL) }
        try? FileManager.default.removeItem(atPath: folder)
    }
}

/// The ttrpc status code of a failed call, nil when it succeeded.
func statusCode(_ body: () async throws -> Void) async -> (RPCStatusCode, String)? {
    do {
        try await body()
        return nil
    } catch let error as TTRPCStatusError {
        return (error.code, error.message)
    } catch {
        return (.unknown, "\(error)")
    }
}

// Serialized: each test writes its fake runc and then spawns it; a spawn of a parallel test in the
// same process could inherit the still-open write descriptor and make the exec fail with ETXTBSY.
@Suite(.serialized) struct TaskEdgeCaseTests {
    /// Two `Create` calls with one id at the same time: one reaches `runc create`, the other is
    /// refused with AlreadyExists at once (before, both ran `runc create`).
    @Test func concurrentCreates_withOneID_runRuncCreateOnce() async throws {
        let bed = try FakeRuncBed(createDelay: 1, createFails: true)
        defer { bed.remove() }
        let request = CreateTaskRequest(id: "twin", bundle: bed.bundle)
        async let first = statusCode { _ = try await bed.call(.create, request) }
        async let second = statusCode { _ = try await bed.call(.create, request) }
        let outcomes = await [first, second].compactMap { $0 }
        #expect(outcomes.count == 2, "both fail: one in the fake runc, one as a duplicate")
        #expect(outcomes.filter { $0.0 == .alreadyExists }.count == 1, "\(outcomes)")
        #expect(bed.calls.filter { $0.contains(" create ") }.count == 1, "\(bed.calls)")
        // The failed Create released the id: a third one reaches runc again.
        _ = await statusCode { _ = try await bed.call(.create, request) }
        #expect(bed.calls.filter { $0.contains(" create ") }.count == 2, "\(bed.calls)")
    }

    /// Exec ids that differ only in characters a file name cannot carry as they are ("a.b", "ab",
    /// "a/b", "a_b") get process and pid files of their own: two execs started at the same time each
    /// run their own spec (before, "a.b" and "ab" shared `exec-ab.json` and one ran the other's).
    @Test func execIDs_differingInStrippedCharacters_getTheirOwnFiles() async throws {
        let bed = try FakeRuncBed(execDelay: 1)
        defer { bed.remove() }
        _ = try await bed.call(.create, CreateTaskRequest(id: "box", bundle: bed.bundle))
        for (execID, spec) in [("a.b", "SPEC-DOT"), ("ab", "SPEC-PLAIN")] {
            var request = ExecProcessRequest(id: "box", execID: execID)
            request.spec = ProtobufAny(
                typeURL: "types.containerd.io/opencontainers/runtime-spec/1/Process",
                value: Array(spec.utf8)
            )
            _ = try await bed.call(.exec, request)
        }
        async let dot = bed.call(.start, TaskProcessRequest(id: "box", execID: "a.b"))
        async let plain = bed.call(.start, TaskProcessRequest(id: "box", execID: "ab"))
        _ = try await (dot, plain)
        let seen = bed.execs.sorted()
        #expect(seen.count == 2)
        #expect(seen.contains { $0.hasSuffix("/exec-a_2eb.json SPEC-DOT") }, "\(seen)")
        #expect(seen.contains { $0.hasSuffix("/exec-ab.json SPEC-PLAIN") }, "\(seen)")
        _ = try? await bed.call(.delete, TaskProcessRequest(id: "box", execID: ""))
    }

    /// The file name encoding is one-to-one on ids that used to collide, and stays a file name.
    @Test func execFileStem_isInjective_andAFileName() {
        let ids = [
            "a.b", "ab", "a/b", "a_b", "a_2eb", "a b", "ä", "a%2eb", "", "-", "x\u{0}y",
            String(repeating: "é", count: 200),
        ]
        let stems = ids.map(ShimContainer.execFileStem)
        #expect(Set(stems).count == ids.count, "\(stems)")
        for stem in stems {
            #expect(stem.utf8.count + ".json".utf8.count <= 255)
            #expect(!stem.contains("/") && !stem.contains("\u{0}") && stem != "." && stem != "..")
        }
        #expect(ShimContainer.execFileStem("web-1") == "exec-web-1", "plain ids stay readable")
    }

    /// A node settings file with a bad line: the shim starts, but Create fails naming file, line
    /// and reason, and runc is never called (before, the shim logged it and ran on defaults).
    @Test func badNodeSettings_failCreate_namingFileLineAndReason() async throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent(
            "zpnode-\(UUID().uuidString.prefix(8))"
        ).path
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let file = folder + "/node.conf"
        try Data("# node\nprobe-source-addresses = 10.0.0.5\nlazy-restore = sometimes\n".utf8).write(
            to: URL(fileURLWithPath: file)
        )
        let settings = NodeSettings.load(path: file)
        #expect(
            settings.problem == "\(file):3: lazy-restore: invalid value \"sometimes\": expected one of auto, on, off"
        )
        #expect(settings.config == NodeConfig(), "nothing of a refused file is used")
        let bed = try FakeRuncBed(settings: settings)
        defer { bed.remove() }
        let outcome = await statusCode {
            _ = try await bed.call(.create, CreateTaskRequest(id: "c1", bundle: bed.bundle))
        }
        #expect(outcome?.0 == .failedPrecondition)
        #expect(
            outcome?.1.contains("\(file):3: lazy-restore: invalid value \"sometimes\"") == true,
            "\(String(describing: outcome))"
        )
        #expect(bed.calls.isEmpty)
    }

    /// What the loader refuses besides parse errors, and what it accepts.
    @Test func nodeSettingsLoader_missingFileMeansDefaults_unreadableOrBinaryIsAProblem() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent(
            "zpnode-\(UUID().uuidString.prefix(8))"
        ).path
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let missing = NodeSettings.load(path: folder + "/none.conf")
        #expect(missing.problem == nil && missing.config == NodeConfig())
        let directory = NodeSettings.load(path: folder)
        #expect(
            directory.problem?.hasPrefix("\(folder): cannot be read:") == true,
            "\(String(describing: directory.problem))"
        )
        try Data([0x72, 0x75, 0x6e, 0xff, 0x00]).write(to: URL(fileURLWithPath: folder + "/binary.conf"))
        #expect(NodeSettings.load(path: folder + "/binary.conf").problem == "\(folder)/binary.conf: not UTF-8 text")
        try Data("runc-path = /opt/runc\n".utf8).write(to: URL(fileURLWithPath: folder + "/good.conf"))
        let good = NodeSettings.load(path: folder + "/good.conf")
        #expect(good.problem == nil && good.config.runcPath == "/opt/runc")
    }

    /// `live-migrate` naming a container whose scale-down is off is refused at Create (live
    /// migration is wired through the scale-down, decision 0058: not supported yet), and so is
    /// `migrate` naming such a container (only a scaled-down container's checkpoint migrates,
    /// decision 0057); runc is never called then. A `migrate` or `live-migrate` naming another
    /// container, or `migrate` naming this one with scale-down on, creates as usual.
    @Test func migrationAnnotations_needScaleDown() async throws {
        let cases: [(annotations: [String: String], refusal: (RPCStatusCode, String)?)] = [
            (
                ["zeropod.ctrox.dev/live-migrate": "app", "zeropod.ctrox.dev/scaledown-duration": "0s"],
                (
                    .unimplemented,
                    "zeropod.ctrox.dev/live-migrate names container \"app\", whose scale-down is off: live migration of such a container is not supported yet"
                )
            ),
            (["zeropod.ctrox.dev/live-migrate": "web"], nil),
            (
                ["zeropod.ctrox.dev/migrate": "web,app", "zeropod.ctrox.dev/scaledown-duration": "0s"],
                (.invalidArgument, "zeropod.ctrox.dev/migrate names container \"app\", whose scale-down is off")
            ),
            (["zeropod.ctrox.dev/migrate": "web"], nil),
            (["zeropod.ctrox.dev/migrate": "app", "zeropod.ctrox.dev/scaledown-duration": "5m"], nil),
        ]
        for (annotations, refusal) in cases {
            let bed = try FakeRuncBed()
            defer { bed.remove() }
            let spec = [
                "annotations": [
                    "io.kubernetes.cri.container-type": "container",
                    "io.kubernetes.cri.container-name": "app",
                ].merging(annotations) { $1 }
            ]
            try JSONSerialization.data(withJSONObject: spec).write(
                to: URL(fileURLWithPath: bed.bundle + "/config.json")
            )
            let outcome = await statusCode {
                _ = try await bed.call(.create, CreateTaskRequest(id: "m1", bundle: bed.bundle))
            }
            if let (code, text) = refusal {
                #expect(outcome?.0 == code, "\(annotations): \(String(describing: outcome))")
                #expect(outcome?.1.contains(text) == true, "\(String(describing: outcome))")
                #expect(bed.calls.isEmpty, "\(bed.calls)")
            } else {
                #expect(outcome == nil, "\(annotations): \(String(describing: outcome))")
                #expect(bed.calls.first?.contains("create --bundle") == true, "\(bed.calls)")
                _ = try? await bed.call(.delete, TaskProcessRequest(id: "m1", execID: ""))
            }
        }
    }

    /// The node setting `runc-path` picks the runc the shim runs (before: always `runc` on PATH).
    @Test func runcPathSetting_isTheRuncTheShimRuns() async throws {
        let bed = try FakeRuncBed()
        defer { bed.remove() }
        _ = try await bed.call(.create, CreateTaskRequest(id: "r1", bundle: bed.bundle))
        #expect(bed.calls.first?.contains("create --bundle \(bed.bundle)") == true, "\(bed.calls)")
        _ = try? await bed.call(.delete, TaskProcessRequest(id: "r1", execID: ""))
    }

    /// A rootfs mount that fails after others succeeded: the earlier ones are unmounted again and
    /// runc is not called (before, they stayed mounted on the bundle's rootfs).
    @Test(.enabled(if: getuid() == 0, "mounts need root"))
    func failedRootfsMount_unmountsTheEarlierOnes() async throws {
        let bed = try FakeRuncBed()
        let rootfs = bed.bundle + "/rootfs"
        defer {
            for m in ((try? MountInfo.read()) ?? []).reversed() where m.mountPoint.hasPrefix(rootfs) {
                try? MountPoints.unmount(m.mountPoint)
            }
            bed.remove()
        }
        var request = CreateTaskRequest(id: "m1", bundle: bed.bundle)
        request.rootfs = [
            MountSpec(type: "tmpfs", source: "zptask-lower", options: ["size=1m"]),
            MountSpec(type: "tmpfs", source: "zptask-upper", options: ["size=1m", "nosuid"]),  // stacked on the first
            MountSpec(type: "zptask-no-such-fs", source: "none"),
        ]
        let outcome = await statusCode { _ = try await bed.call(.create, request) }
        #expect(outcome != nil, "the unknown file system type fails Create")
        let left = try MountInfo.read().filter { $0.mountPoint.hasPrefix(rootfs) }
        #expect(left.isEmpty, "still mounted: \(left.map(\.mountPoint))")
        #expect(bed.calls.isEmpty)
    }
}
