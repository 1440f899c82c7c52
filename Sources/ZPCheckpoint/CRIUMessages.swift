// Hand-written mapping of CRIU's RPC messages (images/rpc.proto, CRIU 4.2, proto2) onto ZPCore's
// protobuf wire codec. Field numbers are CRIU's; the structs and names are ours. Only the codec
// lives here: the transport is CRIUConnection, the policy is Checkpointer.

import ZPCore

/// The request types of CRIU's RPC protocol (`criu_req_type`).
public enum CRIURequestType: Int32, Sendable, Equatable, CaseIterable {
    /// No request (decoding default).
    case empty = 0
    /// Dump a process tree.
    case dump = 1
    /// Restore a process tree.
    case restore = 2
    /// Check that the kernel supports CRIU.
    case check = 3
    /// Copy memory while the tree runs.
    case preDump = 4
    /// Start a page server.
    case pageServer = 5
    /// A notification, or the reply to one.
    case notify = 6
    /// Dump CPU information.
    case cpuinfoDump = 7
    /// Check CPU compatibility.
    case cpuinfoCheck = 8
    /// Ask which features CRIU supports.
    case featureCheck = 9
    /// Ask CRIU's version.
    case version = 10
    /// Wait for a pid (page server child).
    case waitPID = 11
    /// Start a page server as a child.
    case pageServerChild = 12
    /// One pre-dump iteration.
    case singlePreDump = 13
}

/// How CRIU treats cgroups (`criu_cg_mode`).
public enum CRIUCgroupMode: Int32, Sendable, Equatable {
    /// Leave cgroups alone.
    case ignore = 0
    /// Do not restore cgroups.
    case none = 1
    /// Restore properties only.
    case props = 2
    /// Restore properties of cgroups CRIU creates.
    case soft = 3
    /// Restore every property.
    case full = 4
    /// Fail when a cgroup differs.
    case strict = 5
    /// CRIU's default mode.
    case `default` = 6
}

/// How CRIU locks the network while it works (`criu_network_lock_method`).
public enum CRIUNetworkLock: Int32, Sendable, Equatable {
    /// iptables DROP rules (CRIU default).
    case iptables = 1
    /// An nftables table.
    case nftables = 2
    /// No lock: the caller keeps clients away itself (zeropod's redirect does).
    case skip = 3
}

/// How CRIU copies memory on a pre-dump (`criu_pre_dump_mode`).
public enum CRIUPreDumpMode: Int32, Sendable, Equatable {
    /// vmsplice the pages (CRIU default).
    case splice = 1
    /// process_vm_readv the pages.
    case vmRead = 2
}

/// `criu_page_server_info`: where a page server listens, or which one CRIU started.
public struct CRIUPageServerInfo: ProtobufMessage, Equatable {
    /// Listening address (field 1).
    public var address: String?
    /// TCP port (field 2).
    public var port: Int32?
    /// Pid of a page server CRIU started (field 3).
    public var pid: Int32?
    /// A connected socket to use instead of an address (field 4).
    public var fd: Int32?

    /// Creates page server info; every field is optional.
    public init(address: String? = nil, port: Int32? = nil, pid: Int32? = nil, fd: Int32? = nil) {
        self.address = address
        self.port = port
        self.pid = pid
        self.fd = fd
    }

    /// Writes the set fields in field-number order.
    public func encode(into w: inout ProtobufWriter) {
        if let address { w.writeString(field: 1, address) }
        if let port { w.writeInt32(field: 2, port) }
        if let pid { w.writeInt32(field: 3, pid) }
        if let fd { w.writeInt32(field: 4, fd) }
    }

    /// Decodes `criu_page_server_info`; unknown fields are skipped.
    public init(decoding r: inout ProtobufReader) throws(ProtobufError) {
        self.init()
        let m = "criu_page_server_info"
        while let f = try r.nextField() {
            switch f.number {
            case 1: address = try f.string(in: m)
            case 2: port = try f.int32(in: m)
            case 3: pid = try f.int32(in: m)
            case 4: fd = try f.int32(in: m)
            default: break
            }
        }
    }
}

/// `criu_veth_pair` is deprecated and not modelled; `inherit_fd`: a descriptor CRIU hands to the
/// restored tree in place of the file the image names by `key` (for example `pipe:[1234]` or
/// `extRootNetNS`). Swrk only; `fd` is the number in CRIU's own process.
public struct CRIUInheritFD: ProtobufMessage, Equatable {
    /// The image's name for the file (field 1, required).
    public var key: String
    /// The descriptor number inside the CRIU process (field 2, required).
    public var fd: Int32

    /// Creates an inherit_fd entry.
    public init(key: String, fd: Int32) {
        self.key = key
        self.fd = fd
    }

