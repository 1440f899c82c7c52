import SystemPackage
import ZPCore
import ZPSystem

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

#if canImport(Glibc)
import Glibc
#endif

/// Checkpoint images left from before the machine booted (docs/decisions/0053-images-after-a-reboot.md).
///
/// After a reboot no scaled-down container comes back from its images: its shim, network
/// namespace, cgroups and runc state are gone, containerd no longer knows its task, and kubelet
/// starts new containers from scratch. Their image folders under `<state-dir>/i` (kept: the state
/// folder is on disk) are stale. Every shim sweeps them when it starts: a container's folder whose
/// modification time is before the boot was written by a shim of an earlier boot, while every
/// folder a running shim uses was created (and written) since the boot.
enum StaleImages {
    /// The boot time in seconds since the Unix epoch (`btime` of `/proc/stat`), nil when unreadable.
    static func bootTime() -> Int64? {
        guard let text = try? Files.readText(FilePath("/proc/stat")) else { return nil }
        for line in text.split(separator: "\n") where line.hasPrefix("btime ") {
            return line.dropFirst("btime ".count).split(whereSeparator: \.isWhitespace).first.flatMap { Int64($0) }
        }
        return nil
    }

    /// Removes every `<state-dir>/i/<namespace>/<container>` folder last modified before `bootTime`
    /// (after unmounting what is mounted inside and killing a `criu lazy-pages` daemon serving it),
    /// and namespace folders left empty.
    /// - Returns: the folders removed.
    @discardableResult
    static func sweep(layout: NodeLayout, bootTime: Int64? = bootTime()) -> [String] {
        guard let bootTime else { return [] }
        var removed: [String] = []
        let namespaces = (try? FileManager.default.contentsOfDirectory(atPath: layout.imageRoot)) ?? []
        for namespace in namespaces {
            let namespaceFolder = layout.imageRoot + "/" + namespace
            for id in (try? FileManager.default.contentsOfDirectory(atPath: namespaceFolder)) ?? [] {
                let folder = namespaceFolder + "/" + id
                var st = stat()
                guard lstat(folder, &st) == 0, st.st_mode & S_IFMT == S_IFDIR, Int64(st.st_mtim.tv_sec) < bootTime
                else { continue }
                for mountPoint in MountPoints.under(folder + "/") { try? MountPoints.unmount(mountPoint) }
                DeleteCommand.killLazyPagesDaemons(serving: folder)
                if (try? FileManager.default.removeItem(atPath: folder)) != nil { removed.append(folder) }
            }
            _ = rmdir(namespaceFolder)  // only when empty
        }
        return removed
    }
}
