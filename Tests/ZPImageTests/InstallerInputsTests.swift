// The issue's "Must show" table: each installer input (stock 1.6 config, stock 2.x config, a k3s
// rendered config with its template, a config with the user's own runtimes and comments, Debian's
// shipped config, an already-installed one, a malformed one) → result, with the idempotence and
// byte-exact uninstall checks — and every written config started by containerd (1.6 or 2.x) with
// the CRI plugin on, where a pod with handler `zeropod` scales down and back.
//
// The inputs are the installer tests' fixtures with only what a second containerd on this machine
// needs changed (`privatised`): its root, state and sockets, the CRI's sandbox image, CNI folders,
// `restrict_oom_score_adj` (no CAP_SYS_RESOURCE here), the streaming port, NRI off, the opt plugin's
// folder, and `SystemdCgroup = false` (no systemd as PID 1 here).
import Foundation
import Testing
import ZPAPI
import ZPCRITestBed
import ZPCore
import ZPInstaller
import ZPTestSupport

/// A fixture of ZPInstallerTests.
func installerFixture(_ name: String) throws -> String {
    try String(contentsOfFile: TestPaths.packageRoot + "/Tests/ZPInstallerTests/Fixtures/" + name, encoding: .utf8)
}

/// `text` with the settings a private containerd in `directory` needs set (see the file comment):
/// values replaced in place, keys a table lacks inserted under its header, missing tables appended.
func privatised(_ text: String, directory: String, pauseImage: String, configVersion: Int) -> String {
    var settings: [(table: String, key: String, value: String)] = [
        ("", "root", "\"\(directory)/root\""), ("", "state", "\"\(directory)/state\""),
        ("grpc", "address", "\"\(directory)/c.sock\""), ("ttrpc", "address", "\"\(directory)/c.sock.ttrpc\""),
        ("plugins.io.containerd.internal.v1.opt", "path", "\"\(directory)/opt\""),
        ("plugins.io.containerd.nri.v1.nri", "disable", "true"),
    ]
    if configVersion == 3 {
        settings += [
            ("plugins.io.containerd.cri.v1.images.pinned_images", "sandbox", "\"\(pauseImage)\""),
            ("plugins.io.containerd.cri.v1.runtime", "restrict_oom_score_adj", "true"),
            ("plugins.io.containerd.cri.v1.runtime.cni", "bin_dirs", "[\"/usr/lib/cni\"]"),
            ("plugins.io.containerd.cri.v1.runtime.cni", "conf_dir", "\"\(directory)/cni\""),
            ("plugins.io.containerd.grpc.v1.cri", "stream_server_address", "\"127.0.0.1\""),
            ("plugins.io.containerd.grpc.v1.cri", "stream_server_port", "\"0\""),
        ]
    } else {
        settings += [
            ("plugins.io.containerd.grpc.v1.cri", "sandbox_image", "\"\(pauseImage)\""),
            ("plugins.io.containerd.grpc.v1.cri", "restrict_oom_score_adj", "true"),
            ("plugins.io.containerd.grpc.v1.cri", "stream_server_address", "\"127.0.0.1\""),
            ("plugins.io.containerd.grpc.v1.cri", "stream_server_port", "\"0\""),
            ("plugins.io.containerd.grpc.v1.cri.cni", "bin_dir", "\"/usr/lib/cni\""),
            ("plugins.io.containerd.grpc.v1.cri.cni", "conf_dir", "\"\(directory)/cni\""),
        ]
    }
    var lines = text.components(separatedBy: "\n")
    func tableName(_ line: String) -> String? {
        let t = line.trimmingCharacters(in: .whitespaces)
        guard t.hasPrefix("["), !t.hasPrefix("[["), let end = t.firstIndex(of: "]") else { return nil }
        return String(t[t.index(after: t.startIndex)..<end]).replacingOccurrences(of: "\"", with: "")
            .replacingOccurrences(of: "'", with: "").replacingOccurrences(of: " ", with: "")
    }
    func keyOf(_ line: String) -> String? {
        let t = line.trimmingCharacters(in: .whitespaces)
        guard !t.hasPrefix("#"), !t.hasPrefix("["), let eq = t.firstIndex(of: "=") else { return nil }
        return t[..<eq].trimmingCharacters(in: .whitespaces)
    }
    // No systemd as PID 1 here: the runc handlers use cgroupfs.
    lines = lines.map { line in
        keyOf(line) == "SystemdCgroup" ? line.replacingOccurrences(of: "true", with: "false") : line
    }
    for s in settings {
        var table = ""
        var headerIndex: Int? = nil
        var done = false
        var firstTable: Int? = nil
        for (i, line) in lines.enumerated() {
            if let name = tableName(line) {
                table = name
                if firstTable == nil { firstTable = i }
                if name == s.table { headerIndex = i }
                continue
            }
            if table == s.table, keyOf(line) == s.key {
                let indent = String(line.prefix(while: { $0 == " " }))
                lines[i] = "\(indent)\(s.key) = \(s.value)"
                done = true
                break
            }
        }
        if done { continue }
        if s.table.isEmpty {
            // Top-level keys go before the first table (after `version`, which stays first).
            lines.insert("\(s.key) = \(s.value)", at: firstTable ?? lines.count)
        } else if let headerIndex {
            lines.insert("  \(s.key) = \(s.value)", at: headerIndex + 1)
        } else {
            let quoted =
                s.table.hasPrefix("plugins.")
                ? "plugins.\""
                    + s.table.dropFirst("plugins.".count).replacingOccurrences(of: ".cni", with: "")
                    .replacingOccurrences(of: ".pinned_images", with: "") + "\""
                    + (s.table.hasSuffix(".cni") ? ".cni" : s.table.hasSuffix(".pinned_images") ? ".pinned_images" : "")
                : s.table
            lines.append("[\(quoted)]")
            lines.append("  \(s.key) = \(s.value)")
        }
    }
    return lines.joined(separator: "\n")
}