    /// Writes both required fields.
    public func encode(into w: inout ProtobufWriter) {
        w.writeString(field: 1, key)
        w.writeInt32(field: 2, fd)
    }

    /// Decodes `inherit_fd`.
    /// - Throws: `ProtobufError.missingRequiredField` when key or fd is absent.
    public init(decoding r: inout ProtobufReader) throws(ProtobufError) {
        let m = "inherit_fd"
        var req = RequiredFields(message: m, required: [1, 2])
        var key = ""
        var fd: Int32 = 0
        while let f = try r.nextField() {
            switch f.number {
            case 1:
                key = try f.string(in: m)
                req.saw(1)
            case 2:
                fd = try f.int32(in: m)
                req.saw(2)
            default: break
            }
        }
        try req.check()
        self.init(key: key, fd: fd)
    }
}

/// A key/value pair: `ext_mount_map` (mount point → external name) and friends.
public struct CRIUKeyValue: ProtobufMessage, Equatable {
    /// Field 1 (required).
    public var key: String
    /// Field 2 (required).
    public var value: String

    /// Creates a pair.
    public init(key: String, value: String) {
        self.key = key
        self.value = value
    }

    /// Writes both required fields.
    public func encode(into w: inout ProtobufWriter) {
        w.writeString(field: 1, key)
        w.writeString(field: 2, value)
    }

    /// Decodes a `ext_mount_map`-shaped message.
    /// - Throws: `ProtobufError.missingRequiredField` when key or value is absent.
    public init(decoding r: inout ProtobufReader) throws(ProtobufError) {
        let m = "ext_mount_map"
        var req = RequiredFields(message: m, required: [1, 2])
        var key = ""
        var value = ""
        while let f = try r.nextField() {
            switch f.number {
            case 1:
                key = try f.string(in: m)
                req.saw(1)
            case 2:
                value = try f.string(in: m)
                req.saw(2)
            default: break
            }
        }
        try req.check()
        self.init(key: key, value: value)
    }
}

/// `join_namespace`: restore into an existing namespace given by a file.
public struct CRIUJoinNamespace: ProtobufMessage, Equatable {
    /// Namespace kind, e.g. "net", "ipc", "uts" (field 1, required).
    public var namespace: String
    /// Path of the namespace file, e.g. /proc/PID/ns/ipc (field 2, required).
    public var namespaceFile: String
    /// Extra option, e.g. for "user" (field 3).
    public var extraOption: String?

    /// Creates a join_ns entry.
    public init(namespace: String, namespaceFile: String, extraOption: String? = nil) {
        self.namespace = namespace
        self.namespaceFile = namespaceFile
        self.extraOption = extraOption
    }

    /// Writes the fields in order.
    public func encode(into w: inout ProtobufWriter) {
        w.writeString(field: 1, namespace)
        w.writeString(field: 2, namespaceFile)
        if let extraOption { w.writeString(field: 3, extraOption) }
    }

    /// Decodes `join_namespace`.
    /// - Throws: `ProtobufError.missingRequiredField` when ns or ns_file is absent.
    public init(decoding r: inout ProtobufReader) throws(ProtobufError) {
        let m = "join_namespace"
        var req = RequiredFields(message: m, required: [1, 2])
        var ns = ""
        var file = ""
        var extra: String?
        while let f = try r.nextField() {
            switch f.number {
            case 1:
                ns = try f.string(in: m)
                req.saw(1)
            case 2:
                file = try f.string(in: m)
                req.saw(2)
            case 3: extra = try f.string(in: m)
            default: break
            }
        }
        try req.check()
        self.init(namespace: ns, namespaceFile: file, extraOption: extra)
    }
}

/// `cgroup_root`: where a controller's (or all controllers') cgroups live on restore.
public struct CRIUCgroupRoot: ProtobufMessage, Equatable {
    /// Controller name; nil means every controller (field 1).
    public var controller: String?
    /// Cgroup path (field 2, required).
    public var path: String

    /// Creates a cgroup root.
    public init(controller: String? = nil, path: String) {
        self.controller = controller
        self.path = path
    }

    /// Writes the fields in order.
    public func encode(into w: inout ProtobufWriter) {
        if let controller { w.writeString(field: 1, controller) }
        w.writeString(field: 2, path)
    }

    /// Decodes `cgroup_root`.
    /// - Throws: `ProtobufError.missingRequiredField` when path is absent.
    public init(decoding r: inout ProtobufReader) throws(ProtobufError) {
        let m = "cgroup_root"
        var req = RequiredFields(message: m, required: [2])
        var ctrl: String?
        var path = ""
        while let f = try r.nextField() {
            switch f.number {
            case 1: ctrl = try f.string(in: m)
            case 2:
                path = try f.string(in: m)
                req.saw(2)
            default: break
            }
        }
        try req.check()
        self.init(controller: ctrl, path: path)
    }
}

