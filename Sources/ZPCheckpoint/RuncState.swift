// runc keeps one JSON state file per container (<root>/<id>/state.json). After a restore that runc
// did not perform, the file must name the new init process, or `runc state/exec/kill/delete`
// refuse the container. This file reads that state and rewrites exactly the pid-derived fields,
// keeping every other field as runc wrote it (a generic JSON value round-trips them).

import FoundationEssentials
import SystemPackage
import ZPSystem

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A JSON value that decodes and re-encodes any document without losing fields.
public enum JSONValue: Codable, Sendable, Equatable {
    /// JSON null.
    case null
    /// true or false.
    case bool(Bool)
    /// An integer that fits Int64.
    case integer(Int64)
    /// A positive integer above Int64.max.
    case unsigned(UInt64)
    /// Any other number.
    case double(Double)
    /// A string.
    case string(String)
    /// An array.
    case array([JSONValue])
    /// An object.
    case object([String: JSONValue])

    /// Decodes any JSON value; integers stay integers.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() {
            self = .null
        } else if let b = try? c.decode(Bool.self) {
            self = .bool(b)
        } else if let i = try? c.decode(Int64.self) {
            self = .integer(i)
        } else if let u = try? c.decode(UInt64.self) {
            self = .unsigned(u)
        } else if let d = try? c.decode(Double.self) {
            self = .double(d)
        } else if let s = try? c.decode(String.self) {
            self = .string(s)
        } else if let a = try? c.decode([JSONValue].self) {
            self = .array(a)
        } else {
            self = .object(try c.decode([String: JSONValue].self))
        }
    }

    /// Encodes the value back.
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        switch self {
        case .null: try c.encodeNil()
        case .bool(let b): try c.encode(b)
        case .integer(let i): try c.encode(i)
        case .unsigned(let u): try c.encode(u)
        case .double(let d): try c.encode(d)
        case .string(let s): try c.encode(s)
        case .array(let a): try c.encode(a)
        case .object(let o): try c.encode(o)
        }
    }

    /// The member `key` of an object, or nil.
    public subscript(key: String) -> JSONValue? {
        get { if case .object(let o) = self { return o[key] } else { return nil } }
        set {
            guard case .object(var o) = self else { return }
            o[key] = newValue
            self = .object(o)
        }
    }

    /// The string, or nil.
    public var stringValue: String? { if case .string(let s) = self { return s } else { return nil } }
    /// The integer, or nil.
    public var intValue: Int64? {
        switch self {
        case .integer(let i): return i
        case .unsigned(let u): return Int64(exactly: u)
        case .null, .bool, .double, .string, .array, .object: return nil
        }
    }
    /// The array, or empty.
    public var arrayValue: [JSONValue] { if case .array(let a) = self { return a } else { return [] } }
    /// The object, or empty.
    public var objectValue: [String: JSONValue] { if case .object(let o) = self { return o } else { return [:] } }
}

/// An error reading or rewriting runc's container state.
public struct RuncStateError: Error, Sendable, CustomStringConvertible {
    /// The state file or /proc path concerned.
    public var path: String
    /// Why.
    public var reason: String
    /// "runc state <path>: <reason>".
    public var description: String { "runc state \(path): \(reason)" }
}

/// One mount of the container's OCI/libcontainer config, as runc recorded it.
public struct RuncMount: Sendable, Equatable {
    /// Host source (a path for bind mounts).
    public var source: String
    /// Mount point inside the container.
    public var destination: String
    /// Filesystem type ("bind" for binds in libcontainer, "tmpfs", "cgroup", ...).
    public var device: String
    /// MS_* flags.
    public var flags: Int64

    /// Whether this is a bind mount (MS_BIND set or device "bind").
    public var isBind: Bool { flags & 4096 != 0 || device == "bind" }
}

