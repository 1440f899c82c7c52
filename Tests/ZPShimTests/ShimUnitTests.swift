import Foundation
import Testing
import ZPTestSupport
import ZPCore
@testable import ZPShim

/// Runs a command that must succeed, with `stdin` as its input; returns its stdout.
func runTool(_ path: String, _ arguments: [String], stdin: String? = nil) throws -> [UInt8] {
    try run([path] + arguments, input: Array((stdin ?? "").utf8)).checked().output
}

/// Golden bytes: `protoc --encode` on the subset of containerd's .proto files this folder keeps.
func protocEncode(_ message: String, _ text: String) throws -> [UInt8] {
    let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures").path
    return try runTool("/usr/bin/protoc", ["--encode=zpshimtest.\(message)", "-I", fixtures, "shim_subset.proto"], stdin: text)
}

@Suite struct ShimCodecTests {
    @Test func createTaskRequest_decodesProtocBytes() throws {
        let bytes = try protocEncode("CreateTaskRequest", """
            id: "c1" bundle: "/b" rootfs { type: "overlay" source: "overlay" options: "lowerdir=/l" options: "ro" }
            stdin: "/f/in" stdout: "/f/out" stderr: "file:///tmp/x" options { type_url: "t" value: "v" }
            """)
        let r = try CreateTaskRequest(decoding: bytes)
        #expect(r.id == "c1" && r.bundle == "/b" && r.stdin == "/f/in" && r.stdout == "/f/out" && r.stderr == "file:///tmp/x")
        #expect(r.rootfs == [MountSpec(type: "overlay", source: "overlay", options: ["lowerdir=/l", "ro"])])
        #expect(r.options == ProtobufAny(typeURL: "t", value: Array("v".utf8)))
        #expect(r.encoded() == bytes)
    }