/// `criu_features`: asked in a FEATURE_CHECK request, answered in its response.
public struct CRIUFeatures: ProtobufMessage, Equatable {
    /// Dirty memory tracking (pre-dump, incremental dumps) (field 1).
    public var memoryTracking: Bool?
    /// userfaultfd-based lazy restore (field 2).
    public var lazyPages: Bool?
    /// pidfd store for pid reuse detection (field 3).
    public var pidfdStore: Bool?

    /// Creates a feature set; nil means "not asked" / "not answered".
    public init(memoryTracking: Bool? = nil, lazyPages: Bool? = nil, pidfdStore: Bool? = nil) {
        self.memoryTracking = memoryTracking
        self.lazyPages = lazyPages
        self.pidfdStore = pidfdStore
    }

    /// Writes the set fields.
    public func encode(into w: inout ProtobufWriter) {
        if let memoryTracking { w.writeBool(field: 1, memoryTracking) }
        if let lazyPages { w.writeBool(field: 2, lazyPages) }
        if let pidfdStore { w.writeBool(field: 3, pidfdStore) }
    }

    /// Decodes `criu_features`.
    public init(decoding r: inout ProtobufReader) throws(ProtobufError) {
        self.init()
        let m = "criu_features"
        while let f = try r.nextField() {
            switch f.number {
            case 1: memoryTracking = try f.bool(in: m)
            case 2: lazyPages = try f.bool(in: m)
            case 3: pidfdStore = try f.bool(in: m)
            default: break
            }
        }
    }
}

/// `criu_version`: the answer to a VERSION request.
public struct CRIUVersion: ProtobufMessage, Equatable, CustomStringConvertible {
    /// Field 1 (required).
    public var major: Int32
    /// Field 2 (required).
    public var minor: Int32
    /// Field 3.
    public var gitID: String?
    /// Field 4 (the third number, e.g. 1 in 4.2.1).
    public var sublevel: Int32?
    /// Field 5.
    public var extra: Int32?
    /// Field 6.
    public var name: String?

    /// Creates a version.
    public init(
        major: Int32,
        minor: Int32,
        gitID: String? = nil,
        sublevel: Int32? = nil,
        extra: Int32? = nil,
        name: String? = nil
    ) {
        self.major = major
        self.minor = minor
        self.gitID = gitID
        self.sublevel = sublevel
        self.extra = extra
        self.name = name
    }

    /// "major.minor.sublevel", e.g. "4.2.1".
    public var description: String { "\(major).\(minor).\(sublevel ?? 0)" }

    /// The version as one comparable number, like runc's: major*10000 + minor*100 + sublevel.
    public var number: Int { Int(major) * 10000 + Int(minor) * 100 + Int(sublevel ?? 0) }

    /// Writes the fields in order.
    public func encode(into w: inout ProtobufWriter) {
        w.writeInt32(field: 1, major)
        w.writeInt32(field: 2, minor)
        if let gitID { w.writeString(field: 3, gitID) }
        if let sublevel { w.writeInt32(field: 4, sublevel) }
        if let extra { w.writeInt32(field: 5, extra) }
        if let name { w.writeString(field: 6, name) }
    }

    /// Decodes `criu_version`.
    /// - Throws: `ProtobufError.missingRequiredField` when major or minor is absent.
    public init(decoding r: inout ProtobufReader) throws(ProtobufError) {
        let m = "criu_version"
        var req = RequiredFields(message: m, required: [1, 2])
        var v = CRIUVersion(major: 0, minor: 0)
        while let f = try r.nextField() {
            switch f.number {
            case 1:
                v.major = try f.int32(in: m)
                req.saw(1)
            case 2:
                v.minor = try f.int32(in: m)
                req.saw(2)
            case 3: v.gitID = try f.string(in: m)
            case 4: v.sublevel = try f.int32(in: m)
            case 5: v.extra = try f.int32(in: m)
            case 6: v.name = try f.string(in: m)
            default: break
            }
        }
        try req.check()
        self = v
    }
}

/// `criu_notify`: an action-script callback CRIU asks the client to run.
public struct CRIUNotify: ProtobufMessage, Equatable {
    /// The script name, e.g. "post-dump", "setup-namespaces", "post-restore" (field 1).
    public var script: String?
    /// The root task's real pid, for setup-namespaces and post-restore (field 2).
    public var pid: Int32?

