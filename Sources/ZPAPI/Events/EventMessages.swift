import ZPCore

// Task events (containerd/api/events/task.proto, package containerd.events) and the envelope they
// travel in (containerd.services.events.ttrpc.v1 Envelope / ForwardRequest). Field numbers from
// protocols.md §2.

/// The names of containerd's events service, to which a shim forwards its task events.
public enum EventsAPI {
    /// `containerd.services.events.ttrpc.v1.Events`, served on containerd's ttrpc socket (`TTRPC_ADDRESS`).
    public static let service = "containerd.services.events.ttrpc.v1.Events"
    /// Unary: ``EventForwardRequest`` → Empty.
    public static let forward = "Forward"
}

/// One task event, with the topic and type URL containerd expects.
public enum TaskEvent: Sendable, Equatable {
    /// `/tasks/create`: TaskCreate{1 container_id, 2 bundle, 3 rootfs, 4 io, 5 checkpoint, 6 pid}.
    case create(
        containerID: String,
        bundle: String,
        rootfs: [MountSpec],
        stdin: String,
        stdout: String,
        stderr: String,
        terminal: Bool,
        pid: UInt32
    )
    /// `/tasks/start`: TaskStart{1 container_id, 2 pid}.
    case start(containerID: String, pid: UInt32)
    /// `/tasks/exit`: TaskExit{1 container_id, 2 id, 3 pid, 4 exit_status, 5 exited_at}.
    case exit(containerID: String, id: String, pid: UInt32, exitStatus: UInt32, exitedAt: ProtobufTimestamp)
    /// `/tasks/delete`: TaskDelete{1 container_id, 2 pid, 3 exit_status, 4 exited_at, 5 id}.
    case delete(containerID: String, pid: UInt32, exitStatus: UInt32, exitedAt: ProtobufTimestamp, id: String)
    /// `/tasks/exec-added`: TaskExecAdded{1 container_id, 2 exec_id}.
    case execAdded(containerID: String, execID: String)
    /// `/tasks/exec-started`: TaskExecStarted{1 container_id, 2 exec_id, 3 pid}.
    case execStarted(containerID: String, execID: String, pid: UInt32)

    /// The event topic.
    public var topic: String {
        switch self {
        case .create: return "/tasks/create"
        case .start: return "/tasks/start"
        case .exit: return "/tasks/exit"
        case .delete: return "/tasks/delete"
        case .execAdded: return "/tasks/exec-added"
        case .execStarted: return "/tasks/exec-started"
        }
    }

    /// The protobuf full name, used as the Any type URL (containerd's typeurl registry).
    public var typeURL: String {
        switch self {
        case .create: return "containerd.events.TaskCreate"
        case .start: return "containerd.events.TaskStart"
        case .exit: return "containerd.events.TaskExit"
        case .delete: return "containerd.events.TaskDelete"
        case .execAdded: return "containerd.events.TaskExecAdded"
        case .execStarted: return "containerd.events.TaskExecStarted"
        }
    }

    /// The encoded event message.
    public func encoded() -> [UInt8] {
        var w = ProtobufWriter()
        switch self {
        case .create(let id, let bundle, let rootfs, let stdin, let stdout, let stderr, let terminal, let pid):
            w.writeStringIfNotDefault(field: 1, id)
            w.writeStringIfNotDefault(field: 2, bundle)
            for m in rootfs { w.writeMessage(field: 3, m) }
            w.writeMessage(field: 4) { io in
                io.writeStringIfNotDefault(field: 1, stdin)
                io.writeStringIfNotDefault(field: 2, stdout)
                io.writeStringIfNotDefault(field: 3, stderr)
                io.writeBoolIfNotDefault(field: 4, terminal)
            }
            w.writeUInt32IfNotDefault(field: 6, pid)
        case .start(let id, let pid):
            w.writeStringIfNotDefault(field: 1, id)
            w.writeUInt32IfNotDefault(field: 2, pid)
        case .exit(let id, let processID, let pid, let status, let at):
            w.writeStringIfNotDefault(field: 1, id)
            w.writeStringIfNotDefault(field: 2, processID)
            w.writeUInt32IfNotDefault(field: 3, pid)
            w.writeUInt32IfNotDefault(field: 4, status)
            w.writeMessage(field: 5, at)
        case .delete(let id, let pid, let status, let at, let processID):
            w.writeStringIfNotDefault(field: 1, id)
            w.writeUInt32IfNotDefault(field: 2, pid)
            w.writeUInt32IfNotDefault(field: 3, status)
            w.writeMessage(field: 4, at)
            w.writeStringIfNotDefault(field: 5, processID)
        case .execAdded(let id, let execID):
            w.writeStringIfNotDefault(field: 1, id)
            w.writeStringIfNotDefault(field: 2, execID)
        case .execStarted(let id, let execID, let pid):
            w.writeStringIfNotDefault(field: 1, id)
            w.writeStringIfNotDefault(field: 2, execID)
            w.writeUInt32IfNotDefault(field: 3, pid)
        }
        return w.bytes
    }
}

/// `ForwardRequest{1 envelope Envelope{1 timestamp, 2 namespace, 3 topic, 4 event Any}}`.
public struct EventForwardRequest: ProtobufMessage, Equatable {
    /// When the event happened (envelope field 1).
    public var timestamp: ProtobufTimestamp
    /// The containerd namespace (2).
    public var namespace: String
    /// The topic, e.g. `/tasks/exit` (3).
    public var topic: String
    /// The event message with its type URL (4).
    public var event: ProtobufAny

    /// An envelope from its fields.
    public init(timestamp: ProtobufTimestamp, namespace: String, topic: String, event: ProtobufAny) {
        self.timestamp = timestamp
        self.namespace = namespace
        self.topic = topic
        self.event = event
    }

    /// Writes the fields in field-number order, proto3 defaults omitted.
    public func encode(into w: inout ProtobufWriter) {
        w.writeMessage(field: 1) { e in
            e.writeMessage(field: 1, timestamp)
            e.writeStringIfNotDefault(field: 2, namespace)
            e.writeStringIfNotDefault(field: 3, topic)
            e.writeMessage(field: 4, event)
        }
    }

    /// Decodes the message; unknown fields are skipped.
    /// - Throws: `ProtobufError` for malformed input.
    public init(decoding r: inout ProtobufReader) throws(ProtobufError) {
        timestamp = ProtobufTimestamp(seconds: 0, nanos: 0)
        namespace = ""
        topic = ""
        event = ProtobufAny(typeURL: "", value: [])
        let m = "Envelope"
        while let f = try r.nextField() {
            guard f.number == 1 else { continue }
            var e = try f.message(in: "ForwardRequest")
            while let g = try e.nextField() {
                switch g.number {
                case 1:
                    var n = try g.message(in: m)
                    timestamp = try ProtobufTimestamp(decoding: &n)
                case 2: namespace = try g.string(in: m)
                case 3: topic = try g.string(in: m)
                case 4:
                    var n = try g.message(in: m)
                    event = try ProtobufAny(decoding: &n)
                default: break
                }
            }
        }
    }
}
