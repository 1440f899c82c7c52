// The pure half of the containerd config change: from the files as they are (read by the edge)
// to the files as they must be, or a refusal naming file, line and reason. No I/O here.
// Why drop-in for 2.x and a marked block for 1.x: docs/decisions/0023-installer-containerd-config.md.
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// What our runtime handler contains.
public struct HandlerSettings: Sendable, Equatable {
    /// The handler name (RuntimeClass `handler`).
    public var name: String
    /// The shim binary, as containerd on the host sees it.
    public var shimPath: String

    /// Pod annotations containerd copies into each container's OCI spec: ours, and runc's shim
    /// group key (the shim groups a pod's containers by it).
    public static let podAnnotations = ["zeropod.ctrox.dev/*", "zeropod-swift/*", "io.containerd.runc.v2.group"]
    /// The shim's file name: what containerd makes of `runtimeType` (`io.containerd.zeropod.v2`).
    public static let shimBinaryName = "containerd-shim-zeropod-v2"
    /// The `runtime_type` that names our shim by itself, for containerd releases that ignore
    /// `runtime_path`: containerd looks `containerd-shim-zeropod-v2` up on its `PATH`, then in
    /// the folder of its own binary.
    public static let runtimeType = "io.containerd.zeropod.v2"

    /// Container annotations forwarded the same way.
    public static let containerAnnotations = ["zeropod.ctrox.dev/*", "zeropod-swift/*"]

    /// Settings for handler `name` (default "zeropod") running `shimPath`.
    public init(shimPath: String, name: String = "zeropod") {
        self.shimPath = shimPath
        self.name = name
    }
}

/// One file as it is and as it must be.
public struct FileEdit: Sendable, Equatable {
    /// The file.
    public var path: String
    /// Its text now (nil: absent).
    public var before: String?
    /// Its text afterwards (nil: removed).
    public var after: String?
}

/// How the handler reaches containerd.
public enum ConfigMode: Sendable, Equatable {
    /// A drop-in file that the main config imports (containerd 2.x).
    case dropIn
    /// A marked block at the end of the main config (containerd 1.x, whose imports replace whole
    /// plugin sections).
    case appendedBlock
    /// A marked block at the end of k3s's/rke2's config template.
    case template
}

/// The config change the installer will make.
public struct ConfigPlan: Sendable, Equatable {
    /// How.
    public var mode: ConfigMode
    /// The files to change (empty: everything is in place already).
    public var edits: [FileEdit]
    /// What the installer did or found, one line each, for the log.
    public var notes: [String]
    /// The effective config containerd will read afterwards, parsed (main config and drop-in,
    /// or the predicted rendering of a template), for checks.
    public var predicted: [TOMLDocument]

    /// Whether the handler names the shim by `runtime_type` alone (containerd below 1.7.1, which
    /// ignores `runtime_path`): the installer must then put the shim on containerd's `PATH`.
    public var shimOnContainerdPath = false

    /// Whether containerd must restart to read the change.
    public var restartNeeded: Bool { !edits.isEmpty }
}

/// The files the planner needs, as the edge read them.
public struct ConfigInputs: Sendable, Equatable {
    /// containerd, k3s or rke2.
    public var flavour: ContainerdFlavour
    /// The running containerd's release.
    public var release: ContainerdRelease
    /// containerd's main config (for k3s/rke2: the rendered `config.toml`).
    public var mainPath: String
    /// Its text (nil: absent).
    public var main: String?
    /// Our drop-in's text (nil: absent). Its path is `dropInPath`.
    public var dropIn: String?
    /// Other files the main config imports (resolved, globs expanded), path and text.
    public var imported: [(path: String, text: String)]
    /// k3s/rke2: `config.toml.tmpl` and `config-v3.toml.tmpl` next to the main config, nil where absent.
    public var templateV2: String?
    /// See `templateV2`.
    public var templateV3: String?

    /// Inputs for a plain containerd (no templates).
    public init(
        flavour: ContainerdFlavour,
        release: ContainerdRelease,
        mainPath: String,
        main: String?,
        dropIn: String? = nil,
        imported: [(path: String, text: String)] = [],
        templateV2: String? = nil,
        templateV3: String? = nil
    ) {
        self.flavour = flavour
        self.release = release
        self.mainPath = mainPath
        self.main = main
        self.dropIn = dropIn
        self.imported = imported
        self.templateV2 = templateV2
        self.templateV3 = templateV3
    }