/// runc's state of one container (`<root>/<id>/state.json`).
public struct RuncState: Sendable {
    /// The file it was read from.
    public var path: FilePath
    /// The whole document, to write back what is not modelled.
    public var document: JSONValue

    /// Reads `<runcRoot>/<id>/state.json`.
    /// - Throws: `RuncStateError` when the file is missing or not runc's JSON.
    public init(runcRoot: FilePath, id: String) throws(RuncStateError) {
        let p = runcRoot.appending(id).appending("state.json")
        path = p
        let bytes: [UInt8]
        do { bytes = try Files.read(p) } catch {
            throw RuncStateError(path: p.string, reason: "cannot read: \(error)")
        }
        do { document = try JSONDecoder().decode(JSONValue.self, from: Data(bytes)) } catch {
            throw RuncStateError(path: p.string, reason: "not valid JSON: \(error)")
        }
        guard document["init_process_pid"]?.intValue != nil else {
            throw RuncStateError(path: p.string, reason: "no init_process_pid: not a runc state file")
        }
    }

    /// The container id.
    public var id: String { document["id"]?.stringValue ?? "" }
    /// The init process pid runc knows.
    public var initPID: Int32 { Int32(truncatingIfNeeded: document["init_process_pid"]?.intValue ?? 0) }
    /// Its start time in clock ticks (field 22 of /proc/PID/stat).
    public var initStart: UInt64 { UInt64(truncatingIfNeeded: document["init_process_start"]?.intValue ?? 0) }
    /// The root filesystem path.
    public var rootfs: String { document["config"]?["rootfs"]?.stringValue ?? "" }
    /// The configured mounts.
    public var mounts: [RuncMount] {
        (document["config"]?["mounts"]?.arrayValue ?? []).map {
            RuncMount(
                source: $0["source"]?.stringValue ?? "",
                destination: $0["destination"]?.stringValue ?? "",
                device: $0["device"]?.stringValue ?? "",
                flags: $0["flags"]?.intValue ?? 0
            )
        }
    }
    /// Namespace type (e.g. "NEWNET") → configured path ("" when runc created it).
    public var namespaces: [String: String] {
        var out: [String: String] = [:]
        for ns in document["config"]?["namespaces"]?.arrayValue ?? [] {
            if let t = ns["type"]?.stringValue { out[t] = ns["path"]?.stringValue ?? "" }
        }
        return out
    }
    /// Controller → cgroup directory, e.g. "freezer" → /sys/fs/cgroup/freezer/ctr.
    public var cgroupPaths: [String: String] {
        (document["cgroup_paths"]?.objectValue ?? [:]).compactMapValues(\.stringValue)
    }
    /// What fds 0, 1, 2 of the init pointed to when runc last looked.
    public var externalDescriptors: [String] {
        (document["external_descriptors"]?.arrayValue ?? []).compactMap(\.stringValue)
    }

    /// Points the state at a new init process: pid, start time, /proc/<pid>/ns paths and the
    /// stdio descriptors it has now.
    /// - Throws: `RuncStateError` when /proc/<pid> cannot be read.
    public mutating func adopt(initPID pid: Int32) throws(RuncStateError) {
        try adopt(initPID: pid, seen: nil)
    }

    /// What ``adopt(initPID:seen:)`` needs to know of a process, read while it certainly exists.
    public struct ProcessIdentity: Sendable, Equatable {
        /// The process.
        public var pid: Int32
        /// Its start time (field 22 of `/proc/<pid>/stat`, clock ticks since boot).
        public var start: UInt64
        /// Where its descriptors 0, 1 and 2 lead (`""` for a closed one).
        public var stdio: [String]

        /// Reads `pid`'s identity now.
        /// - Throws: `RuncStateError` when the process does not exist.
        public static func read(_ pid: Int32) throws(RuncStateError) -> ProcessIdentity {
            ProcessIdentity(pid: pid, start: try processStartTime(pid), stdio: stdioLinks(pid))
        }
    }

