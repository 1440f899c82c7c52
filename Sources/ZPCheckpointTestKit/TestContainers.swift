// Test and benchmark support for ZPCheckpoint (like NIOTestUtils): OCI bundles for busybox and
// nginx rootfs folders, runc driven through its CLI with stdio pipes the caller owns, network
// namespaces, and HTTP probes. Not for production use.

import Foundation
import SystemPackage
import ZPCheckpoint
import ZPSystem
import ZPTestSupport

/// The stdio pipes of a container: the container gets `containerSide`, the caller keeps both.
/// A thread drains stdout/stderr so the container never blocks on a full pipe.
public final class ContainerStdio {
    /// Container ends: stdin read end, stdout write end, stderr write end.
    public let containerSide: [SharedDescriptor]
    /// Caller ends: stdin write end, stdout read end, stderr read end.
    public let callerSide: [SharedDescriptor]
    private var closed = false

    /// Creates three pipes and starts draining.
    public init() throws {
        var c: [SharedDescriptor] = []
        var h: [SharedDescriptor] = []
        for i in 0..<3 {
            let ends = try OwnedDescriptor.pipe()
            let r = SharedDescriptor(ends.readEnd)
            let w = SharedDescriptor(ends.writeEnd)
            if i == 0 {
                c.append(r)
                h.append(w)
            } else {
                c.append(w)
                h.append(r)
            }
        }
        containerSide = c
        callerSide = h
        for fd in h.dropFirst() {
            let t = Thread {
                var buf = [UInt8](repeating: 0, count: 65536)
                while true {
                    let n = buf.withUnsafeMutableBytes { read(fd.rawValue, $0.baseAddress, $0.count) }
                    if n <= 0 { break }
                }
            }
            t.start()
        }
    }

    /// Closes every end (the drain threads see EOF once the container is gone too).
    public func close() {
        guard !closed else { return }
        closed = true
        for fd in containerSide { fd.close() }
        callerSide[0].close()
        // The read ends stay open while their drain threads read them (closing them here could
        // race a drain thread's read on a reused number); each closes when its thread ends.
    }
}

/// A workload for a test container.
public enum TestWorkload: String, Sendable, CaseIterable {
    /// busybox httpd on port 8080 serving /www, with a CGI counter kept in the container's tmpfs.
    case busybox
    /// nginx (master as root, 2 workers as www-data) on port 80.
    case nginx

    /// The port it listens on.
    public var port: UInt16 { self == .busybox ? 8080 : 80 }
    /// The path that proves it answers.
    public var probePath: String { self == .busybox ? "/cgi-bin/count" : "/" }
}

/// A runc container for tests and benchmarks: bundle, netns, stdio pipes, cgroup path.
public final class TestContainer {
    /// The workload.
    public let workload: TestWorkload
    /// runc's container id.
    public let id: String
    /// The bundle folder (config.json, scratch).
    public let bundle: FilePath
    /// The container's network namespace.
    public let netns: TestNetns
    /// The stdio pipes.
    public private(set) var stdio: ContainerStdio
    /// runc's state root.
    public let runcRoot: FilePath
    /// The rootfs folder.
    public let rootfs: String

    /// The ZPCheckpoint handle.
    public var container: RuncContainer { RuncContainer(id: id, runcRoot: runcRoot) }

    /// A pod-like sandbox: IPC and UTS namespaces held by bind mounts under /run/<id>-sandbox, which
    /// the container joins by path (as Kubernetes containers join the pause container's).
    public let sandboxDir: String?

    /// Creates the bundle, netns and stdio pipes (and the sandbox namespaces when `podSandbox`);
    /// starts nothing. `scripts/rootfs.sh` under `repoRoot` provides the rootfs folder.
    /// - Parameter extraMounts: OCI mounts appended to the spec's (e.g. a host tmpfs bound in the
    ///   way kubelet binds a secret volume).
    public init(
        _ workload: TestWorkload,
        repoRoot: String,
        runcRoot: FilePath = "/run/runc",
        annotations: [String: String] = [:],
        podSandbox: Bool = false,
        extraMounts: [[String: Any]] = []
    ) throws {
        self.workload = workload
        id = uniqueName("zpck-\(workload.rawValue)")
        if podSandbox {
            let dir = "/run/\(id)-sandbox"
            try shell(
                """
                mkdir -p \(dir) && mount --bind \(dir) \(dir) && mount --make-private \(dir) \
                && touch \(dir)/ipc \(dir)/uts && unshare --ipc=\(dir)/ipc --uts=\(dir)/uts hostname \(id)-pod
                """
            )
            sandboxDir = dir
        } else {
            sandboxDir = nil
        }
        self.runcRoot = runcRoot
        bundle = FilePath("/tmp/\(id)")
        rootfs =
            try shell("'\(repoRoot)/scripts/rootfs.sh' \(workload.rawValue)", timeout: 900).split(separator: "\n").last
            .map(String.init) ?? ""
        netns = try TestNetns("zpck-\(workload.rawValue)")
        stdio = try ContainerStdio()
        try shell("mkdir -p '\(bundle)/cgi-bin'")
        let cgi = """
            #!/bin/sh
            n=$(cat /tmp/count 2>/dev/null || echo 0)
            n=$((n+1))
            echo $n > /tmp/count
            printf 'Content-Type: text/plain\\r\\n\\r\\ncount=%d httpd=%d\\n' $n $PPID
            """
        try cgi.write(toFile: "\(bundle)/cgi-bin/count", atomically: true, encoding: .utf8)
        try shell("chmod 755 '\(bundle)/cgi-bin/count'")
        try writeConfig(annotations: annotations, extraMounts: extraMounts)
    }

