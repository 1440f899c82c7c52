import ZPCore

// The containerd task API (containerd/api/runtime/task/v2 and v3, shim.proto; proto3) and the types it
// uses, hand-written on ZPCore's protobuf codec. Field numbers are protocol facts (protocols.md §2).
// Requests are decoded and responses encoded; the reverse directions exist where tests need them.

/// `containerd.types.Mount`.
public struct MountSpec: ProtobufMessage, Equatable {
    /// Filesystem type (`overlay`, `bind`, ...).
    public var type = ""
    /// Source device or path.
    public var source = ""
    /// Target below the rootfs, empty for the rootfs itself.
    public var target = ""
    /// Mount options as in fstab (`ro`, `rbind`, `lowerdir=...`).
    public var options: [String] = []

    /// A mount from its fields.
    public init(type: String, source: String, target: String = "", options: [String] = []) {
        self.type = type
        self.source = source
        self.target = target
        self.options = options
    }

    /// Writes the fields in field-number order, proto3 defaults omitted.
    public func encode(into w: inout ProtobufWriter) {
        w.writeStringIfNotDefault(field: 1, type)
        w.writeStringIfNotDefault(field: 2, source)
        w.writeStringIfNotDefault(field: 3, target)
        for o in options { w.writeString(field: 4, o) }
    }

    /// Decodes the message; unknown fields are skipped.
    /// - Throws: `ProtobufError` for malformed input.
    public init(decoding r: inout ProtobufReader) throws(ProtobufError) {
        let m = "containerd.types.Mount"
        while let f = try r.nextField() {
            switch f.number {
            case 1: type = try f.string(in: m)
            case 2: source = try f.string(in: m)
            case 3: target = try f.string(in: m)
            case 4: options.append(try f.string(in: m))
            default: break
            }
        }
    }
}

/// `CreateTaskRequest`.
public struct CreateTaskRequest: ProtobufMessage {
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

    /// A request for container `id` in `bundle`.
    public init(id: String, bundle: String) {
        self.id = id
        self.bundle = bundle
    }

    /// Writes the fields in field-number order, proto3 defaults omitted.
    public func encode(into w: inout ProtobufWriter) {
        w.writeStringIfNotDefault(field: 1, id)
        w.writeStringIfNotDefault(field: 2, bundle)
        for m in rootfs { w.writeMessage(field: 3, m) }
        w.writeBoolIfNotDefault(field: 4, terminal)
        w.writeStringIfNotDefault(field: 5, stdin)
        w.writeStringIfNotDefault(field: 6, stdout)
        w.writeStringIfNotDefault(field: 7, stderr)
        w.writeStringIfNotDefault(field: 8, checkpoint)
        w.writeStringIfNotDefault(field: 9, parentCheckpoint)
        if let options { w.writeMessage(field: 10, options) }
    }

    /// Decodes the message; unknown fields are skipped.
    /// - Throws: `ProtobufError` for malformed input.
    public init(decoding r: inout ProtobufReader) throws(ProtobufError) {
        let m = "CreateTaskRequest"
        while let f = try r.nextField() {
            switch f.number {
            case 1: id = try f.string(in: m)
            case 2: bundle = try f.string(in: m)
            case 3: var n = try f.message(in: m); rootfs.append(try MountSpec(decoding: &n))
            case 4: terminal = try f.bool(in: m)
            case 5: stdin = try f.string(in: m)
            case 6: stdout = try f.string(in: m)
            case 7: stderr = try f.string(in: m)
            case 8: checkpoint = try f.string(in: m)
            case 9: parentCheckpoint = try f.string(in: m)
            case 10: var n = try f.message(in: m); options = try ProtobufAny(decoding: &n)
            default: break
            }
        }
    }
}

/// A request that names a task and optionally one of its exec processes: `StartRequest`,
/// `DeleteRequest`, `WaitRequest`, `StateRequest` (fields 1 id, 2 exec_id).
public struct TaskProcessRequest: ProtobufMessage, Equatable {
    /// The task (1) and the exec process (2, empty for the init).
    public var id = "", execID = ""

    /// A request for task `id`, exec `execID` (empty for the init process).
    public init(id: String, execID: String = "") {
        self.id = id
        self.execID = execID
    }

