import Synchronization
import SystemPackage
import ZPCore
import ZPSystem

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Whether a CRIU binary holds the pre-dump write-tracking patch, by path, read once per process.
private let preDumpTrackingAnswers = Mutex<[String: Bool]>([:])

/// FEATURE_CHECK answers for mem_track by CRIU binary path, asked once per process.
private let memoryTrackingAnswers = Mutex<[String: Bool]>([:])

/// A descriptor the restored tree inherits in place of a file its image names (`inherit_fd`):
/// e.g. `pipe:[12345]` for a stdio pipe, `extRootNetNS` for the pod network namespace.
public struct InheritedFile: Sendable {
    /// The image's name for the file.
    public var key: String
    /// The descriptor; CRIU gets a duplicate, this one stays open as long as a reference to it lives.
    public var descriptor: SharedDescriptor

    /// Creates an inherited file.
    public init(key: String, descriptor: SharedDescriptor) {
        self.key = key
        self.descriptor = descriptor
    }
}

/// Options of a dump (CRIU DUMP or PRE_DUMP request). Defaults are zeropod's: the network lock is
/// skipped, established TCP connections are closed, in-flight ones skipped, external unix sockets
/// and file locks dumped, the tree is killed after the dump.
public struct DumpOptions: Sendable {
    /// Keep the tree running after the dump (`leave_running`).
    public var leaveRunning = false
    /// Dump established TCP connections for repair on restore (`tcp_established`).
    public var tcpEstablished = false
    /// Close established TCP connections instead (`tcp_close`).
    public var tcpClose = true
    /// Skip half-open connections (`tcp_skip_in_flight`).
    public var tcpSkipInFlight = true
    /// Network lock method (`network_lock`); nil leaves CRIU's default (iptables).
    public var networkLock: CRIUNetworkLock? = .skip
    /// Dump unix sockets connected to the outside (`ext_unix_sk`).
    public var externalUnixSockets = true
    /// Dump file locks (`file_locks`).
    public var fileLocks = true
    /// The tree's session and process group are outside it (`shell_job`).
    public var shellJob = false
    /// Allow dumping an orphaned pty master (`orphan_pts_master`).
    public var orphanPtsMaster = false
    /// Allow link remaps (`link_remap`).
    public var linkRemap = false
    /// Leave the conntrack entries of an external network namespace out of the dump (decision
    /// 0075): for dumps whose restore joins the same namespace, which keeps its entries in the
    /// kernel meanwhile (a scale-down), not for a move to another node. Not a CRIU option: the
    /// worker gets ``Checkpointer/conntrackVariable`` in its environment, which zeropod's CRIU
    /// build reads (scripts/criu/0006-conntrack-of-external-netns.patch) and another ignores; a
    /// worker passed in (`worker:`) keeps the environment it was started with.
    public var leavesConntrackOut = false
    /// External resources (`external`), e.g. `net[4026532290]:extRootNetNS`, `mnt[/data]:data`.
    public var external: [String] = []
    /// External bind mounts by mount point → name (`ext_mnt`).
    public var externalMounts: [CRIUKeyValue] = []
    /// Cgroup handling; nil leaves cgroups unmanaged.
    public var manageCgroups: CRIUCgroupMode?
    /// A yard with the cgroup hierarchies (`cgroup_yard`, ``CgroupYard``); nil lets CRIU mount them.
    public var cgroupYard: String?
    /// Freezer cgroup to freeze the tree with (`freeze_cgroup`); nil stops tasks with ptrace.
    public var freezeCgroup: String?
    /// The tree's root directory (`root`), for containers.
    public var root: String?
    /// Namespaces (clone flags) dumped as empty (`empty_ns`).
    public var emptyNamespaces: UInt32?
    /// Page server to send memory to (`ps`).
    public var pageServer: CRIUPageServerInfo?
    /// Parent image directory for incremental dumps (`parent_img`).
    public var parentImages: String?
    /// Track dirty memory (`track_mem`).
    public var trackMemory = false
    /// With `parentImages` and `trackMemory`: the parent holds the images the tree was restored
    /// from by a checkpointer that ``Checkpointer/tracksWrites`` (decision 0077), or a pre-dump that
    /// tracked writes (decision 0078), and a page counts as dirty when it was written since
    /// (PAGEMAP_SCAN's write bit) rather than by soft-dirty, which kernels without
    /// `CONFIG_MEM_SOFT_DIRTY` lack. Not a CRIU option: the worker gets
    /// ``Checkpointer/writeTrackingVariable`` (zeropod's CRIU build,
    /// scripts/criu/0007-write-tracking-without-soft-dirty.patch); a page the kernel does not report
    /// as unwritten is dumped, so an untracked tree gets a full dump.
    public var dirtyFromWriteTracking = false
    /// Dump for a lazy restore served from this side's memory (`lazy_pages`); with `pageServer`
    /// CRIU serves the pages and answers only when they have been fetched.
    public var lazyPages = false
    /// A descriptor of the caller's that CRIU writes a 0 byte to when its page server is ready
    /// (`status_fd`, resolved through /proc/<caller>/fd; CRIU also sends "status-ready").
    public var statusFD: SharedDescriptor?
    /// CRIU config file (`config_file`).
    public var configFile: String?
    /// CRIU log level 0-4.
    public var logLevel: Int32 = 4
    /// Log file name inside the work directory.
    public var logFile = "dump.log"
    /// Work directory (log, temp files); nil uses the image directory.
    public var workDir: FilePath?
    /// Kill CRIU and fail when it has not answered in this time.
    public var timeout: Duration? = .seconds(120)