    /// ``adopt(initPID:)`` with the identity read earlier (`seen`, used when its pid is `pid`): a
    /// restored init that answered its first client and exited before the shim got here (the
    /// handover listeners close at CRIU's `post-resume`) is still recorded as the process it was,
    /// so that its exit is reported as the container's, not as a failed restore.
    public mutating func adopt(initPID pid: Int32, seen: ProcessIdentity?) throws(RuncStateError) {
        let old = initPID
        let known = seen.flatMap { $0.pid == pid ? $0 : nil }
        let start: UInt64
        if let known { start = known.start } else { start = try processStartTime(pid) }
        document["init_process_pid"] = .integer(Int64(pid))
        document["init_process_start"] = .unsigned(start)
        if case .object(var paths) = document["namespace_paths"] ?? .null {
            for (k, v) in paths {
                if let s = v.stringValue, s.hasPrefix("/proc/\(old)/") {
                    paths[k] = .string("/proc/\(pid)/" + s.dropFirst("/proc/\(old)/".count))
                }
            }
            document["namespace_paths"] = .object(paths)
        }
        let live = stdioLinks(pid)
        let stdio = live.allSatisfy(\.isEmpty) ? (known?.stdio ?? live) : live
        document["external_descriptors"] = .array(stdio.map { .string($0) })
    }

    /// Writes the state back atomically (temporary file, fsync-free rename), mode 0600 like runc.
    /// - Throws: `RuncStateError` when the file cannot be written.
    public func write() throws(RuncStateError) {
        let bytes: Data
        do { bytes = try JSONEncoder().encode(document) } catch {
            throw RuncStateError(path: path.string, reason: "cannot encode: \(error)")
        }
        do {
            try Files.replace(path, with: bytes, mode: 0o600)
        } catch {
            throw RuncStateError(path: path.string, reason: "cannot write: \(error)")
        }
    }
}

/// Field 22 of /proc/PID/stat: the process start time in clock ticks since boot (what runc
/// stores as init_process_start to recognise its init after pid reuse).
/// - Throws: `RuncStateError` when the process does not exist.
public func processStartTime(_ pid: Int32) throws(RuncStateError) -> UInt64 {
    let p = "/proc/\(pid)/stat"
    guard let bytes = try? Files.read(FilePath(p)) else {
        throw RuncStateError(path: p, reason: "process \(pid) does not exist")
    }
    let text = String(decoding: bytes, as: UTF8.self)
    // The command name (field 2) may contain spaces and parentheses: fields resume after the last ')'.
    guard let close = text.lastIndex(of: ")") else { throw RuncStateError(path: p, reason: "unparsable") }
    let rest = text[text.index(after: close)...].split(separator: " ")
    // rest[0] is field 3 (state), so field 22 is rest[19].
    guard rest.count > 19, let start = UInt64(rest[19]) else { throw RuncStateError(path: p, reason: "no field 22") }
    return start
}

/// Whether `pid` is the process that started at `start` (clock ticks) and has not exited: a
/// zombie or dead task, or a reused pid, is not running.
public func isProcessRunning(_ pid: Int32, startedAt start: UInt64) -> Bool {
    guard pid > 0, let bytes = try? Files.read(FilePath("/proc/\(pid)/stat")) else { return false }
    let text = String(decoding: bytes, as: UTF8.self)
    guard let close = text.lastIndex(of: ")") else { return false }
    let rest = text[text.index(after: close)...].split(separator: " ")
    guard rest.count > 19, let s = UInt64(rest[19]), s == start else { return false }
    return rest[0] != "Z" && rest[0] != "X" && rest[0] != "x"
}

/// readlink of /proc/PID/fd/0...2 ("pipe:[123]", "/dev/null"); missing ones are "".
public func stdioLinks(_ pid: Int32) -> [String] {
    (0...2).map { (try? Files.readLink(FilePath("/proc/\(pid)/fd/\($0)"))) ?? "" }
}