    /// The folder of the main config.
    public var configDirectory: String {
        guard let slash = mainPath.lastIndex(of: "/") else { return "." }
        return slash == mainPath.startIndex ? "/" : String(mainPath[..<slash])
    }

    /// Our drop-in, next to the main config.
    public var dropInPath: String { configDirectory + "/" + ConfigPlanner.dropInName }
    /// k3s/rke2's template for containerd 1.x configs (version 2).
    public var templateV2Path: String { configDirectory + "/config.toml.tmpl" }
    /// k3s/rke2's template for containerd 2.x configs (version 3), preferred by k3s when present.
    public var templateV3Path: String { configDirectory + "/config-v3.toml.tmpl" }

    public static func == (a: ConfigInputs, b: ConfigInputs) -> Bool {
        a.flavour == b.flavour && a.release == b.release && a.mainPath == b.mainPath && a.main == b.main
            && a.dropIn == b.dropIn && a.imported.map(\.path) == b.imported.map(\.path)
            && a.imported.map(\.text) == b.imported.map(\.text) && a.templateV2 == b.templateV2
            && a.templateV3 == b.templateV3
    }
}

/// Plans the containerd config change (pure).
public enum ConfigPlanner {
    /// Our drop-in's file name, next to the main config.
    public static let dropInName = "zeropod-swift.toml"
    /// The first line of every file and block we write; what makes a handler "ours".
    public static let marker = "# Written by zeropod-installer (zeropod-swift)"
    /// The line that opens our block in a main config or template.
    public static let blockBegin =
        "# BEGIN zeropod-swift: written by zeropod-installer; zeropod-installer --uninstall removes it"
    /// The line that closes it.
    public static let blockEnd = "# END zeropod-swift"

    /// The plan for installing the handler.
    /// - Throws: `InstallerError` naming file, line and reason: unknown containerd version,
    ///   unparseable config, a config version this containerd does not read, a `zeropod` handler
    ///   we did not write, or a result that does not parse.
    public static func plan(_ inputs: ConfigInputs, handler: HandlerSettings) throws(InstallerError) -> ConfigPlan {
        let generation = try inputs.release.generation()
        if inputs.flavour.rendersTemplate { return try planTemplate(inputs, handler: handler, generation: generation) }
        return try planPlain(inputs, handler: handler, generation: generation)
    }

    // MARK: plain containerd

