import CZPSystem
import SystemPackage

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Another process's descriptor table, seen through `/proc/<pid>/fd` (copies of its descriptors
/// are made with ``ListeningSockets/copy(descriptor:of:)``, `pidfd_getfd(2)`).
public enum ProcessDescriptors {
    /// The link text of a userfaultfd in `/proc/<pid>/fd`.
    public static let userfaultfdLink = "anon_inode:[userfaultfd]"

    /// The numbers of the descriptors of process `pid` whose `/proc/<pid>/fd/<n>` link reads
    /// exactly `target` (e.g. ``userfaultfdLink``), ascending. Empty when the process is gone or
    /// its table cannot be read; a descriptor closed while the table is read is left out.
    public static func numbers(of pid: Int32, linkingTo target: String) -> [CInt] {
        let folder = FilePath("/proc/\(pid)/fd")
        guard let names = try? Files.list(folder) else { return [] }
        var found: [CInt] = []
        for name in names {
            guard let n = CInt(name), (try? Files.readLink(folder.appending(name))) == target else { continue }
            found.append(n)
        }
        return found.sorted()
    }

    /// A copy, in this process, of descriptor `fd` of the process `process` refers to (a pidfd,
    /// ``ListeningSockets/processDescriptor(_:)``, shared): `pidfd_getfd(2)`.
    /// - Throws: ``SystemError`` (`EBADF` when the process closed it or is exiting, `ESRCH` when
    ///   it is gone; not a trap, see ``ListeningSockets/copy(descriptor:of:)``).
    public static func copy(
        descriptor fd: CInt,
        ofProcess process: SharedDescriptor
    ) throws(SystemError) -> OwnedDescriptor {
        try ListeningSockets.copy(descriptor: fd, ofPidfd: process.rawValue)
    }

    /// Whether descriptor `mine` of this process and descriptor `theirs` of process `pid` are the
    /// same open file (`kcmp(2)` `KCMP_FILE`). Nil when it cannot be told (the process or its
    /// descriptor is gone, or the kernel has no kcmp).
    public static func sameFile(_ mine: CInt, as theirs: CInt, of pid: Int32) -> Bool? {
        let r = czpsystem_kcmp_same_file(getpid(), pid, mine, theirs)
        return r < 0 ? nil : r == 0
    }

    /// Whether process `pid` is gone, a zombie, or exiting (`PF_EXITING` in the flags of
    /// `/proc/<pid>/stat`): its descriptors are then being closed by the kernel, not by itself.
    /// Read after a listing of its table, false means every descriptor missing from the listing
    /// was closed by the process itself.
    public static func isEndingOrGone(_ pid: Int32) -> Bool {
        guard let stat = try? Files.readText(FilePath("/proc/\(pid)/stat")),
            let close = stat.lastIndex(of: ")")
        else { return true }
        // After the command: state, ppid, pgrp, session, tty_nr, tpgid, flags, ...
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        guard fields.count > 6, let state = fields[0].first, let flags = UInt64(fields[6]) else { return true }
        let pfExiting: UInt64 = 0x4
        return state == "Z" || state == "X" || flags & pfExiting != 0
    }
}