    /// zeropod's defaults.
    public init() {}
}

/// Options of a restore (CRIU RESTORE request). Defaults mirror `DumpOptions`'.
public struct RestoreOptions: Sendable {
    /// Restore the tree as a child of the caller rather than of CRIU (`rst_sibling`).
    public var restoreSibling = true
    /// Descriptors handed to the tree (`inherit_fd`); each key needs its own descriptor.
    public var inheritedFiles: [InheritedFile] = []
    /// The tree's root directory (`root`); it must be a mount point for a mount namespace restore.
    public var root: String?
    /// Restore established TCP connections (`tcp_established`).
    public var tcpEstablished = false
    /// Connections were closed on dump (`tcp_close`).
    public var tcpClose = true
    /// Network lock (`network_lock`); nil leaves CRIU's default.
    public var networkLock: CRIUNetworkLock? = .skip
    /// External unix sockets (`ext_unix_sk`).
    public var externalUnixSockets = true
    /// File locks (`file_locks`).
    public var fileLocks = true
    /// Shell job (`shell_job`).
    public var shellJob = false
    /// Orphaned pty master (`orphan_pts_master`); the master arrives on an "orphan-pts-master" hook.
    public var orphanPtsMaster = false
    /// Allow device files by other paths (`evasive_devices`).
    public var evasiveDevices = false
    /// External resources (`external`), e.g. `mnt[data]:/host/data`.
    public var external: [String] = []
    /// External bind mounts name → host source (`ext_mnt`).
    public var externalMounts: [CRIUKeyValue] = []
    /// Cgroup handling; nil leaves cgroups unmanaged.
    public var manageCgroups: CRIUCgroupMode?
    /// A yard with the cgroup hierarchies (`cgroup_yard`, ``CgroupYard``); nil lets CRIU mount them.
    public var cgroupYard: String?
    /// Cgroup roots (`cg_root`).
    public var cgroupRoots: [CRIUCgroupRoot] = []
    /// Namespaces to join (`join_ns`).
    public var joinNamespaces: [CRIUJoinNamespace] = []
    /// Namespaces restored empty (`empty_ns`).
    public var emptyNamespaces: UInt32?
    /// Lazy restore through a running lazy-pages daemon (`lazy_pages`).
    public var lazyPages = false
    /// Page server the lazy restore takes pages from (`ps`).
    public var pageServer: CRIUPageServerInfo?
    /// A descriptor of the caller's that CRIU writes a 0 byte to when ready (`status_fd`).
    public var statusFD: SharedDescriptor?
    /// Restore mounts with CRIU's older mount engine (`mntns_compat_mode`).
    public var mountNamespaceCompatMode = false
    /// CRIU config file (`config_file`).
    public var configFile: String?
    /// CRIU log level 0-4.
    public var logLevel: Int32 = 4
    /// Log file name inside the work directory.
    public var logFile = "restore.log"
    /// Work directory; nil uses the image directory. A lazy restore finds the daemon's socket here.
    public var workDir: FilePath?
    /// Kill CRIU and fail when it has not answered in this time.
    public var timeout: Duration? = .seconds(120)