    private static func planPlain(
        _ inputs: ConfigInputs,
        handler: HandlerSettings,
        generation: ContainerdRelease.Generation
    ) throws(InstallerError) -> ConfigPlan {
        let mainText = inputs.main ?? ""
        let mainDoc = try TOMLDocument(path: inputs.mainPath, text: mainText)
        let facts = try ContainerdConfigFacts(mainDoc)
        let layout = try TOMLLayout(scanning: mainText, path: inputs.mainPath)
        try checkVersion(facts, generation: generation, path: inputs.mainPath, layout: layout)
        let importedDocs = try parsedImports(inputs)
        var notes: [String] = []
        if let opt = facts.optPath {
            notes.append("containerd's opt path is \(opt) (left alone)")
        }

        switch generation {
        case .two:
            // Drop-in next to the main config, imported by it.
            let version = facts.versionWritten ? facts.version : 3
            let cri = ContainerdConfigFacts.criPluginID(version: version)
            // A block left in the main config by an install under containerd 1.x moves to the drop-in.
            let ownBlock = try blockRange(in: mainText, path: inputs.mainPath)
            try refuseForeignHandler(handler.name, in: mainDoc, facts: facts, layout: layout, ownBlock: ownBlock)
            for doc in importedDocs where doc.path != inputs.dropInPath {
                let f = try ContainerdConfigFacts(doc)
                try refuseForeignHandler(
                    handler.name,
                    in: doc,
                    facts: f,
                    layout: try TOMLLayout(scanning: doc.text, path: doc.path),
                    ownBlock: nil
                )
            }
            if let existing = inputs.dropIn, !existing.hasPrefix(marker) {
                throw InstallerError(
                    "exists but was not written by zeropod-installer (no \"\(marker)\" first line); "
                        + "move it away or remove it",
                    file: inputs.dropInPath,
                    line: 1
                )
            }
            var newMain = mainText
            if let ownBlock {
                newMain = removing(ownBlock, from: mainText)
                notes.append(
                    "move the zeropod handler from \(inputs.mainPath) into \(dropInName) (containerd is 2.x now)"
                )
            }
            let baseLayout = try TOMLLayout(scanning: newMain, path: inputs.mainPath)
            let baseFacts = try ContainerdConfigFacts(try TOMLDocument(path: inputs.mainPath, text: newMain))
            let runcOptions = mergedRuncOptions(main: baseFacts, imported: importedDocs)
            let dropIn = renderDropIn(
                version: version,
                cri: cri,
                handler: handler,
                runcOptions: runcOptions,
                mainPath: inputs.mainPath
            )
            var edits: [FileEdit] = []
            if inputs.dropIn != dropIn {
                edits.append(FileEdit(path: inputs.dropInPath, before: inputs.dropIn, after: dropIn))
                notes.append(inputs.dropIn == nil ? "write \(inputs.dropInPath)" : "update \(inputs.dropInPath)")
            }
            if !importsCover(baseFacts.imports, dropIn: inputs.dropInPath, configDirectory: inputs.configDirectory) {
                newMain = addImport(dropInName, to: newMain, layout: baseLayout)
                notes.append(
                    inputs.main == nil
                        ? "create \(inputs.mainPath) importing \(dropInName)"
                        : "add \(dropInName) to the imports of \(inputs.mainPath)"
                )
            }
            if newMain != mainText || inputs.main == nil {
                edits.append(FileEdit(path: inputs.mainPath, before: inputs.main, after: newMain))
            }
            let predictedMain = try TOMLDocument(path: inputs.mainPath, text: newMain)
            let predictedDropIn = try TOMLDocument(path: inputs.dropInPath, text: dropIn)
            let after = try ContainerdConfigFacts(predictedMain)
            guard importsCover(after.imports, dropIn: inputs.dropInPath, configDirectory: inputs.configDirectory) else {
                throw InstallerError("the edited config does not import \(dropInName) (a bug)", file: inputs.mainPath)
            }
            return ConfigPlan(mode: .dropIn, edits: edits, notes: notes, predicted: [predictedMain, predictedDropIn])

        case .one:
            // containerd 1.x replaces a whole plugin section from an import: the handler goes into
            // the main config itself, between our markers.
            let ownBlock = try blockRange(in: mainText, path: inputs.mainPath)
            try refuseForeignHandler(handler.name, in: mainDoc, facts: facts, layout: layout, ownBlock: ownBlock)
            for doc in importedDocs {
                let f = try ContainerdConfigFacts(doc)
                if f.root[["plugins", f.criPluginID]] != nil || f.root[["plugins", "io.containerd.grpc.v1.cri"]] != nil
                {
                    throw InstallerError(
                        "imports a section of the CRI plugin, which containerd \(inputs.release.text) "
                            + "lets replace the main config's whole CRI section; the installer cannot "
                            + "add its handler safely: move that section into the main config",
                        file: doc.path,
                        line: try TOMLLayout(scanning: doc.text, path: doc.path)
                            .line(ofTable: ["plugins"])
                    )
                }
            }
            let withoutBlock = ownBlock.map { removing($0, from: mainText) } ?? mainText
            let baseDoc = try TOMLDocument(path: inputs.mainPath, text: withoutBlock)
            let baseFacts = try ContainerdConfigFacts(baseDoc)
            let cri = ContainerdConfigFacts.criPluginID(version: 2)
            let needsRunc = baseFacts.defaultRuntimeName == "runc" && baseFacts.runtimes["runc"] == nil
            if needsRunc {
                notes.append(
                    "the config does not define the runc handler: the block defines it as containerd's "
                        + "default does (containerd 1.x drops its default handlers once any handler is configured)"
                )
            }
            let byType = !inputs.release.honoursRuntimePath
            if byType { notes.append(byTypeNote(inputs.release, runcOptions: baseFacts.runcOptionsToCopy)) }
            let block = renderBlock(
                tables: renderHandler(
                    cri: cri,
                    handler: handler,
                    runcOptions: baseFacts.runcOptionsToCopy,
                    defaultRunc: needsRunc,
                    byType: byType
                )
            )
            var newMain: String
            if let ownBlock {
                newMain = replacing(ownBlock, in: mainText, with: block)
            } else {
                newMain = mainText
                if !baseFacts.versionWritten {
                    // A version-1 file without plugins: version 2 reads the same and names plugins in full.
                    newMain = "version = 2\n" + newMain
                    notes.append("add version = 2 to \(inputs.mainPath) (it had none and no plugins)")
                }
                newMain = appendingBlock(block, to: newMain)
            }
            var edits: [FileEdit] = []
            if newMain != mainText {
                edits.append(FileEdit(path: inputs.mainPath, before: inputs.main, after: newMain))
                notes.append(
                    ownBlock == nil
                        ? "append the zeropod handler to \(inputs.mainPath)"
                        : "update the zeropod handler in \(inputs.mainPath)"
                )
            }
            if let existing = inputs.dropIn, existing.hasPrefix(marker) {
                // Left by an install under containerd 2.x; 1.x would not read it the same way.
                edits.append(FileEdit(path: inputs.dropInPath, before: existing, after: nil))
                notes.append("remove \(inputs.dropInPath) (containerd 1.x does not get a drop-in)")
            }
            let predicted = try TOMLDocument(path: inputs.mainPath, text: newMain)
            guard (try ContainerdConfigFacts(predicted)).runtimes[handler.name] != nil else {
                throw InstallerError("the edited config has no \(handler.name) handler (a bug)", file: inputs.mainPath)
            }
            return ConfigPlan(
                mode: .appendedBlock,
                edits: edits,
                notes: notes,
                predicted: [predicted],
                shimOnContainerdPath: byType
            )
        }
    }