    private func writeConfig(annotations: [String: String], extraMounts: [[String: Any]]) throws {
        let caps = [
            "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW", "CAP_SETGID",
            "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL",
            "CAP_AUDIT_WRITE",
        ]
        let args: [String] =
            workload == .busybox ? ["/bin/httpd", "-f", "-p", "8080", "-h", "/www"] : ["/usr/sbin/nginx"]
        var mounts: [[String: Any]] = [
            ["destination": "/proc", "type": "proc", "source": "proc"],
            [
                "destination": "/dev", "type": "tmpfs", "source": "tmpfs",
                "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
            ],
            [
                "destination": "/dev/pts", "type": "devpts", "source": "devpts",
                "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
            ],
            [
                "destination": "/dev/shm", "type": "tmpfs", "source": "shm",
                "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
            ],
            [
                "destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
                "options": ["nosuid", "noexec", "nodev"],
            ],
            [
                "destination": "/sys", "type": "sysfs", "source": "sysfs",
                "options": ["nosuid", "noexec", "nodev", "ro"],
            ],
            // As containerd's default spec: runc bind-mounts the container's cgroups (v1) here.
            [
                "destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
                "options": ["nosuid", "noexec", "nodev", "relatime", "ro"],
            ],
            ["destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=1777"]],
        ]
        if workload == .busybox {
            mounts.append([
                "destination": "/www/cgi-bin", "type": "bind", "source": "\(bundle)/cgi-bin",
                "options": ["rbind", "ro"],
            ])
        } else {
            for d in ["/run", "/var/lib/nginx", "/var/log/nginx"] {
                mounts.append([
                    "destination": d, "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=755"],
                ])
            }
        }
        mounts += extraMounts
        let config: [String: Any] = [
            "ociVersion": "1.0.2-dev",
            "process": [
                "terminal": false, "user": ["uid": 0, "gid": 0], "args": args,
                "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"], "cwd": "/",
                "capabilities": ["bounding": caps, "effective": caps, "permitted": caps],
                "rlimits": [["type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024]],
                "noNewPrivileges": true,
            ],
            "root": ["path": rootfs, "readonly": true],
            "hostname": sandboxDir == nil ? id : "",
            "mounts": mounts,
            "annotations": annotations,
            "linux": [
                "resources": ["devices": [["allow": false, "access": "rwm"]]],
                "cgroupsPath": "/\(id)",
                "namespaces": [
                    ["type": "pid"], ["type": "network", "path": netns.path],
                    sandboxDir.map { ["type": "ipc", "path": "\($0)/ipc"] } ?? ["type": "ipc"],
                    sandboxDir.map { ["type": "uts", "path": "\($0)/uts"] } ?? ["type": "uts"],
                    ["type": "mount"],
                ],
                "maskedPaths": [
                    "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
                    "/proc/sched_debug", "/sys/firmware", "/proc/scsi",
                ],
                "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
            ],
        ]
        let data = try JSONSerialization.data(withJSONObject: config, options: [.prettyPrinted, .sortedKeys])
        try data.write(to: URL(fileURLWithPath: "\(bundle)/config.json"))
    }

    /// runc with this container's root.
    @discardableResult
    public func runc(_ args: [String]) throws -> (Int32, String) {
        let result = try run(["/usr/sbin/runc", "--root", runcRoot.string] + args)
        return (result.status, result.stdout + result.stderr)
    }

    /// `runc run -d` with the stdio pipes; returns once runc has exited (the container runs).
    public func start() throws {
        try spawnRunc(["run", "-d", "--bundle", bundle.string, id])
    }

    /// Spawns runc with the container's stdio pipes as its stdio and waits for it with waitpid
    /// (Foundation's `Process.waitUntilExit` polls in 50 ms steps, which would distort timings).
    public func spawnRunc(_ args: [String]) throws {
        let log = "\(bundle)/runc-\(args.first ?? "x").log"
        let argv = ["/usr/sbin/runc", "--root", runcRoot.string, "--log", log] + args
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        for (i, fd) in stdio.containerSide.enumerated() {
            posix_spawn_file_actions_adddup2(&actions, fd.rawValue, Int32(i))
        }
        let cargs = argv.map { strdup($0) }
        defer { for p in cargs { free(p) } }
        var pid: pid_t = 0
        let rc = (cargs + [nil]).withUnsafeBufferPointer {
            posix_spawn(&pid, argv[0], &actions, nil, $0.baseAddress!, environ)
        }
        guard rc == 0 else { throw LabError("posix_spawn runc: errno \(rc)") }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) == -1 && errno == EINTR {}
        guard status == 0 else {
            let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
            throw LabError("runc \(args.joined(separator: " ")) exited with status \(status): \(text.suffix(2000))")
        }
    }

    /// The container's status as `runc state` reports it ("running", "stopped", ...).
    public func status() -> String {
        guard let (rc, out) = try? runc(["state", id]), rc == 0,
            let obj = try? JSONSerialization.jsonObject(with: Data(out.utf8)) as? [String: Any]
        else { return "absent" }
        return obj["status"] as? String ?? "unknown"
    }

    /// The init pid runc reports.
    public func initPID() -> Int32? {
        guard let (rc, out) = try? runc(["state", id]), rc == 0,
            let obj = try? JSONSerialization.jsonObject(with: Data(out.utf8)) as? [String: Any]
        else { return nil }
        return (obj["pid"] as? Int).map(Int32.init)
    }

    /// One GET of the workload's probe path.
    public func get(path: String? = nil, timeout: Duration = .seconds(5)) throws -> (status: Int, body: String) {
        try NetworkNamespace.httpGet(
            netns: netns.filePath,
            port: workload.port,
            path: path ?? workload.probePath,
            timeout: timeout
        )
    }

    /// Polls until a GET of `path` (default: the workload's probe path) answers 200; returns the
    /// time it took.
    public func waitForResponse(path: String? = nil, timeout: Duration = .seconds(30)) -> Duration? {
        let start = ContinuousClock.now
        let seconds = Double(timeout.components.seconds) + Double(timeout.components.attoseconds) / 1e18
        let ok = eventually(within: seconds, every: 0.001) {
            (try? get(path: path, timeout: .seconds(2)).status) == 200
        }
        return ok ? ContinuousClock.now - start : nil
    }

    /// The container's processes as (pid inside the container, command name), sorted: equal
    /// before and after a checkpoint when the same processes came back.
    public func processes() -> [String] {
        guard let procs = try? String(contentsOfFile: "/sys/fs/cgroup/pids/\(id)/cgroup.procs", encoding: .utf8) else {
            return []
        }
        return procs.split(separator: "\n").compactMap { hostPID -> String? in
            guard let status = try? String(contentsOfFile: "/proc/\(hostPID)/status", encoding: .utf8) else {
                return nil
            }
            var name = ""
            var nspid = ""
            for line in status.split(separator: "\n") {
                if line.hasPrefix("Name:") { name = line.dropFirst(5).trimmingCharacters(in: .whitespaces) }
                if line.hasPrefix("NSpid:") { nspid = String(line.split(separator: "\t").last ?? "") }
            }
            return "\(nspid):\(name)"
        }.sorted()
    }

    /// The init's mounts as "mount point, fs type, mount options, superblock options" lines, sorted.
    public func mounts() -> [String] {
        guard let pid = initPID(), let mounts = try? MountInfo.read(pid: pid) else { return [] }
        return mounts.map { "\($0.mountPoint) \($0.fsType) \($0.mountOptions) \($0.superOptions)" }.sorted()
    }

    /// Kills and deletes the container (whatever its state), reaps a restored init that is our
    /// child, removes the netns, bundle and cgroups.
    public func destroy() {
        if let pid = initPID() {
            _ = try? runc(["kill", id, "KILL"])
            var st: Int32 = 0
            _ = eventually(within: 10, every: 0.002) { waitpid(pid, &st, WNOHANG) != 0 || kill(pid, 0) != 0 }
        }
        _ = try? runc(["delete", "--force", id])
        _ = try? run(["/bin/umount", "-l", "\(runcRoot)/\(id)/\(PreparedContainerRestore.stagingFolderName)/criu-root"])
        netns.delete()
        if let sandboxDir {
            _ = try? run([
                "/bin/sh", "-c",
                "umount \(sandboxDir)/ipc \(sandboxDir)/uts; umount \(sandboxDir); rm -rf \(sandboxDir)",
            ])
        }
        stdio.close()
        if ProcessInfo.processInfo.environment["ZPCK_KEEP"] == nil { _ = try? run(["/bin/rm", "-rf", bundle.string]) }
    }
}