    /// Creates a notification.
    public init(script: String? = nil, pid: Int32? = nil) {
        self.script = script
        self.pid = pid
    }

    /// Writes the set fields.
    public func encode(into w: inout ProtobufWriter) {
        if let script { w.writeString(field: 1, script) }
        if let pid { w.writeInt32(field: 2, pid) }
    }

    /// Decodes `criu_notify`.
    public init(decoding r: inout ProtobufReader) throws(ProtobufError) {
        self.init()
        let m = "criu_notify"
        while let f = try r.nextField() {
            switch f.number {
            case 1: script = try f.string(in: m)
            case 2: pid = try f.int32(in: m)
            default: break
            }
        }
    }
}

/// `criu_opts`: the options of a DUMP, PRE_DUMP, RESTORE, CHECK or PAGE_SERVER request.
///
/// Every field is optional except `imagesDirFD`, which proto2 requires and which is always written
/// (-1 when the directory is given by path in `imagesDir`). Unset fields are not written, so CRIU
/// applies its own defaults. The TLS fields (54-59), `veths` (19), `unix_sk_ino` (33) and
/// `irmap_scan_paths` (36) are not modelled; decoding skips them.
public struct CRIUOptions: ProtobufMessage, Equatable {
    /// 1: a descriptor of the image directory in the client process, or -1 (required).
    public var imagesDirFD: Int32 = -1
    /// 2: the root pid of the tree to dump.
    public var pid: Int32?
    /// 3: leave the tree running after a dump.
    public var leaveRunning: Bool?
    /// 4: dump connected unix sockets whose peer is outside the tree.
    public var externalUnixSockets: Bool?
    /// 5: dump (and on restore, repair) established TCP connections.
    public var tcpEstablished: Bool?
    /// 6: allow device files CRIU cannot identify by path.
    public var evasiveDevices: Bool?
    /// 7: the tree is a shell job (session and process group outside it).
    public var shellJob: Bool?
    /// 8: dump and restore file locks.
    public var fileLocks: Bool?
    /// 9: log verbosity 0-4 (CRIU default 2).
    public var logLevel: Int32?
    /// 10: log file name inside the work directory (no '/').
    public var logFile: String?
    /// 11: page server to send pages to (dump) or to start.
    public var pageServer: CRIUPageServerInfo?
    /// 12: send action-script notifications to the client.
    public var notifyScripts: Bool?
    /// 13: the root directory of the tree (the container rootfs).
    public var root: String?
    /// 14: parent image directory (incremental dumps).
    public var parentImages: String?
    /// 15: track dirty memory.
    public var trackMemory: Bool?
    /// 16: deduplicate against the parent images.
    public var autoDedup: Bool?
    /// 17: a descriptor of the work directory in the client process.
    public var workDirFD: Int32?
    /// 18: allow link remaps of unlinked files.
    public var linkRemap: Bool?
    /// 20: CPU capability checks (CRIU default: all).
    public var cpuCapabilities: UInt32?
    /// 21: force inotify/fanotify path resolution.
    public var forceIrmap: Bool?
    /// 22: command to run after restore.
    public var execCommand: [String] = []
    /// 23: external bind mounts (deprecated in CRIU in favour of `external`, still honoured).
    public var externalMountMap: [CRIUKeyValue] = []
    /// 24: dump and restore cgroups.
    public var manageCgroups: Bool?
    /// 25: cgroup roots on restore.
    public var cgroupRoots: [CRIUCgroupRoot] = []
    /// 26: restore the tree as a sibling of CRIU (a child of the client), swrk only.
    public var restoreSibling: Bool?
    /// 27: descriptors inherited from the client, swrk only.
    public var inheritFDs: [CRIUInheritFD] = []
    /// 28: detect external mounts automatically.
    public var autoExternalMounts: Bool?
    /// 29: allow sharing of external mounts.
    public var externalSharing: Bool?
    /// 30: allow masters of external mounts.
    public var externalMasters: Bool?
    /// 31: mount points to skip.
    public var skipMounts: [String] = []
    /// 32: file systems to dump by content.
    public var enableFilesystems: [String] = []
    /// 34: cgroup handling mode.
    public var manageCgroupsMode: CRIUCgroupMode?
    /// 35: largest ghost file to dump (CRIU default 1 MiB).
    public var ghostLimit: UInt32?
    /// 37: external resources, e.g. `net[4026531993]:extRootNetNS`, `mnt[/data]:data`.
    public var external: [String] = []
    /// 38: namespaces (clone flags) to restore empty.
    public var emptyNamespaces: UInt32?
    /// 39: namespaces to join on restore.
    public var joinNamespaces: [CRIUJoinNamespace] = []
    /// 41: cgroup properties to restore (YAML text).
    public var cgroupProperties: String?
    /// 42: file with cgroup properties.
    public var cgroupPropertiesFile: String?
    /// 43: cgroup controllers to dump.
    public var cgroupDumpControllers: [String] = []
    /// 44: freezer cgroup to freeze the tree with instead of ptrace-stopping each task.
    public var freezeCgroup: String?
    /// 45: timeout in seconds for freezing and collecting.
    public var timeout: UInt32?
    /// 46: skip TCP connections that are still being set up.
    public var tcpSkipInFlight: Bool?
    /// 47: ignore sysctls that cannot be restored.
    public var weakSysctls: Bool?
    /// 48: lazy restore (pages on demand via userfaultfd).
    public var lazyPages: Bool?
    /// 49: descriptor (in the client) to write a 0 byte to when the lazy-pages server is ready.
    public var statusFD: Int32?
    /// 50: send the master of an orphaned pty to the client (SCM_RIGHTS on a notification).
    public var orphanPtsMaster: Bool?
    /// 51: a CRIU configuration file to read.
    public var configFile: String?
    /// 52: close established TCP connections (the peers see a reset).
    public var tcpClose: Bool?
    /// 53: LSM profile to restore with.
    public var lsmProfile: String?
    /// 60: cgroup yard path.
    public var cgroupYard: String?
    /// 61: how pre-dump copies memory.
    public var preDumpMode: CRIUPreDumpMode?
    /// 62: a pidfd store socket descriptor.
    public var pidfdStoreSocket: Int32?
    /// 63: LSM mount context.
    public var lsmMountContext: String?
    /// 64: how to lock the network during dump and restore.
    public var networkLock: CRIUNetworkLock?
    /// 65: mount namespace compatibility mode.
    public var mountNamespaceCompatMode: Bool?
    /// 66: skip the rwx permission check on files.
    public var skipFileRWXCheck: Bool?
    /// 67: run unprivileged.
    public var unprivileged: Bool?
    /// 68: the image directory by path (used when `imagesDirFD` is -1).
    public var imagesDir: String?
    /// 69: leave the tree stopped after dump or restore.
    public var leaveStopped: Bool?
    /// 70: print statistics at the end.
    public var displayStats: Bool?
    /// 71: log to stderr instead of the log file.
    public var logToStderr: Bool?