    /// zeropod's defaults.
    public init() {}
}

/// Where the time of one CRIU request went.
public struct CRIUTimings: Sendable, CustomStringConvertible {
    /// Starting the worker (posix_spawn); zero for a pre-started worker.
    public var spawn: Duration
    /// Sending the request → final answer.
    public var request: Duration
    /// From the call until the answer, including spawn and setup.
    public var total: Duration
    /// Notifications as they arrived, relative to the request.
    public var phases: [CRIUPhase]

    /// "total 84.1 ms (spawn 1.2 ms, request 80.3 ms; post-restore@70.1)".
    public var description: String {
        let p = phases.map { "\($0.script)@\(milliseconds($0.elapsed))" }.joined(separator: " ")
        return
            "total \(milliseconds(total)) ms (spawn \(milliseconds(spawn)), request \(milliseconds(request))\(p.isEmpty ? "" : "; " + p))"
    }
}

/// The outcome of a dump.
public struct DumpResult: Sendable {
    /// Where the time went.
    public var timings: CRIUTimings
    /// Hooks that threw at a point where CRIU carries on.
    public var hookFailures: [String] = []
    /// CRIU's own statistics (`stats-dump` in the image directory): frozen time, pages written
    /// and pages left in the parent image. Nil when CRIU wrote none or it could not be read.
    public var stats: CRIUDumpStats? = nil
}

/// The outcome of a restore.
public struct RestoreResult: Sendable {
    /// The restored root task's pid (in the caller's pid namespace).
    public var pid: Int32
    /// Where the time went.
    public var timings: CRIUTimings
    /// Hooks that threw at a point where CRIU carries on (pre-resume, post-resume).
    public var hookFailures: [String] = []
}

/// Checkpoints and restores process trees by speaking CRIU's RPC protocol to `criu swrk` workers.
///
/// Every call starts a worker (or uses one the caller pre-started with `startWorker`), sends one
/// request, answers CRIU's notifications, and returns typed results or a `CRIUError` carrying
/// CRIU's errno, message and log tail. Calls block the calling thread.
public struct Checkpointer: Sendable {
    /// The CRIU binary.
    public var criuPath: FilePath
    /// Whether dumps leave the zero pages of private anonymous mappings out of the images
    /// (decision 0066): a restore then neither reads nor faults them in; they read as zeros. Needs
    /// the CRIU that `make setup` builds (scripts/criu/0004-leave-zero-pages-out.patch), which
    /// reads ``zeroPagesVariable`` from its environment; another CRIU ignores the variable and
    /// writes every page, which restores the same memory.
    public var leavesZeroPagesOut: Bool
    /// Whether full restores write-protect the restored memory with an asynchronous userfaultfd
    /// (decision 0077), so that a later dump with `DumpOptions.dirtyFromWriteTracking` writes only the
    /// pages changed since. Each restored process then holds a userfaultfd until CRIU's restorer
    /// ends; a `post-restore` hook takes copies (``WriteTracking``), or the protection ends with
    /// the restore. Needs the CRIU that `make setup` builds and a kernel with asynchronous
    /// write-protect and PAGEMAP_SCAN (6.7+); elsewhere nothing is tracked. Lazy restores are not
    /// tracked.
    public var tracksWrites: Bool

    /// The environment variable that asks zeropod's CRIU build to leave zero pages out of a dump.
    public static let zeroPagesVariable = "ZEROPOD_SKIP_ZERO_PAGES"

    /// The environment variable that asks zeropod's CRIU build to leave an external network
    /// namespace's conntrack entries out of a dump (`DumpOptions.leavesConntrackOut`).
    public static let conntrackVariable = "ZEROPOD_SKIP_CONNTRACK"

