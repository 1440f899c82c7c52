import ZPCore

// The runtime options containerd sends a runc-compatible shim: `containerd.runc.v1.Options`
// (containerd's api/types/runc/options/oci.proto; in 1.x runtime/v2/runc/options/oci.proto), in
// `CreateTaskRequest.options` and on the stdin of `start`. containerd's CRI plugin fills it from a
// handler's `options` table when the handler's `runtime_type` is `io.containerd.runc.v2`
// (`SystemdCgroup`, `BinaryName`, `Root`, ...). Field numbers are protocol facts; decision 0042.

/// `containerd.runc.v1.Options`: how the shim must drive runc for a container.
public struct RuncOptions: ProtobufTableMessage, Equatable {
    /// The type URL containerd writes into the Any (`typeurl` uses the message's full name).
    public static let typeURL = "containerd.runc.v1.Options"
    /// The CRI plugin's options for other runtime types (`cri.runtimeoptions.v1.Options`: type_url,
    /// config_path, config_body); accepted only empty.
    public static let criGenericTypeURL = "cri.runtimeoptions.v1.Options"

    /// Create the container without `pivot_root` (`runc create --no-pivot`) (1).
    public var noPivotRoot = false
    /// Do not create a new session keyring (`runc create --no-new-keyring`) (2).
    public var noNewKeyring = false
    /// A cgroup the shim process moves itself into at `start` (3).
    public var shimCgroup = ""
    /// Owner uid of the container's stdio pipes (4).
    public var ioUID: UInt32 = 0
    /// Owner gid of the container's stdio pipes (5).
    public var ioGID: UInt32 = 0
    /// The runc binary (a name looked up on `PATH`, or a path) (6).
    public var binaryName = ""
    /// runc's state root; the containerd namespace is appended (`--root <root>/<namespace>`) (7).
    public var root = ""
    /// The CRIU binary (8; containerd 1.x only, reserved since 2.0).
    public var criuPath = ""
    /// Use runc's systemd cgroup driver (`--systemd-cgroup`) (9).
    public var systemdCgroup = false
    /// Where containerd's task `Checkpoint` puts images (10).
    public var criuImagePath = ""
    /// CRIU's work folder for containerd's task `Checkpoint` and restores (11).
    public var criuWorkPath = ""
    /// A task API address for sandboxed runtimes: containerd talks to it instead of a shim (12).
    public var taskAPIAddress = ""
    /// The task API version at ``taskAPIAddress`` (13).
    public var taskAPIVersion: UInt32 = 0

    /// The defaults: runc on `PATH`, root `/run/containerd/runc`, cgroupfs driver.
    public init() {}

    /// The fields.
    public static let fields = ProtobufFieldTable<Self>(
        "containerd.runc.v1.Options",
        [
            .bool(1, \.noPivotRoot),
            .bool(2, \.noNewKeyring),
            .string(3, \.shimCgroup),
            .uint32(4, \.ioUID),
            .uint32(5, \.ioGID),
            .string(6, \.binaryName),
            .string(7, \.root),
            .string(8, \.criuPath),
            .bool(9, \.systemdCgroup),
            .string(10, \.criuImagePath),
            .string(11, \.criuWorkPath),
            .string(12, \.taskAPIAddress),
            .uint32(13, \.taskAPIVersion),
        ]
    )
}

/// Why a task's runtime options cannot be used.
public struct RuncOptionsError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The text, naming the option (or type URL) and the reason.
    public var description: String

    /// An error with its text.
    public init(_ description: String) { self.description = description }
}

extension RuncOptions {
    /// The options in `any`: nil or empty means the defaults; `containerd.runc.v1.Options` (with or
    /// without the `type.googleapis.com/` prefix) is decoded.
    ///
    /// - Throws: ``RuncOptionsError`` for another message type (e.g. the CRI plugin's generic
    ///   `runtimeoptions.v1.Options`, which it sends for a handler whose `runtime_type` is not
    ///   `io.containerd.runc.v2`, or ctr's `containerd.linux.runc.CreateOptions`), or a malformed body.
    public init(any: ProtobufAny?) throws(RuncOptionsError) {
        self.init()
        guard let any, !(any.typeURL.isEmpty && any.value.isEmpty) else { return }
        let name = any.typeURL.split(separator: "/").last.map(String.init) ?? any.typeURL
        // The CRI plugin's generic options with nothing in them (a handler whose runtime_type is
        // not io.containerd.runc.v2 and whose `options` table holds no ConfigPath/ConfigBody):
        // nothing to honour.
        if name == Self.criGenericTypeURL && any.value.isEmpty { return }
        guard name == Self.typeURL else {
            throw RuncOptionsError(
                "runtime options of type \(any.typeURL.isEmpty ? "(none)" : any.typeURL) are not supported: the shim reads "
                    + "\(Self.typeURL) (a containerd handler passes them when its runtime_type is io.containerd.runc.v2, "
                    + "with runtime_path naming containerd-shim-zeropod-v2)"
            )
        }
        do {
            self = try RuncOptions(decoding: any.value)
        } catch {
            throw RuncOptionsError("runtime options \(Self.typeURL): \(error)")
        }
    }
}

/// `ResizePtyRequest`: 1 id, 2 exec_id, 3 width, 4 height (columns and rows of the terminal).
public struct ResizePtyRequest: ProtobufTableMessage, Equatable {
    /// The task (1) and the exec process (2, empty for the init).
    public var id = "", execID = ""
    /// Columns (3) and rows (4).
    public var width: UInt32 = 0, height: UInt32 = 0

    /// An empty request.
    public init() {}

    /// A resize of task `id`'s (or exec `execID`'s) terminal to `width` × `height`.
    public init(id: String, execID: String = "", width: UInt32, height: UInt32) {
        self.id = id
        self.execID = execID
        self.width = width
        self.height = height
    }

    /// The fields.
    public static let fields = ProtobufFieldTable<Self>(
        "ResizePtyRequest",
        [
            .string(1, \.id),
            .string(2, \.execID),
            .uint32(3, \.width),
            .uint32(4, \.height),
        ]
    )
}
