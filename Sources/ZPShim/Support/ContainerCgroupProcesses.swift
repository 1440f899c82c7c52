import SystemPackage
import ZPCheckpoint
import ZPSystem

#if canImport(Glibc)
import Glibc
#endif

/// The processes listed in a runc container's cgroups (the folders runc's `state.json` names),
/// for what a restore leaves running outside runc's knowledge: the CRIU worker, which joined them
/// when the restore was prepared, and the tasks CRIU restored so far (runc's state still names the
/// init they are to replace, so `runc delete --force` or `runc kill` would not reach them).
enum ContainerCgroupProcesses {
    /// SIGKILLs every process listed in the cgroups of container `id` under `runcRoot` until they
    /// are empty (5 s at most). A cgroup hierarchy's root (a mount point) is never taken for the
    /// container's own cgroup. Nothing is signalled when runc's state cannot be read.
    /// - Returns: the pids signalled.
    @discardableResult
    static func killAll(id: String, runcRoot: String) -> [Int32] {
        guard let state = try? RuncState(runcRoot: FilePath(runcRoot), id: id) else { return [] }
        let roots = Set(((try? MountInfo.read()) ?? []).map(\.mountPoint))
        let folders = Set(state.cgroupPaths.values.filter { !$0.isEmpty && !roots.contains($0) })
        var signalled: Set<Int32> = []
        let deadline = ContinuousClock.now + .seconds(5)
        while true {
            var listed: Set<Int32> = []
            for folder in folders {
                let text = (try? Files.readText(FilePath(folder + "/cgroup.procs"))) ?? ""
                for pid in text.split(separator: "\n").compactMap({ Int32($0) }) where pid > 1 { listed.insert(pid) }
            }
            if listed.isEmpty || ContinuousClock.now >= deadline { break }
            for pid in listed {
                _ = kill(pid, SIGKILL)
                signalled.insert(pid)
            }
            usleep(10_000)
        }
        return signalled.sorted()
    }
}