    /// The environment variable that asks zeropod's CRIU build to write-protect restored memory
    /// (a restore) or to read dirty pages from the write bits (a dump; `DumpOptions.dirtyFromWriteTracking`).
    public static let writeTrackingVariable = "ZEROPOD_WP_TRACK"

    /// What every worker of this checkpointer gets in its environment besides the caller's: the
    /// variables are always set, to 1 or 0, so an inherited one never decides for the setting.
    var workerEnvironment: [String] {
        [
            "\(Self.zeroPagesVariable)=\(leavesZeroPagesOut ? 1 : 0)",
            "\(Self.writeTrackingVariable)=\(tracksWrites ? 1 : 0)",
        ]
    }

    /// The CRIU that `make setup` installs, else Debian's.
    public static var defaultCRIUPath: FilePath {
        access("/usr/local/sbin/criu", X_OK) == 0 ? "/usr/local/sbin/criu" : "/usr/sbin/criu"
    }

    /// Creates a checkpointer for the given CRIU binary.
    public init(
        criuPath: FilePath = Checkpointer.defaultCRIUPath,
        leavesZeroPagesOut: Bool = false,
        tracksWrites: Bool = false
    ) {
        self.criuPath = criuPath
        self.leavesZeroPagesOut = leavesZeroPagesOut
        self.tracksWrites = tracksWrites
    }

    /// Starts a worker ahead of time, with the descriptors a later restore inherits already mapped
    /// (the order must match `RestoreOptions.inheritedFiles`). Saves the spawn on the critical path.
    /// - Throws: `CRIUError` `.spawnFailed`.
    /// - Parameter mountNamespace: start the worker in a mount namespace of its own with only
    ///   these mounts (decision 0067); nil starts it in the caller's.
    public func startWorker(
        inheriting files: [InheritedFile] = [],
        mountNamespace: ConfinedMountNamespace? = nil
    ) throws(CRIUError) -> CRIUConnection {
        try CRIUConnection(
            criuPath: criuPath,
            inheritedFDs: files.map(\.descriptor),
            environment: workerEnvironment,
            mountNamespace: mountNamespace
        )
    }

    // MARK: simple requests

    /// CRIU's version (VERSION request).
    /// - Throws: `CRIUError`.
    public func version() throws(CRIUError) -> CRIUVersion {
        let c = try startWorker()
        defer { c.close() }
        let x = try c.exchange(CRIURequest(type: .version), deadline: .now + .seconds(30))
        guard let v = x.response.version else {
            throw CRIUError(code: .protocolViolation, request: .version, message: "VERSION answer without a version")
        }
        return v
    }

    /// Runs CRIU's kernel check (CHECK request): succeeds when CRIU can dump and restore here.
    /// - Throws: `CRIUError` `.requestFailed` with CRIU's reason.
    public func check() throws(CRIUError) {
        let c = try startWorker()
        defer { c.close() }
        var o = CRIUOptions()
        o.logToStderr = true
        _ = try c.exchange(CRIURequest(type: .check, options: o), deadline: .now + .seconds(60))
    }

    /// Asks CRIU which of `wanted` it supports (FEATURE_CHECK). A feature CRIU does not support
    /// comes back `false`.
    /// - Throws: `CRIUError`.
    public func features(_ wanted: CRIUFeatures) throws(CRIUError) -> CRIUFeatures {
        let c = try startWorker()
        defer { c.close() }
        do {
            let x = try c.exchange(CRIURequest(type: .featureCheck, features: wanted), deadline: .now + .seconds(30))
            return x.response.features ?? CRIUFeatures()
        } catch  where error.code == .requestFailed {
            // CRIU answers success=false (cr_errno ENOTSUP) when any feature is missing, still
            // with the per-feature answers; ask again one feature at a time.
            var out = CRIUFeatures()
            func one(_ f: CRIUFeatures) -> Bool {
                guard let w = try? startWorker() else { return false }
                defer { w.close() }
                return (try? w.exchange(CRIURequest(type: .featureCheck, features: f), deadline: .now + .seconds(30)))
                    != nil
            }
            if wanted.memoryTracking == true { out.memoryTracking = one(CRIUFeatures(memoryTracking: true)) }
            if wanted.lazyPages == true { out.lazyPages = one(CRIUFeatures(lazyPages: true)) }
            if wanted.pidfdStore == true { out.pidfdStore = one(CRIUFeatures(pidfdStore: true)) }
            return out
        }
    }

