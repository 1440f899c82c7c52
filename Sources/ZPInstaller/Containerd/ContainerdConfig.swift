// What a containerd config says that matters to the installer and the node checks.

/// Which containerd a node runs: plain containerd, or the one embedded in k3s or rke2, which
/// render their config from a Go template at every start.
public enum ContainerdFlavour: String, Sendable, CaseIterable, Equatable {
    /// containerd as a system service, config `/etc/containerd/config.toml`.
    case containerd
    /// k3s's embedded containerd.
    case k3s
    /// rke2's embedded containerd.
    case rke2

    /// The folder of the config containerd reads (as on the host).
    public var defaultConfigDirectory: String {
        switch self {
        case .containerd: return "/etc/containerd"
        case .k3s: return "/var/lib/rancher/k3s/agent/etc/containerd"
        case .rke2: return "/var/lib/rancher/rke2/agent/etc/containerd"
        }
    }

    /// The containerd binary to ask for its version.
    public var defaultBinary: String {
        switch self {
        case .containerd: return "containerd"
        case .k3s: return "/var/lib/rancher/k3s/data/current/bin/containerd"
        case .rke2: return "/var/lib/rancher/rke2/bin/containerd"
        }
    }

    /// containerd's socket.
    public var defaultSocket: String {
        switch self {
        case .containerd: return "/run/containerd/containerd.sock"
        case .k3s, .rke2: return "/run/k3s/containerd/containerd.sock"
        }
    }

    /// The systemd units that run this containerd, in the order they are tried.
    public var units: [String] {
        switch self {
        case .containerd: return ["containerd.service"]
        case .k3s: return ["k3s.service", "k3s-agent.service"]
        case .rke2: return ["rke2-server.service", "rke2-agent.service"]
        }
    }

    /// Whether containerd's config is rendered from a template that the installer edits instead.
    public var rendersTemplate: Bool {
        switch self {
        case .containerd: return false
        case .k3s, .rke2: return true
        }
    }
}

/// The facts of one parsed containerd config file.
public struct ContainerdConfigFacts: Sendable, Equatable {
    /// The config version (`version = N`; 1 when absent, as containerd reads it).
    public var version: Int
    /// Whether `version` was written.
    public var versionWritten: Bool
    /// The `imports` entries.
    public var imports: [String]
    /// The root table.
    public var root: TOMLNode

    /// Reads the facts of a parsed config.
    /// - Throws: `InstallerError` for values of the wrong type (naming the key's line).
    public init(_ document: TOMLDocument) throws(InstallerError) {
        root = document.root
        switch document.root["version"] {
        case nil:
            version = 1
            versionWritten = false
        case .int(let v)?:
            version = v
            versionWritten = true
        case _?:
            throw InstallerError(
                "version must be an integer",
                file: document.path,
                line: (try? TOMLLayout(scanning: document.text, path: document.path))?.topLevel("version")?.line
            )
        }
        switch document.root["imports"] {
        case nil: imports = []
        case let node?:
            guard let list = node.strings else {
                throw InstallerError(
                    "imports must be an array of strings",
                    file: document.path,
                    line: (try? TOMLLayout(scanning: document.text, path: document.path))?.topLevel("imports")?.line
                )
            }
            imports = list
        }
    }

    /// The CRI plugin that holds runtime handlers for this config version.
    public var criPluginID: String { ContainerdConfigFacts.criPluginID(version: version) }

    /// `io.containerd.grpc.v1.cri` (version 2), `io.containerd.cri.v1.runtime` (version 3), `cri` (version 1).
    public static func criPluginID(version: Int) -> String {
        switch version {
        case 3: return "io.containerd.cri.v1.runtime"
        case 2: return "io.containerd.grpc.v1.cri"
        default: return "cri"
        }
    }

    /// The key path of the runtime handler table `name`.
    public func handlerPath(_ name: String) -> [String] { ["plugins", criPluginID, "containerd", "runtimes", name] }

    /// Whether the config has any `[plugins]` entries.
    public var hasPlugins: Bool { root["plugins"] != nil }

    /// Whether the config has a section for the CRI plugin.
    public var definesCRI: Bool { root[["plugins", criPluginID]] != nil }

    /// The handler tables by name.
    public var runtimes: [String: TOMLNode] { root[["plugins", criPluginID, "containerd", "runtimes"]]?.table ?? [:] }

    /// The CRI plugin's default handler name (`default_runtime_name`, "runc" when absent).
    public var defaultRuntimeName: String {
        root[["plugins", criPluginID, "containerd", "default_runtime_name"]]?.string ?? "runc"
    }

    /// The opt plugin's path (`io.containerd.internal.v1.opt`), if the config sets it.
    public var optPath: String? {
        let id = version >= 2 ? "io.containerd.internal.v1.opt" : "opt"
        return root[["plugins", id, "path"]]?.string
    }

    /// The runc options worth copying into our handler: those that change how runc creates
    /// containers (`SystemdCgroup`, `BinaryName`, `Root`, `NoPivotRoot`, `NoNewKeyring`), from
    /// the default handler if it is a runc one, else from `runc`; only values that differ from
    /// runc's defaults (non-empty strings, true, non-zero numbers).
    public var runcOptionsToCopy: [(key: String, value: TOMLNode)] {
        let name =
            runtimes[defaultRuntimeName]?["runtime_type"]?.string == "io.containerd.runc.v2"
            ? defaultRuntimeName : "runc"
        guard let options = runtimes[name]?["options"]?.table else { return [] }
        let wanted = ["BinaryName", "NoNewKeyring", "NoPivotRoot", "Root", "SystemdCgroup"]
        return wanted.compactMap { key in
            guard let v = options[key] else { return nil }
            switch v {
            case .string(let s) where !s.isEmpty: return (key, v)
            case .bool(true): return (key, v)
            case .int(let i) where i != 0: return (key, v)
            case .string, .bool, .int, .double, .array, .table, .other: return nil
            }
        }
    }
}