    /// Writes the fields in field-number order, proto3 defaults omitted.
    public func encode(into w: inout ProtobufWriter) {
        w.writeStringIfNotDefault(field: 1, id)
        w.writeStringIfNotDefault(field: 2, execID)
    }

    /// Decodes the message; unknown fields are skipped.
    /// - Throws: `ProtobufError` for malformed input.
    public init(decoding r: inout ProtobufReader) throws(ProtobufError) {
        while let f = try r.nextField() {
            switch f.number {
            case 1: id = try f.string(in: "task request")
            case 2: execID = try f.string(in: "task request")
            default: break
            }
        }
    }
}

/// A request that names only a task: `PidsRequest`, `StatsRequest`, `ConnectRequest`, `PauseRequest`,
/// `ResumeRequest` (field 1 id); `ShutdownRequest` adds 2 now.
public struct TaskIDRequest: ProtobufMessage, Equatable {
    /// The task (1).
    public var id = ""
    /// `ShutdownRequest.now` (2): shut down even with tasks left.
    public var now = false

    /// A request for task `id`.
    public init(id: String) { self.id = id }

    /// Writes the fields in field-number order, proto3 defaults omitted.
    public func encode(into w: inout ProtobufWriter) {
        w.writeStringIfNotDefault(field: 1, id)
        w.writeBoolIfNotDefault(field: 2, now)
    }

    /// Decodes the message; unknown fields are skipped.
    /// - Throws: `ProtobufError` for malformed input.
    public init(decoding r: inout ProtobufReader) throws(ProtobufError) {
        while let f = try r.nextField() {
            switch f.number {
            case 1: id = try f.string(in: "task id request")
            case 2: now = try f.bool(in: "ShutdownRequest")
            default: break
            }
        }
    }
}

/// A response that carries one pid: `CreateTaskResponse`, `StartResponse` (field 1 pid).
public struct PidResponse: ProtobufMessage, Equatable {
    /// The process id (1).
    public var pid: UInt32

    /// A response with `pid`.
    public init(pid: UInt32) { self.pid = pid }

    /// Writes the fields in field-number order, proto3 defaults omitted.
    public func encode(into w: inout ProtobufWriter) { w.writeUInt32IfNotDefault(field: 1, pid) }

    /// Decodes the message; unknown fields are skipped.
    /// - Throws: `ProtobufError` for malformed input.
    public init(decoding r: inout ProtobufReader) throws(ProtobufError) {
        pid = 0
        while let f = try r.nextField() { if f.number == 1 { pid = try f.uint32(in: "PidResponse") } }
    }
}

/// `DeleteResponse` (also what the `delete` command prints): 1 pid, 2 exit_status, 3 exited_at.
public struct DeleteResponse: ProtobufMessage, Equatable {
    /// The deleted process's pid (1).
    public var pid: UInt32
    /// Its exit status (2).
    public var exitStatus: UInt32
    /// When it exited (3).
    public var exitedAt: ProtobufTimestamp?

    /// A response from its fields.
    public init(pid: UInt32, exitStatus: UInt32, exitedAt: ProtobufTimestamp?) {
        self.pid = pid
        self.exitStatus = exitStatus
        self.exitedAt = exitedAt
    }

    /// Writes the fields in field-number order, proto3 defaults omitted.
    public func encode(into w: inout ProtobufWriter) {
        w.writeUInt32IfNotDefault(field: 1, pid)
        w.writeUInt32IfNotDefault(field: 2, exitStatus)
        if let exitedAt { w.writeMessage(field: 3, exitedAt) }
    }

    /// Decodes the message; unknown fields are skipped.
    /// - Throws: `ProtobufError` for malformed input.
    public init(decoding r: inout ProtobufReader) throws(ProtobufError) {
        pid = 0; exitStatus = 0; exitedAt = nil
        while let f = try r.nextField() {
            switch f.number {
            case 1: pid = try f.uint32(in: "DeleteResponse")
            case 2: exitStatus = try f.uint32(in: "DeleteResponse")
            case 3: var n = try f.message(in: "DeleteResponse"); exitedAt = try ProtobufTimestamp(decoding: &n)
            default: break
            }
        }
    }
}

