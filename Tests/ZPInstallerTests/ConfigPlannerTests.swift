// The pure config planner, table by table: every fixture, both containerd generations, k3s
// templates, refusals with file and line, idempotence, and the edit's size.
import Foundation
import Synchronization
import Testing

@testable import ZPInstaller

func fixture(_ name: String) throws -> String {
    let url = try #require(Bundle.module.url(forResource: "Fixtures/" + name, withExtension: nil))
    return try String(contentsOf: url, encoding: .utf8)
}

let handler = HandlerSettings(shimPath: "/opt/zeropod/bin/containerd-shim-zeropod-v2")
let v16 = ContainerdRelease(major: 1, minor: 6, patch: 20)
let v17 = ContainerdRelease(major: 1, minor: 7, patch: 22)
let v21 = ContainerdRelease(major: 2, minor: 1, patch: 9)

/// Applies a plan's edits to a set of files (path → text).
func applying(_ plan: ConfigPlan, to files: [String: String]) -> [String: String] {
    var out = files
    for e in plan.edits { out[e.path] = e.after }
    return out
}

/// The lines of `after` that are not in `before` at the same place (a simple line diff count).
func changedLines(_ before: String, _ after: String) -> (removed: [String], added: [String]) {
    let a = before.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
    let b = after.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
    var prefix = 0
    while prefix < a.count, prefix < b.count, a[prefix] == b[prefix] { prefix += 1 }
    var suffix = 0
    while suffix < a.count - prefix, suffix < b.count - prefix, a[a.count - 1 - suffix] == b[b.count - 1 - suffix] {
        suffix += 1
    }
    return (Array(a[prefix..<(a.count - suffix)]), Array(b[prefix..<(b.count - suffix)]))
}

func inputs(
    _ release: ContainerdRelease,
    main: String?,
    mainPath: String = "/etc/containerd/config.toml",
    dropIn: String? = nil,
    flavour: ContainerdFlavour = .containerd
) -> ConfigInputs {
    ConfigInputs(flavour: flavour, release: release, mainPath: mainPath, main: main, dropIn: dropIn)
}

@Suite struct ConfigPlannerTests {
    @Test func stock16_getsAMarkedBlockAppended_everyOriginalByteKept() throws {
        let main = try fixture("stock-1.6.toml")
        let plan = try ConfigPlanner.plan(inputs(v16, main: main), handler: handler)
        #expect(plan.mode == .appendedBlock)
        let edit = try #require(plan.edits.first)
        #expect(plan.edits.count == 1)
        let after = try #require(edit.after)
        #expect(after.hasPrefix(main))
        #expect(after.contains(ConfigPlanner.blockBegin) && after.hasSuffix(ConfigPlanner.blockEnd + "\n"))
        let facts = try ContainerdConfigFacts(try TOMLDocument(path: "x", text: after))
        // containerd 1.6 ignores runtime_path (containerd#8207): the shim is named by runtime_type.
        #expect(facts.runtimes["zeropod"]?["runtime_path"] == nil)
        #expect(facts.runtimes["zeropod"]?["runtime_type"]?.string == "io.containerd.zeropod.v2")
        #expect(facts.runtimes["zeropod"]?["options"] == nil)
        #expect(plan.shimOnContainerdPath)
        #expect(facts.runtimes["zeropod"]?["pod_annotations"]?.strings == HandlerSettings.podAnnotations)
        #expect(facts.runtimes["zeropod"]?["container_annotations"]?.strings == HandlerSettings.containerAnnotations)
        #expect(facts.runtimes["runc"] != nil)
        // The stock config defines runc itself: the block does not.
        #expect(!after.dropFirst(main.count).contains("runtimes.runc]"))
    }