    /// Throws `.notSupported` naming the first of `wanted` that CRIU does not support here.
    /// - Throws: `CRIUError` `.notSupported`, or any error of `features(_:)`.
    public func require(_ wanted: CRIUFeatures) throws(CRIUError) {
        let got = try features(wanted)
        let missing: [String] = [
            wanted.memoryTracking == true && got.memoryTracking != true ? "mem_track (dirty memory tracking)" : nil,
            wanted.lazyPages == true && got.lazyPages != true ? "lazy_pages (userfaultfd)" : nil,
            wanted.pidfdStore == true && got.pidfdStore != true ? "pidfd_store" : nil,
        ].compactMap { $0 }
        if let first = missing.first {
            throw CRIUError(
                code: .notSupported,
                request: .featureCheck,
                criuErrno: .notSupported,
                message: "CRIU \(criuPath) on this kernel does not support \(first)"
            )
        }
    }

    // MARK: dump

    /// Dumps the process tree rooted at `pid` into `imagesDir` (DUMP request).
    ///
    /// - Parameters:
    ///   - pid: the root of the tree.
    ///   - imagesDir: an existing or creatable directory for the images.
    ///   - options: dump options.
    ///   - hooks: notification hooks ("pre-dump", "post-dump", ...).
    ///   - worker: a pre-started worker to use (consumed); nil starts one.
    /// - Throws: `CRIUError`; on failure CRIU resumes the tree (verified by the tests).
    public func dump(
        pid: Int32,
        imagesDir: FilePath,
        options: DumpOptions = DumpOptions(),
        hooks: CRIUHooks = CRIUHooks(),
        worker: CRIUConnection? = nil
    ) throws(CRIUError) -> DumpResult {
        try dumpOrPreDump(.dump, pid: pid, imagesDir: imagesDir, options: options, hooks: hooks, worker: worker)
    }

    /// Whether CRIU can track dirty memory on this kernel (FEATURE_CHECK `mem_track`; the kernel
    /// needs `CONFIG_MEM_SOFT_DIRTY`). Asked once per CRIU binary and process; later calls answer
    /// from the cache. Pre-dumps and incremental dumps need it.
    /// - Throws: `CRIUError` when CRIU could not be asked (not cached).
    public func supportsMemoryTracking() throws(CRIUError) -> Bool {
        if let known = memoryTrackingAnswers.withLock({ $0[criuPath.string] }) { return known }
        let answer = try features(CRIUFeatures(memoryTracking: true)).memoryTracking == true
        memoryTrackingAnswers.withLock { $0[criuPath.string] = answer }
        return answer
    }

    /// The notification by which zeropod's CRIU build hands a pre-dump's write tracking over: one
    /// per tracked task, with its pid and its userfaultfd (scripts/criu/0008-pre-dump-write-tracking.patch).
    public static let writeTrackingScript = "zp-write-tracking"

    /// Whether this checkpointer's pre-dumps track writes without soft-dirty (decision 0078): it
    /// ``tracksWrites`` and its CRIU binary is zeropod's build with the pre-dump tracking patch
    /// (read once per binary and process). Whether a kernel can track is only known from the
    /// pre-dump itself: its tasks' userfaultfds come in ``writeTrackingScript`` notifications.
    public func preDumpsTrackWrites() -> Bool {
        guard tracksWrites else { return false }
        let path = criuPath.string
        if let known = preDumpTrackingAnswers.withLock({ $0[path] }) { return known }
        let marker = Array(Self.writeTrackingScript.utf8)
        let answer = (try? Files.read(criuPath)).map { $0.firstRange(of: marker) != nil } ?? false
        preDumpTrackingAnswers.withLock { $0[path] = answer }
        return answer
    }

