// What the installer put on the node, kept under <opt>/state so --uninstall can take exactly that
// back: text files it wrote (with the bytes they had before and the bytes it wrote) and the
// binaries and folders it installed. The state folder is 0700 and its files 0600: a containerd
// config may hold registry credentials.

/// One text file the installer wrote or edited.
public struct ManagedFile: Sendable, Equatable {
    /// The file.
    public var path: String
    /// Its bytes before the first install (nil: it did not exist).
    public var original: String?
    /// The bytes the installer last wrote.
    public var written: String
    /// Its mode when written.
    public var mode: UInt32
}

/// Everything one install left on the node.
public struct InstallState: Sendable, Equatable {
    /// Text files (containerd config, drop-in, node.conf).
    public var managed: [ManagedFile] = []
    /// Files copied in (shim, CRIU, libraries).
    public var files: [String] = []
    /// Folders the installer created, outermost first.
    public var directories: [String] = []
    /// Symbolic links the installer made, with their targets (the shim on containerd's `PATH`
    /// for containerd below 1.7.1).
    public var links: [(path: String, target: String)] = []

    /// An empty state.
    public init() {}

    /// The managed record for `path`.
    public func managedFile(_ path: String) -> ManagedFile? { managed.first { $0.path == path } }

    /// Records that `path` was written with `text`; the first record keeps the original bytes.
    public mutating func recordWrite(_ path: String, before: String?, written text: String, mode: UInt32) {
        if let i = managed.firstIndex(where: { $0.path == path }) {
            managed[i].written = text
            managed[i].mode = mode
        } else {
            managed.append(ManagedFile(path: path, original: before, written: text, mode: mode))
        }
    }

    /// Records that a managed file was removed by a later install (e.g. the drop-in after a
    /// downgrade to containerd 1.x): if it did not exist originally, the record goes.
    public mutating func recordRemoval(_ path: String) {
        if let i = managed.firstIndex(where: { $0.path == path }) {
            if managed[i].original == nil { managed.remove(at: i) } else { managed[i].written = "" }
        }
    }

    /// Records a copied file.
    public mutating func recordFile(_ path: String) {
        if !files.contains(path) { files.append(path) }
    }

    /// Records a link made at `path` to `target`.
    public mutating func recordLink(_ path: String, target: String) {
        links.removeAll { $0.path == path }
        links.append((path, target))
    }

    /// The recorded target of the link at `path`, or nil when the installer made none there.
    public func linkTarget(_ path: String) -> String? { links.first { $0.path == path }?.target }

    /// Equal when every record (managed files, files, folders, links with their targets) is.
    public static func == (a: InstallState, b: InstallState) -> Bool {
        a.managed == b.managed && a.files == b.files && a.directories == b.directories
            && a.links.map(\.path) == b.links.map(\.path) && a.links.map(\.target) == b.links.map(\.target)
    }

    /// Records created folders.
    public mutating func recordDirectories(_ paths: [String]) {
        for p in paths where !directories.contains(p) { directories.append(p) }
    }

    // MARK: storage

    static let indexName = "installed"
    static let header = "# zeropod-installer state: what it installed, for --uninstall. Do not edit."

    /// Loads the state from `folder`, or nil when there is none.
    /// - Throws: `InstallerError` for a damaged state.
    public static func load(from folder: String, files host: HostFiles) throws(InstallerError) -> InstallState? {
        let indexPath = folder + "/" + indexName
        guard let index = try host.readText(indexPath) else { return nil }
        var state = InstallState()
        for (n, raw) in index.split(separator: "\n", omittingEmptySubsequences: true).enumerated() {
            let line = String(raw)
            if line.hasPrefix("#") { continue }
            let parts = line.split(separator: " ", maxSplits: 3).map(String.init)
            func bad() -> InstallerError { InstallerError("damaged state line", file: indexPath, line: n + 1) }
            switch parts.first {
            case "file"?:
                guard parts.count == 2 else { throw bad() }
                state.files.append(parts[1])
            case "dir"?:
                guard parts.count == 2 else { throw bad() }
                state.directories.append(parts[1])
            case "link"?:
                // link <path> <target> (paths without spaces, as every path the installer records)
                guard parts.count == 3 else { throw bad() }
                state.links.append((parts[1], parts[2]))
            case "managed"?:
                // managed <id> <mode-octal> <path>
                guard parts.count == 4, let mode = UInt32(parts[2], radix: 8) else { throw bad() }
                let id = parts[1]
                guard let written = try host.readText("\(folder)/\(id).written") else {
                    throw InstallerError("missing \(id).written", file: indexPath, line: n + 1)
                }
                let original = try host.readText("\(folder)/\(id).original")
                state.managed.append(ManagedFile(path: parts[3], original: original, written: written, mode: mode))
            default:
                throw bad()
            }
        }
        return state
    }

    /// Saves the state into `folder` (created 0700), every file 0600, the index last.
    /// - Throws: `InstallerError`.
    public func save(to folder: String, files host: HostFiles) throws(InstallerError) {
        try host.makeDirectory(folder, mode: 0o700)
        var index = [InstallState.header]
        for (i, m) in managed.enumerated() {
            let id = "m\(i)"
            if let original = m.original {
                try host.writeText("\(folder)/\(id).original", original, mode: 0o600)
            } else {
                try host.remove("\(folder)/\(id).original")
            }
            try host.writeText("\(folder)/\(id).written", m.written, mode: 0o600)
            index.append("managed \(id) \(String(m.mode, radix: 8)) \(m.path)")
        }
        // Leftovers of records that went away.
        for name in host.list(folder)
        where name.hasPrefix("m") && (name.hasSuffix(".original") || name.hasSuffix(".written")) {
            let id = String(name.prefix(while: { $0 != "." }))
            if let n = Int(id.dropFirst()), n >= managed.count { try host.remove("\(folder)/\(name)") }
        }
        for f in files { index.append("file \(f)") }
        for d in directories { index.append("dir \(d)") }
        for l in links { index.append("link \(l.path) \(l.target)") }
        try host.writeText(folder + "/" + InstallState.indexName, index.joined(separator: "\n") + "\n", mode: 0o600)
    }
}
