import ZPCore

// The containerd task API (containerd/api/runtime/task/v2 and v3, shim.proto; proto3) and the types it
// uses, hand-written on ZPCore's protobuf codec. Field numbers are protocol facts (protocols.md §2),
// written once per field in each message's table (`ProtobufFieldTable`), which both the encoder and
// the decoder use. Requests are decoded and responses encoded; the reverse directions exist where
// tests and clients need them.

/// `containerd.types.Mount`.
public struct MountSpec: ProtobufTableMessage, Equatable {
    /// Filesystem type (`overlay`, `bind`, ...).
    public var type = ""
    /// Source device or path.
    public var source = ""
    /// Target below the rootfs, empty for the rootfs itself.
    public var target = ""
    /// Mount options as in fstab (`ro`, `rbind`, `lowerdir=...`).
    public var options: [String] = []

    /// An empty mount.
    public init() {}

    /// A mount from its fields.
    public init(type: String, source: String, target: String = "", options: [String] = []) {
        self.type = type
        self.source = source
        self.target = target
        self.options = options
    }

    /// The fields.
    public static let fields = ProtobufFieldTable<Self>(
        "containerd.types.Mount",
        [
            .string(1, \.type),
            .string(2, \.source),
            .string(3, \.target),
            .strings(4, \.options),
        ]
    )
}

/// `CreateTaskRequest`.
public struct CreateTaskRequest: ProtobufTableMessage {
    /// The container id (1) and its bundle folder (2).
    public var id = "", bundle = ""
    /// The rootfs mounts (3); empty when the bundle's `rootfs` is ready.
    public var rootfs: [MountSpec] = []
    /// Whether the init gets a terminal (4).
    public var terminal = false
    /// The stdio FIFOs or `file://`/`binary://` URIs (5, 6, 7).
    public var stdin = "", stdout = "", stderr = ""
    /// A checkpoint to create from and its parent (8, 9).
    public var checkpoint = "", parentCheckpoint = ""
    /// Runtime options (10).
    public var options: ProtobufAny?

    /// An empty request.
    public init() {}

    /// A request for container `id` in `bundle`.
    public init(id: String, bundle: String) {
        self.id = id
        self.bundle = bundle
    }

    /// The fields.
    public static let fields = ProtobufFieldTable<Self>(
        "CreateTaskRequest",
        [
            .string(1, \.id),
            .string(2, \.bundle),
            .messages(3, \.rootfs),
            .bool(4, \.terminal),
            .string(5, \.stdin),
            .string(6, \.stdout),
            .string(7, \.stderr),
            .string(8, \.checkpoint),
            .string(9, \.parentCheckpoint),
            .message(10, \.options),
        ]
    )
}

/// A request that names a task and optionally one of its exec processes: `StartRequest`,
/// `DeleteRequest`, `WaitRequest`, `StateRequest` (fields 1 id, 2 exec_id).
public struct TaskProcessRequest: ProtobufTableMessage, Equatable {
    /// The task (1) and the exec process (2, empty for the init).
    public var id = "", execID = ""

    /// An empty request.
    public init() {}

    /// A request for task `id`, exec `execID` (empty for the init process).
    public init(id: String, execID: String = "") {
        self.id = id
        self.execID = execID
    }

    /// The fields.
    public static let fields = ProtobufFieldTable<Self>(
        "task request",
        [
            .string(1, \.id),
            .string(2, \.execID),
        ]
    )
}

/// A request that names only a task: `PidsRequest`, `StatsRequest`, `ConnectRequest`, `PauseRequest`,
/// `ResumeRequest` (field 1 id); `ShutdownRequest` adds 2 now.
public struct TaskIDRequest: ProtobufTableMessage, Equatable {
    /// The task (1).
    public var id = ""
    /// `ShutdownRequest.now` (2): shut down even with tasks left.
    public var now = false

    /// An empty request.
    public init() {}

    /// A request for task `id`.
    public init(id: String) { self.id = id }

    /// The fields.
    public static let fields = ProtobufFieldTable<Self>(
        "task id request",
        [
            .string(1, \.id),
            .bool(2, \.now),
        ]
    )
}

/// A response that carries one pid: `CreateTaskResponse`, `StartResponse` (field 1 pid).
public struct PidResponse: ProtobufTableMessage, Equatable {
    /// The process id (1).
    public var pid: UInt32 = 0

    /// A response with pid 0.
    public init() {}

    /// A response with `pid`.
    public init(pid: UInt32) { self.pid = pid }

    /// The fields.
    public static let fields = ProtobufFieldTable<Self>(
        "PidResponse",
        [
            .uint32(1, \.pid)
        ]
    )
}

/// `DeleteResponse` (also what the `delete` command prints): 1 pid, 2 exit_status, 3 exited_at.
public struct DeleteResponse: ProtobufTableMessage, Equatable {
    /// The deleted process's pid (1).
    public var pid: UInt32 = 0
    /// Its exit status (2).
    public var exitStatus: UInt32 = 0
    /// When it exited (3).
    public var exitedAt: ProtobufTimestamp?

