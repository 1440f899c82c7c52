import ArgumentParser
import Foundation
import Testing
import ZPCLI
import ZPInstaller
import ZPTestSupport

// `zeropod doctor` in process: its flags, and its table on this machine and with features taken
// away (bpffs looked for on a folder that is not one, CRIU at a path where there is none).

/// A containerd config with the handler as the installer writes it, in `dir`.
func installedConfig(_ dir: String) throws -> String {
    let path = dir + "/config.toml"
    try """
    version = 2
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.zeropod]
      runtime_type = "io.containerd.runc.v2"
      runtime_path = "/bin/true"
      pod_annotations = ["zeropod.ctrox.dev/*", "zeropod-swift/*"]
    """.write(toFile: path, atomically: false, encoding: .utf8)
    return path
}

func doctorTempDir() throws -> String {
    let dir = "/tmp/\(uniqueName("zpdoctor"))"
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    return dir
}

let canRunDoctor =
    Privileges.isRoot && Privileges.hasTool("/usr/local/sbin/criu") && Privileges.hasTool("/usr/sbin/runc")

@Suite struct DoctorCommandParsingTests {
    @Test func flags_becomeTheChecksOptions() throws {
        let command = try ZeropodCommand.parseAsRoot([
            "doctor", "--runtime", "k3s", "--config", "/c/config.toml", "--containerd-address", "/c/c.sock",
            "--criu", "/x/criu", "--runc", "/x/runc", "--bpffs", "/b", "--btf", "/btf", "--state-dir", "/s",
            "--run-dir", "/r", "--node-config", "/n.conf", "--handler", "zp", "--no-bpf-probes", "--timeout", "5s",
        ])
        let doctor = try #require(command as? DoctorCommand)
        let o = doctor.checkOptions(environment: [:])
        #expect(o.flavour == .k3s && o.containerdConfig == "/c/config.toml")
        #expect(o.criuPath == "/x/criu" && o.runcPath == "/x/runc" && o.bpffsPath == "/b" && o.btfPath == "/btf")
        #expect(o.stateDirectory == "/s" && o.runDirectory == "/r" && o.nodeConfigPath == "/n.conf")
        #expect(o.handlerName == "zp" && !o.probeBPF && o.timeout == 5 && o.scope == .all)
        #expect(doctor.containerdAddress == "/c/c.sock")
    }

    @Test func defaults_followTheNodeSettingsAndTheEnvironment() throws {
        let doctor = try #require(try ZeropodCommand.parseAsRoot(["doctor"]) as? DoctorCommand)
        let o = doctor.checkOptions(environment: ["ZEROPOD_NODE_CONFIG": "/etc/other.conf"])
        #expect(o.nodeConfigPath == "/etc/other.conf")
        #expect(o.criuPath == nil && o.runcPath == nil, "nil: the node settings' criu-path and runc-path")
        #expect(o.bpffsPath == "/sys/fs/bpf" && o.probeBPF)
    }

    @Test(arguments: [
        (["doctor", "--containerd-address", "c.sock"], "must be an absolute path"),
        (
            ["doctor", "--containerd-version", "2.1.9", "--containerd-binary", "/usr/bin/containerd"],
            "cannot be combined"
        ),
        (["doctor", "--timeout", "soon"], "--timeout soon"),
        (["doctor", "--runtime", "docker"], "docker"),
    ])
    func badFlags_areRefusedNamingThem(_ arguments: [String], _ message: String) {
        do {
            _ = try ZeropodCommand.parseAsRoot(arguments)
            Issue.record("\(arguments) parsed")
        } catch {
            let text = ZeropodCommand.fullMessage(for: error)
            #expect(text.contains(message), "\(text)")
            #expect(ZeropodCommand.exitCode(for: error) == .validationFailure)
        }
    }
}

@Suite(
    .serialized,
    .enabled(if: canRunDoctor, "needs root (eBPF probes, CRIU check), the project's CRIU and runc (make setup)")
)
struct DoctorCommandTests {
    @Test func thisMachine_asksContainerdOverItsSocket_noBlockers() async throws {
        let dir = try doctorTempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let containerd = try PrivateContainerd(flavor: .containerd2, tag: "doctor")
        defer { containerd.stop() }
        let captured = CapturedOutput()
        let doctor = try #require(
            try ZeropodCommand.parseAsRoot([
                "doctor", "--containerd-address", containerd.socket, "--config", try installedConfig(dir),
                "--node-config", dir + "/node.conf", "--state-dir", dir + "/state", "--run-dir", dir + "/run",
            ]) as? DoctorCommand
        )
        let status = await doctor.execute(output: captured.output, environment: [:])
        let text = captured.stdout.joined(separator: "\n")
        print("[zpdoctor] zeropod doctor on this machine (exit \(status)):\n\(text)")
        #expect(status == 0, "\(text)")
        #expect(text.contains("no blockers"))
        #expect(text.contains("containerd version") && text.contains("asked over \(containerd.socket)"))
        for row in [
            "sk_lookup", "tcx", "bpffs", "criu check", "rlimit patch", "zero-pages patch", "write-tracking patch",
            "handler zeropod",
            "annotations forwarded",
        ] {
            let line = captured.stdout.first { $0.contains(" \(row) ") }
            #expect(line?.contains(" OK ") == true, "\(row): \(String(describing: line))")
        }
    }

    @Test func bpffsAndCRIUTakenAway_areBlockersWithFixes_exitOne() async throws {
        let dir = try doctorTempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try FileManager.default.createDirectory(atPath: dir + "/not-bpffs", withIntermediateDirectories: true)
        let captured = CapturedOutput()
        let doctor = try #require(
            try ZeropodCommand.parseAsRoot([
                "doctor", "--bpffs", dir + "/not-bpffs", "--criu", dir + "/no-criu", "--containerd-address",
                dir + "/no.sock",
                "--config", try installedConfig(dir), "--node-config", dir + "/node.conf", "--state-dir",
                dir + "/state",
                "--run-dir", dir + "/run",
            ]) as? DoctorCommand
        )
        let status = await doctor.execute(output: captured.output, environment: [:])
        let text = captured.stdout.joined(separator: "\n")
        print("[zpdoctor] zeropod doctor with bpffs and CRIU taken away (exit \(status)):\n\(text)")
        #expect(status == 1)
        #expect(captured.stdout.contains { $0.contains(" bpffs ") && $0.contains(" blocker ") })
        #expect(captured.stdout.contains { $0.contains(" criu binary ") && $0.contains(" blocker ") })
        #expect(text.contains("- bpffs (blocker): mount -t bpf bpf \(dir)/not-bpffs"))
        #expect(text.contains("- criu binary (blocker): install CRIU 4.2 or later"))
        #expect(text.contains("blockers: zeropod cannot run on this node"))
        // No containerd on that socket: Debian's containerd binary answers instead, and the row says so.
        #expect(text.contains("from containerd --version"), "\(text)")
    }
}