    /// Creates options with nothing set but the required `imagesDirFD` (-1).
    public init() {}

    /// Writes the set fields in field-number order (the order `protoc --encode` uses).
    public func encode(into w: inout ProtobufWriter) {
        w.writeInt32(field: 1, imagesDirFD)
        if let pid { w.writeInt32(field: 2, pid) }
        if let leaveRunning { w.writeBool(field: 3, leaveRunning) }
        if let externalUnixSockets { w.writeBool(field: 4, externalUnixSockets) }
        if let tcpEstablished { w.writeBool(field: 5, tcpEstablished) }
        if let evasiveDevices { w.writeBool(field: 6, evasiveDevices) }
        if let shellJob { w.writeBool(field: 7, shellJob) }
        if let fileLocks { w.writeBool(field: 8, fileLocks) }
        if let logLevel { w.writeInt32(field: 9, logLevel) }
        if let logFile { w.writeString(field: 10, logFile) }
        if let pageServer { w.writeMessage(field: 11, pageServer) }
        if let notifyScripts { w.writeBool(field: 12, notifyScripts) }
        if let root { w.writeString(field: 13, root) }
        if let parentImages { w.writeString(field: 14, parentImages) }
        if let trackMemory { w.writeBool(field: 15, trackMemory) }
        if let autoDedup { w.writeBool(field: 16, autoDedup) }
        if let workDirFD { w.writeInt32(field: 17, workDirFD) }
        if let linkRemap { w.writeBool(field: 18, linkRemap) }
        if let cpuCapabilities { w.writeUInt32(field: 20, cpuCapabilities) }
        if let forceIrmap { w.writeBool(field: 21, forceIrmap) }
        for c in execCommand { w.writeString(field: 22, c) }
        for m in externalMountMap { w.writeMessage(field: 23, m) }
        if let manageCgroups { w.writeBool(field: 24, manageCgroups) }
        for c in cgroupRoots { w.writeMessage(field: 25, c) }
        if let restoreSibling { w.writeBool(field: 26, restoreSibling) }
        for i in inheritFDs { w.writeMessage(field: 27, i) }
        if let autoExternalMounts { w.writeBool(field: 28, autoExternalMounts) }
        if let externalSharing { w.writeBool(field: 29, externalSharing) }
        if let externalMasters { w.writeBool(field: 30, externalMasters) }
        for s in skipMounts { w.writeString(field: 31, s) }
        for s in enableFilesystems { w.writeString(field: 32, s) }
        if let manageCgroupsMode { w.writeInt32(field: 34, manageCgroupsMode.rawValue) }
        if let ghostLimit { w.writeUInt32(field: 35, ghostLimit) }
        for e in external { w.writeString(field: 37, e) }
        if let emptyNamespaces { w.writeUInt32(field: 38, emptyNamespaces) }
        for j in joinNamespaces { w.writeMessage(field: 39, j) }
        if let cgroupProperties { w.writeString(field: 41, cgroupProperties) }
        if let cgroupPropertiesFile { w.writeString(field: 42, cgroupPropertiesFile) }
        for c in cgroupDumpControllers { w.writeString(field: 43, c) }
        if let freezeCgroup { w.writeString(field: 44, freezeCgroup) }
        if let timeout { w.writeUInt32(field: 45, timeout) }
        if let tcpSkipInFlight { w.writeBool(field: 46, tcpSkipInFlight) }
        if let weakSysctls { w.writeBool(field: 47, weakSysctls) }
        if let lazyPages { w.writeBool(field: 48, lazyPages) }
        if let statusFD { w.writeInt32(field: 49, statusFD) }
        if let orphanPtsMaster { w.writeBool(field: 50, orphanPtsMaster) }
        if let configFile { w.writeString(field: 51, configFile) }
        if let tcpClose { w.writeBool(field: 52, tcpClose) }
        if let lsmProfile { w.writeString(field: 53, lsmProfile) }
        if let cgroupYard { w.writeString(field: 60, cgroupYard) }
        if let preDumpMode { w.writeInt32(field: 61, preDumpMode.rawValue) }
        if let pidfdStoreSocket { w.writeInt32(field: 62, pidfdStoreSocket) }
        if let lsmMountContext { w.writeString(field: 63, lsmMountContext) }
        if let networkLock { w.writeInt32(field: 64, networkLock.rawValue) }
        if let mountNamespaceCompatMode { w.writeBool(field: 65, mountNamespaceCompatMode) }
        if let skipFileRWXCheck { w.writeBool(field: 66, skipFileRWXCheck) }
        if let unprivileged { w.writeBool(field: 67, unprivileged) }
        if let imagesDir { w.writeString(field: 68, imagesDir) }
        if let leaveStopped { w.writeBool(field: 69, leaveStopped) }
        if let displayStats { w.writeBool(field: 70, displayStats) }
        if let logToStderr { w.writeBool(field: 71, logToStderr) }
    }