    /// Copies the tree's memory while it keeps running (SINGLE_PRE_DUMP request, with `track_mem`). A
    /// later DUMP with `parentImages` pointing here and `trackMemory` writes only the pages dirtied
    /// since. Dirty is soft-dirty where CRIU supports it (FEATURE_CHECK `mem_track`, asked once);
    /// elsewhere, when ``preDumpsTrackWrites()``, the pre-dump write-protects the tasks' private
    /// memory with asynchronous userfaultfds and hands them over in ``writeTrackingScript``
    /// notifications (decision 0078): `hooks` must keep them (``WriteTracking``) for as long as the
    /// later dump should be incremental, and that dump needs `dirtyFromWriteTracking`.
    /// - Throws: `CRIUError` `.notSupported` when neither is possible: CRIU 4.2 aborts a pre-dump
    ///   without soft-dirty (a BUG() after infecting the tasks), so it is never asked.
    public func preDump(
        pid: Int32,
        imagesDir: FilePath,
        options: DumpOptions = DumpOptions(),
        hooks: CRIUHooks = CRIUHooks()
    ) throws(CRIUError)
        -> DumpResult
    {
        var o = options
        if try !supportsMemoryTracking() {
            guard preDumpsTrackWrites() else {
                throw CRIUError(
                    code: .notSupported,
                    request: .preDump,
                    criuErrno: .notSupported,
                    message: "CRIU \(criuPath) on this kernel does not support mem_track (dirty memory "
                        + "tracking needs a kernel with CONFIG_MEM_SOFT_DIRTY), and it cannot track "
                        + "writes instead (zeropod's CRIU build, a checkpointer that tracks writes)"
                )
            }
            o.dirtyFromWriteTracking = true
        }
        o.trackMemory = true
        // SINGLE_PRE_DUMP: CRIU answers and is done. After a PRE_DUMP it waits for the next
        // request of an iterative migration (another PRE_DUMP or the DUMP), and logged "Can't recv
        // request: Connection reset by peer" to the shim's stderr when the connection closed.
        return try dumpOrPreDump(.singlePreDump, pid: pid, imagesDir: imagesDir, options: o, hooks: hooks, worker: nil)
    }

    private func dumpOrPreDump(
        _ type: CRIURequestType,
        pid: Int32,
        imagesDir: FilePath,
        options: DumpOptions,
        hooks: CRIUHooks,
        worker: CRIUConnection?
    ) throws(CRIUError) -> DumpResult {
        let start = ContinuousClock.now
        try ensureDirectory(imagesDir, create: true, request: type)
        var o = CRIUOptions()
        o.imagesDir = imagesDir.string
        o.pid = pid
        o.leaveRunning = options.leaveRunning
        o.externalUnixSockets = options.externalUnixSockets ? true : nil
        o.tcpEstablished = options.tcpEstablished ? true : nil
        o.shellJob = options.shellJob
        o.fileLocks = options.fileLocks ? true : nil
        o.logLevel = options.logLevel
        o.logFile = options.logFile
        o.pageServer = options.pageServer
        o.notifyScripts = true
        o.root = options.root
        o.parentImages = options.parentImages
        o.trackMemory = options.trackMemory ? true : nil
        o.linkRemap = options.linkRemap ? true : nil
        o.externalMountMap = options.externalMounts
        if let mode = options.manageCgroups {
            o.manageCgroups = true
            o.manageCgroupsMode = mode
        }
        o.cgroupYard = options.cgroupYard
        o.external = options.external
        o.emptyNamespaces = options.emptyNamespaces
        o.freezeCgroup = options.freezeCgroup
        o.tcpSkipInFlight = options.tcpSkipInFlight ? true : nil
        o.lazyPages = options.lazyPages ? true : nil
        o.statusFD = options.statusFD?.rawValue
        o.orphanPtsMaster = options.orphanPtsMaster ? true : nil
        o.configFile = options.configFile
        o.tcpClose = options.tcpClose ? true : nil
        o.networkLock = options.networkLock
        let (x, spawn) = try run(
            CRIURequest(type: type, options: o),
            workDir: options.workDir,
            imagesDir: imagesDir,
            logFile: options.logFile,
            hooks: hooks,
            timeout: options.timeout,
            worker: worker,
            inherited: [],
            environment: [
                "\(Self.conntrackVariable)=\(options.leavesConntrackOut ? 1 : 0)",
                "\(Self.writeTrackingVariable)=\(options.dirtyFromWriteTracking ? 1 : 0)",
            ]
        )
        return DumpResult(
            timings: CRIUTimings(spawn: spawn, request: x.duration, total: .now - start, phases: x.phases),
            hookFailures: x.hookFailures,
            stats: try? CRIUDumpStats(contentsOf: imagesDir.appending(CRIUDumpStats.fileName))
        )
    }