/// One row of the table.
struct InstallerInput: CustomTestStringConvertible, Sendable {
    var name: String
    var fixture: String
    var flavor: ContainerdFlavor
    var runtime: ContainerdFlavour = .containerd
    /// Installed once before the row's own install (the "already installed" row).
    var installedBefore = false
    var testDescription: String { "\(name) on \(flavor.name)" }
}

@Suite(
    .serialized,
    .enabled(if: imageTestsAvailable, "needs root, runc, CRIU, gcc, the CNI plugins, umoci and jq (make setup)")
)
struct InstallerInputsTests {
    static let rows: [InstallerInput] = [
        InstallerInput(name: "stock 1.6 config", fixture: "stock-1.6.toml", flavor: .debian),
        InstallerInput(name: "stock 2.x config", fixture: "stock-2.1.toml", flavor: .containerd2),
        InstallerInput(name: "user's runtimes and comments", fixture: "user-runtimes.toml", flavor: .debian),
        InstallerInput(name: "user's runtimes and comments", fixture: "user-runtimes.toml", flavor: .containerd2),
        InstallerInput(name: "Debian's shipped config", fixture: "debian-shipped.toml", flavor: .debian),
        InstallerInput(
            name: "k3s (containerd 1.7 template)",
            fixture: "k3s-rendered-v2.toml",
            flavor: .debian,
            runtime: .k3s
        ),
        InstallerInput(
            name: "k3s (containerd 2 template)",
            fixture: "k3s-rendered-v3.toml",
            flavor: .containerd2,
            runtime: .k3s
        ),
        InstallerInput(
            name: "already installed",
            fixture: "stock-2.1.toml",
            flavor: .containerd2,
            installedBefore: true
        ),
    ]

