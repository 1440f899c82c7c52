import SystemPackage

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// One line of `/proc/<pid>/mountinfo` (proc(5)), with the kernel's octal escapes decoded.
///
/// ```
/// 36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
/// (1)(2) (3)   (4)   (5)      (6)      (7)   (8) (9)    (10)         (11)
/// ```
/// The kernel writes space, tab, newline and backslash (and `#` in the source) inside a field as
/// `\ooo`, e.g. a mount point `/run/my dir` as `/run/my\040dir`.
public struct MountInfo: Sendable, Hashable {
    /// Field 1: the mount's unique ID.
    public var mountID: Int
    /// Field 2: the parent mount's ID.
    public var parentID: Int
    /// Field 3: `major:minor` of the filesystem's device.
    public var device: String
    /// Field 4: the path inside the filesystem that is mounted (`/` for the whole filesystem).
    public var root: String
    /// Field 5: the mount point, relative to the reading process's root.
    public var mountPoint: String
    /// Field 6: per-mount options, e.g. `rw,nosuid,relatime`.
    public var mountOptions: String
    /// Fields 7…: optional fields such as `shared:1` or `master:2`.
    public var optionalFields: [String]
    /// The filesystem type, e.g. `tmpfs`, `cgroup2`.
    public var fsType: String
    /// The source, e.g. `/dev/sda1` or `tmpfs`.
    public var source: String
    /// The superblock options, e.g. `rw,size=65536k,mode=755`.
    public var superOptions: String

    /// Creates an entry from its fields (already unescaped).
    public init(
        mountID: Int,
        parentID: Int,
        device: String,
        root: String,
        mountPoint: String,
        mountOptions: String,
        optionalFields: [String] = [],
        fsType: String,
        source: String,
        superOptions: String
    ) {
        self.mountID = mountID
        self.parentID = parentID
        self.device = device
        self.root = root
        self.mountPoint = mountPoint
        self.mountOptions = mountOptions
        self.optionalFields = optionalFields
        self.fsType = fsType
        self.source = source
        self.superOptions = superOptions
    }

    /// Parses one line; nil when it is not a mountinfo line (too few fields, no ` - ` separator
    /// after field 6, IDs that are not numbers).
    /// - Parameter line: the line, without its newline.
    public init?(line: Substring) {
        let f = line.split(separator: " ", omittingEmptySubsequences: false)
        guard f.count >= 10, let id = Int(f[0]), let parent = Int(f[1]) else { return nil }
        // The separator comes after the optional fields; fields 4 and 5 (escaped) may themselves
        // be "-", so search from field 7 on.
        guard let dash = f[6...].firstIndex(of: "-"), f.count >= dash + 4 else { return nil }
        self.init(
            mountID: id,
            parentID: parent,
            device: String(f[2]),
            root: Self.unescape(f[3]),
            mountPoint: Self.unescape(f[4]),
            mountOptions: String(f[5]),
            optionalFields: f[6..<dash].map(String.init),
            fsType: Self.unescape(f[dash + 1]),
            source: Self.unescape(f[dash + 2]),
            superOptions: Self.unescape(f[dash + 3])
        )
    }

    /// Parses a whole mountinfo text; lines that do not parse are skipped.
    /// - Parameter text: the content of a mountinfo file.
    public static func parse(_ text: String) -> [MountInfo] {
        text.split(separator: "\n").compactMap { MountInfo(line: $0) }
    }

    /// The mount points (field 5, unescaped) of a whole mountinfo text, and nothing else: a
    /// node's table has thousands of lines, and this reads them without parsing every field.
    /// - Parameter text: the content of a mountinfo file.
    public static func mountPoints(in text: String) -> [String] {
        var out: [String] = []
        for line in text.utf8.split(separator: UInt8(ascii: "\n")) {
            var field = 0
            var start = line.startIndex
            var i = line.startIndex
            while i < line.endIndex {
                if line[i] == UInt8(ascii: " ") {
                    if field == 4 { break }
                    field += 1
                    start = line.index(after: i)
                }
                i = line.index(after: i)
            }
            guard field == 4, start < i else { continue }
            out.append(unescape(Substring(line[start..<i])))
        }
        return out
    }