    @Test func debianShipped16_blockAlsoDefinesRunc_becauseContainerd1DropsDefaultHandlers() throws {
        let main = try fixture("debian-shipped.toml")
        let plan = try ConfigPlanner.plan(inputs(v16, main: main), handler: handler)
        let after = try #require(plan.edits.first?.after)
        #expect(after.hasPrefix(main))
        #expect(after.dropFirst(main.count).contains("runtimes.runc]"))
        let facts = try ContainerdConfigFacts(try TOMLDocument(path: "x", text: after))
        #expect(Set(facts.runtimes.keys) == ["runc", "zeropod"])
        #expect(facts.root[["plugins", "io.containerd.grpc.v1.cri", "cni", "bin_dir"]]?.string == "/usr/lib/cni")
    }

    @Test func stock2_getsADropInAndOneEditedImportsLine() throws {
        let main = try fixture("stock-2.1.toml")
        let plan = try ConfigPlanner.plan(inputs(v21, main: main), handler: handler)
        #expect(plan.mode == .dropIn)
        let files = applying(plan, to: ["/etc/containerd/config.toml": main])
        let after = try #require(files["/etc/containerd/config.toml"])
        let diff = changedLines(main, after)
        #expect(diff.removed == ["imports = []"])
        #expect(diff.added == ["imports = [\"zeropod-swift.toml\"]"])
        let dropIn = try #require(files["/etc/containerd/zeropod-swift.toml"])
        #expect(dropIn.hasPrefix(ConfigPlanner.marker))
        let facts = try ContainerdConfigFacts(try TOMLDocument(path: "d", text: dropIn))
        #expect(facts.version == 3)
        #expect(
            facts.root[["plugins", "io.containerd.cri.v1.runtime", "containerd", "runtimes", "zeropod", "runtime_path"]
            ]?.string
                == handler.shimPath
        )
    }

    @Test func debianShippedOn2_getsAVersion2DropIn_andAnImportsLineAfterVersion() throws {
        let main = try fixture("debian-shipped.toml")
        let plan = try ConfigPlanner.plan(inputs(v21, main: main), handler: handler)
        let files = applying(plan, to: [:])
        let after = try #require(files["/etc/containerd/config.toml"])
        let diff = changedLines(main, after)
        #expect(diff.removed.isEmpty)
        #expect(diff.added == ["imports = [\"zeropod-swift.toml\"]"])
        #expect(after.hasPrefix("version = 2\nimports = [\"zeropod-swift.toml\"]\n"))
        let dropIn = try #require(files["/etc/containerd/zeropod-swift.toml"])
        #expect(dropIn.contains("version = 2\n"))
        #expect(dropIn.contains("[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.zeropod]"))
    }

    @Test func userRuntimesOn17_keepsTheirHandlersAndCommentsAndCopiesRuncOptions() throws {
        let main = try fixture("user-runtimes.toml")
        let plan = try ConfigPlanner.plan(inputs(v17, main: main), handler: handler)
        let after = try #require(plan.edits.first?.after)
        #expect(after.hasPrefix(main))
        let facts = try ContainerdConfigFacts(try TOMLDocument(path: "x", text: after))
        #expect(Set(facts.runtimes.keys) == ["runc", "runsc", "zeropod"])
        let options = try #require(facts.runtimes["zeropod"]?["options"]?.table)
        #expect(options == ["BinaryName": .string("/usr/sbin/runc"), "SystemdCgroup": .bool(true)])
    }

    @Test func userRuntimesOn2_addsToTheMultiLineImportsOnOneLine() throws {
        let main = try fixture("user-runtimes.toml")
        let plan = try ConfigPlanner.plan(inputs(ContainerdRelease(major: 2, minor: 0), main: main), handler: handler)
        let after = try #require(applying(plan, to: [:])["/etc/containerd/config.toml"])
        let diff = changedLines(main, after)
        #expect(diff.removed == ["  \"/etc/containerd/conf.d/*.toml\", # site drop-ins"])
        #expect(diff.added == ["  \"/etc/containerd/conf.d/*.toml\", \"zeropod-swift.toml\" # site drop-ins"])
        let dropIn = try #require(applying(plan, to: [:])["/etc/containerd/zeropod-swift.toml"])
        #expect(dropIn.contains("SystemdCgroup = true") && dropIn.contains("BinaryName = \"/usr/sbin/runc\""))
    }

    @Test(arguments: [
        ("stock-1.6.toml", v16), ("debian-shipped.toml", v16), ("user-runtimes.toml", v17),
        ("stock-2.1.toml", v21), ("debian-shipped.toml", v21), ("user-runtimes.toml", v21),
    ])
    func secondPlan_changesNothing(_ name: String, _ release: ContainerdRelease) throws {
        let main = try fixture(name)
        let first = try ConfigPlanner.plan(inputs(release, main: main), handler: handler)
        #expect(!first.edits.isEmpty)
        let files = applying(first, to: ["/etc/containerd/config.toml": main])
        let second = try ConfigPlanner.plan(
            inputs(
                release,
                main: files["/etc/containerd/config.toml"],
                dropIn: files["/etc/containerd/zeropod-swift.toml"]
            ),
            handler: handler
        )
        #expect(second.edits.isEmpty)
        #expect(!second.restartNeeded)
    }

    @Test func aNewShimPath_updatesOnlyOurPart() throws {
        let main = try fixture("stock-1.6.toml")
        let first = applying(try ConfigPlanner.plan(inputs(v17, main: main), handler: handler), to: [:])
        let moved = HandlerSettings(shimPath: "/var/lib/toolbox/zeropod/bin/containerd-shim-zeropod-v2")
        let second = try ConfigPlanner.plan(inputs(v17, main: first["/etc/containerd/config.toml"]), handler: moved)
        let after = try #require(second.edits.first?.after)
        #expect(after.hasPrefix(main) && after.contains(moved.shimPath) && !after.contains(handler.shimPath))
    }

    /// The handler block as the installer appends it to user-runtimes.toml, by containerd release:
    /// below 1.7.1 the shim is named by runtime_type (runtime_path is ignored there, containerd#8207)
    /// and runc's options are not copied (they would reach the shim as empty generic options).
    static let goldenBlocks: [(ContainerdRelease, String, Bool)] = [
        (
            ContainerdRelease(major: 1, minor: 6, patch: 20, text: "1.6.20~ds1"),
            """
            # BEGIN zeropod-swift: written by zeropod-installer; zeropod-installer --uninstall removes it
            [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.zeropod]
              runtime_type = "io.containerd.zeropod.v2"
              pod_annotations = ["zeropod.ctrox.dev/*", "zeropod-swift/*", "io.containerd.runc.v2.group"]
              container_annotations = ["zeropod.ctrox.dev/*", "zeropod-swift/*"]
            # END zeropod-swift

            """, true
        ),
        (
            ContainerdRelease(major: 1, minor: 7, patch: 0),
            """
            # BEGIN zeropod-swift: written by zeropod-installer; zeropod-installer --uninstall removes it
            [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.zeropod]
              runtime_type = "io.containerd.zeropod.v2"
              pod_annotations = ["zeropod.ctrox.dev/*", "zeropod-swift/*", "io.containerd.runc.v2.group"]
              container_annotations = ["zeropod.ctrox.dev/*", "zeropod-swift/*"]
            # END zeropod-swift

            """, true
        ),
        (
            ContainerdRelease(major: 1, minor: 7, patch: 1),
            """
            # BEGIN zeropod-swift: written by zeropod-installer; zeropod-installer --uninstall removes it
            [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.zeropod]
              runtime_type = "io.containerd.runc.v2"
              runtime_path = "/opt/zeropod/bin/containerd-shim-zeropod-v2"
              pod_annotations = ["zeropod.ctrox.dev/*", "zeropod-swift/*", "io.containerd.runc.v2.group"]
              container_annotations = ["zeropod.ctrox.dev/*", "zeropod-swift/*"]

            [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.zeropod.options]
              # copied from the node's runc handler
              BinaryName = "/usr/sbin/runc"
              SystemdCgroup = true
            # END zeropod-swift

            """, false
        ),
    ]

    @Test(arguments: 0..<3)
    func golden_userRuntimesBlock_byContainerdRelease(_ row: Int) throws {
        let (release, block, byType) = Self.goldenBlocks[row]
        let main = try fixture("user-runtimes.toml")
        let plan = try ConfigPlanner.plan(inputs(release, main: main), handler: handler)
        #expect(plan.shimOnContainerdPath == byType)
        let after = try #require(plan.edits.first?.after)
        #expect(after == main + "\n" + block)
        let note = plan.notes.first { $0.contains("ignores runtime_path") }
        #expect((note != nil) == byType)
        if byType {
            #expect(
                note?.contains("node's runc options (BinaryName, SystemdCgroup) cannot reach the shim") == true,
                "\(plan.notes)"
            )
        }
    }

    @Test func k3sOnContainerd16_namesTheShimByType() throws {
        var i = inputs(
            ContainerdRelease(versionText: "v1.6.28-k3s1")!,
            main: try fixture("k3s-rendered-v2.toml"),
            mainPath: "/var/lib/rancher/k3s/agent/etc/containerd/config.toml",
            flavour: .k3s
        )
        i.templateV2 = nil
        let plan = try ConfigPlanner.plan(i, handler: handler)
        #expect(plan.shimOnContainerdPath)
        let facts = try ContainerdConfigFacts(plan.predicted[0])
        #expect(facts.runtimes["zeropod"]?["runtime_type"]?.string == "io.containerd.zeropod.v2")
        #expect(facts.runtimes["zeropod"]?["runtime_path"] == nil)
    }

    @Test(arguments: [
        ("1.6.0", false), ("1.6.38", false), ("1.7.0", false), ("1.7.1", true), ("1.7.22", true),
        ("2.0.0", true), ("2.1.9", true),
    ])
    func runtimePathIsHonoured_from171(_ version: String, _ honoured: Bool) throws {
        #expect(try #require(ContainerdRelease(versionText: version)).honoursRuntimePath == honoured)
    }

    @Test func noConfigFile_onContainerd2_createsOneThatOnlyImports() throws {
        let plan = try ConfigPlanner.plan(inputs(v21, main: nil), handler: handler)
        let files = applying(plan, to: [:])
        #expect(files["/etc/containerd/config.toml"] == "imports = [\"zeropod-swift.toml\"]\n")
    }

    @Test func malformed_isRefusedWithFileAndLine() throws {
        let main = try fixture("malformed.toml")
        let error = #expect(throws: InstallerError.self) {
            try ConfigPlanner.plan(inputs(v21, main: main), handler: handler)
        }
        #expect(error?.file == "/etc/containerd/config.toml")
        #expect(error?.line == 4)
        #expect(error?.reason.contains("not valid TOML") == true)
    }

    @Test func aZeropodHandlerWeDidNotWrite_isRefusedWithItsLine() throws {
        let main = try fixture("foreign-handler.toml")
        let error = #expect(throws: InstallerError.self) {
            try ConfigPlanner.plan(inputs(v21, main: main), handler: handler)
        }
        #expect(error?.line == 4)
        #expect(error?.reason.contains("did not write") == true)
    }

    @Test func aDropInWithoutOurMarker_isRefused() throws {
        let main = try fixture("stock-2.1.toml")
        let error = #expect(throws: InstallerError.self) {
            try ConfigPlanner.plan(inputs(v21, main: main, dropIn: "version = 3\n"), handler: handler)
        }
        #expect(error?.file == "/etc/containerd/zeropod-swift.toml")
    }

    @Test(arguments: ["1.5.18", "3.0.0", "1.8.0", "2.4.0"])
    func unknownContainerdVersions_areRefused(_ version: String) throws {
        let release = try #require(ContainerdRelease(versionText: version))
        let error = #expect(throws: InstallerError.self) {
            try ConfigPlanner.plan(inputs(release, main: try fixture("stock-1.6.toml")), handler: handler)
        }
        #expect(error?.reason.hasPrefix("unknown containerd version \(version)") == true)
    }

    @Test func aVersion3Config_onContainerd1_isRefused() throws {
        let error = #expect(throws: InstallerError.self) {
            try ConfigPlanner.plan(inputs(v17, main: try fixture("stock-2.1.toml")), handler: handler)
        }
        #expect(error?.line == 1)
    }

    @Test func anUpgradeTo2_movesTheBlockIntoTheDropIn() throws {
        let main = try fixture("user-runtimes.toml")
        let on17 = applying(try ConfigPlanner.plan(inputs(v17, main: main), handler: handler), to: [:])
        let plan = try ConfigPlanner.plan(inputs(v21, main: on17["/etc/containerd/config.toml"]), handler: handler)
        let files = applying(plan, to: [:])
        let after = try #require(files["/etc/containerd/config.toml"])
        #expect(!after.contains(ConfigPlanner.blockBegin))
        #expect(changedLines(main, after).added.count == 1)
        #expect(files["/etc/containerd/zeropod-swift.toml"] != nil)
    }

    // MARK: k3s

    @Test func k3sContainerd2_withoutTemplate_createsConfigV3TemplateFromBase() throws {
        let dir = "/var/lib/rancher/k3s/agent/etc/containerd"
        let rendered = try fixture("k3s-rendered-v3.toml")
        let plan = try ConfigPlanner.plan(
            inputs(
                ContainerdRelease(versionText: "v2.0.5-k3s1")!,
                main: rendered,
                mainPath: dir + "/config.toml",
                flavour: .k3s
            ),
            handler: handler
        )
        #expect(plan.mode == .template)
        let edit = try #require(plan.edits.first)
        #expect(edit.path == dir + "/config-v3.toml.tmpl")
        #expect(edit.before == nil)
        #expect(edit.after?.hasPrefix("{{ template \"base\" . }}\n\n" + ConfigPlanner.blockBegin) == true)
        let predicted = try ContainerdConfigFacts(try #require(plan.predicted.first))
        #expect(predicted.runtimes["zeropod"]?["options"]?["SystemdCgroup"] == .bool(true))
        #expect(predicted.runtimes["runc"] != nil)
    }

    @Test func k3sContainerd17_withUserTemplate_appendsToIt() throws {
        let dir = "/var/lib/rancher/k3s/agent/etc/containerd"
        var i = inputs(
            ContainerdRelease(versionText: "v1.7.23-k3s2")!,
            main: try fixture("k3s-rendered-v2.toml"),
            mainPath: dir + "/config.toml",
            flavour: .k3s
        )
        let template = try fixture("k3s-user-template.toml.tmpl")
        i.templateV2 = template
        let plan = try ConfigPlanner.plan(i, handler: handler)
        let edit = try #require(plan.edits.first)
        #expect(edit.path == dir + "/config.toml.tmpl")
        #expect(edit.after?.hasPrefix(template) == true)
        // Again, with the template as written and k3s's new rendering: nothing to do.
        i.templateV2 = edit.after
        i.main = try #require(plan.predicted.first).text
        #expect(try ConfigPlanner.plan(i, handler: handler).edits.isEmpty)
    }

    @Test func k3sTemplateWithAForeignHandler_isRefusedWithItsLine() throws {
        var i = inputs(
            v17,
            main: try fixture("k3s-rendered-v2.toml"),
            mainPath: "/var/lib/rancher/k3s/agent/etc/containerd/config.toml",
            flavour: .k3s
        )
        i.templateV2 = try fixture("k3s-foreign-template.toml.tmpl")
        let error = #expect(throws: InstallerError.self) { try ConfigPlanner.plan(i, handler: handler) }
        #expect(error?.file == "/var/lib/rancher/k3s/agent/etc/containerd/config.toml.tmpl")
        #expect(error?.line == 3)
    }

    @Test func k3sNotYetStarted_isRefused() throws {
        let error = #expect(throws: InstallerError.self) {
            try ConfigPlanner.plan(inputs(v17, main: nil, flavour: .k3s), handler: handler)
        }
        #expect(error?.reason.contains("start k3s once") == true)
    }
}

