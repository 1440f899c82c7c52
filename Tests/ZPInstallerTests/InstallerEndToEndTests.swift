// The installer for real on temporary folders: install, install again (nothing changes), the
// real containerd 1.6 / 2.x reads the result (`containerd config dump` shows the zeropod handler
// and the node's runc handler), uninstall restores every byte.
import Foundation
import Testing
import ZPTestSupport

@testable import ZPInstaller

let containerd16 = ContainerdFlavor.debian.binDirectory + "/containerd"
let containerd2 = ContainerdFlavor.containerd2.binDirectory + "/containerd"

/// The built shim (SwiftPM puts it beside the test binary), or nil.
func builtShim() -> String? {
    let path = TestPaths.buildDirectory + "/containerd-shim-zeropod-v2"
    return FileManager.default.isExecutableFile(atPath: path) ? path : nil
}

let canRunInstaller =
    Privileges.isRoot && FileManager.default.isExecutableFile(atPath: "/usr/local/sbin/criu")
    && FileManager.default.isExecutableFile(atPath: "/usr/bin/patchelf")

@Suite(.serialized, .enabled(if: canRunInstaller, "needs root, the project's CRIU and patchelf (make setup)"))
struct InstallerEndToEndTests {
    static let cases: [(String, String)] = [
        ("stock-1.6.toml", containerd16), ("debian-shipped.toml", containerd16), ("user-runtimes.toml", containerd16),
        ("stock-2.1.toml", containerd2), ("debian-shipped.toml", containerd2), ("user-runtimes.toml", containerd2),
    ]

    @Test(arguments: cases)
    func install_again_containerdReadsIt_uninstallRestoresEveryByte(_ name: String, _ containerd: String) throws {
        let shim = try #require(builtShim(), "build containerd-shim-zeropod-v2 first (swift build --build-tests)")
        let original = try fixture(name)
        let dir = "/tmp/zpinst-\(UUID().uuidString.prefix(8).lowercased())"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let etc = dir + "/etc/containerd"
        try FileManager.default.createDirectory(atPath: etc, withIntermediateDirectories: true)
        let configPath = etc + "/config.toml"
        try original.write(toFile: configPath, atomically: false, encoding: .utf8)

        var options = InstallerOptions()
        options.configPath = configPath
        options.optPath = dir + "/opt/zeropod"
        options.nodeConfigPath = dir + "/etc/zeropod/node.conf"
        options.shimSource = shim
        options.containerdBinary = containerd
        options.systemdRuns = false
        options.shimSocketDirectory = dir + "/run/s"  // not the machine's: other tests' shims may run
        options.shimLinkDirectory = dir + "/usr/local/bin"  // not the machine's PATH
        let log = EventLog<String>()
        let installer = Installer(options: options) { log.sink($0) }

        let first = try installer.install()
        #expect(first.configChanged)
        guard case .manual(let text) = first.restart else {
            Issue.record("expected a manual restart without systemd, got \(first.restart)")
            return
        }
        #expect(text.contains("systemctl restart containerd"))
        let installed = try snapshot(dir + "/etc")

        // containerd itself reads the result.
        let dump = try sh([containerd, "--config", configPath, "config", "dump"])
        #expect(dump.contains("runtimes.zeropod]"))
        if containerd == containerd16 {
            // 1.6 ignores runtime_path: the handler names the shim by type, the shim is linked on PATH.
            #expect(dump.contains("runtime_type = \"io.containerd.zeropod.v2\""))
            #expect(!dump.contains(options.installedShim))
            #expect(
                try FileManager.default.destinationOfSymbolicLink(atPath: options.linkedShim) == options.installedShim
            )
            #expect(FileManager.default.isExecutableFile(atPath: options.linkedShim))
        } else {
            #expect(dump.contains(options.installedShim))
            #expect(!FileManager.default.fileExists(atPath: options.linkedShim))
        }
        #expect(dump.contains("runtimes.runc]"))
        #expect(dump.contains("zeropod-swift/*"))

        // The installed CRIU finds its libraries in ../lib first and runs.
        let ldd = try sh(["ldd", options.installedCRIU])
        #expect(ldd.contains(options.optPath + "/bin/../lib/"))
        #expect(try sh([options.installedCRIU, "--version"]).contains("Version: 4.2"))
        let st = try FileManager.default.attributesOfItem(atPath: options.installedShim)
        #expect((st[.posixPermissions] as? Int) == 0o755)
        let stateMode = try FileManager.default.attributesOfItem(atPath: options.stateFolder)[.posixPermissions] as? Int
        #expect(stateMode == 0o700)

        // Again: nothing changes, no restart.
        let second = try installer.install()
        #expect(!second.configChanged)
        #expect(second.restart == .none)
        #expect(try snapshot(dir + "/etc") == installed)

