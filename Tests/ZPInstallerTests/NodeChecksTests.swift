// The node checks on this machine (everything zeropod needs is here after make setup) and with
// features taken away through the injectable paths.
import Foundation
import Testing
import ZPTestSupport

@testable import ZPInstaller

let canProbe = Privileges.isRoot && FileManager.default.isExecutableFile(atPath: "/usr/local/sbin/criu")

@Suite(.serialized, .enabled(if: canProbe, "needs root (BPF probes, CRIU) and the project's CRIU (make setup)"))
struct NodeChecksTests {
    /// A config with our handler, as the installer writes it, in a temp folder.
    /// `byType`: the form for containerd below 1.7.1 (runtime_type names the shim, no runtime_path).
    func installedConfig(_ dir: String, annotations: Bool = true, byType: Bool = false) throws -> String {
        let path = dir + "/config.toml"
        let pod = annotations ? "[\"zeropod.ctrox.dev/*\", \"zeropod-swift/*\"]" : "[]"
        let shim =
            byType
            ? "runtime_type = \"io.containerd.zeropod.v2\""
            : "runtime_type = \"io.containerd.runc.v2\"\n  runtime_path = \"/bin/true\""
        try """
        version = 2
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.zeropod]
          \(shim)
          pod_annotations = \(pod)
        """.write(toFile: path, atomically: false, encoding: .utf8)
        return path
    }

    func tempDir() throws -> String {
        let dir = "/tmp/zpdoctor-\(UUID().uuidString.prefix(8).lowercased())"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        return dir
    }

    @Test func thisMachine_hasNoBlockers() throws {
        let dir = try tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var o = NodeCheckOptions()
        // This machine's containerd is 1.6.20: the handler in its form, the shim in a folder searched.
        o.containerdConfig = try installedConfig(dir, byType: true)
        o.containerdBinary = containerd16
        try FileManager.default.createDirectory(atPath: dir + "/bin", withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(
            atPath: dir + "/bin/containerd-shim-zeropod-v2",
            withDestinationPath: "/bin/true"
        )
        o.shimSearchFolders = [dir + "/bin"]
        o.nodeConfigPath = dir + "/node.conf"
        o.stateDirectory = dir + "/state"
        o.runDirectory = dir + "/run"
        let report = NodeChecks(options: o).run()
        print(report.rendered())
        #expect(report.blockers.isEmpty, "\(report.blockers)")
        #expect(report.exitStatus == 0)
        for name in [
            "sk_lookup", "tcx", "bpffs", "criu version", "criu check", "rlimit patch", "zero-pages patch",
            "write-tracking patch", "runc",
            "containerd version", "handler zeropod", "annotations forwarded", "userfaultfd", "state folder",
            "run folder",
        ] {
            #expect(report.result(name)?.status == .ok, "\(name): \(String(describing: report.result(name)))")
        }
        // These VMs have no soft-dirty tracking: reported, not a blocker.
        #expect(report.result("soft-dirty")?.status == .missing)
    }

    @Test func featuresTakenAway_areBlockersWithFixes() throws {
        let dir = try tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try FileManager.default.createDirectory(atPath: dir + "/not-bpffs", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: dir + "/open", withIntermediateDirectories: true)
        chmod(dir + "/open", 0o777)
        var o = NodeCheckOptions()
        o.criuPath = dir + "/no-such-criu"
        o.bpffsPath = dir + "/not-bpffs"
        o.btfPath = dir + "/no-btf"
        o.containerdConfig = try installedConfig(dir, annotations: false)
        o.containerdVersion = "1.5.9"
        o.runcPath = dir + "/no-runc"
        o.nodeConfigPath = dir + "/node.conf"
        o.stateDirectory = dir + "/open"
        o.runDirectory = dir + "/run"
        let report = NodeChecks(options: o).run()
        print(report.rendered())
        #expect(report.exitStatus == 1)
        #expect(report.result("criu binary")?.status == .blocker)
        #expect(report.result("criu binary")?.fix.contains("CRIU 4.2") == true)
        #expect(report.result("bpffs")?.status == .blocker)
        #expect(report.result("bpffs")?.fix.contains("mount -t bpf bpf \(dir)/not-bpffs") == true)
        #expect(report.result("BTF")?.status == .missing)
        #expect(report.result("runc")?.status == .blocker)
        #expect(report.result("containerd version")?.status == .blocker)
        #expect(report.result("state folder")?.status == .blocker)
        #expect(report.result("state folder")?.fix.contains("chmod go-w") == true)
        #expect(report.rendered().contains("To fix:"))
    }

    @Test func aConfigWithoutTheHandler_orWithoutAnnotations() throws {
        let dir = try tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var o = NodeCheckOptions()
        o.probeBPF = false
        o.containerdVersion = "2.1.9"
        o.nodeConfigPath = dir + "/node.conf"
        o.containerdConfig = try installedConfig(dir, annotations: false)
        var report = NodeChecks(options: o).run()
        #expect(report.result("handler zeropod")?.status == .ok)
        #expect(report.result("annotations forwarded")?.status == .missing)
        try "version = 3\n".write(toFile: o.containerdConfig!, atomically: false, encoding: .utf8)
        report = NodeChecks(options: o).run()
        #expect(report.result("handler zeropod")?.status == .blocker)
        #expect(report.result("handler zeropod")?.fix.contains("zeropod-installer") == true)
        // The runtime_path form on containerd 1.6 (which ignores runtime_path): a blocker naming why.
        o.containerdVersion = "1.6.20"
        _ = try installedConfig(dir)
        report = NodeChecks(options: o).run()
        #expect(report.result("handler zeropod")?.status == .blocker)
        #expect(report.result("handler zeropod")?.detail.contains("containerd#8207") == true)
        // The 1.6 form: fine when the shim is found, a blocker when it is not.
        _ = try installedConfig(dir, byType: true)
        o.shimSearchFolders = [dir + "/nowhere"]
        #expect(NodeChecks(options: o).run().result("handler zeropod")?.status == .blocker)
        try FileManager.default.createDirectory(atPath: dir + "/bin", withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(
            atPath: dir + "/bin/containerd-shim-zeropod-v2",
            withDestinationPath: "/bin/true"
        )
        o.shimSearchFolders = [dir + "/nowhere", dir + "/bin"]
        report = NodeChecks(options: o).run()
        #expect(
            report.result("handler zeropod")?.status == .ok,
            "\(String(describing: report.result("handler zeropod")))"
        )
        #expect(report.result("handler zeropod")?.detail.contains(dir + "/bin/containerd-shim-zeropod-v2") == true)
        // The installer's pre-flight does not ask about the handler it is about to write.
        o.scope = .prerequisites
        #expect(NodeChecks(options: o).run().result("handler zeropod") == nil)
    }
}