@Suite struct TOMLLayoutTests {
    @Test(arguments: [
        ("imports = []\n", "imports = [\"z.toml\"]\n"),
        ("imports = [\"a.toml\"]\n", "imports = [\"a.toml\", \"z.toml\"]\n"),
        ("imports = [\"a.toml\",]\n", "imports = [\"a.toml\", \"z.toml\"]\n"),
        ("imports = ['a.toml'] # note\n", "imports = ['a.toml', \"z.toml\"] # note\n"),
        (
            "imports = [\n  \"a\", # one\n  \"b\" # two\n]\n",
            "imports = [\n  \"a\", # one\n  \"b\", \"z.toml\" # two\n]\n"
        ),
        ("version = 3\n[grpc]\n", "version = 3\nimports = [\"z.toml\"]\n[grpc]\n"),
        ("version = 3", "version = 3\nimports = [\"z.toml\"]\n"),
        ("# hello\n[grpc]\n", "imports = [\"z.toml\"]\n# hello\n[grpc]\n"),
        ("a = \"]\"\nimports = [\"x]\"] \n", "a = \"]\"\nimports = [\"x]\", \"z.toml\"] \n"),
    ])
    func addImport(_ before: String, _ after: String) throws {
        let layout = try TOMLLayout(scanning: before, path: "t")
        #expect(ConfigPlanner.addImport("z.toml", to: before, layout: layout) == after)
        _ = try TOMLDocument(path: "t", text: after)
    }