/// `ExecProcessRequest`: 1 id, 2 exec_id, 3 terminal, 4 stdin, 5 stdout, 6 stderr, 7 spec (OCI Process JSON in an Any).
public struct ExecProcessRequest: ProtobufMessage {
    /// The task (1) and the new exec process's id (2).
    public var id = "", execID = ""
    /// Whether the process gets a terminal (3).
    public var terminal = false
    /// The stdio FIFOs or URIs (4, 5, 6).
    public var stdin = "", stdout = "", stderr = ""
    /// The OCI `Process` as JSON in an Any (7).
    public var spec: ProtobufAny?

    /// An exec request for task `id`.
    public init(id: String, execID: String) {
        self.id = id
        self.execID = execID
    }

    /// Writes the fields in field-number order, proto3 defaults omitted.
    public func encode(into w: inout ProtobufWriter) {
        w.writeStringIfNotDefault(field: 1, id)
        w.writeStringIfNotDefault(field: 2, execID)
        w.writeBoolIfNotDefault(field: 3, terminal)
        w.writeStringIfNotDefault(field: 4, stdin)
        w.writeStringIfNotDefault(field: 5, stdout)
        w.writeStringIfNotDefault(field: 6, stderr)
        if let spec { w.writeMessage(field: 7, spec) }
    }

    /// Decodes the message; unknown fields are skipped.
    /// - Throws: `ProtobufError` for malformed input.
    public init(decoding r: inout ProtobufReader) throws(ProtobufError) {
        let m = "ExecProcessRequest"
        while let f = try r.nextField() {
            switch f.number {
            case 1: id = try f.string(in: m)
            case 2: execID = try f.string(in: m)
            case 3: terminal = try f.bool(in: m)
            case 4: stdin = try f.string(in: m)
            case 5: stdout = try f.string(in: m)
            case 6: stderr = try f.string(in: m)
            case 7: var n = try f.message(in: m); spec = try ProtobufAny(decoding: &n)
            default: break
            }
        }
    }
}

/// `containerd.v1.types.Status` (task status enum).
public enum TaskStatus: UInt32, Sendable {
    /// `UNKNOWN` (0), `CREATED`, `RUNNING`, `STOPPED`, `PAUSED`, `PAUSING` (5).
    case unknown = 0, created, running, stopped, paused, pausing
}

/// `StateResponse`.
public struct StateResponse: ProtobufMessage, Equatable {
    /// The task (1) and its bundle folder (2).
    public var id = "", bundle = ""
    /// The process id (3).
    public var pid: UInt32 = 0
    /// The process status (4).
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

    /// Writes the fields in field-number order, proto3 defaults omitted.
    public func encode(into w: inout ProtobufWriter) {
        w.writeStringIfNotDefault(field: 1, id)
        w.writeStringIfNotDefault(field: 2, bundle)
        w.writeUInt32IfNotDefault(field: 3, pid)
        w.writeUInt32IfNotDefault(field: 4, status.rawValue)
        w.writeStringIfNotDefault(field: 5, stdin)
        w.writeStringIfNotDefault(field: 6, stdout)
        w.writeStringIfNotDefault(field: 7, stderr)
        w.writeBoolIfNotDefault(field: 8, terminal)
        w.writeUInt32IfNotDefault(field: 9, exitStatus)
        if let exitedAt { w.writeMessage(field: 10, exitedAt) }
        w.writeStringIfNotDefault(field: 11, execID)
    }

    /// Decodes the message; unknown fields are skipped.
    /// - Throws: `ProtobufError` for malformed input.
    public init(decoding r: inout ProtobufReader) throws(ProtobufError) {
        let m = "StateResponse"
        while let f = try r.nextField() {
            switch f.number {
            case 1: id = try f.string(in: m)
            case 2: bundle = try f.string(in: m)
            case 3: pid = try f.uint32(in: m)
            case 4: status = TaskStatus(rawValue: try f.uint32(in: m)) ?? .unknown
            case 5: stdin = try f.string(in: m)
            case 6: stdout = try f.string(in: m)
            case 7: stderr = try f.string(in: m)
            case 8: terminal = try f.bool(in: m)
            case 9: exitStatus = try f.uint32(in: m)
            case 10: var n = try f.message(in: m); exitedAt = try ProtobufTimestamp(decoding: &n)
            case 11: execID = try f.string(in: m)
            default: break
            }
        }
    }
}