    // MARK: k3s / rke2

    private static func planTemplate(
        _ inputs: ConfigInputs,
        handler: HandlerSettings,
        generation: ContainerdRelease.Generation
    ) throws(InstallerError) -> ConfigPlan {
        guard let rendered = inputs.main else {
            throw InstallerError(
                "\(inputs.flavour.rawValue) has not written its containerd config yet; start "
                    + "\(inputs.flavour.rawValue) once, then run the installer again",
                file: inputs.mainPath
            )
        }
        let renderedDoc = try TOMLDocument(path: inputs.mainPath, text: rendered)
        let facts = try ContainerdConfigFacts(renderedDoc)
        let renderedLayout = try TOMLLayout(scanning: rendered, path: inputs.mainPath)
        try checkVersion(facts, generation: generation, path: inputs.mainPath, layout: renderedLayout)
        guard facts.version >= 2 else {
            throw InstallerError(
                "\(inputs.flavour.rawValue) rendered a version \(facts.version) config; the installer "
                    + "needs version 2 or 3",
                file: inputs.mainPath
            )
        }
        // k3s/rke2 prefer config-v3.toml.tmpl for containerd 2 (version 3), else config.toml.tmpl.
        let (templatePath, template): (String, String?) =
            facts.version == 3
            ? (inputs.templateV3 != nil || inputs.templateV2 == nil
                ? (inputs.templateV3Path, inputs.templateV3) : (inputs.templateV2Path, inputs.templateV2))
            : (inputs.templateV2Path, inputs.templateV2)
        var notes = [
            "\(inputs.flavour.rawValue) renders \(inputs.mainPath) from \(templatePath)"
                + (template == nil ? " (created with k3s's base template)" : "")
        ]
        let templateBlock = try template.flatMap { t throws(InstallerError) in try blockRange(in: t, path: templatePath)
        }
        if let template, let line = foreignHandlerLine(handler.name, inTemplate: template, ownBlock: templateBlock) {
            throw InstallerError(
                "defines a runtime handler \"\(handler.name)\" that zeropod-installer did not write; "
                    + "remove it (or uninstall the other zeropod) first",
                file: templatePath,
                line: line
            )
        }
        let renderedBlock = try blockRange(in: rendered, path: inputs.mainPath)
        if templateBlock == nil {
            try refuseForeignHandler(
                handler.name,
                in: renderedDoc,
                facts: facts,
                layout: renderedLayout,
                ownBlock: renderedBlock
            )
        }
        let baseRendered = renderedBlock.map { removing($0, from: rendered) } ?? rendered
        let baseFacts = try ContainerdConfigFacts(try TOMLDocument(path: inputs.mainPath, text: baseRendered))
        let needsRunc =
            generation == .one && baseFacts.defaultRuntimeName == "runc" && baseFacts.runtimes["runc"] == nil
        let byType = !inputs.release.honoursRuntimePath
        if byType { notes.append(byTypeNote(inputs.release, runcOptions: baseFacts.runcOptionsToCopy)) }
        let block = renderBlock(
            tables: renderHandler(
                cri: facts.criPluginID,
                handler: handler,
                runcOptions: baseFacts.runcOptionsToCopy,
                defaultRunc: needsRunc,
                byType: byType
            )
        )
        let newTemplate: String
        if let template, let templateBlock {
            newTemplate = replacing(templateBlock, in: template, with: block)
        } else {
            newTemplate = appendingBlock(block, to: template ?? "{{ template \"base\" . }}\n")
        }
        // The template renders as before plus our static block at its end: so does the config.
        let predictedText =
            renderedBlock.map { replacing($0, in: rendered, with: block) } ?? appendingBlock(block, to: rendered)
        let predicted: TOMLDocument
        do {
            predicted = try TOMLDocument(path: inputs.mainPath + " (as rendered after the change)", text: predictedText)
        } catch {
            throw InstallerError(
                "with the zeropod handler appended, the rendered config would not parse: \(error.reason)",
                file: templatePath
            )
        }
        var edits: [FileEdit] = []
        if newTemplate != template {
            edits.append(FileEdit(path: templatePath, before: template, after: newTemplate))
            notes.append(template == nil ? "create \(templatePath)" : "add the zeropod handler to \(templatePath)")
        }
        return ConfigPlan(
            mode: .template,
            edits: edits,
            notes: notes,
            predicted: [predicted],
            shimOnContainerdPath: byType
        )
    }