    /// Decodes `criu_opts`; fields this type does not model are skipped.
    /// - Throws: `ProtobufError` for malformed input, a missing images_dir_fd, or an enum value
    ///   outside its schema.
    public init(decoding r: inout ProtobufReader) throws(ProtobufError) {
        let m = "criu_opts"
        var req = RequiredFields(message: m, required: [1])
        self.init()
        while let f = try r.nextField() {
            switch f.number {
            case 1:
                imagesDirFD = try f.int32(in: m)
                req.saw(1)
            case 2: pid = try f.int32(in: m)
            case 3: leaveRunning = try f.bool(in: m)
            case 4: externalUnixSockets = try f.bool(in: m)
            case 5: tcpEstablished = try f.bool(in: m)
            case 6: evasiveDevices = try f.bool(in: m)
            case 7: shellJob = try f.bool(in: m)
            case 8: fileLocks = try f.bool(in: m)
            case 9: logLevel = try f.int32(in: m)
            case 10: logFile = try f.string(in: m)
            case 11:
                var n = try f.message(in: m)
                pageServer = try CRIUPageServerInfo(decoding: &n)
            case 12: notifyScripts = try f.bool(in: m)
            case 13: root = try f.string(in: m)
            case 14: parentImages = try f.string(in: m)
            case 15: trackMemory = try f.bool(in: m)
            case 16: autoDedup = try f.bool(in: m)
            case 17: workDirFD = try f.int32(in: m)
            case 18: linkRemap = try f.bool(in: m)
            case 20: cpuCapabilities = try f.uint32(in: m)
            case 21: forceIrmap = try f.bool(in: m)
            case 22: execCommand.append(try f.string(in: m))
            case 23:
                var n = try f.message(in: m)
                externalMountMap.append(try CRIUKeyValue(decoding: &n))
            case 24: manageCgroups = try f.bool(in: m)
            case 25:
                var n = try f.message(in: m)
                cgroupRoots.append(try CRIUCgroupRoot(decoding: &n))
            case 26: restoreSibling = try f.bool(in: m)
            case 27:
                var n = try f.message(in: m)
                inheritFDs.append(try CRIUInheritFD(decoding: &n))
            case 28: autoExternalMounts = try f.bool(in: m)
            case 29: externalSharing = try f.bool(in: m)
            case 30: externalMasters = try f.bool(in: m)
            case 31: skipMounts.append(try f.string(in: m))
            case 32: enableFilesystems.append(try f.string(in: m))
            case 34: manageCgroupsMode = try Self.enumValue(f, m, CRIUCgroupMode.init(rawValue:))
            case 35: ghostLimit = try f.uint32(in: m)
            case 37: external.append(try f.string(in: m))
            case 38: emptyNamespaces = try f.uint32(in: m)
            case 39:
                var n = try f.message(in: m)
                joinNamespaces.append(try CRIUJoinNamespace(decoding: &n))
            case 41: cgroupProperties = try f.string(in: m)
            case 42: cgroupPropertiesFile = try f.string(in: m)
            case 43: cgroupDumpControllers.append(try f.string(in: m))
            case 44: freezeCgroup = try f.string(in: m)
            case 45: timeout = try f.uint32(in: m)
            case 46: tcpSkipInFlight = try f.bool(in: m)
            case 47: weakSysctls = try f.bool(in: m)
            case 48: lazyPages = try f.bool(in: m)
            case 49: statusFD = try f.int32(in: m)
            case 50: orphanPtsMaster = try f.bool(in: m)
            case 51: configFile = try f.string(in: m)
            case 52: tcpClose = try f.bool(in: m)
            case 53: lsmProfile = try f.string(in: m)
            case 60: cgroupYard = try f.string(in: m)
            case 61: preDumpMode = try Self.enumValue(f, m, CRIUPreDumpMode.init(rawValue:))
            case 62: pidfdStoreSocket = try f.int32(in: m)
            case 63: lsmMountContext = try f.string(in: m)
            case 64: networkLock = try Self.enumValue(f, m, CRIUNetworkLock.init(rawValue:))
            case 65: mountNamespaceCompatMode = try f.bool(in: m)
            case 66: skipFileRWXCheck = try f.bool(in: m)
            case 67: unprivileged = try f.bool(in: m)
            case 68: imagesDir = try f.string(in: m)
            case 69: leaveStopped = try f.bool(in: m)
            case 70: displayStats = try f.bool(in: m)
            case 71: logToStderr = try f.bool(in: m)
            default: break
            }
        }
        try req.check()
    }