    // MARK: restore

    /// Restores the tree dumped in `imagesDir` (RESTORE request).
    ///
    /// - Parameters:
    ///   - imagesDir: the images of a successful dump.
    ///   - options: restore options; `inheritedFiles` are mapped into the worker at 4, 5, ...
    ///   - hooks: notification hooks ("setup-namespaces", "post-restore", ...).
    ///   - worker: a worker from `startWorker(inheriting:)` with the same inherited files; nil starts one.
    /// - Returns: the restored root pid and the timings.
    /// - Throws: `CRIUError`: `.invalidArgument` for a missing image directory, `.requestFailed`
    ///   with CRIU's reason (corrupt images, missing resources), `.workerDied`, `.timedOut`.
    public func restore(
        imagesDir: FilePath,
        options: RestoreOptions = RestoreOptions(),
        hooks: CRIUHooks = CRIUHooks(),
        worker: CRIUConnection? = nil
    ) throws(CRIUError) -> RestoreResult {
        let start = ContinuousClock.now
        try ensureDirectory(imagesDir, create: false, request: .restore)
        var o = CRIUOptions()
        o.imagesDir = imagesDir.string
        o.externalUnixSockets = options.externalUnixSockets ? true : nil
        o.tcpEstablished = options.tcpEstablished ? true : nil
        o.evasiveDevices = options.evasiveDevices ? true : nil
        o.shellJob = options.shellJob
        o.fileLocks = options.fileLocks ? true : nil
        o.logLevel = options.logLevel
        o.logFile = options.logFile
        o.notifyScripts = true
        o.root = options.root
        if let mode = options.manageCgroups {
            o.manageCgroups = true
            o.manageCgroupsMode = mode
        }
        o.cgroupYard = options.cgroupYard
        o.cgroupRoots = options.cgroupRoots
        o.restoreSibling = options.restoreSibling
        o.inheritFDs = options.inheritedFiles.enumerated().map { CRIUInheritFD(key: $1.key, fd: Int32(4 + $0)) }
        o.externalMountMap = options.externalMounts
        o.external = options.external
        o.emptyNamespaces = options.emptyNamespaces
        o.joinNamespaces = options.joinNamespaces
        o.lazyPages = options.lazyPages ? true : nil
        o.orphanPtsMaster = options.orphanPtsMaster ? true : nil
        o.configFile = options.configFile
        o.tcpClose = options.tcpClose ? true : nil
        o.networkLock = options.networkLock
        o.mountNamespaceCompatMode = options.mountNamespaceCompatMode ? true : nil
        o.pageServer = options.pageServer
        o.statusFD = options.statusFD?.rawValue
        let x: CRIUExchange
        let spawn: Duration
        do {
            (x, spawn) = try run(
                CRIURequest(type: .restore, options: o),
                workDir: options.workDir,
                imagesDir: imagesDir,
                logFile: options.logFile,
                hooks: hooks,
                timeout: options.timeout,
                worker: worker,
                inherited: options.inheritedFiles
            )
        } catch {
            // With rst_sibling the tree CRIU created (and killed on abort) is our child: reap it so
            // its pid is free for the next attempt.
            if options.restoreSibling, let pid = error.restoredPID { reapKilledChild(pid) }
            throw error
        }
        guard let pid = x.response.restoredPID else {
            throw CRIUError(code: .protocolViolation, request: .restore, message: "RESTORE answer without a pid")
        }
        return RestoreResult(
            pid: pid,
            timings: CRIUTimings(
                spawn: spawn,
                request: x.duration,
                total: .now - start,
                phases: x.phases
            ),
            hookFailures: x.hookFailures
        )
    }