/// `KillRequest`: 1 id, 2 exec_id, 3 signal, 4 all.
public struct KillRequest: ProtobufMessage, Equatable {
    /// The task (1) and the exec process (2, empty for the init).
    public var id = "", execID = ""
    /// The signal number (3).
    public var signal: UInt32 = 0
    /// Signal every process of the container (4).
    public var all = false

    /// A kill request.
    public init(id: String, execID: String = "", signal: UInt32, all: Bool = false) {
        self.id = id
        self.execID = execID
        self.signal = signal
        self.all = all
    }

    /// Writes the fields in field-number order, proto3 defaults omitted.
    public func encode(into w: inout ProtobufWriter) {
        w.writeStringIfNotDefault(field: 1, id)
        w.writeStringIfNotDefault(field: 2, execID)
        w.writeUInt32IfNotDefault(field: 3, signal)
        w.writeBoolIfNotDefault(field: 4, all)
    }

    /// Decodes the message; unknown fields are skipped.
    /// - Throws: `ProtobufError` for malformed input.
    public init(decoding r: inout ProtobufReader) throws(ProtobufError) {
        while let f = try r.nextField() {
            switch f.number {
            case 1: id = try f.string(in: "KillRequest")
            case 2: execID = try f.string(in: "KillRequest")
            case 3: signal = try f.uint32(in: "KillRequest")
            case 4: all = try f.bool(in: "KillRequest")
            default: break
            }
        }
    }
}

/// `CloseIORequest`: 1 id, 2 exec_id, 3 stdin.
public struct CloseIORequest: ProtobufMessage, Equatable {
    /// The task (1) and the exec process (2, empty for the init).
    public var id = "", execID = ""
    /// Close the process's stdin (3).
    public var stdin = false

    /// A CloseIO request.
    public init(id: String, execID: String = "", stdin: Bool) {
        self.id = id
        self.execID = execID
        self.stdin = stdin
    }

    /// Writes the fields in field-number order, proto3 defaults omitted.
    public func encode(into w: inout ProtobufWriter) {
        w.writeStringIfNotDefault(field: 1, id)
        w.writeStringIfNotDefault(field: 2, execID)
        w.writeBoolIfNotDefault(field: 3, stdin)
    }

    /// Decodes the message; unknown fields are skipped.
    /// - Throws: `ProtobufError` for malformed input.
    public init(decoding r: inout ProtobufReader) throws(ProtobufError) {
        while let f = try r.nextField() {
            switch f.number {
            case 1: id = try f.string(in: "CloseIORequest")
            case 2: execID = try f.string(in: "CloseIORequest")
            case 3: stdin = try f.bool(in: "CloseIORequest")
            default: break
            }
        }
    }
}

/// `PidsResponse`: 1 repeated ProcessInfo{1 pid, 2 info Any}.
public struct PidsResponse: ProtobufMessage, Equatable {
    /// The pids of the container's processes, one `ProcessInfo` each.
    public var pids: [UInt32]

    /// A response listing `pids`.
    public init(pids: [UInt32]) { self.pids = pids }

    /// Writes the fields in field-number order, proto3 defaults omitted.
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
public struct UpdateTaskRequest: ProtobufMessage {
    /// The task (1).
    public var id = ""
    /// The new OCI `LinuxResources` as JSON in an Any (2).
    public var resources: ProtobufAny?
    /// Annotations (3, a map).
    public var annotations: [String: String] = [:]

    /// An update for task `id`.
    public init(id: String) { self.id = id }

    /// Writes the fields in field-number order, proto3 defaults omitted.
    public func encode(into w: inout ProtobufWriter) {
        w.writeStringIfNotDefault(field: 1, id)
        if let resources { w.writeMessage(field: 2, resources) }
        for (k, v) in annotations.sorted(by: { $0.key < $1.key }) {
            w.writeMessage(field: 3) { e in e.writeString(field: 1, k); e.writeString(field: 2, v) }
        }
    }

    /// Decodes the message; unknown fields are skipped.
    /// - Throws: `ProtobufError` for malformed input.
    public init(decoding r: inout ProtobufReader) throws(ProtobufError) {
        let m = "UpdateTaskRequest"
        while let f = try r.nextField() {
            switch f.number {
            case 1: id = try f.string(in: m)
            case 2: var n = try f.message(in: m); resources = try ProtobufAny(decoding: &n)
            case 3:
                var e = try f.message(in: m)
                var key = "", value = ""
                while let g = try e.nextField() {
                    switch g.number {
                    case 1: key = try g.string(in: m)
                    case 2: value = try g.string(in: m)
                    default: break
                    }
                }
                annotations[key] = value
            default: break
            }
        }
    }
}

/// `WaitResponse`: 1 exit_status, 2 exited_at.
public struct WaitResponse: ProtobufMessage, Equatable {
    /// The exit status (1).
    public var exitStatus: UInt32
    /// When the process exited (2).
    public var exitedAt: ProtobufTimestamp?