    static func enumValue<E>(_ f: ProtobufField, _ m: String, _ make: (Int32) -> E?) throws(ProtobufError) -> E {
        let raw = try f.int32(in: m)
        guard let v = make(raw) else { throw .invalidValue(message: m, field: f.number, value: Int64(raw)) }
        return v
    }
}

/// `criu_req`: one request from the client to CRIU (or a reply to a notification).
public struct CRIURequest: ProtobufMessage, Equatable {
    /// 1: the request type (required).
    public var type: CRIURequestType
    /// 2: options for DUMP, PRE_DUMP, RESTORE, CHECK, PAGE_SERVER.
    public var options: CRIUOptions?
    /// 3: the client's answer to a notification.
    public var notifySuccess: Bool?
    /// 4: keep the worker for another request after this one.
    public var keepOpen: Bool?
    /// 5: features to check (FEATURE_CHECK).
    public var features: CRIUFeatures?
    /// 6: pid to wait for (WAIT_PID).
    public var pid: UInt32?

    /// Creates a request.
    public init(
        type: CRIURequestType,
        options: CRIUOptions? = nil,
        notifySuccess: Bool? = nil,
        keepOpen: Bool? = nil,
        features: CRIUFeatures? = nil,
        pid: UInt32? = nil
    ) {
        self.type = type
        self.options = options
        self.notifySuccess = notifySuccess
        self.keepOpen = keepOpen
        self.features = features
        self.pid = pid
    }

    /// Writes the request in field-number order.
    public func encode(into w: inout ProtobufWriter) {
        w.writeInt32(field: 1, type.rawValue)
        if let options { w.writeMessage(field: 2, options) }
        if let notifySuccess { w.writeBool(field: 3, notifySuccess) }
        if let keepOpen { w.writeBool(field: 4, keepOpen) }
        if let features { w.writeMessage(field: 5, features) }
        if let pid { w.writeUInt32(field: 6, pid) }
    }

