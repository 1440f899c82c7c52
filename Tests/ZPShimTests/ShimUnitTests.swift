import Foundation
import Testing
import ZPCore
import ZPTestSupport

@testable import ZPShim

/// Runs a command that must succeed, with `stdin` as its input; returns its stdout.
func runTool(_ path: String, _ arguments: [String], stdin: String? = nil) throws -> [UInt8] {
    try run([path] + arguments, input: Array((stdin ?? "").utf8)).checked().output
}

@Suite struct ShimCommandTests {
    @Test func commandLine_containerd16Start() throws {
        let c = try ShimCommandLine(arguments: [
            "-namespace", "k8s.io", "-address", "/run/containerd/containerd.sock",
            "-publish-binary", "/usr/bin/containerd", "-id", "abc", "-debug", "start",
        ])
        #expect(c.action == .start && c.namespace == "k8s.io" && c.address == "/run/containerd/containerd.sock")
        #expect(c.publishBinary == "/usr/bin/containerd" && c.id == "abc" && c.debug)
    }

    @Test func commandLine_deleteWithBundle_equalsForm_andUnknownFlags() async throws {
        let c = try ShimCommandLine(arguments: [
            "--namespace=ns", "-id", "x", "-bundle", "/b", "-future-flag", "delete",
        ])
        #expect(c.action == .delete && c.namespace == "ns" && c.bundle == "/b" && c.id == "x" && !c.debug)
        #expect(try ShimCommandLine(arguments: ["-v"]).action == .version)
        // containerd 2.x's runtime introspection: refused at once, never a daemon.
        #expect(try ShimCommandLine(arguments: ["-info"]).action == .info)
        #expect(await ShimMain.run(arguments: ["-info"]) == 1)
        #expect(try ShimCommandLine(arguments: ["-namespace", "n", "-socket", "/s"]).action == .serve)
        #expect(throws: ShimError.self) { try ShimCommandLine(arguments: ["frobnicate"]) }
        // `status` moved to the zeropod CLI: the shim says so instead of doing something else.
        #expect { try ShimCommandLine(arguments: ["status", "-socket", "/x.sock"]) } throws: { error in
            "\(error)".contains("moved to the zeropod CLI: zeropod status")
        }
        #expect(throws: ShimError.self) { try ShimCommandLine(arguments: ["-id"]) }
    }

    @Test func daemonArguments_roundTrip() throws {
        let c = try ShimCommandLine(arguments: [
            "-namespace", "n", "-address", "/a", "-id", "i", "-publish-binary", "/p", "start",
        ])
        let d = try ShimCommandLine(arguments: c.daemonArguments(socket: "/run/containerd/s/x"))
        #expect(
            d.action == .serve && d.namespace == "n" && d.address == "/a" && d.id == "i"
                && d.socket == "/run/containerd/s/x"
        )
    }

    @Test func sha256_matchesFIPSVectorsAndSha256sum() throws {
        #expect(SHA256.hexDigest("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        #expect(SHA256.hexDigest("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        #expect(
            SHA256.hexDigest("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq")
                == "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
        )
        let long = String(repeating: "zeropod/", count: 100)
        let tool = String(decoding: try runTool("/usr/bin/sha256sum", [], stdin: long), as: UTF8.self)
        #expect(tool.hasPrefix(SHA256.hexDigest(long)))
    }

    @Test func socketPath_isPerGroupAndShortEnoughForSunPath() {
        let a = StartCommand.socketPath(
            containerdAddress: "/run/containerd/containerd.sock",
            namespace: "k8s.io",
            group: "pod1"
        )
        let b = StartCommand.socketPath(
            containerdAddress: "/run/containerd/containerd.sock",
            namespace: "k8s.io",
            group: "pod2"
        )
        #expect(a != b)
        #expect(a == "/run/containerd/s/" + SHA256.hexDigest("/run/containerd/containerd.sock/k8s.io/pod1"))
        #expect(a.utf8.count < 108)
    }

    @Test func bundleConfig_groupAnnotations() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("zpshim-bundle-\(UUID().uuidString)")
            .path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        #expect(BundleConfig(bundle: dir).groupID(default: "c1") == "c1")
        try Data(#"{"ociVersion":"1.0.2","annotations":{"io.kubernetes.cri.sandbox-id":"sb1"}}"#.utf8).write(
            to: URL(fileURLWithPath: dir + "/config.json")
        )
        #expect(BundleConfig(bundle: dir).groupID(default: "c1") == "sb1")
        try Data(#"{"annotations":{"io.kubernetes.cri.sandbox-id":"sb1","io.containerd.runc.v2.group":"g"}}"#.utf8)
            .write(to: URL(fileURLWithPath: dir + "/config.json"))
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
