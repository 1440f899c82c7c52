import CZPSystem
import SystemPackage

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A mount namespace that holds only the mounts some paths need, for a helper process (a CRIU
/// restore worker) that would otherwise copy and walk every mount of the host's namespace
/// (decision 0067: with 200 pods the host holds thousands; CRIU's restore clones the namespace it
/// runs in, makes the copy private, and detaches it again, all on a connection's critical path).
///
/// ``enter()`` runs on a thread of its own (its file system attributes are its own, see
/// ``Threads/runOnNewThread(fileCreationMask:_:)``): it moves that thread into a new mount
/// namespace and makes a new root there from bind mounts of
/// - `/`, and every mount that one of ``paths`` lies on (each alone, not what is mounted below it);
/// - each of ``trees`` with every mount below it (`/proc`, `/sys`, `/dev`);
/// all private (the host's mount events do not reach them); then
/// - each of ``bound`` at its own path, which keeps its propagation (a slave of the host mount's
///   peer group when that one is shared): CRIU copies the sharing of an external mount from its
///   source (`move_mount(MOVE_MOUNT_SET_GROUP)`), which fails on a private source;
/// and pivots into it, detaching the rest. Processes the thread spawns afterwards start there; the
/// namespace lives as long as one of them does. Every path keeps the same name as on the host.
public struct ConfinedMountNamespace: Sendable, Equatable {
    /// Paths that resolve as on the host (files, folders): the mounts they lie on are kept.
    public var paths: [String]
    /// Folders kept with every mount below them.
    public var trees: [String]
    /// Paths bound at their own name with their propagation kept; `recursive` with every mount
    /// below them.
    public var bound: [Bound]
    /// An empty folder on the host: the new root's mount point while it is assembled (only in the
    /// new namespace; the folder itself stays empty).
    public var assemblyFolder: String

    /// A path bound with its propagation kept.
    public struct Bound: Sendable, Equatable {
        /// The path (a file or a folder).
        public var path: String
        /// With every mount below it.
        public var recursive: Bool

        /// Names a bound path.
        public init(_ path: String, recursive: Bool = false) {
            self.path = path
            self.recursive = recursive
        }
    }

    /// Describes a namespace; see the type's documentation for what each list keeps.
    public init(paths: [String], trees: [String] = ["/proc", "/sys", "/dev"], bound: [Bound], assemblyFolder: String) {
        self.paths = paths
        self.trees = trees
        self.bound = bound
        self.assemblyFolder = assemblyFolder
    }

    /// One bind mount of the plan: `path` on the host bound at the same path in the new root.
    public struct Bind: Sendable, Equatable, CustomStringConvertible {
        /// The path, the same on both sides.
        public var path: String
        /// `MS_REC`: with the mounts below it.
        public var recursive: Bool

        /// "/proc (recursive)".
        public var description: String { recursive ? "\(path) (recursive)" : path }
    }

    /// The bind mounts that make the new root, in order (parents before children): first the
    /// private ones (`/` first), then the ``bound`` ones. Pure: `mountPoints` are the caller's
    /// mount points (mountinfo field 5), the paths already resolved (no symbolic links).
    public static func plan(
        paths: [String],
        trees: [String],
        bound: [Bound],
        mountPoints: [String]
    ) -> (privateBinds: [Bind], boundBinds: [Bind]) {
        let points = Set(mountPoints)
        func depth(_ p: String) -> Int { p == "/" ? 0 : p.split(separator: "/").count }
        func isWithin(_ p: String, _ folder: String) -> Bool {
            folder == "/" || p == folder || p.hasPrefix(folder + "/")
        }
        /// The mount points at `p` and above it (a walk up its folders: a node has thousands of
        /// mount points).
        func chain(_ p: String) -> [String] {
            var out = points.contains("/") ? ["/"] : []
            var prefix = ""
            for part in p.split(separator: "/") {
                prefix += "/" + part
                if points.contains(prefix) { out.append(prefix) }
            }
            return out
        }
        func parent(_ p: String) -> String {
            let up = FilePath(p).removingLastComponent().string
            return up.isEmpty ? "/" : up
        }
        var plain = Set<String>(["/"])
        for p in paths { plain.formUnion(chain(p)) }
        for t in trees where t != "/" { plain.formUnion(chain(parent(t))) }
        for b in bound where b.path != "/" { plain.formUnion(chain(parent(b.path))) }
        let recursive = trees.filter { $0 != "/" }
        // A mount inside a tree comes with the tree.
        plain = plain.filter { p in p == "/" || !recursive.contains { isWithin(p, $0) } }
        plain.subtract(recursive)
        var privateBinds = plain.map { Bind(path: $0, recursive: false) }
        for t in Set(recursive) where !recursive.contains(where: { $0 != t && isWithin(t, $0) }) {
            privateBinds.append(Bind(path: t, recursive: true))
        }
        func ordered(_ binds: [Bind]) -> [Bind] {
            binds.map { (depth($0.path), $0) }.sorted { ($0.0, $0.1.path) < ($1.0, $1.1.path) }.map(\.1)
        }
        var seen = Set<String>()
        let boundBinds = bound.filter { $0.path != "/" && seen.insert($0.path).inserted }.map {
            Bind(path: $0.path, recursive: $0.recursive)
        }
        return (ordered(privateBinds), ordered(boundBinds))
    }

    /// Why ``enter()`` failed, and whether the thread is back in its namespace.
    public struct Failure: Error, Sendable, CustomStringConvertible {
        /// The call that failed.
        public var error: SystemError
        /// The thread went back to the namespace it was in (false: it is in a half-made one, and
        /// must spawn nothing).
        public var wentBack: Bool

        /// "mount … failed: …", and whether the thread went back.
        public var description: String {
            wentBack ? "\(error)" : "\(error); the thread could not go back to its mount namespace"
        }
    }

    /// What ``enter()`` made.
    public struct Entered: Sendable {
        /// The mounts of the new namespace.
        public var mounts: Int
        /// The bind mounts made, in order.
        public var binds: [Bind]
    }

    /// Moves the calling thread into a new mount namespace holding only the planned mounts (see
    /// the type's documentation). Paths that do not exist are left out; symbolic links in them are
    /// resolved first. On failure the thread goes back to the namespace it was in.
    ///
    /// - Precondition: the calling thread's file system attributes are its own
    ///   (`unshare(CLONE_FS)`), and nothing else runs on it: its root and working directory change.
    /// - Returns: the new namespace's mount count and the binds made.
    /// - Throws: ``Failure`` naming the call that failed (`unshare`, `mount`, `pivot_root`,
    ///   `umount2`), and whether the thread went back to its namespace.
    public func enter() throws(Failure) -> Entered {
        func resolved(_ p: String) -> String? {
            guard let r = realpath(p, nil) else { return nil }
            defer { free(r) }
            return String(cString: r)
        }
        let folder = assemblyFolder
        let original: SharedDescriptor
        let originalDirectory: SharedDescriptor
        let privateBinds: [Bind]
        let boundBinds: [Bind]
        do throws(SystemError) {
            // This thread's namespace (`/proc/self` would be the main thread's).
            let hostMountPoints = MountInfo.mountPoints(in: try Files.readText(FilePath("/proc/thread-self/mountinfo")))
            (privateBinds, boundBinds) = Self.plan(
                paths: paths.compactMap(resolved),
                trees: trees.compactMap(resolved),
                bound: bound.compactMap { b in resolved(b.path).map { Bound($0, recursive: b.recursive) } },
                mountPoints: hostMountPoints
            )
            original = SharedDescriptor(try OwnedDescriptor.open(FilePath("/proc/thread-self/ns/mnt"), O_RDONLY))
            originalDirectory = SharedDescriptor(try OwnedDescriptor.open(FilePath("."), O_RDONLY | O_DIRECTORY))
            try systemCall("unshare", "CLONE_NEWNS") { czpsystem_unshare_mount_namespace() }
        } catch {
            throw Failure(error: error, wentBack: true)
        }
        defer {
            original.close()
            originalDirectory.close()
        }
        do throws(SystemError) {
            // Nothing made here reaches the host; the host's mount events still reach the copies
            // until they are made private below.
            try MountPoints.mount(source: "", target: "/", type: nil, flags: UInt(MS_REC | MS_SLAVE), data: nil)
            for bind in privateBinds {
                try MountPoints.mount(
                    source: bind.path,
                    target: bind.path == "/" ? folder : folder + bind.path,
                    type: nil,
                    flags: UInt(MS_BIND) | (bind.recursive ? UInt(MS_REC) : 0),
                    data: nil
                )
            }
            try MountPoints.mount(source: "", target: folder, type: nil, flags: UInt(MS_REC | MS_PRIVATE), data: nil)
            for bind in boundBinds {
                try MountPoints.mount(
                    source: bind.path,
                    target: folder + bind.path,
                    type: nil,
                    flags: UInt(MS_BIND) | (bind.recursive ? UInt(MS_REC) : 0),
                    data: nil
                )
            }
            try systemCall("chdir", folder) { chdir(folder) }
            // pivot_root(".", "."): the old root ends up stacked on the new one, and is detached
            // with everything below it (as runc does for a container's root).
            try systemCall("pivot_root", folder) { czpsystem_pivot_root(".", ".") }
            try systemCall("umount2", "the old root") { umount2(".", CInt(MNT_DETACH)) }
            try systemCall("chdir", "/") { chdir("/") }
        } catch {
            // Back to where the thread was: setns also resets its root and working directory to
            // the namespace's root.
            let fd = original.rawValue
            let back =
                (try? systemCall("setns", "the original mount namespace") {
                    czpsystem_setns(fd, czpsystem_clone_newns())
                }) != nil
            let cwd = originalDirectory.rawValue
            _ = try? systemCall("fchdir", "the original directory") { fchdir(cwd) }
            throw Failure(error: error, wentBack: back)
        }
        let mounts =
            (try? Files.readText(FilePath("/proc/thread-self/mountinfo"))).map {
                MountInfo.mountPoints(in: $0).count
            } ?? 0
        return Entered(mounts: mounts, binds: privateBinds + boundBinds)
    }
}

extension MountPoints {
    /// Runs `body` on a new thread in a new mount namespace, a copy of the caller's whose mounts
    /// are slaves of the caller's (what `body` mounts or unmounts stays in the copy), and waits
    /// for it. The copy goes away with the thread and the last process started from it. For
    /// tests that need a namespace with many mounts.
    /// - Parameter body: the work, run inside the copy.
    /// - Returns: what `body` returned.
    /// - Throws: ``SystemError`` naming `unshare` or `mount` (`EPERM` without CAP_SYS_ADMIN).
    public static func performInNamespaceCopy<T>(_ body: () -> T) throws(SystemError) -> T {
        try Threads.runOnNewThread { () -> Result<T, SystemError> in
            Result { () throws(SystemError) -> T in
                try systemCall("unshare", "CLONE_NEWNS") { czpsystem_unshare_mount_namespace() }
                try mount(source: "", target: "/", type: nil, flags: UInt(MS_REC | MS_SLAVE), data: nil)
                return body()
            }
        }.get()
    }

    /// This thread's mounts (`/proc/thread-self/mountinfo`: a thread may have a mount namespace
    /// of its own, see ``performInNamespaceCopy(_:)``).
    /// - Throws: ``SystemError`` when mountinfo cannot be read.
    public static func ofThisThread() throws(SystemError) -> [MountInfo] {
        MountInfo.parse(try Files.readText(FilePath("/proc/thread-self/mountinfo")))
    }
}