    /// Reads `/proc/<pid>/mountinfo`, or `/proc/self/mountinfo` when `pid` is nil.
    /// - Parameter pid: the process whose mount namespace (and root) to read.
    /// - Throws: ``SystemError`` when the file cannot be read (the process is gone).
    public static func read(pid: Int32? = nil) throws(SystemError) -> [MountInfo] {
        let path = pid.map { "/proc/\($0)/mountinfo" } ?? "/proc/self/mountinfo"
        return parse(try Files.readText(FilePath(path)))
    }

    /// The first cgroup v2 mount point (the unified hierarchy, `/sys/fs/cgroup` or
    /// `/sys/fs/cgroup/unified` on a hybrid host); nil when there is none.
    /// - Throws: ``SystemError`` when mountinfo cannot be read.
    public static func cgroup2MountPoint() throws(SystemError) -> String? {
        try read().first { $0.fsType == "cgroup2" }?.mountPoint
    }

    /// Decodes the kernel's `\ooo` escapes of a mountinfo field (proc(5); `seq_escape`). A
    /// backslash not followed by three octal digits stays as it is.
    /// - Parameter field: the raw field.
    public static func unescape(_ field: Substring) -> String {
        guard field.contains("\\") else { return String(field) }
        let bytes = Array(field.utf8)
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count)
        var i = 0
        while i < bytes.count {
            if bytes[i] == UInt8(ascii: "\\"), i + 3 < bytes.count,
                let value = octalByte(bytes[i + 1], bytes[i + 2], bytes[i + 3])
            {
                out.append(value)
                i += 4
            } else {
                out.append(bytes[i])
                i += 1
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    private static func octalByte(_ a: UInt8, _ b: UInt8, _ c: UInt8) -> UInt8? {
        let zero = UInt8(ascii: "0")
        let seven = UInt8(ascii: "7")
        guard (zero...UInt8(ascii: "3")).contains(a), (zero...seven).contains(b), (zero...seven).contains(c) else {
            return nil
        }
        return (a - zero) << 6 | (b - zero) << 3 | (c - zero)
    }
}

/// `mount(2)`, `umount2(2)` and the mount points under a folder.
public enum MountPoints {
    /// Mount points of this process's mount namespace under `prefix` (which should end in "/"),
    /// deepest first (the order to unmount them in); empty when mountinfo cannot be read.
    /// - Parameter prefix: the folder whose mounts are wanted.
    public static func under(_ prefix: String) -> [String] {
        let all = (try? MountInfo.read()) ?? []
        return all.map(\.mountPoint).filter { $0.hasPrefix(prefix) }.sorted { $0.count > $1.count }
    }

    /// `mount(source, target, type, flags, data)`.
    /// - Parameters:
    ///   - source: the device or folder (empty for a remount).
    ///   - target: the mount point.
    ///   - type: the filesystem type, or nil (bind mounts, remounts).
    ///   - flags: `MS_*` flags.
    ///   - data: filesystem options, or nil.
    /// - Throws: ``SystemError`` naming the type, source and target.
    public static func mount(
        source: String,
        target: String,
        type: String?,
        flags: UInt,
        data: String?
    ) throws(SystemError) {
        try systemCall("mount", "\(type ?? "") \(source) on \(target)") {
            switch (type, data) {
            case (let type?, let data?): return Glibc.mount(source, target, type, flags, data)
            case (let type?, nil): return Glibc.mount(source, target, type, flags, nil)
            case (nil, let data?): return Glibc.mount(source, target, nil, flags, data)
            case (nil, nil): return Glibc.mount(source, target, nil, flags, nil)
            }
        }
    }

    /// Detaches the mount at `target` (`umount2(MNT_DETACH)`); `EINVAL` (not a mount point) and
    /// `ENOENT` count as done.
    /// - Parameter target: the mount point.
    /// - Throws: ``SystemError`` for other errors (`EPERM`, `EBUSY`).
    public static func unmount(_ target: String) throws(SystemError) {
        do throws(SystemError) {
            try systemCall("umount2", target) { umount2(target, CInt(MNT_DETACH)) }
        } catch  where error.errno == .invalidArgument || error.errno == .noSuchFileOrDirectory {
            return
        }
    }
}
