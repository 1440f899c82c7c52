// Looking at processes through /proc: alive or not, found by command line or network namespace.
import Foundation
import Glibc

/// Whether `pid` names a live process: it exists and is not a zombie (an orphan whose new parent,
/// e.g. this VM's pid 1, has not reaped it yet counts as dead).
public func isAlive(_ pid: Int32) -> Bool {
    guard pid > 0, let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
        let close = stat.lastIndex(of: ")"), stat.index(close, offsetBy: 2) < stat.endIndex
    else { return false }
    let state = stat[stat.index(close, offsetBy: 2)]
    return state != "Z" && state != "X"
}

/// Sends SIGKILL to `pid` and waits up to 10 s until it is gone, reaping it if it is our child
/// (``waitGoneAndReap(_:within:)``).
public func killAndReap(_ pid: Int32) {
    guard pid > 0 else { return }
    kill(pid, SIGKILL)
    waitGoneAndReap(pid)
}

/// Waits up to `seconds` until `pid` is gone, reaping it if it is our child; whether it went.
///
/// A child of ours is waited for until `waitpid` has reaped it: its zombie holds the pid, and a test
/// that restores a process with that pid next (CRIU restores plain processes with their old pid)
/// would fail with "Can't fork for N: File exists". (Until 2026-12-07 `killAndReap` counted a zombie
/// as gone when it turned into one between its `waitpid` and its `/proc` read, and left it
/// unreaped.) A process that is not our child counts as gone once it is a zombie: its parent reaps it.
@discardableResult
public func waitGoneAndReap(_ pid: Int32, within seconds: Double = 10) -> Bool {
    guard pid > 0 else { return true }
    var status: Int32 = 0
    return eventually(within: seconds, every: 0.01) {
        switch waitpid(pid, &status, WNOHANG) {
        case pid: return true  // our child, reaped
        case 0: return false  // our child, not dead yet
        default: return !isAlive(pid)  // ECHILD: not ours
        }
    }
}

/// The command line of `pid` (its NUL-separated `/proc/PID/cmdline`), empty when unreadable.
public func commandLine(of pid: Int32) -> [String] {
    guard let data = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else { return [] }
    return data.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
}

/// Every process id in /proc.
public func allProcesses() -> [Int32] {
    ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).compactMap { Int32($0) }
}

/// Processes whose command line contains every one of `parts`, each as a whole argument or as
/// the last path component of one (`containerd-shim-zeropod-v2` matches `/x/containerd-shim-zeropod-v2`).
public func processes(matching parts: [String]) -> [Int32] {
    allProcesses().filter { pid in
        let args = commandLine(of: pid)
        return parts.allSatisfy { part in args.contains(part) || args.contains { $0.hasSuffix("/" + part) } }
    }
}

/// Live processes whose network namespace is the one at `path` (`/var/run/netns/NAME` or
/// `/proc/PID/ns/net`): the processes of an app in a pod.
public func processes(inNetns path: String) -> [Int32] {
    var st = stat()
    guard stat(path, &st) == 0 else { return [] }
    let link = "net:[\(st.st_ino)]"
    return allProcesses().filter { pid in
        (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/ns/net")) == link && isAlive(pid)
    }
}

/// Whether `pid` holds a perf event file (a descriptor linking to `anon_inode:[perf_event]`).
public func holdsPerfEvent(_ pid: Int32) -> Bool {
    let fds = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd")) ?? []
    return fds.contains {
        (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/fd/\($0)"))
            == "anon_inode:[perf_event]"
    }
}

/// Memory of a process in KiB from `/proc/PID/smaps_rollup`: `Rss`, `Pss` (shared pages divided
/// among their users) and `Anonymous`, as "rss/pss/anon", or "?" when unreadable.
public func memoryKiB(_ pid: Int32?) -> String {
    guard let pid, let text = try? String(contentsOfFile: "/proc/\(pid)/smaps_rollup", encoding: .utf8) else {
        return "?"
    }
    func field(_ name: String) -> String {
        text.split(separator: "\n").first { $0.hasPrefix(name + ":") }?
            .split(separator: " ", omittingEmptySubsequences: true).dropFirst().first.map(String.init) ?? "?"
    }
    return "\(field("Rss"))/\(field("Pss"))/\(field("Anonymous"))"
}