    /// Decodes `criu_req`.
    /// - Throws: `ProtobufError` for malformed input, a missing type or an unknown type value.
    public init(decoding r: inout ProtobufReader) throws(ProtobufError) {
        let m = "criu_req"
        var req = RequiredFields(message: m, required: [1])
        self.init(type: .empty)
        while let f = try r.nextField() {
            switch f.number {
            case 1:
                type = try CRIUOptions.enumValue(f, m, CRIURequestType.init(rawValue:))
                req.saw(1)
            case 2:
                var n = try f.message(in: m)
                options = try CRIUOptions(decoding: &n)
            case 3: notifySuccess = try f.bool(in: m)
            case 4: keepOpen = try f.bool(in: m)
            case 5:
                var n = try f.message(in: m)
                features = try CRIUFeatures(decoding: &n)
            case 6: pid = try f.uint32(in: m)
            default: break
            }
        }
        try req.check()
    }
}

/// `criu_resp`: one message from CRIU: a notification or the final answer to a request.
public struct CRIUResponse: ProtobufMessage, Equatable {
    /// 1: the type of the request this answers, or NOTIFY (required).
    public var type: CRIURequestType
    /// 2: whether the request succeeded (required).
    public var success: Bool
    /// 3: `criu_dump_resp.restored`: the dump answer (true when this is the restored tree speaking).
    public var dumpRestored: Bool?
    /// 4: `criu_restore_resp.pid`: the restored root task's pid.
    public var restoredPID: Int32?
    /// 5: the notification to answer.
    public var notify: CRIUNotify?
    /// 6: the page server CRIU started.
    public var pageServer: CRIUPageServerInfo?
    /// 7: CRIU's errno for a failed request.
    public var crErrno: Int32?
    /// 8: the answer to FEATURE_CHECK.
    public var features: CRIUFeatures?
    /// 9: CRIU's error message for a failed request.
    public var crErrmsg: String?
    /// 10: the answer to VERSION.
    public var version: CRIUVersion?
    /// 11: exit status (WAIT_PID).
    public var status: Int32?

    /// Creates a response.
    public init(type: CRIURequestType, success: Bool) {
        self.type = type
        self.success = success
    }

    /// Writes the response in field-number order (used by tests and fakes).
    public func encode(into w: inout ProtobufWriter) {
        w.writeInt32(field: 1, type.rawValue)
        w.writeBool(field: 2, success)
        if let dumpRestored { w.writeMessage(field: 3) { $0.writeBool(field: 1, dumpRestored) } }
        if let restoredPID { w.writeMessage(field: 4) { $0.writeInt32(field: 1, restoredPID) } }
        if let notify { w.writeMessage(field: 5, notify) }
        if let pageServer { w.writeMessage(field: 6, pageServer) }
        if let crErrno { w.writeInt32(field: 7, crErrno) }
        if let features { w.writeMessage(field: 8, features) }
        if let crErrmsg { w.writeString(field: 9, crErrmsg) }
        if let version { w.writeMessage(field: 10, version) }
        if let status { w.writeInt32(field: 11, status) }
    }

    /// Decodes `criu_resp`.
    /// - Throws: `ProtobufError` for malformed input, missing type/success (or a restore answer
    ///   without its required pid), or an unknown type value.
    public init(decoding r: inout ProtobufReader) throws(ProtobufError) {
        let m = "criu_resp"
        var req = RequiredFields(message: m, required: [1, 2])
        self.init(type: .empty, success: false)
        while let f = try r.nextField() {
            switch f.number {
            case 1:
                type = try CRIUOptions.enumValue(f, m, CRIURequestType.init(rawValue:))
                req.saw(1)
            case 2:
                success = try f.bool(in: m)
                req.saw(2)
            case 3:
                var n = try f.message(in: m)
                var restored = false
                while let g = try n.nextField() {
                    if g.number == 1 { restored = try g.bool(in: "criu_dump_resp") }
                }
                dumpRestored = restored
            case 4:
                var n = try f.message(in: m)
                var inner = RequiredFields(message: "criu_restore_resp", required: [1])
                var pid: Int32 = 0
                while let g = try n.nextField() {
                    if g.number == 1 {
                        pid = try g.int32(in: "criu_restore_resp")
                        inner.saw(1)
                    }
                }
                try inner.check()
                restoredPID = pid
            case 5:
                var n = try f.message(in: m)
                notify = try CRIUNotify(decoding: &n)
            case 6:
                var n = try f.message(in: m)
                pageServer = try CRIUPageServerInfo(decoding: &n)
            case 7: crErrno = try f.int32(in: m)
            case 8:
                var n = try f.message(in: m)
                features = try CRIUFeatures(decoding: &n)
            case 9: crErrmsg = try f.string(in: m)
            case 10:
                var n = try f.message(in: m)
                version = try CRIUVersion(decoding: &n)
            case 11: status = try f.int32(in: m)
            default: break
            }
        }
        try req.check()
    }
}