    @Test func headersAndDottedKeys_haveTheirLines() throws {
        let text =
            "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.zeropod]\n  runtime_type = 'x'\n"
            + "[a]\nb.c = { d = 1 }\n"
        let layout = try TOMLLayout(scanning: text, path: "t")
        #expect(
            layout.line(ofTable: ["plugins", "io.containerd.grpc.v1.cri", "containerd", "runtimes", "zeropod"]) == 2
        )
        #expect(layout.line(ofTable: ["a", "b", "c", "d"]) == 5)
        #expect(layout.topLevel("version")?.line == 1)
    }
}

@Suite struct SmallPartsTests {
    @Test(arguments: [
        ("containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+deb12u3", 1, 6, 20),
        ("containerd github.com/containerd/containerd/v2 2.1.9+unknown ", 2, 1, 9),
        ("containerd github.com/k3s-io/containerd v1.7.23-k3s2", 1, 7, 23),
        ("containerd containerd.io 1.7.22 7f7fdf5fed64eb6a7caf99b3e12efcf9d60e311c", 1, 7, 22),
    ])
    func containerdVersionOutput(_ text: String, _ major: Int, _ minor: Int, _ patch: Int) throws {
        let r = try ContainerdRelease(versionOutput: text)
        #expect(r.major == major && r.minor == minor && r.patch == patch)
    }