    // MARK: plumbing

    private func reapKilledChild(_ pid: Int32) {
        let deadline = ContinuousClock.now + .seconds(5)
        var status: CInt = 0
        while ContinuousClock.now < deadline {
            let r = waitpid(pid, &status, WNOHANG)
            if r == pid || (r == -1 && errno == ECHILD) { return }
            usleep(2000)
        }
    }

    /// Checks the images directory of a restore, or makes the one of a dump owner-only before CRIU
    /// writes into it (created 0700 with its missing parents; an existing one set to 0700), so the
    /// images are never readable by other users, whatever the folder's creator chose.
    private func ensureDirectory(_ dir: FilePath, create: Bool, request: CRIURequestType) throws(CRIUError) {
        if create {
            do {
                try Files.makeOwnerOnlyDirectory(dir)
            } catch {
                throw CRIUError(
                    code: .invalidArgument,
                    request: request,
                    criuErrno: error.errno,
                    message: "images directory \(dir) is not usable: \(error)"
                )
            }
            return
        }
        var st = stat()
        if stat(dir.string, &st) == 0 {
            guard (st.st_mode & S_IFMT) == S_IFDIR else {
                throw CRIUError(
                    code: .invalidArgument,
                    request: request,
                    message: "images directory \(dir) is not a directory"
                )
            }
            return
        }
        let e = Errno(rawValue: Glibc.errno)
        throw CRIUError(
            code: .invalidArgument,
            request: request,
            criuErrno: e,
            message: "images directory \(dir) is not usable: \(e)"
        )
    }

    /// `base` without the names `more` sets, then `more`: one entry per name, the request's winning.
    static func environment(_ base: [String], overriddenBy more: [String]) -> [String] {
        func name(_ entry: String) -> Substring { entry.prefix { $0 != "=" } }
        let overridden = Set(more.map(name))
        return base.filter { !overridden.contains(name($0)) } + more
    }

    private func run(
        _ request: CRIURequest,
        workDir: FilePath?,
        imagesDir: FilePath,
        logFile: String,
        hooks: CRIUHooks,
        timeout: Duration?,
        worker: CRIUConnection?,
        inherited: [InheritedFile],
        environment more: [String] = []
    ) throws(CRIUError)
        -> (CRIUExchange, Duration)
    {
        var request = request
        var workFD: SharedDescriptor?  // open until CRIU answered (it reads it through /proc/<pid>/fd)
        // CRIU's work folder defaults to the images folder, which it gets by path: a descriptor
        // is sent only for another folder. A descriptor names a folder of this process's mount
        // namespace, where a worker in a namespace of its own (decision 0067) can mount nothing:
        // CRIU's cgroup yard and its restore's mounts are made in the work folder.
        if let workDir, workDir != imagesDir {
            do {
                workFD = SharedDescriptor(try OwnedDescriptor.open(workDir, O_RDONLY | O_DIRECTORY))
            } catch {
                throw CRIUError(
                    code: .invalidArgument,
                    request: request.type,
                    criuErrno: error.errno,
                    message: "work directory \(workDir) is not usable: \(error)"
                )
            }
            request.options?.workDirFD = workFD!.rawValue
        }
        defer { workFD?.close() }
        let connection: CRIUConnection
        let spawn: Duration
        if let worker {
            connection = worker
            spawn = .zero
        } else {
            connection = try CRIUConnection(
                criuPath: criuPath,
                inheritedFDs: inherited.map(\.descriptor),
                environment: Self.environment(workerEnvironment, overriddenBy: more)
            )
            spawn = connection.spawnDuration
        }
        defer { connection.close() }
        let log = (workDir ?? imagesDir).appending(logFile)
        let x = try connection.exchange(request, hooks: hooks, logPath: log, deadline: timeout.map { .now + $0 })
        return (x, spawn)
    }
}