    // MARK: checks

    private static func checkVersion(
        _ facts: ContainerdConfigFacts,
        generation: ContainerdRelease.Generation,
        path: String,
        layout: TOMLLayout
    ) throws(InstallerError) {
        let line = layout.topLevel("version")?.line
        switch (generation, facts.version) {
        case (.one, 2), (.two, 2), (.two, 3): return
        case (.one, 1), (.two, 1):
            if facts.hasPlugins {
                throw InstallerError(
                    "a version 1 config (no `version` line) with plugin sections: containerd 2.x "
                        + "does not read it and 1.x names plugins differently; convert it to version 2 "
                        + "(`containerd config migrate` on 1.7+) first",
                    file: path,
                    line: layout.line(ofTable: ["plugins"])
                )
            }
        case (.one, 3):
            throw InstallerError(
                "config version 3 is for containerd 2.x; containerd 1.x does not read it",
                file: path,
                line: line
            )
        case (_, let v):
            throw InstallerError("unknown config version \(v) (containerd reads 2 and 3)", file: path, line: line)
        }
    }

    private static func parsedImports(_ inputs: ConfigInputs) throws(InstallerError) -> [TOMLDocument] {
        var out: [TOMLDocument] = []
        for file in inputs.imported { out.append(try TOMLDocument(path: file.path, text: file.text)) }
        return out
    }

    private static func mergedRuncOptions(
        main: ContainerdConfigFacts,
        imported: [TOMLDocument]
    ) -> [(key: String, value: TOMLNode)] {
        // The last import that configures runc wins, as in containerd 2.x's merge.
        for doc in imported.reversed() {
            if let f = try? ContainerdConfigFacts(doc), f.runtimes["runc"] != nil { return f.runcOptionsToCopy }
        }
        return main.runcOptionsToCopy
    }

