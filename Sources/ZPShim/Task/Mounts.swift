import ZPAPI
import ZPSystem

#if canImport(Glibc)
import Glibc
#endif

/// Mounts containerd's rootfs `Mount` list (snapshotter output) on the bundle's rootfs.
enum Mounts {
    /// Mount flags named by fstab-style options; other options go into the data string.
    private static let flagOptions: [String: (set: Bool, flag: UInt)] = [
        "ro": (true, UInt(MS_RDONLY)), "rw": (false, UInt(MS_RDONLY)),
        "bind": (true, UInt(MS_BIND)), "rbind": (true, UInt(MS_BIND) | UInt(MS_REC)),
        "nosuid": (true, UInt(MS_NOSUID)), "suid": (false, UInt(MS_NOSUID)),
        "nodev": (true, UInt(MS_NODEV)), "dev": (false, UInt(MS_NODEV)),
        "noexec": (true, UInt(MS_NOEXEC)), "exec": (false, UInt(MS_NOEXEC)),
        "sync": (true, UInt(MS_SYNCHRONOUS)), "async": (false, UInt(MS_SYNCHRONOUS)),
        "noatime": (true, UInt(MS_NOATIME)), "relatime": (true, UInt(MS_RELATIME)),
        "remount": (true, UInt(MS_REMOUNT)),
    ]

    /// Mounts every entry in order; when one fails, unmounts the ones mounted before it (last first)
    /// and throws, so a failed Create leaves nothing mounted.
    /// - Returns: the mount points in mounting order (``unmountAll(_:)`` takes them back).
    /// - Throws: the ``SystemError`` of the entry that failed.
    static func mountAll(_ specs: [MountSpec], at root: String) throws(SystemError) -> [String] {
        var done: [String] = []
        for spec in specs {
            do {
                try mount(spec, at: root)
            } catch {
                unmountAll(done)
                throw error
            }
            done.append(target(of: spec, at: root))
        }
        return done
    }

    /// Unmounts what ``mountAll(_:at:)`` mounted, last first (each call takes the topmost mount of
    /// its target, so stacked mounts come off one by one). Failures are ignored: best effort.
    static func unmountAll(_ targets: [String]) {
        for target in targets.reversed() { try? MountPoints.unmount(target) }
    }

    /// Where `spec` is mounted below `root`.
    static func target(of spec: MountSpec, at root: String) -> String {
        spec.target.isEmpty ? root : root + "/" + spec.target
    }

    /// Mounts one entry at `root` (or below it, when the entry names a target).
    /// - Throws: ``SystemError`` from `mount(2)`, naming type, source and target.
    static func mount(_ spec: MountSpec, at root: String) throws(SystemError) {
        var flags: UInt = 0
        var data: [String] = []
        for option in spec.options {
            if let known = flagOptions[option] {
                if known.set { flags |= known.flag } else { flags &= ~known.flag }
            } else {
                data.append(option)
            }
        }
        let target = target(of: spec, at: root)
        let type = spec.type == "bind" ? "none" : spec.type
        if spec.type == "bind" { flags |= UInt(MS_BIND) }
        let readOnlyBind = flags & UInt(MS_BIND) != 0 && flags & UInt(MS_RDONLY) != 0
        try MountPoints.mount(
            source: spec.source,
            target: target,
            type: type,
            flags: flags & ~(readOnlyBind ? UInt(MS_RDONLY) : 0),
            data: data.isEmpty ? nil : data.joined(separator: ",")
        )
        if readOnlyBind {
            // A bind mount ignores MS_RDONLY until remounted; never leave it writable.
            do {
                try MountPoints.mount(
                    source: "",
                    target: target,
                    type: "",
                    flags: UInt(MS_BIND) | UInt(MS_REMOUNT) | UInt(MS_RDONLY),
                    data: nil
                )
            } catch {
                try? MountPoints.unmount(target)
                throw error
            }
        }
    }
}
