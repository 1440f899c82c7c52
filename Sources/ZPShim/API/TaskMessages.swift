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

    public func encode(into w: inout ProtobufWriter) {
        w.writeStringIfNotDefault(field: 1, type)
        w.writeStringIfNotDefault(field: 2, source)
        w.writeStringIfNotDefault(field: 3, target)
        for o in options { w.writeString(field: 4, o) }
    }

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
    public var id = "", bundle = ""
    public var rootfs: [MountSpec] = []
    public var terminal = false
    public var stdin = "", stdout = "", stderr = ""
    public var checkpoint = "", parentCheckpoint = ""
    public var options: ProtobufAny?

    /// A request for container `id` in `bundle`.
    public init(id: String, bundle: String) {
        self.id = id
        self.bundle = bundle
    }

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
    public var id = "", execID = ""

    /// A request for task `id`, exec `execID` (empty for the init process).
    public init(id: String, execID: String = "") {
        self.id = id
        self.execID = execID
    }

    public func encode(into w: inout ProtobufWriter) {
        w.writeStringIfNotDefault(field: 1, id)
        w.writeStringIfNotDefault(field: 2, execID)
    }

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
    public var id = ""
    public var now = false

    /// A request for task `id`.
    public init(id: String) { self.id = id }

    public func encode(into w: inout ProtobufWriter) {
        w.writeStringIfNotDefault(field: 1, id)
        w.writeBoolIfNotDefault(field: 2, now)
    }

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
    public var pid: UInt32

    /// A response with `pid`.
    public init(pid: UInt32) { self.pid = pid }

    public func encode(into w: inout ProtobufWriter) { w.writeUInt32IfNotDefault(field: 1, pid) }

    public init(decoding r: inout ProtobufReader) throws(ProtobufError) {
        pid = 0
        while let f = try r.nextField() { if f.number == 1 { pid = try f.uint32(in: "PidResponse") } }
    }
}

/// `DeleteResponse` (also what the `delete` command prints): 1 pid, 2 exit_status, 3 exited_at.
public struct DeleteResponse: ProtobufMessage, Equatable {
    public var pid: UInt32
    public var exitStatus: UInt32
    public var exitedAt: ProtobufTimestamp?

    /// A response from its fields.
    public init(pid: UInt32, exitStatus: UInt32, exitedAt: ProtobufTimestamp?) {
        self.pid = pid
        self.exitStatus = exitStatus
        self.exitedAt = exitedAt
    }

    public func encode(into w: inout ProtobufWriter) {
        w.writeUInt32IfNotDefault(field: 1, pid)
        w.writeUInt32IfNotDefault(field: 2, exitStatus)
        if let exitedAt { w.writeMessage(field: 3, exitedAt) }
    }

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
    public var id = "", execID = ""
    public var terminal = false
    public var stdin = "", stdout = "", stderr = ""
    public var spec: ProtobufAny?

    /// An exec request for task `id`.
    public init(id: String, execID: String) {
        self.id = id
        self.execID = execID
    }

    public func encode(into w: inout ProtobufWriter) {
        w.writeStringIfNotDefault(field: 1, id)
        w.writeStringIfNotDefault(field: 2, execID)
        w.writeBoolIfNotDefault(field: 3, terminal)
        w.writeStringIfNotDefault(field: 4, stdin)
        w.writeStringIfNotDefault(field: 5, stdout)
        w.writeStringIfNotDefault(field: 6, stderr)
        if let spec { w.writeMessage(field: 7, spec) }
    }

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
    case unknown = 0, created, running, stopped, paused, pausing
}

/// `StateResponse`.
public struct StateResponse: ProtobufMessage, Equatable {
    public var id = "", bundle = ""
    public var pid: UInt32 = 0
    public var status: TaskStatus = .unknown
    public var stdin = "", stdout = "", stderr = ""
    public var terminal = false
    public var exitStatus: UInt32 = 0
    public var exitedAt: ProtobufTimestamp?
    public var execID = ""

    /// An empty state.
    public init() {}

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
    public var id = "", execID = ""
    public var signal: UInt32 = 0
    public var all = false

    /// A kill request.
    public init(id: String, execID: String = "", signal: UInt32, all: Bool = false) {
        self.id = id
        self.execID = execID
        self.signal = signal
        self.all = all
    }

    public func encode(into w: inout ProtobufWriter) {
        w.writeStringIfNotDefault(field: 1, id)
        w.writeStringIfNotDefault(field: 2, execID)
        w.writeUInt32IfNotDefault(field: 3, signal)
        w.writeBoolIfNotDefault(field: 4, all)
    }

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
    public var id = "", execID = ""
    public var stdin = false

    /// A CloseIO request.
    public init(id: String, execID: String = "", stdin: Bool) {
        self.id = id
        self.execID = execID
        self.stdin = stdin
    }

    public func encode(into w: inout ProtobufWriter) {
        w.writeStringIfNotDefault(field: 1, id)
        w.writeStringIfNotDefault(field: 2, execID)
        w.writeBoolIfNotDefault(field: 3, stdin)
    }

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
    public var pids: [UInt32]

    /// A response listing `pids`.
    public init(pids: [UInt32]) { self.pids = pids }

    public func encode(into w: inout ProtobufWriter) {
        for pid in pids { w.writeMessage(field: 1) { $0.writeUInt32IfNotDefault(field: 1, pid) } }
    }

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
    public var id = ""
    public var resources: ProtobufAny?
    public var annotations: [String: String] = [:]

    /// An update for task `id`.
    public init(id: String) { self.id = id }

    public func encode(into w: inout ProtobufWriter) {
        w.writeStringIfNotDefault(field: 1, id)
        if let resources { w.writeMessage(field: 2, resources) }
        for (k, v) in annotations.sorted(by: { $0.key < $1.key }) {
            w.writeMessage(field: 3) { e in e.writeString(field: 1, k); e.writeString(field: 2, v) }
        }
    }

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
    public var exitStatus: UInt32
    public var exitedAt: ProtobufTimestamp?

    /// A response from an exit.
    public init(exitStatus: UInt32, exitedAt: ProtobufTimestamp?) {
        self.exitStatus = exitStatus
        self.exitedAt = exitedAt
    }

    public func encode(into w: inout ProtobufWriter) {
        w.writeUInt32IfNotDefault(field: 1, exitStatus)
        if let exitedAt { w.writeMessage(field: 2, exitedAt) }
    }

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
    public var stats: ProtobufAny?

    /// A response carrying `stats`.
    public init(stats: ProtobufAny?) { self.stats = stats }

    public func encode(into w: inout ProtobufWriter) {
        if let stats { w.writeMessage(field: 1, stats) }
    }

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
    public var shimPID: UInt32
    public var taskPID: UInt32
    public var version: String

    /// A response from its fields.
    public init(shimPID: UInt32, taskPID: UInt32, version: String) {
        self.shimPID = shimPID
        self.taskPID = taskPID
        self.version = version
    }

    public func encode(into w: inout ProtobufWriter) {
        w.writeUInt32IfNotDefault(field: 1, shimPID)
        w.writeUInt32IfNotDefault(field: 2, taskPID)
        w.writeStringIfNotDefault(field: 3, version)
    }

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
    public func encode(into w: inout ProtobufWriter) {}
    public init(decoding r: inout ProtobufReader) throws(ProtobufError) {
        while try r.nextField() != nil {}
    }
}