    private static func refuseForeignHandler(
        _ name: String,
        in doc: TOMLDocument,
        facts: ContainerdConfigFacts,
        layout: TOMLLayout,
        ownBlock: BlockRange?
    ) throws(InstallerError) {
        for version in [2, 3] {
            let path = ["plugins", ContainerdConfigFacts.criPluginID(version: version), "containerd", "runtimes", name]
            guard doc.root[path] != nil else { continue }
            let line = layout.line(ofTable: path)
            if let ownBlock, let line, line > ownBlock.firstLine, line < ownBlock.lastLine { continue }
            throw InstallerError(
                "defines a runtime handler \"\(name)\" that zeropod-installer did not write (no "
                    + "zeropod-swift marker); remove it, or uninstall the other zeropod, first",
                file: doc.path,
                line: line
            )
        }
    }

    private static func foreignHandlerLine(_ name: String, inTemplate text: String, ownBlock: BlockRange?) -> Int? {
        let needles = ["runtimes.\(name)]", "runtimes.\(name).", "runtimes.\"\(name)\"", "runtimes.'\(name)'"]
        for (index, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let number = index + 1
            if let ownBlock, number > ownBlock.firstLine, number < ownBlock.lastLine { continue }
            let compact = line.filter { $0 != " " && $0 != "\t" }
            if needles.contains(where: { compact.contains($0) }) { return number }
        }
        return nil
    }

    // MARK: imports

    /// Whether one of `imports` names (or matches, as a glob) the drop-in.
    static func importsCover(_ imports: [String], dropIn: String, configDirectory: String) -> Bool {
        imports.contains { entry in
            let resolved = entry.hasPrefix("/") ? entry : configDirectory + "/" + entry
            return resolved == dropIn || fnmatch(resolved, dropIn, FNM_PATHNAME) == 0
        }
    }

