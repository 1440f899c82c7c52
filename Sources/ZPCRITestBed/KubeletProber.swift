// Kubelet as the node runs it: a process named kubelet (or k3s, which embeds kubelet) in a cgroup
// of its own, probing a pod again and again (issue 18, item 2; decision 0040).
import Foundation
import Glibc
import ZPTestSupport

/// A cgroup v2 folder of the test's own (under the cgroup2 mount: `/sys/fs/cgroup/unified` on
/// these machines, `/sys/fs/cgroup` on most nodes), e.g. `zpcri-<id>/kubelet.service` as systemd
/// makes for kubeadm's kubelet. ``remove()`` (or deinit) removes it once its processes are gone.
public final class TestCgroup: Sendable {
    /// The folder's absolute path.
    public let path: String

    /// Makes `<cgroup2 mount>/<relativePath>` (and its parents).
    /// - Throws: ``LabError`` when there is no cgroup2 mount or the folder cannot be made.
    public init(_ relativePath: String) throws {
        guard let root = Self.cgroup2Root() else { throw LabError("no cgroup2 mount in /proc/self/mountinfo") }
        path = root + "/" + relativePath
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    /// The first cgroup2 mount point.
    public static func cgroup2Root() -> String? {
        let text = (try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8)) ?? ""
        for line in text.split(separator: "\n") {
            let halves = line.components(separatedBy: " - ")
            guard halves.count == 2, halves[1].hasPrefix("cgroup2 ") else { continue }
            let fields = halves[0].split(separator: " ")
            if fields.count > 4 { return String(fields[4]) }
        }
        return nil
    }

    /// The pids in the cgroup.
    public var processes: [Int32] {
        ((try? String(contentsOfFile: path + "/cgroup.procs", encoding: .utf8)) ?? "").split(separator: "\n")
            .compactMap { Int32($0) }
    }

    /// Removes the folder (rmdir), waiting up to 10 s for its processes to be gone; then its
    /// parents up to the first that is not empty.
    public func remove() {
        _ = eventually(within: 10) { rmdir(self.path) == 0 || errno == ENOENT }
        var parent = (path as NSString).deletingLastPathComponent
        while let root = Self.cgroup2Root(), parent.count > root.count, rmdir(parent) == 0 {
            parent = (parent as NSString).deletingLastPathComponent
        }
    }

    deinit { remove() }
}

/// A process probing a pod the way kubelet does, again and again (`scripts/cri/kubelet-prober.py`,
/// copied under the name of the process it plays, so the kernel names the process that; the
/// gRPC probe uses grpcio from the venv that scripts/setup.sh makes). Started from the node's
/// network namespace (this process's). ``stop()`` (or deinit) ends it.
public final class KubeletProber {
    /// One probe's outcome as the prober printed it.
    public struct Probe: Sendable, CustomStringConvertible {
        /// Wall-clock time the probe began (seconds since 1970).
        public var time: Double
        /// `http`, `tcp` or `grpc`.
        public var kind: String
        /// The HTTP status, `ok`, the health status (`SERVING`, ...) or `error <reason>`.
        public var result: String

        /// `12.345 http 204`.
        public var description: String { String(format: "%.3f %@ %@", time, kind, result) }
    }

    /// How the prober's sockets address the pod.
    public enum Family: String, Sendable {
        /// AF_INET sockets.
        case v4 = "4"
        /// AF_INET6 sockets to an IPv6 address.
        case v6 = "6"
        /// AF_INET6 sockets to the IPv4-mapped form of an IPv4 address (`::ffff:a.b.c.d`).
        case mapped
    }

    /// The process name it plays (`kubelet`, `k3s`, ...).
    public let name: String
    /// Its pid.
    public let pid: Int32
    private let process: Process
    private let folder: TemporaryDirectory
    private let output: String

