import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A failure of a child process or of a system call the harness made; names the command and why.
struct BenchError: Error, CustomStringConvertible {
    /// What failed, with its inputs and the reason.
    var description: String
    init(_ description: String) { self.description = description }
}

/// The standard streams a spawned child gets.
enum ChildStdio {
    /// stdout and stderr captured into memory (for short helper commands like `ip` or `du`).
    case captured
    /// Fresh pipes that the harness holds, as a shim would: the write ends of stdout/stderr go to
    /// the child (and to the container it starts), their read ends are drained into `log` by a
    /// thread until every writer is gone. stdin is a pipe whose write end the harness keeps open.
    case containerPipes(log: String)
}

/// The result of a finished child process.
struct ChildResult {
    /// The exit status (128 + signal number when it was killed by a signal).
    var status: Int32
    /// Captured stdout (only with `.captured`).
    var stdout: String
    /// Captured stderr (only with `.captured`).
    var stderr: String
}

/// Write ends of stdin pipes handed to containers; closed when the container is removed.
final class HeldStdin: Sendable {
    private let fd: Int32
    init(fd: Int32) { self.fd = fd }
    deinit { _ = Glibc.close(fd) }
}

/// Spawns `argv` (looked up on PATH), waits for it and returns its status and captured output.
/// With `.containerPipes` the pipes outlive the child: the container keeps its ends.
func spawnAndWait(_ argv: [String], stdio: ChildStdio = .captured) throws -> (ChildResult, HeldStdin?) {
    precondition(!argv.isEmpty, "empty argv")
    var inPipe: [Int32] = [-1, -1]
    var outPipe: [Int32] = [-1, -1]
    var errPipe: [Int32] = [-1, -1]
    // pipe2 is not visible without _GNU_SOURCE; the harness spawns from one thread only, so
    // setting close-on-exec right after pipe() cannot leak into a concurrent spawn.
    for i in 0..<3 {
        let ok = i == 0 ? pipe(&inPipe) : i == 1 ? pipe(&outPipe) : pipe(&errPipe)
        guard ok == 0 else { throw BenchError("pipe for \(argv[0]): \(String(cString: strerror(errno)))") }
    }
    for fd in inPipe + outPipe + errPipe { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_adddup2(&actions, inPipe[0], 0)
    posix_spawn_file_actions_adddup2(&actions, outPipe[1], 1)
    posix_spawn_file_actions_adddup2(&actions, errPipe[1], 2)

    let cArgs = argv.map { strdup($0) } + [nil]
    defer { for p in cArgs { free(p) } }
    var pid: pid_t = 0
    let rc = posix_spawnp(&pid, argv[0], &actions, nil, cArgs, environ)
    _ = Glibc.close(inPipe[0])
    _ = Glibc.close(outPipe[1])
    _ = Glibc.close(errPipe[1])
    guard rc == 0 else {
        for fd in [inPipe[1], outPipe[0], errPipe[0]] { _ = Glibc.close(fd) }
        throw BenchError("spawning \(argv.joined(separator: " ")): \(String(cString: strerror(rc)))")
    }

    switch stdio {
    case .captured:
        _ = Glibc.close(inPipe[1])
        // Read both streams on two threads so neither pipe can fill up and block the child.
        let errBox = OutputBox()
        let errFD = errPipe[0]
        let errThread = Thread {
            errBox.set(readAll(errFD))
            _ = Glibc.close(errFD)
        }
        errThread.start()
        let out = readAll(outPipe[0])
        _ = Glibc.close(outPipe[0])
        let status = try waitForExit(pid, argv)
        errBox.waitUntilSet()
        return (ChildResult(status: status, stdout: out, stderr: errBox.value), nil)
    case .containerPipes(let log):
        let held = HeldStdin(fd: inPipe[1])
        for fd in [outPipe[0], errPipe[0]] { drain(fd, into: log) }
        let status = try waitForExit(pid, argv)
        return (ChildResult(status: status, stdout: "", stderr: ""), held)
    }
}

/// Spawns a helper command with captured output; throws unless it exits 0.
@discardableResult
func runChecked(_ argv: [String]) throws -> String {
    let (r, _) = try spawnAndWait(argv)
    guard r.status == 0 else {
        throw BenchError(
            "\(argv.joined(separator: " ")) exited \(r.status): \(r.stderr.trimmingCharacters(in: .whitespacesAndNewlines))"
        )
    }
    return r.stdout
}

/// Runs a helper command and ignores its failure (cleanup of things that may not exist).
func runIgnoringFailure(_ argv: [String]) {
    _ = try? spawnAndWait(argv)
}

private func waitForExit(_ pid: pid_t, _ argv: [String]) throws -> Int32 {
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 {
        if errno == EINTR { continue }
        throw BenchError("waitpid for \(argv[0]): \(String(cString: strerror(errno)))")
    }
    let termsig = status & 0x7f
    return termsig == 0 ? (status >> 8) & 0xff : 128 + termsig
}

private func readAll(_ fd: Int32) -> String {
    var data = [UInt8]()
    var buf = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = read(fd, &buf, buf.count)
        if n > 0 {
            data.append(contentsOf: buf[0..<n])
            continue
        }
        if n < 0 && errno == EINTR { continue }
        break
    }
    return String(decoding: data, as: UTF8.self)
}

/// Copies everything from `fd` into the file `path` (appending) on a background thread until EOF.
private func drain(_ fd: Int32, into path: String) {
    Thread {
        let out = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
        var buf = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = read(fd, &buf, buf.count)
            if n > 0 {
                if out >= 0 { _ = buf.withUnsafeBytes { write(out, $0.baseAddress, n) } }
                continue
            }
            if n < 0 && errno == EINTR { continue }
            break
        }
        if out >= 0 { _ = Glibc.close(out) }
        _ = Glibc.close(fd)
    }.start()
}

/// A string written once by one thread and read by another after `waitUntilSet`.
private final class OutputBox: Sendable {
    private let stored = Mutex<String?>(nil)
    private let ready = DispatchSemaphore(value: 0)
    func set(_ s: String) {
        stored.withLock { $0 = s }
        ready.signal()
    }
    func waitUntilSet() { ready.wait() }
    var value: String { stored.withLock { $0 ?? "" } }
}

/// Milliseconds elapsed since `start`.
func millis(since start: ContinuousClock.Instant) -> Double {
    let d = ContinuousClock.now - start
    return Double(d.components.seconds) * 1000 + Double(d.components.attoseconds) / 1e15
}