    /// An empty response.
    public init() {}

    /// A response from its fields.
    public init(pid: UInt32, exitStatus: UInt32, exitedAt: ProtobufTimestamp?) {
        self.pid = pid
        self.exitStatus = exitStatus
        self.exitedAt = exitedAt
    }

    /// The fields.
    public static let fields = ProtobufFieldTable<Self>(
        "DeleteResponse",
        [
            .uint32(1, \.pid),
            .uint32(2, \.exitStatus),
            .message(3, \.exitedAt),
        ]
    )
}

/// `ExecProcessRequest`: 1 id, 2 exec_id, 3 terminal, 4 stdin, 5 stdout, 6 stderr, 7 spec (OCI Process JSON in an Any).
public struct ExecProcessRequest: ProtobufTableMessage {
    /// The task (1) and the new exec process's id (2).
    public var id = "", execID = ""
    /// Whether the process gets a terminal (3).
    public var terminal = false
    /// The stdio FIFOs or URIs (4, 5, 6).
    public var stdin = "", stdout = "", stderr = ""
    /// The OCI `Process` as JSON in an Any (7).
    public var spec: ProtobufAny?

    /// An empty request.
    public init() {}

    /// An exec request for task `id`.
    public init(id: String, execID: String) {
        self.id = id
        self.execID = execID
    }

    /// The fields.
    public static let fields = ProtobufFieldTable<Self>(
        "ExecProcessRequest",
        [
            .string(1, \.id),
            .string(2, \.execID),
            .bool(3, \.terminal),
            .string(4, \.stdin),
            .string(5, \.stdout),
            .string(6, \.stderr),
            .message(7, \.spec),
        ]
    )
}

/// `containerd.v1.types.Status` (task status enum).
public enum TaskStatus: UInt32, Sendable {
    /// `UNKNOWN` (0), `CREATED`, `RUNNING`, `STOPPED`, `PAUSED`, `PAUSING` (5).
    case unknown = 0
    case created, running, stopped, paused, pausing
}

/// `StateResponse`.
public struct StateResponse: ProtobufTableMessage, Equatable {
    /// The task (1) and its bundle folder (2).
    public var id = "", bundle = ""
    /// The process id (3).
    public var pid: UInt32 = 0
    /// The process status (4); a number this version does not know reads as `unknown`.
    public var status: TaskStatus = .unknown
    /// The stdio paths (5, 6, 7).
    public var stdin = "", stdout = "", stderr = ""
    /// Whether it has a terminal (8).
    public var terminal = false
    /// The exit status once stopped (9).
    public var exitStatus: UInt32 = 0
    /// When it exited (10).
    public var exitedAt: ProtobufTimestamp?
    /// The exec id, empty for the init (11).
    public var execID = ""

    /// An empty state.
    public init() {}

    /// The fields.
    public static let fields = ProtobufFieldTable<Self>(
        "StateResponse",
        [
            .string(1, \.id),
            .string(2, \.bundle),
            .uint32(3, \.pid),
            .custom(
                4,
                write: { m, n, w in w.writeUInt32IfNotDefault(field: n, m.status.rawValue) },
                read: { m, f, name throws(ProtobufError) in
                    m.status = TaskStatus(rawValue: try f.uint32(in: name)) ?? .unknown
                }
            ),
            .string(5, \.stdin),
            .string(6, \.stdout),
            .string(7, \.stderr),
            .bool(8, \.terminal),
            .uint32(9, \.exitStatus),
            .message(10, \.exitedAt),
            .string(11, \.execID),
        ]
    )
}

/// `KillRequest`: 1 id, 2 exec_id, 3 signal, 4 all.
public struct KillRequest: ProtobufTableMessage, Equatable {
    /// The task (1) and the exec process (2, empty for the init).
    public var id = "", execID = ""
    /// The signal number (3).
    public var signal: UInt32 = 0
    /// Signal every process of the container (4).
    public var all = false

    /// An empty request.
    public init() {}

    /// A kill request.
    public init(id: String, execID: String = "", signal: UInt32, all: Bool = false) {
        self.id = id
        self.execID = execID
        self.signal = signal
        self.all = all
    }

    /// The fields.
    public static let fields = ProtobufFieldTable<Self>(
        "KillRequest",
        [
            .string(1, \.id),
            .string(2, \.execID),
            .uint32(3, \.signal),
            .bool(4, \.all),
        ]
    )
}

/// `CloseIORequest`: 1 id, 2 exec_id, 3 stdin.
public struct CloseIORequest: ProtobufTableMessage, Equatable {
    /// The task (1) and the exec process (2, empty for the init).
    public var id = "", execID = ""
    /// Close the process's stdin (3).
    public var stdin = false

    /// An empty request.
    public init() {}

    /// A CloseIO request.
    public init(id: String, execID: String = "", stdin: Bool) {
        self.id = id
        self.execID = execID
        self.stdin = stdin
    }

    /// The fields.
    public static let fields = ProtobufFieldTable<Self>(
        "CloseIORequest",
        [
            .string(1, \.id),
            .string(2, \.execID),
            .bool(3, \.stdin),
        ]
    )
}