    @Test(arguments: InstallerInputsTests.rows)
    func input_installs_containerdStartsWithIt_zeropodPodScales_uninstallRestoresEveryByte(
        _ row: InstallerInput
    ) async throws {
        let fixture = try installerFixture(row.fixture)
        let version = fixture.contains("version = 3") ? 3 : 2
        let scratch = "/tmp/\(uniqueName("zptable"))"
        try FileManager.default.createDirectory(atPath: scratch + "/etc/zeropod", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        var bedOptions = CRITestBed.Options()
        bedOptions.configSubfolder = "etc"
        bedOptions.rewrite = { _, directory, pause in
            privatised(fixture, directory: directory, pauseImage: pause, configVersion: version)
        }
        try await withCRITestBed(
            flavor: row.flavor,
            tag: "table",
            environment: ["ZEROPOD_NODE_CONFIG": scratch + "/etc/zeropod/node.conf"],
            options: bedOptions
        ) { bed in
            let configPath = bed.containerd.configPath
            let folder = String(configPath[..<configPath.lastIndex(of: "/")!])
            let input = try String(contentsOfFile: configPath, encoding: .utf8)
            let pristine = snapshot(folder)
            var options = InstallerOptions()
            options.flavour = row.runtime
            options.configPath = configPath
            options.optPath = scratch + "/opt/zeropod"
            options.nodeConfigPath = scratch + "/etc/zeropod/node.conf"
            options.shimSource = TestPaths.buildDirectory + "/containerd-shim-zeropod-v2"
            options.systemdRuns = false
            options.shimSocketDirectory = scratch + "/run/s"
            // Not the machine's /usr/local/bin. The bed's containerd has the build folder (with the
            // same shim) first on its PATH, so on 1.6 this proves the handler's form, not the link.
            options.shimLinkDirectory = scratch + "/usr/local/bin"
            let (release, source) = try await ContainerdVersionLookup.resolve(
                given: nil,
                binary: nil,
                socket: bed.containerd.socket,
                flavour: row.runtime,
                commands: LocalCommands(),
                timeout: 30
            )
            options.containerdVersion = release.text
            let installer = Installer(options: options) { _ in }
            if row.installedBefore { _ = try installer.install() }
            let before = snapshot(folder)

            let first = try installer.install()
            let installed = snapshot(folder)
            let second = try installer.install()
            let idempotent = !second.configChanged && snapshot(folder) == installed
            #expect(first.configChanged == !row.installedBefore)
            #expect(idempotent)
            let changed = installed.filter { before[$0.key] != $0.value }.keys.sorted()
            #expect(FileManager.default.fileExists(atPath: options.linkedShim) == !release.honoursRuntimePath)

            // k3s renders config.toml from the template when it starts: the template is `{{ template
            // "base" . }}` plus our block, so the rendering is the current config plus the block.
            if row.runtime == .k3s {
                let v3 = folder + "/config-v3.toml.tmpl"
                let templatePath = FileManager.default.fileExists(atPath: v3) ? v3 : folder + "/config.toml.tmpl"
                let template = try String(contentsOfFile: templatePath, encoding: .utf8)
                    .replacingOccurrences(of: "{{ template \"base\" . }}", with: input)
                try template.write(toFile: configPath, atomically: false, encoding: .utf8)
            }
            try await bed.restartContainerd()
            let pod = bed.pod(
                "t-\(uniqueName("p"))",
                handler: CRITestBed.zeropodHandler,
                annotations: ["zeropod.ctrox.dev/scaledown-duration": "2s", "zeropod.ctrox.dev/ports-map": "app=8080"],
                containerPorts: [8080]
            )
            let (podID, ip, appID, count) = try await CounterApp.start(bed, pod)
            var status: StatusAPI.ContainerStatus?
            let down = await eventuallyAsync(within: 90, every: 0.1) {
                status = await shimStatus(bed, podID: podID, id: appID)
                return status?.lifecyclePhase == .scaledDown
            }
            var next: Int? = nil
            if down { next = await CounterApp.request(ip) }
            #expect(
                down && next == count + 1,
                """
                scale down \(down) (\(String(describing: status))), count \(String(describing: next)) after \(count); \
                containerd: \(bed.containerd.log(tail: 30))
                """
            )
            try await bed.removePod(podID)

            if row.runtime == .k3s {
                try input.write(toFile: configPath, atomically: false, encoding: .utf8)  // k3s renders again
            }
            _ = try installer.uninstall()
            let restored = snapshot(folder) == pristine
            #expect(restored, "uninstall did not give the input back byte for byte")
            #expect(!FileManager.default.fileExists(atPath: options.optPath + "/bin"))
            #expect(
                !FileManager.default.fileExists(atPath: scratch + "/usr"),
                "the shim's link and its folders are gone"
            )
            try await bed.restartContainerd()
            print(
                "[zptable] | \(row.name) | \(release.text) (\(source)) | \(changed.joined(separator: ", ")) | "
                    + "install \(first.configChanged ? "changed" : "unchanged"), again \(idempotent ? "unchanged" : "CHANGED") | "
                    + "pod \(down && next == count + 1 ? "scaled down and back" : "FAILED") | uninstall \(restored ? "byte-exact" : "DIFFERS") |"
            )
        }
    }

    @Test func malformedConfig_isRefusedNamingFileAndLine_nothingChanges() async throws {
        let scratch = "/tmp/\(uniqueName("zptable"))"
        try FileManager.default.createDirectory(atPath: scratch + "/etc/containerd", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        let configPath = scratch + "/etc/containerd/config.toml"
        try installerFixture("malformed.toml").write(toFile: configPath, atomically: false, encoding: .utf8)
        let before = snapshot(scratch)
        var options = InstallerOptions()
        options.configPath = configPath
        options.optPath = scratch + "/opt/zeropod"
        options.nodeConfigPath = scratch + "/etc/zeropod/node.conf"
        options.containerdVersion = "2.1.9"
        options.shimSource = "/bin/true"
        let error = #expect(throws: InstallerError.self) { try Installer(options: options) { _ in }.install() }
        #expect(error?.file == configPath && error?.line != nil, "\(String(describing: error))")
        #expect(snapshot(scratch) == before)
        print(
            "[zptable] | malformed config | 2.1.9 (given) | — | refused: \(error.map(String.init(describing:)) ?? "?") | — | — |"
        )
    }
}