    /// A response from an exit.
    public init(exitStatus: UInt32, exitedAt: ProtobufTimestamp?) {
        self.exitStatus = exitStatus
        self.exitedAt = exitedAt
    }

    /// Writes the fields in field-number order, proto3 defaults omitted.
    public func encode(into w: inout ProtobufWriter) {
        w.writeUInt32IfNotDefault(field: 1, exitStatus)
        if let exitedAt { w.writeMessage(field: 2, exitedAt) }
    }

    /// Decodes the message; unknown fields are skipped.
    /// - Throws: `ProtobufError` for malformed input.
    public init(decoding r: inout ProtobufReader) throws(ProtobufError) {
        exitStatus = 0; exitedAt = nil
        while let f = try r.nextField() {
            switch f.number {
            case 1: exitStatus = try f.uint32(in: "WaitResponse")
            case 2: var n = try f.message(in: "WaitResponse"); exitedAt = try ProtobufTimestamp(decoding: &n)
            default: break
            }
        }
    }
}

/// `StatsResponse`: 1 stats (Any).
public struct StatsResponse: ProtobufMessage, Equatable {
    /// The cgroup metrics in an Any (1).
    public var stats: ProtobufAny?

    /// A response carrying `stats`.
    public init(stats: ProtobufAny?) { self.stats = stats }

    /// Writes the fields in field-number order, proto3 defaults omitted.
    public func encode(into w: inout ProtobufWriter) {
        if let stats { w.writeMessage(field: 1, stats) }
    }

    /// Decodes the message; unknown fields are skipped.
    /// - Throws: `ProtobufError` for malformed input.
    public init(decoding r: inout ProtobufReader) throws(ProtobufError) {
        stats = nil
        while let f = try r.nextField() {
            guard f.number == 1 else { continue }
            var n = try f.message(in: "StatsResponse")
            stats = try ProtobufAny(decoding: &n)
        }
    }
}

/// `ConnectResponse`: 1 shim_pid, 2 task_pid, 3 version.
public struct ConnectResponse: ProtobufMessage, Equatable {
    /// The shim daemon's pid (1).
    public var shimPID: UInt32
    /// The task's init pid (2).
    public var taskPID: UInt32
    /// The shim's version (3).
    public var version: String

    /// A response from its fields.
    public init(shimPID: UInt32, taskPID: UInt32, version: String) {
        self.shimPID = shimPID
        self.taskPID = taskPID
        self.version = version
    }

    /// Writes the fields in field-number order, proto3 defaults omitted.
    public func encode(into w: inout ProtobufWriter) {
        w.writeUInt32IfNotDefault(field: 1, shimPID)
        w.writeUInt32IfNotDefault(field: 2, taskPID)
        w.writeStringIfNotDefault(field: 3, version)
    }

    /// Decodes the message; unknown fields are skipped.
    /// - Throws: `ProtobufError` for malformed input.
    public init(decoding r: inout ProtobufReader) throws(ProtobufError) {
        shimPID = 0; taskPID = 0; version = ""
        while let f = try r.nextField() {
            switch f.number {
            case 1: shimPID = try f.uint32(in: "ConnectResponse")
            case 2: taskPID = try f.uint32(in: "ConnectResponse")
            case 3: version = try f.string(in: "ConnectResponse")
            default: break
            }
        }
    }
}

/// `google.protobuf.Empty`.
public struct EmptyMessage: ProtobufMessage, Equatable {
    /// The empty message.
    public init() {}
    /// Writes the fields in field-number order, proto3 defaults omitted.
    public func encode(into w: inout ProtobufWriter) {}
    /// Decodes the message; unknown fields are skipped.
    /// - Throws: `ProtobufError` for malformed input.
    public init(decoding r: inout ProtobufReader) throws(ProtobufError) {
        while try r.nextField() != nil {}
    }
}