/// `PidsResponse`: 1 repeated ProcessInfo{1 pid, 2 info Any}. Hand-written: the pids are flattened
/// out of their `ProcessInfo` wrappers.
public struct PidsResponse: ProtobufMessage, Equatable {
    /// The pids of the container's processes, one `ProcessInfo` each.
    public var pids: [UInt32]

    /// A response listing `pids`.
    public init(pids: [UInt32]) { self.pids = pids }

    /// Writes one `ProcessInfo{pid}` per pid.
    public func encode(into w: inout ProtobufWriter) {
        for pid in pids { w.writeMessage(field: 1) { $0.writeUInt32IfNotDefault(field: 1, pid) } }
    }

    /// Decodes the message; unknown fields are skipped.
    /// - Throws: `ProtobufError` for malformed input.
    public init(decoding r: inout ProtobufReader) throws(ProtobufError) {
        pids = []
        while let f = try r.nextField() {
            guard f.number == 1 else { continue }
            var info = try f.message(in: "PidsResponse")
            var pid: UInt32 = 0
            while let g = try info.nextField() { if g.number == 1 { pid = try g.uint32(in: "ProcessInfo") } }
            pids.append(pid)
        }
    }
}

/// `UpdateTaskRequest`: 1 id, 2 resources (Any holding OCI LinuxResources JSON), 3 annotations map.
public struct UpdateTaskRequest: ProtobufTableMessage {
    /// The task (1).
    public var id = ""
    /// The new OCI `LinuxResources` as JSON in an Any (2).
    public var resources: ProtobufAny?
    /// Annotations (3, a map: one entry message `{1 key, 2 value}` per pair, written sorted by key).
    public var annotations: [String: String] = [:]

    /// An empty request.
    public init() {}

    /// An update for task `id`.
    public init(id: String) { self.id = id }

    /// The fields.
    public static let fields = ProtobufFieldTable<Self>(
        "UpdateTaskRequest",
        [
            .string(1, \.id),
            .message(2, \.resources),
            .custom(
                3,
                write: { m, n, w in
                    for (k, v) in m.annotations.sorted(by: { $0.key < $1.key }) {
                        w.writeMessage(field: n) { e in
                            e.writeString(field: 1, k)
                            e.writeString(field: 2, v)
                        }
                    }
                },
                read: { m, f, name throws(ProtobufError) in
                    var e = try f.message(in: name)
                    var key = ""
                    var value = ""
                    while let g = try e.nextField() {
                        switch g.number {
                        case 1: key = try g.string(in: name)
                        case 2: value = try g.string(in: name)
                        default: break
                        }
                    }
                    m.annotations[key] = value
                }
            ),
        ]
    )
}

/// `WaitResponse`: 1 exit_status, 2 exited_at.
public struct WaitResponse: ProtobufTableMessage, Equatable {
    /// The exit status (1).
    public var exitStatus: UInt32 = 0
    /// When the process exited (2).
    public var exitedAt: ProtobufTimestamp?

    /// An empty response.
    public init() {}

    /// A response from an exit.
    public init(exitStatus: UInt32, exitedAt: ProtobufTimestamp?) {
        self.exitStatus = exitStatus
        self.exitedAt = exitedAt
    }

    /// The fields.
    public static let fields = ProtobufFieldTable<Self>(
        "WaitResponse",
        [
            .uint32(1, \.exitStatus),
            .message(2, \.exitedAt),
        ]
    )
}

/// `StatsResponse`: 1 stats (Any).
public struct StatsResponse: ProtobufTableMessage, Equatable {
    /// The cgroup metrics in an Any (1).
    public var stats: ProtobufAny?

    /// An empty response.
    public init() {}

    /// A response carrying `stats`.
    public init(stats: ProtobufAny?) { self.stats = stats }

    /// The fields.
    public static let fields = ProtobufFieldTable<Self>(
        "StatsResponse",
        [
            .message(1, \.stats)
        ]
    )
}

/// `ConnectResponse`: 1 shim_pid, 2 task_pid, 3 version.
public struct ConnectResponse: ProtobufTableMessage, Equatable {
    /// The shim daemon's pid (1).
    public var shimPID: UInt32 = 0
    /// The task's init pid (2).
    public var taskPID: UInt32 = 0
    /// The shim's version (3).
    public var version = ""

    /// An empty response.
    public init() {}

    /// A response from its fields.
    public init(shimPID: UInt32, taskPID: UInt32, version: String) {
        self.shimPID = shimPID
        self.taskPID = taskPID
        self.version = version
    }

    /// The fields.
    public static let fields = ProtobufFieldTable<Self>(
        "ConnectResponse",
        [
            .uint32(1, \.shimPID),
            .uint32(2, \.taskPID),
            .string(3, \.version),
        ]
    )
}

/// `google.protobuf.Empty`.
public struct EmptyMessage: ProtobufTableMessage, Equatable {
    /// The empty message.
    public init() {}

    /// No fields: every field read is skipped.
    public static let fields = ProtobufFieldTable<Self>("google.protobuf.Empty", [])
}
