import Foundation
import Testing
import ZPCore

@testable import ZPShim

/// The wake group registry and the status socket folder are root's alone (issue 15): another user
/// can neither list which containerd and pod namespaces have wake groups nor read an entry.
@Suite struct RegistryPrivacyTests {
    /// Runs `command` as uid/gid 65534 (`setpriv`); returns its exit status and output.
    private func asNobody(_ command: [String]) throws -> (Int32, String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/setpriv")
        p.arguments = ["--reuid", "65534", "--regid", "65534", "--clear-groups", "--"] + command
        let out = Pipe()
        p.standardOutput = out
        p.standardError = out
        try p.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    private func mode(_ path: String) -> Int {
        ((try? FileManager.default.attributesOfItem(atPath: path)[.posixPermissions]) as? Int) ?? -1
    }

    @Test(.enabled(if: getuid() == 0, "the refusal check switches to uid 65534, which needs root"))
    func wakeGroupRegistry_isOwnerOnly_andRefusedToNobody() throws {
        let run = "/tmp/zpreg-\(UInt32.random(in: 0...UInt32.max))"
        let old = umask(0o022)
        defer {
            umask(old)
            try? FileManager.default.removeItem(atPath: run)
        }
        try FileManager.default.createDirectory(atPath: run, withIntermediateDirectories: true)  // 0755, as /run is
        let registry = WakeGroupRegistry(runDirectory: run)
        let key = WakeGroupKey(containerdNamespace: "k8s.io", podNamespace: "team-secret", group: "wp")
        try registry.register(WakeGroupEntry(containerID: "c1", statusSocket: run + "/s/x.sock"), in: key)
        for folder in [
            registry.root, registry.root + "/k8s.io", registry.root + "/k8s.io/team-secret",
            registry.directory(of: key),
        ] {
            #expect(mode(folder) == 0o700, "\(folder): \(String(mode(folder), radix: 8))")
        }
        #expect(mode(registry.directory(of: key) + "/c1") == 0o600)
        let (status, output) = try asNobody(["/bin/ls", registry.root])
        #expect(status != 0 && output.contains("Permission denied"), "ls as 65534: \(status) \(output)")
        #expect(registry.members(of: key).map(\.containerID) == ["c1"], "root still reads it")
    }

    /// A registry root left world-readable (by an older shim) is closed on the next registration.
    @Test func wakeGroupRegistry_closesAnOpenRoot() throws {
        let run = "/tmp/zpreg-\(UInt32.random(in: 0...UInt32.max))"
        defer { try? FileManager.default.removeItem(atPath: run) }
        try FileManager.default.createDirectory(
            atPath: run + "/wake-groups",
            withIntermediateDirectories: true,
            attributes: [.posixPermissions: 0o755]
        )
        let registry = WakeGroupRegistry(runDirectory: run)
        try registry.register(
            WakeGroupEntry(containerID: "c1", statusSocket: run + "/s/x.sock"),
            in: WakeGroupKey(containerdNamespace: "default", podNamespace: "", group: "g")
        )
        #expect(mode(registry.root) == 0o700)
    }
}