    /// The text with `entry` added to its `imports` (one line edited or added).
    static func addImport(_ entry: String, to text: String, layout: TOMLLayout) -> String {
        var bytes = Array(text.utf8)
        if let imports = layout.topLevel("imports"), let append = imports.arrayAppend {
            bytes.insert(contentsOf: Array((append.separator + TOMLNode.quoted(entry)).utf8), at: append.offset)
            return String(decoding: bytes, as: UTF8.self)
        }
        let line = Array("imports = [\(TOMLNode.quoted(entry))]\n".utf8)
        if let version = layout.topLevel("version") {
            var at = version.lineEnd
            if at == bytes.count, bytes.last != UInt8(ascii: "\n") {
                bytes.append(UInt8(ascii: "\n"))
                at = bytes.count
            }
            bytes.insert(contentsOf: line, at: at)
        } else {
            bytes.insert(contentsOf: line, at: 0)
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    // MARK: rendering

    /// What the log says when the handler names the shim by `runtime_type` (containerd < 1.7.1).
    static func byTypeNote(_ release: ContainerdRelease, runcOptions: [(key: String, value: TOMLNode)]) -> String {
        var note =
            "\(release) ignores runtime_path (containerd#8207, fixed in 1.7.1): the handler names the shim by "
            + "runtime_type \(HandlerSettings.runtimeType) and containerd finds \(HandlerSettings.shimBinaryName) on its PATH"
        if !runcOptions.isEmpty {
            note +=
                "; the node's runc options (\(runcOptions.map(\.key).joined(separator: ", "))) cannot reach the shim "
                + "through CRI on this containerd and are not copied (decision 0023)"
        }
        return note
    }

    /// The handler's tables for CRI plugin `cri`. `byType`: name the shim by `runtime_type` alone
    /// (containerd below 1.7.1 ignores `runtime_path`); no `options` table then, as the CRI plugin
    /// would send it as generic options that carry no runc setting.
    static func renderHandler(
        cri: String,
        handler: HandlerSettings,
        runcOptions: [(key: String, value: TOMLNode)],
        defaultRunc: Bool,
        byType: Bool = false
    ) -> String {
        let prefix = "plugins.\(TOMLNode.quoted(cri)).containerd.runtimes"
        var out = ""
        if defaultRunc {
            out += "[\(prefix).runc]\n  runtime_type = \"io.containerd.runc.v2\"\n\n"
        }
        out += "[\(prefix).\(TOMLNode.key(handler.name))]\n"
        if byType {
            out += "  runtime_type = \(TOMLNode.quoted(HandlerSettings.runtimeType))\n"
        } else {
            out += "  runtime_type = \"io.containerd.runc.v2\"\n"
            out += "  runtime_path = \(TOMLNode.quoted(handler.shimPath))\n"
        }
        out +=
            "  pod_annotations = \(TOMLNode.array(HandlerSettings.podAnnotations.map(TOMLNode.string)).tomlLiteral)\n"
        out +=
            "  container_annotations = \(TOMLNode.array(HandlerSettings.containerAnnotations.map(TOMLNode.string)).tomlLiteral)\n"
        if !runcOptions.isEmpty && !byType {
            out += "\n[\(prefix).\(TOMLNode.key(handler.name)).options]\n"
            out += "  # copied from the node's runc handler\n"
            for (key, value) in runcOptions { out += "  \(TOMLNode.key(key)) = \(value.tomlLiteral)\n" }
        }
        return out
    }

    /// Our drop-in file.
    static func renderDropIn(
        version: Int,
        cri: String,
        handler: HandlerSettings,
        runcOptions: [(key: String, value: TOMLNode)],
        mainPath: String
    ) -> String {
        marker + ": the containerd runtime handler \"\(handler.name)\".\n"
            + "# Imported by \(mainPath). zeropod-installer --uninstall removes it and that import; do not edit.\n"
            + "version = \(version)\n\n"
            + renderHandler(cri: cri, handler: handler, runcOptions: runcOptions, defaultRunc: false)
    }

    /// Tables between our begin and end lines.
    static func renderBlock(tables: String) -> String {
        blockBegin + "\n" + tables + blockEnd + "\n"
    }

    /// The text with `block` appended after a blank line.
    static func appendingBlock(_ block: String, to text: String) -> String {
        if text.isEmpty { return block }
        return text + (text.hasSuffix("\n") ? "\n" : "\n\n") + block
    }

    /// The lines of our block in a text: begin to end, inclusive.
    struct BlockRange: Equatable {
        /// 1-based line of the begin marker.
        var firstLine: Int
        /// 1-based line of the end marker.
        var lastLine: Int
        /// Byte range from the begin line's start to past the end line's newline.
        var bytes: Range<Int>
        /// Whether a blank line precedes the block (we add one when appending).
        var blankBefore: Bool
    }

    static func blockRange(in text: String, path: String) throws(InstallerError) -> BlockRange? {
        var offset = 0
        var begin: (line: Int, offset: Int)?
        var previousBlank = false
        var blankBeforeBegin = false
        for (index, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let length = line.utf8.count + 1
            let trimmed = String(line).trimmingSpaces
            if trimmed == blockBegin {
                if begin != nil {
                    throw InstallerError("a second zeropod-swift block begins here", file: path, line: index + 1)
                }
                begin = (index + 1, offset)
                blankBeforeBegin = previousBlank
            } else if trimmed == blockEnd {
                guard let b = begin else {
                    throw InstallerError("a zeropod-swift block ends here but never began", file: path, line: index + 1)
                }
                let end = min(offset + length, text.utf8.count)
                return BlockRange(
                    firstLine: b.line,
                    lastLine: index + 1,
                    bytes: b.offset..<end,
                    blankBefore: blankBeforeBegin
                )
            }
            previousBlank = trimmed.isEmpty
            offset += length
        }
        if let begin {
            throw InstallerError("a zeropod-swift block begins here but never ends", file: path, line: begin.line)
        }
        return nil
    }

    static func removing(_ block: BlockRange, from text: String) -> String {
        var bytes = Array(text.utf8)
        var range = block.bytes
        if block.blankBefore, range.lowerBound > 0, bytes[range.lowerBound - 1] == UInt8(ascii: "\n") {
            range = (range.lowerBound - 1)..<range.upperBound
        }
        bytes.removeSubrange(range)
        return String(decoding: bytes, as: UTF8.self)
    }

    static func replacing(_ block: BlockRange, in text: String, with newBlock: String) -> String {
        var bytes = Array(text.utf8)
        bytes.replaceSubrange(block.bytes, with: Array(newBlock.utf8))
        return String(decoding: bytes, as: UTF8.self)
    }
}
