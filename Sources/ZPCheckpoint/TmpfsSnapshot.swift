// In-process copies of a container's small tmpfs mounts. CRIU archives every tmpfs with
// `tar --gzip` (two fork+execs per mount on dump and again on restore, ~10 ms each on a busy
// node). For small trees of plain files, directories, symlinks and device nodes we copy the tree
// ourselves while CRIU holds the tasks frozen (post-dump), and rebuild it in a fresh tmpfs before
// the restore; CRIU treats the mount as external and binds our tmpfs into place.

import SystemPackage
import ZPCore
import ZPSystem

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// One file of a tmpfs copy.
public struct TmpfsEntry: ProtobufMessage, Equatable {
    /// The kind of file.
    public enum Kind: Int32, Sendable {
        /// A directory.
        case directory = 1
        /// A regular file.
        case regular = 2
        /// A symbolic link.
        case symlink = 3
        /// A character device node.
        case characterDevice = 4
        /// A block device node.
        case blockDevice = 5
    }
    /// Path relative to the mount root ("" for the root itself) (field 1).
    public var path: String
    /// Kind (field 2).
    public var kind: Kind
    /// Permission bits incl. setuid/setgid/sticky (field 3).
    public var mode: UInt32
    /// Owner (field 4).
    public var uid: UInt32
    /// Group (field 5).
    public var gid: UInt32
    /// Modification time, seconds (field 6).
    public var mtimeSeconds: Int64
    /// Modification time, nanoseconds (field 7).
    public var mtimeNanoseconds: Int64
    /// File content (field 8).
    public var content: [UInt8]
    /// Symlink target (field 9).
    public var linkTarget: String
    /// Device number (field 10).
    public var rdev: UInt64

    /// Creates an entry.
    public init(
        path: String,
        kind: Kind,
        mode: UInt32,
        uid: UInt32,
        gid: UInt32,
        mtimeSeconds: Int64,
        mtimeNanoseconds: Int64,
        content: [UInt8] = [],
        linkTarget: String = "",
        rdev: UInt64 = 0
    ) {
        self.path = path
        self.kind = kind
        self.mode = mode
        self.uid = uid
        self.gid = gid
        self.mtimeSeconds = mtimeSeconds
        self.mtimeNanoseconds = mtimeNanoseconds
        self.content = content
        self.linkTarget = linkTarget
        self.rdev = rdev
    }

    /// Writes the entry (proto3-style: defaults skipped).
    public func encode(into w: inout ProtobufWriter) {
        w.writeStringIfNotDefault(field: 1, path)
        w.writeInt32(field: 2, kind.rawValue)
        w.writeUInt32IfNotDefault(field: 3, mode)
        w.writeUInt32IfNotDefault(field: 4, uid)
        w.writeUInt32IfNotDefault(field: 5, gid)
        w.writeInt64IfNotDefault(field: 6, mtimeSeconds)
        w.writeInt64IfNotDefault(field: 7, mtimeNanoseconds)
        w.writeBytesIfNotDefault(field: 8, content)
        w.writeStringIfNotDefault(field: 9, linkTarget)
        w.writeUInt64IfNotDefault(field: 10, rdev)
    }

    /// Decodes an entry.
    /// - Throws: `ProtobufError` for malformed input or an unknown kind.
    public init(decoding r: inout ProtobufReader) throws(ProtobufError) {
        let m = "tmpfs_entry"
        self.init(path: "", kind: .directory, mode: 0, uid: 0, gid: 0, mtimeSeconds: 0, mtimeNanoseconds: 0)
        while let f = try r.nextField() {
            switch f.number {
            case 1: path = try f.string(in: m)
            case 2: kind = try CRIUOptions.enumValue(f, m, Kind.init(rawValue:))
            case 3: mode = try f.uint32(in: m)
            case 4: uid = try f.uint32(in: m)
            case 5: gid = try f.uint32(in: m)
            case 6: mtimeSeconds = try f.int64(in: m)
            case 7: mtimeNanoseconds = try f.int64(in: m)
            case 8: content = Array(try f.bytes(in: m))
            case 9: linkTarget = try f.string(in: m)
            case 10: rdev = try f.uint64(in: m)
            default: break
            }
        }
    }
}

/// The copy of one tmpfs mount: its mount point and files, root first, parents before children.
public struct TmpfsSnapshot: ProtobufMessage, Equatable {
    /// Mount point inside the container (field 1).
    public var mountPoint: String
    /// Files (field 2).
    public var entries: [TmpfsEntry]

    /// Creates a snapshot.
    public init(mountPoint: String, entries: [TmpfsEntry]) {
        self.mountPoint = mountPoint
        self.entries = entries
    }

    /// Writes the snapshot.
    public func encode(into w: inout ProtobufWriter) {
        w.writeString(field: 1, mountPoint)
        for e in entries { w.writeMessage(field: 2, e) }
    }

    /// Decodes a snapshot.
    /// - Throws: `ProtobufError`.
    public init(decoding r: inout ProtobufReader) throws(ProtobufError) {
        let m = "tmpfs_snapshot"
        self.init(mountPoint: "", entries: [])
        while let f = try r.nextField() {
            switch f.number {
            case 1: mountPoint = try f.string(in: m)
            case 2:
                var n = try f.message(in: m)
                entries.append(try TmpfsEntry(decoding: &n))
            default: break
            }
        }
    }

    /// Why a tree cannot be copied in-process (CRIU archives it instead).
    public struct Unsupported: Error, CustomStringConvertible {
        /// The offending path and reason.
        public var description: String
    }