        // Uninstall: the config byte for byte, nothing of ours left.
        _ = try installer.uninstall()
        #expect(try String(contentsOfFile: configPath, encoding: .utf8) == original)
        #expect(!FileManager.default.fileExists(atPath: dir + "/opt/zeropod"))
        #expect(!FileManager.default.fileExists(atPath: options.nodeConfigPath))
        #expect(!FileManager.default.fileExists(atPath: etc + "/zeropod-swift.toml"))
        #expect(try FileManager.default.contentsOfDirectory(atPath: etc) == ["config.toml"])
        #expect(!FileManager.default.fileExists(atPath: dir + "/usr"), "the link and the folders made for it are gone")
    }

    func options16(_ dir: String, shim: String) throws -> InstallerOptions {
        let etc = dir + "/etc/containerd"
        try FileManager.default.createDirectory(atPath: etc, withIntermediateDirectories: true)
        try fixture("stock-1.6.toml").write(toFile: etc + "/config.toml", atomically: false, encoding: .utf8)
        var options = InstallerOptions()
        options.configPath = etc + "/config.toml"
        options.optPath = dir + "/opt/zeropod"
        options.nodeConfigPath = dir + "/etc/zeropod/node.conf"
        options.shimSource = shim
        options.containerdBinary = containerd16
        options.systemdRuns = false
        options.shimSocketDirectory = dir + "/run/s"
        options.shimLinkDirectory = dir + "/usr/local/bin"
        return options
    }

    @Test func on16_uninstallRemovesThePathEntry_andLeavesThatFolderByteForByte() throws {
        let shim = try #require(builtShim())
        let dir = "/tmp/zpinst-\(UUID().uuidString.prefix(8).lowercased())"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let options = try options16(dir, shim: shim)
        // A PATH folder with the node's own programs (a file and a link) in it.
        try FileManager.default.createDirectory(atPath: options.shimLinkDirectory, withIntermediateDirectories: true)
        try Data("#!/bin/sh\necho node tool\n".utf8).write(
            to: URL(fileURLWithPath: options.shimLinkDirectory + "/node-tool")
        )
        chmod(options.shimLinkDirectory + "/node-tool", 0o755)
        try FileManager.default.createSymbolicLink(
            atPath: options.shimLinkDirectory + "/containerd-shim-runc-v2",
            withDestinationPath: "/usr/bin/containerd-shim-runc-v2"
        )
        let before = try snapshot(options.shimLinkDirectory)
        let names = try FileManager.default.contentsOfDirectory(atPath: options.shimLinkDirectory).sorted()
        let installer = Installer(options: options) { _ in }
        _ = try installer.install()
        #expect(try FileManager.default.destinationOfSymbolicLink(atPath: options.linkedShim) == options.installedShim)
        #expect(
            try FileManager.default.contentsOfDirectory(atPath: options.shimLinkDirectory).sorted()
                == (names + ["containerd-shim-zeropod-v2"]).sorted()
        )
        _ = try installer.uninstall()
        #expect(!FileManager.default.fileExists(atPath: options.linkedShim))
        #expect(try FileManager.default.contentsOfDirectory(atPath: options.shimLinkDirectory).sorted() == names)
        #expect(try snapshot(options.shimLinkDirectory) == before)
        #expect(
            try FileManager.default.destinationOfSymbolicLink(
                atPath: options.shimLinkDirectory + "/containerd-shim-runc-v2"
            )
                == "/usr/bin/containerd-shim-runc-v2"
        )
    }

    @Test func on16_aShimOnPathWeDidNotPutThere_isRefusedBeforeAnythingIsInstalled() throws {
        let shim = try #require(builtShim())
        let dir = "/tmp/zpinst-\(UUID().uuidString.prefix(8).lowercased())"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let options = try options16(dir, shim: shim)
        try FileManager.default.createDirectory(atPath: options.shimLinkDirectory, withIntermediateDirectories: true)
        try Data("someone else's shim\n".utf8).write(to: URL(fileURLWithPath: options.linkedShim))
        let before = try snapshot(dir)
        let error = #expect(throws: InstallerError.self) { try Installer(options: options) { _ in }.install() }
        #expect(error?.file == options.linkedShim)
        #expect(error?.reason.contains("was not put there by zeropod-installer") == true)
        #expect(try snapshot(dir) == before)
        #expect(!FileManager.default.fileExists(atPath: options.optPath))
    }

    @Test func anUpgradeFrom16To2_removesTheLink() throws {
        let shim = try #require(builtShim())
        let dir = "/tmp/zpinst-\(UUID().uuidString.prefix(8).lowercased())"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var options = try options16(dir, shim: shim)
        try FileManager.default.createDirectory(atPath: options.shimLinkDirectory, withIntermediateDirectories: true)
        _ = try Installer(options: options) { _ in }.install()
        #expect(FileManager.default.fileExists(atPath: options.linkedShim))
        options.containerdBinary = containerd2
        _ = try Installer(options: options) { _ in }.install()
        #expect(!FileManager.default.fileExists(atPath: options.linkedShim))
        _ = try Installer(options: options) { _ in }.uninstall()
        #expect(try FileManager.default.contentsOfDirectory(atPath: options.shimLinkDirectory).isEmpty)
        #expect(
            try String(contentsOfFile: options.effectiveConfigPath, encoding: .utf8) == (try fixture("stock-1.6.toml"))
        )
    }

    @Test func uninstall_refusesAConfigChangedSince_andChangesNothing() throws {
        let shim = try #require(builtShim())
        let dir = "/tmp/zpinst-\(UUID().uuidString.prefix(8).lowercased())"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let etc = dir + "/etc/containerd"
        try FileManager.default.createDirectory(atPath: etc, withIntermediateDirectories: true)
        try fixture("stock-2.1.toml").write(toFile: etc + "/config.toml", atomically: false, encoding: .utf8)
        var options = InstallerOptions()
        options.configPath = etc + "/config.toml"
        options.optPath = dir + "/opt/zeropod"
        options.nodeConfigPath = dir + "/etc/zeropod/node.conf"
        options.shimSource = shim
        options.containerdBinary = containerd2
        options.systemdRuns = false
        options.shimSocketDirectory = dir + "/run/s"
        let installer = Installer(options: options) { _ in }
        _ = try installer.install()
        // While a zeropod shim runs (its status socket exists), uninstall refuses unless forced.
        try FileManager.default.createDirectory(atPath: options.shimSocketDirectory, withIntermediateDirectories: true)
        FileManager.default.createFile(atPath: options.shimSocketDirectory + "/abc.sock", contents: nil)
        let running = #expect(throws: InstallerError.self) { try installer.uninstall() }
        #expect(running?.reason.contains("still run") == true)
        try FileManager.default.removeItem(atPath: options.shimSocketDirectory + "/abc.sock")
        try (try String(contentsOfFile: etc + "/config.toml", encoding: .utf8) + "# changed by the user\n")
            .write(toFile: etc + "/config.toml", atomically: false, encoding: .utf8)
        let before = try snapshot(dir)
        let error = #expect(throws: InstallerError.self) { try installer.uninstall() }
        #expect(error?.file == etc + "/config.toml")
        #expect(error?.reason.contains("changed since zeropod-installer wrote it") == true)
        #expect(try snapshot(dir) == before)
    }

    @Test func aMalformedConfig_isRefusedBeforeAnythingIsInstalled() throws {
        let dir = "/tmp/zpinst-\(UUID().uuidString.prefix(8).lowercased())"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let etc = dir + "/etc/containerd"
        try FileManager.default.createDirectory(atPath: etc, withIntermediateDirectories: true)
        try fixture("malformed.toml").write(toFile: etc + "/config.toml", atomically: false, encoding: .utf8)
        var options = InstallerOptions()
        options.configPath = etc + "/config.toml"
        options.optPath = dir + "/opt/zeropod"
        options.shimSource = "/bin/true"
        options.containerdBinary = containerd16
        let error = #expect(throws: InstallerError.self) { try Installer(options: options) { _ in }.install() }
        #expect(error?.description.hasPrefix(etc + "/config.toml:4: not valid TOML") == true)
        #expect(!FileManager.default.fileExists(atPath: dir + "/opt"))
    }

    @Test func theK3sPrediction_isAConfigContainerd2Reads() throws {
        var i = ConfigInputs(
            flavour: .k3s,
            release: ContainerdRelease(versionText: "2.0.5")!,
            mainPath: "/var/lib/rancher/k3s/agent/etc/containerd/config.toml",
            main: try fixture("k3s-rendered-v3.toml")
        )
        i.templateV3 = nil
        let plan = try ConfigPlanner.plan(
            i,
            handler: HandlerSettings(shimPath: "/var/lib/rancher/k3s/agent/containerd/bin/containerd-shim-zeropod-v2")
        )
        let path = "/tmp/zpinst-k3s-\(UUID().uuidString.prefix(8)).toml"
        defer { try? FileManager.default.removeItem(atPath: path) }
        try plan.predicted[0].text.write(toFile: path, atomically: false, encoding: .utf8)
        let dump = try sh([containerd2, "--config", path, "config", "dump"])
        #expect(dump.contains("runtimes.zeropod]"))
        #expect(dump.contains("SystemdCgroup = true"))
    }
}

/// Every file under a folder with its bytes.
func snapshot(_ root: String) throws -> [String: Data] {
    var out: [String: Data] = [:]
    guard let e = FileManager.default.enumerator(atPath: root) else { return out }
    while let rel = e.nextObject() as? String {
        var isDir: ObjCBool = false
        let path = root + "/" + rel
        if FileManager.default.fileExists(atPath: path, isDirectory: &isDir), !isDir.boolValue {
            out[rel] = try Data(contentsOf: URL(fileURLWithPath: path))
        }
    }
    return out
}