    @Test func originalSingleDashFlags_becomeLongOptions() throws {
        #expect(
            try OriginalFlags.normalize(["-runtime", "k3s", "-host-opt-path=/x", "-uninstall", "-timeout", "1m"])
                == ["--runtime", "k3s", "--host-opt-path=/x", "--uninstall", "--timeout", "1m"]
        )
        #expect(throws: (any Error).self) { try OriginalFlags.normalize(["-probe-binary-name=k3s"]) }
        let parsed = try InstallerCommand.parse(try OriginalFlags.normalize(["-runtime", "rke2", "-timeout=30s"]))
        #expect(parsed.flavour == .rke2)
        #expect(try parsed.installerOptions(executable: "/usr/bin/zeropod-installer").timeout == 30)
        #expect(
            try parsed.installerOptions(executable: "/usr/bin/zeropod-installer").shimSource
                == "/usr/bin/containerd-shim-zeropod-v2"
        )
        #expect(try parsed.installerOptions(executable: "/x").shimLinkDirectory == "/usr/local/bin")
        let linked = try InstallerCommand.parse(try OriginalFlags.normalize(["-shim-link-dir=/host/usr/local/bin/"]))
        #expect(
            try linked.installerOptions(executable: "/x").linkedShim == "/host/usr/local/bin/containerd-shim-zeropod-v2"
        )
        #expect(throws: (any Error).self) {
            try InstallerCommand.parse(["--shim-link-dir", "bin"]).installerOptions(executable: "/x")
        }
    }

    @Test func lddOutput_copiesAllButGlibc() throws {
        let out = """
            \tlinux-vdso.so.1 (0x00007ffd)
            \tlibprotobuf-c.so.1 => /lib/x86_64-linux-gnu/libprotobuf-c.so.1 (0x00007f)
            \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)
            \tlibm.so.6 => /lib/x86_64-linux-gnu/libm.so.6 (0x00007f)
            \t/lib64/ld-linux-x86-64.so.2 (0x00007f)
            \tlibnl-3.so.200 => /lib/x86_64-linux-gnu/libnl-3.so.200 (0x00007f)
            """
        #expect(
            try LddOutput.librariesToCopy(out, binary: "criu")
                == ["/lib/x86_64-linux-gnu/libprotobuf-c.so.1", "/lib/x86_64-linux-gnu/libnl-3.so.200"]
        )
        #expect(throws: InstallerError.self) {
            try LddOutput.librariesToCopy("\tlibx.so => not found\n", binary: "criu")
        }
    }

    @Test func restartDecision() {
        #expect(
            RestartPlanner.decide(
                flavour: .containerd,
                configChanged: false,
                policy: .auto,
                systemdRuns: true,
                systemctl: true,
                configPath: "c"
            ) == .none
        )
        #expect(
            RestartPlanner.decide(
                flavour: .k3s,
                configChanged: true,
                policy: .auto,
                systemdRuns: true,
                systemctl: true,
                configPath: "c"
            ) == .systemd(units: ["k3s.service", "k3s-agent.service"])
        )
        #expect(
            RestartPlanner.decide(
                flavour: .rke2,
                configChanged: true,
                policy: .auto,
                systemdRuns: true,
                systemctl: true,
                configPath: "c"
            ) == .systemd(units: ["rke2-server.service", "rke2-agent.service"])
        )
        guard
            case .manual(let text) = RestartPlanner.decide(
                flavour: .containerd,
                configChanged: true,
                policy: .auto,
                systemdRuns: false,
                systemctl: true,
                configPath: "/etc/c.toml"
            )
        else {
            Issue.record("expected manual")
            return
        }
        #expect(text.contains("systemd does not run this node") && text.contains("systemctl restart containerd"))
        guard
            case .manual = RestartPlanner.decide(
                flavour: .containerd,
                configChanged: true,
                policy: .never,
                systemdRuns: true,
                systemctl: true,
                configPath: "c"
            )
        else {
            Issue.record("expected manual")
            return
        }
    }

    @Test func restartRunner_restartsTheActiveUnitOnly() {
        struct FakeSystemctl: HostCommands {
            let active: Set<String>
            let calls = Calls()
            final class Calls: Sendable {
                let state = Mutex<[[String]]>([])
                var list: [[String]] { state.withLock { $0 } }
            }
            func run(_ program: String, _ arguments: [String], timeout: Double) -> CommandResult {
                calls.state.withLock { $0.append([program] + arguments) }
                if arguments.first == "is-active" {
                    return CommandResult(status: active.contains(arguments.last!) ? 0 : 3, output: "")
                }
                return CommandResult(status: 0, output: "")
            }
            func which(_ program: String) -> String? { "/bin/" + program }
        }
        let fake = FakeSystemctl(active: ["k3s-agent.service"])
        let (restarted, _) = RestartPlanner.restart(
            units: ContainerdFlavour.k3s.units,
            commands: fake,
            timeout: 5,
            flavour: .k3s,
            configPath: "c"
        )
        #expect(restarted == ["k3s-agent.service"])
        #expect(fake.calls.list.contains(["systemctl", "try-restart", "k3s-agent.service"]))
        #expect(!fake.calls.list.contains(["systemctl", "try-restart", "k3s.service"]))
    }
}