    /// Copies the tree at `root` (e.g. /proc/PID/root/tmp), not crossing into other mounts
    /// (mount points below it are recorded as plain directories).
    /// - Throws: `Unsupported` for sockets, fifos, hard links, or more than `maxBytes` of content.
    public static func capture(mountPoint: String, root: String, maxBytes: Int = 1 << 20) throws -> TmpfsSnapshot {
        var rootStat = stat()
        guard lstat(root, &rootStat) == 0 else { throw Unsupported(description: "\(root): cannot stat") }
        var entries: [TmpfsEntry] = []
        var total = 0
        func walk(_ rel: String, _ st: stat) throws {
            let full = rel.isEmpty ? root : root + "/" + rel
            let kindBits = st.st_mode & S_IFMT
            let mtime = (Int64(st.st_mtim.tv_sec), Int64(st.st_mtim.tv_nsec))
            func entry(_ kind: TmpfsEntry.Kind) -> TmpfsEntry {
                TmpfsEntry(
                    path: rel,
                    kind: kind,
                    mode: UInt32(st.st_mode & 0o7777),
                    uid: st.st_uid,
                    gid: st.st_gid,
                    mtimeSeconds: mtime.0,
                    mtimeNanoseconds: mtime.1
                )
            }
            if kindBits != S_IFDIR && st.st_dev != rootStat.st_dev {
                // A file bind-mounted over a path of this tmpfs: keep an empty placeholder for
                // the mount point, never the mounted file's content.
                entries.append(entry(.regular))
                return
            }
            switch kindBits {
            case S_IFDIR:
                entries.append(entry(.directory))
                guard st.st_dev == rootStat.st_dev else { return }  // a mount point: do not descend
                guard let names = try? Files.list(FilePath(full)) else {
                    throw Unsupported(description: "\(full): cannot open")
                }
                for name in names {
                    let childRel = rel.isEmpty ? name : rel + "/" + name
                    var cst = stat()
                    guard lstat(full + "/" + name, &cst) == 0 else {
                        throw Unsupported(description: "\(childRel): cannot stat")
                    }
                    try walk(childRel, cst)
                }
            case S_IFREG:
                guard st.st_nlink == 1 else { throw Unsupported(description: "\(rel): hard link") }
                total += Int(st.st_size)
                guard total <= maxBytes else { throw Unsupported(description: "more than \(maxBytes) bytes") }
                var e = entry(.regular)
                e.content = try Files.read(FilePath(full))
                entries.append(e)
            case S_IFLNK:
                var e = entry(.symlink)
                guard let target = try? Files.readLink(FilePath(full)) else {
                    throw Unsupported(description: "\(rel): cannot read link")
                }
                e.linkTarget = target
                entries.append(e)
            case S_IFCHR, S_IFBLK:
                var e = entry(kindBits == S_IFCHR ? .characterDevice : .blockDevice)
                e.rdev = UInt64(st.st_rdev)
                entries.append(e)
            default:
                throw Unsupported(description: "\(rel): socket or fifo")
            }
        }
        try walk("", rootStat)
        return TmpfsSnapshot(mountPoint: mountPoint, entries: entries)
    }

    /// Recreates the files under `root` (an empty, freshly mounted tmpfs).
    /// - Throws: `SystemError` naming the failing path.
    public func recreate(at root: String) throws(SystemError) {
        for e in entries {
            let p = e.path.isEmpty ? root : root + "/" + e.path
            switch e.kind {
            case .directory:
                if !e.path.isEmpty { try systemCall("mkdir", p) { mkdir(p, 0o700) } }
            case .regular:
                let fd = try OwnedDescriptor.open(FilePath(p), O_WRONLY | O_CREAT | O_EXCL, mode: 0o600)
                do {
                    try fd.writeAll(e.content)
                } catch {
                    throw SystemError(call: error.call, subject: p, errno: error.errno)
                }
            case .symlink:
                try systemCall("symlink", p) { symlink(e.linkTarget, p) }
            case .characterDevice, .blockDevice:
                let type = e.kind == .characterDevice ? S_IFCHR : S_IFBLK
                try systemCall("mknod", p) { mknod(p, type | 0o600, dev_t(e.rdev)) }
            }
            try systemCall("lchown", p) { lchown(p, e.uid, e.gid) }
            if e.kind != .symlink { try systemCall("chmod", p) { chmod(p, mode_t(e.mode)) } }
        }
        // Times last, children before parents (creating a child changes its parent's mtime).
        for e in entries.reversed() {
            let p = e.path.isEmpty ? root : root + "/" + e.path
            var times = [
                timespec(tv_sec: 0, tv_nsec: (1 << 30) - 2) /* UTIME_OMIT */,
                timespec(tv_sec: Int(e.mtimeSeconds), tv_nsec: Int(e.mtimeNanoseconds)),
            ]
            try systemCall("utimensat", p) { utimensat(AT_FDCWD, p, &times, AT_SYMLINK_NOFOLLOW) }
        }
    }
}

/// All tmpfs copies of one checkpoint (the file `zeropod-tmpfs.pb` in the image directory).
public struct TmpfsSnapshots: ProtobufMessage, Equatable {
    /// The copies (field 1).
    public var mounts: [TmpfsSnapshot]

    /// Creates the set.
    public init(mounts: [TmpfsSnapshot]) { self.mounts = mounts }

    /// Writes the set.
    public func encode(into w: inout ProtobufWriter) {
        for m in mounts { w.writeMessage(field: 1, m) }
    }

    /// Decodes the set.
    /// - Throws: `ProtobufError`.
    public init(decoding r: inout ProtobufReader) throws(ProtobufError) {
        self.init(mounts: [])
        while let f = try r.nextField() {
            if f.number == 1 {
                var n = try f.message(in: "tmpfs_snapshots")
                mounts.append(try TmpfsSnapshot(decoding: &n))
            }
        }
    }
}
