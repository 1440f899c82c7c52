/// The shim's command line, as containerd writes it:
/// `-namespace NS -address SOCK -publish-binary BIN -id ID [-debug] [-bundle DIR] start|delete`, or `-v`.
///
/// Parsed by hand rather than with swift-argument-parser: Go's `flag` syntax (single dash, `-name value`
/// or `-name=value`, action as a trailing positional) and tolerance for flags that newer containerd
/// versions add matter more here than help output, and the daemon form (no action) uses our own
/// `-socket` flag.
public struct ShimCommandLine: Sendable, Equatable {
    /// What to do.
    public enum Action: Sendable, Equatable {
        /// Start (or find) the shim daemon for this container's group and print its address.
        case start
        /// Clean up after a shim that containerd lost; print a DeleteResponse.
        case delete
        /// Print the version.
        case version
        /// Runtime introspection (`-info`, containerd 2.x: its CRI plugin runs it for every handler
        /// whose `runtime_type` is `io.containerd.runc.v2`, with the runc options on stdin): refused
        /// with a message, so that containerd logs it and goes on.
        case info
        /// Serve as the daemon (started by `start`, listening socket on fd 3).
        case serve
    }

    /// What to do (the trailing positional; none means ``Action/serve``).
    public var action: Action = .serve
    /// The containerd namespace (`-namespace`).
    public var namespace = ""
    /// containerd's gRPC socket (`-address`).
    public var address = ""
    /// The containerd binary that publishes events for old shims (`-publish-binary`; unused).
    public var publishBinary = ""
    /// The container id (`-id`).
    public var id = ""
    /// The bundle folder (`-bundle`, `delete` only; `start` uses the working directory).
    public var bundle = ""
    /// The daemon's own socket path (our flag, set by `start`).
    public var socket = ""
    /// Log at debug level (`-debug`).
    public var debug = false

    /// Parses arguments (without `argv[0]`).
    /// - Throws: ``ShimError/invalidArgument(_:)`` naming a flag without a value or an unknown action;
    ///   for `status`, which moved to the `zeropod` CLI, one that says so.
    public init(arguments: [String]) throws {
        let valueFlags = ["namespace", "address", "publish-binary", "id", "bundle", "socket"]
        var i = 0
        while i < arguments.count {
            let arg = arguments[i]
            i += 1
            guard arg.hasPrefix("-") else {
                switch arg {
                case "start": action = .start
                case "delete": action = .delete
                case "status":
                    throw ShimError.invalidArgument(
                        "the status command moved to the zeropod CLI: zeropod status [--socket PATH] [--id ID] [--watch] [--metrics]"
                    )
                default: throw ShimError.invalidArgument("unknown action \"\(arg)\" (expected start or delete)")
                }
                continue
            }
            var name = String(arg.drop { $0 == "-" })
            var value: String?
            if let eq = name.firstIndex(of: "=") {
                value = String(name[name.index(after: eq)...])
                name = String(name[..<eq])
            }
            if valueFlags.contains(name) {
                if value == nil {
                    guard i < arguments.count else { throw ShimError.invalidArgument("flag -\(name) needs a value") }
                    value = arguments[i]
                    i += 1
                }
                switch name {
                case "namespace": namespace = value!
                case "address": address = value!
                case "publish-binary": publishBinary = value!
                case "id": id = value!
                case "bundle": bundle = value!
                default: socket = value!
                }
            } else if name == "debug" {
                debug = value.map { $0 != "false" } ?? true
            } else if name == "v" || name == "version" {
                action = .version
            } else if name == "info" {
                action = .info
            }
            // Other flags (e.g. newer containerd additions) are ignored.
        }
    }

    /// The arguments for the daemon (`serve`), with `socket` set.
    func daemonArguments(socket: String) -> [String] {
        var args = ["-namespace", namespace, "-id", id, "-address", address, "-socket", socket]
        if !publishBinary.isEmpty { args += ["-publish-binary", publishBinary] }
        if debug { args.append("-debug") }
        return args
    }
}