    @Test func execProcessRequest_decodesProtocBytes() throws {
        let bytes = try protocEncode("ExecProcessRequest", #"id: "c1" exec_id: "e1" stdout: "/o" spec { type_url: "types.containerd.io/opencontainers/runtime-spec/1/Process" value: "{\"args\":[\"sh\"]}" }"#)
        let r = try ExecProcessRequest(decoding: bytes)
        #expect(r.id == "c1" && r.execID == "e1" && r.stdout == "/o" && !r.terminal)
        #expect(String(decoding: r.spec?.value ?? [], as: UTF8.self) == #"{"args":["sh"]}"#)
        #expect(r.encoded() == bytes)
    }

    @Test func killRequest_decodesProtocBytes() throws {
        let bytes = try protocEncode("KillRequest", #"id: "c1" signal: 9 all: true"#)
        #expect(try KillRequest(decoding: bytes) == KillRequest(id: "c1", signal: 9, all: true))
    }

    @Test func stateResponse_matchesProtoc() throws {
        var s = StateResponse()
        s.id = "c1"; s.bundle = "/b"; s.pid = 4242; s.status = .stopped; s.stdout = "/o"; s.exitStatus = 137
        s.exitedAt = ProtobufTimestamp(seconds: 1_700_000_000, nanos: 5)
        #expect(s.encoded() == (try protocEncode("StateResponse", #"id: "c1" bundle: "/b" pid: 4242 status: 3 stdout: "/o" exit_status: 137 exited_at { seconds: 1700000000 nanos: 5 }"#)))
        #expect(try StateResponse(decoding: s.encoded()) == s)
    }

    @Test func deleteWaitConnectPids_matchProtoc() throws {
        let at = ProtobufTimestamp(seconds: 12, nanos: 34)
        #expect(DeleteResponse(pid: 7, exitStatus: 137, exitedAt: at).encoded()
                == (try protocEncode("DeleteResponse", "pid: 7 exit_status: 137 exited_at { seconds: 12 nanos: 34 }")))
        #expect(WaitResponse(exitStatus: 3, exitedAt: at).encoded() == (try protocEncode("WaitResponse", "exit_status: 3 exited_at { seconds: 12 nanos: 34 }")))
        #expect(ConnectResponse(shimPID: 10, taskPID: 11, version: "0.1.0").encoded()
                == (try protocEncode("ConnectResponse", #"shim_pid: 10 task_pid: 11 version: "0.1.0""#)))
        #expect(PidsResponse(pids: [1, 300]).encoded() == (try protocEncode("PidsResponse", "processes { pid: 1 } processes { pid: 300 }")))
    }

    @Test func taskEvents_andEnvelope_matchProtoc() throws {
        let at = ProtobufTimestamp(seconds: 99, nanos: 1)
        let exit = TaskEvent.exit(containerID: "c1", id: "e1", pid: 55, exitStatus: 4, exitedAt: at)
        #expect(exit.encoded() == (try protocEncode("TaskExit", #"container_id: "c1" id: "e1" pid: 55 exit_status: 4 exited_at { seconds: 99 nanos: 1 }"#)))
        let delete = TaskEvent.delete(containerID: "c1", pid: 55, exitStatus: 137, exitedAt: at, id: "c1")
        #expect(delete.encoded() == (try protocEncode("TaskDelete", #"container_id: "c1" pid: 55 exit_status: 137 exited_at { seconds: 99 nanos: 1 } id: "c1""#)))
        let create = TaskEvent.create(containerID: "c1", bundle: "/b", rootfs: [], stdin: "", stdout: "/o", stderr: "/e", terminal: false, pid: 9)
        #expect(create.encoded() == (try protocEncode("TaskCreate", #"container_id: "c1" bundle: "/b" io { stdout: "/o" stderr: "/e" } pid: 9"#)))
        let envelope = EventForwardRequest(timestamp: at, namespace: "ns", topic: exit.topic, event: ProtobufAny(typeURL: exit.typeURL, value: [1, 2]))
        #expect(envelope.encoded() == (try protocEncode("ForwardRequest", #"envelope { timestamp { seconds: 99 nanos: 1 } namespace: "ns" topic: "/tasks/exit" event { type_url: "containerd.events.TaskExit" value: "\001\002" } }"#)))
        #expect(try EventForwardRequest(decoding: envelope.encoded()) == envelope)
    }
}

@Suite struct ShimCommandTests {
    @Test func commandLine_containerd16Start() throws {
        let c = try ShimCommandLine(arguments: ["-namespace", "k8s.io", "-address", "/run/containerd/containerd.sock",
                                                "-publish-binary", "/usr/bin/containerd", "-id", "abc", "-debug", "start"])
        #expect(c.action == .start && c.namespace == "k8s.io" && c.address == "/run/containerd/containerd.sock")
        #expect(c.publishBinary == "/usr/bin/containerd" && c.id == "abc" && c.debug)
    }

    @Test func commandLine_deleteWithBundle_equalsForm_andUnknownFlags() throws {
        let c = try ShimCommandLine(arguments: ["--namespace=ns", "-id", "x", "-bundle", "/b", "-future-flag", "delete"])
        #expect(c.action == .delete && c.namespace == "ns" && c.bundle == "/b" && c.id == "x" && !c.debug)
        #expect(try ShimCommandLine(arguments: ["-v"]).action == .version)
        #expect(try ShimCommandLine(arguments: ["-namespace", "n", "-socket", "/s"]).action == .serve)
        #expect(throws: ShimError.self) { try ShimCommandLine(arguments: ["frobnicate"]) }
        #expect(throws: ShimError.self) { try ShimCommandLine(arguments: ["-id"]) }
    }

    @Test func daemonArguments_roundTrip() throws {
        let c = try ShimCommandLine(arguments: ["-namespace", "n", "-address", "/a", "-id", "i", "-publish-binary", "/p", "start"])
        let d = try ShimCommandLine(arguments: c.daemonArguments(socket: "/run/containerd/s/x"))
        #expect(d.action == .serve && d.namespace == "n" && d.address == "/a" && d.id == "i" && d.socket == "/run/containerd/s/x")
    }

    @Test func sha256_matchesFIPSVectorsAndSha256sum() throws {
        #expect(SHA256.hexDigest("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        #expect(SHA256.hexDigest("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        #expect(SHA256.hexDigest("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq")
                == "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
        let long = String(repeating: "zeropod/", count: 100)
        let tool = String(decoding: try runTool("/usr/bin/sha256sum", [], stdin: long), as: UTF8.self)
        #expect(tool.hasPrefix(SHA256.hexDigest(long)))
    }

    @Test func socketPath_isPerGroupAndShortEnoughForSunPath() {
        let a = StartCommand.socketPath(containerdAddress: "/run/containerd/containerd.sock", namespace: "k8s.io", group: "pod1")
        let b = StartCommand.socketPath(containerdAddress: "/run/containerd/containerd.sock", namespace: "k8s.io", group: "pod2")
        #expect(a != b)
        #expect(a == "/run/containerd/s/" + SHA256.hexDigest("/run/containerd/containerd.sock/k8s.io/pod1"))
        #expect(a.utf8.count < 108)
    }

    @Test func bundleConfig_groupAnnotations() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("zpshim-bundle-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        #expect(BundleConfig(bundle: dir).groupID(default: "c1") == "c1")
        try Data(#"{"ociVersion":"1.0.2","annotations":{"io.kubernetes.cri.sandbox-id":"sb1"}}"#.utf8).write(to: URL(fileURLWithPath: dir + "/config.json"))
        #expect(BundleConfig(bundle: dir).groupID(default: "c1") == "sb1")
        try Data(#"{"annotations":{"io.kubernetes.cri.sandbox-id":"sb1","io.containerd.runc.v2.group":"g"}}"#.utf8).write(to: URL(fileURLWithPath: dir + "/config.json"))
        #expect(BundleConfig(bundle: dir).groupID(default: "c1") == "g")
    }

    @Test func errorMapping_keepsContainerdCodes() {
        #expect(ShimError.status(for: ShimError.notFound("x")).code == .notFound)
        #expect(ShimError.status(for: ShimError.notImplemented("x")).code == .unimplemented)
        #expect(ShimError.status(for: ShimError.failedPrecondition("x")).code == .failedPrecondition)
        #expect(ShimError.status(for: ProtobufError.truncated(offset: 1)).code == .invalidArgument)
        #expect(ShimError.status(for: RuncError(command: ["start"], exitCode: 1, message: "m")).code == .unknown)
    }

    @Test func exitStatus_decodesWaitStatusWords() {
        #expect(ExitStatus(waitStatus: 3 << 8, at: 0).code == 3)
        #expect(ExitStatus(waitStatus: 9, at: 0).code == 137)
        #expect(ExitStatus(waitStatus: 15, at: 0).code == 143)
    }
}

/// The exits the reaper keeps for pids nobody registered (a `criu lazy-pages` daemon reaped by
/// `wait4(-1)` before its owner's `waitpid`).
@Suite struct PidIndexExitTests {
    @Test func takeExit_returnsAKeptExitOnce_andIgnoresOlderOnes() {
        let index = PidIndex()
        let pid: pid_t = 999_999_001  // above any pid_max: never a live process
        #expect(index.takeExit(of: pid, notBefore: 0) == nil)
        #expect(index.claimExit(of: pid, status: ExitStatus(code: 137, exitedAt: 1_000)) == nil)
        #expect(index.takeExit(of: pid, notBefore: 2_000) == nil, "an exit from before the daemon started")
        #expect(index.takeExit(of: pid, notBefore: 1_000) == ExitStatus(code: 137, exitedAt: 1_000))
        #expect(index.takeExit(of: pid, notBefore: 0) == nil, "taken out already")
    }
}