    /// Starts the prober.
    /// - Parameters:
    ///   - processName: the name the process gets (1-15 bytes: the kernel's comm).
    ///   - ip: the pod's IPv4 address (or IPv6 with `family: .v6`).
    ///   - port: the pod's port.
    ///   - http: the path of an HTTP probe, nil for none.
    ///   - tcp: whether to make a TCP probe each round.
    ///   - grpc: whether to make a gRPC health check each round (needs grpcio: ``KubeletProbe/grpcProbeAvailable``).
    ///   - userAgent: the HTTP and gRPC user agent.
    ///   - family: how sockets address the pod.
    ///   - interval: seconds between rounds.
    ///   - timeout: seconds per probe.
    ///   - cgroup: a cgroup v2 folder the process moves itself into before its first probe.
    ///   - count: stop after this many probes of each kind (nil: run until stopped).
    /// - Throws: ``LabError`` when the program cannot start or prints nothing within 10 s.
    public init(
        as processName: String,
        ip: String,
        port: UInt16,
        http: String? = "/",
        tcp: Bool = true,
        grpc: Bool = false,
        userAgent: String = KubeletProbe.userAgent,
        family: Family = .v4,
        interval: Double = 1,
        timeout: Double = 2,
        cgroup: TestCgroup? = nil,
        count: Int? = nil
    ) throws {
        name = processName
        folder = try TemporaryDirectory("zpcri-prober")
        let python = KubeletProbe.grpcProbeAvailable ? KubeletProbe.grpcioPython : "/usr/bin/python3"
        let source = try String(
            contentsOfFile: TestPaths.packageRoot + "/scripts/cri/kubelet-prober.py",
            encoding: .utf8
        )
        let body =
            source.split(separator: "\n", maxSplits: 1, omittingEmptySubsequences: false).last.map(String.init) ?? ""
        let program = try folder.write(processName, "#!\(python)\n" + body)
        guard chmod(program, 0o755) == 0 else { throw LabError("chmod \(program): errno \(errno)") }
        output = folder.path + "/output.log"
        FileManager.default.createFile(atPath: output, contents: nil)
        var arguments = [
            ip, "\(port)", "--user-agent", userAgent, "--family", family.rawValue,
            "--interval", "\(interval)", "--timeout", "\(timeout)",
        ]
        if let http { arguments += ["--http", http] }
        if tcp { arguments.append("--tcp") }
        if grpc { arguments.append("--grpc") }
        if let cgroup { arguments += ["--cgroup", cgroup.path] }
        if let count { arguments += ["--count", "\(count)"] }
        process = Process()
        process.executableURL = URL(fileURLWithPath: program)
        process.arguments = arguments
        let log = try FileHandle(forWritingTo: URL(fileURLWithPath: output))
        process.standardOutput = log
        process.standardError = log
        try process.run()
        pid = process.processIdentifier
        let started = eventually(within: 10) { [output] in
            ((try? String(contentsOfFile: output, encoding: .utf8)) ?? "").contains(" start pid ")
        }
        guard started else {
            killAndReap(pid)
            throw LabError(
                "\(processName) prober printed nothing: \((try? String(contentsOfFile: output, encoding: .utf8)) ?? "")"
            )
        }
    }

    /// One round of kubelet's probes (HTTP and/or TCP) made by a process named `processName` from
    /// the node's network namespace, waited for.
    /// - Returns: the probes, in the order they finished.
    /// - Throws: ``LabError`` when the prober cannot start or does not finish in time.
    public static func once(
        as processName: String = "kubelet",
        ip: String,
        port: UInt16,
        http: String? = "/",
        tcp: Bool = true,
        timeout: Double = 5
    ) throws -> [Probe] {
        let prober = try KubeletProber(
            as: processName,
            ip: ip,
            port: port,
            http: http,
            tcp: tcp,
            timeout: timeout,
            count: 1
        )
        defer { prober.stop() }
        guard eventually(within: timeout * 4 + 10, { !prober.process.isRunning }) else {
            throw LabError("\(processName) prober did not finish one round: \(prober.probes())")
        }
        return prober.probes()
    }

    /// The probes made so far, in order.
    public func probes() -> [Probe] {
        let text = (try? String(contentsOfFile: output, encoding: .utf8)) ?? ""
        return text.split(separator: "\n").compactMap { line in
            let fields = line.split(separator: " ", maxSplits: 2).map(String.init)
            guard fields.count == 3, let time = Double(fields[0]), fields[1] != "start" else { return nil }
            return Probe(time: time, kind: fields[1], result: fields[2])
        }
    }

    /// The probes that began after `time` (seconds since 1970).
    public func probes(after time: Double) -> [Probe] { probes().filter { $0.time > time } }

    /// The process's name as the kernel has it (`/proc/PID/comm`).
    public var kernelName: String {
        ((try? String(contentsOfFile: "/proc/\(pid)/comm", encoding: .utf8)) ?? "").trimmingCharacters(
            in: .whitespacesAndNewlines
        )
    }

    /// Ends the prober (SIGTERM, then SIGKILL after 5 s) and reaps it. Idempotent.
    public func stop() {
        guard process.isRunning else { return }
        kill(pid, SIGTERM)
        if !eventually(within: 5, { !self.process.isRunning }) { killAndReap(pid) }
        process.waitUntilExit()
    }

    deinit {
        stop()
        folder.remove()
    }
}
