import Foundation
import SystemPackage
import ZPCheckpoint

/// An OCI bundle prepared for one workload: a private copy of the cached root filesystem, a
/// `config.json` made by `runc spec` and edited, and the CRIU configuration file it names.
struct Bundle {
    /// The bundle folder (config.json, rootfs/, criu.conf).
    var path: String
    /// Where checkpoint images go (emptied before every checkpoint).
    var imageDir: String { path + "/images" }
    /// CRIU's work folder (logs, restore stats).
    var workDir: String { path + "/criu-work" }
    /// The file the container's stdout and stderr are drained into.
    var logFile: String { path + "/container.log" }

    /// CRIU options for every checkpoint and restore of the bundle, read by runc through the
    /// `org.criu.config` annotation (runc 1.1.5 has no flags for them): established TCP
    /// connections are closed rather than dumped, half-open ones skipped, and CRIU's network lock
    /// (iptables rules, ~100 ms each way) is skipped. `verbosity` sets CRIU's log level: runc asks
    /// for 4 over RPC, and CRIU lets the RPC config file override RPC settings, so both sides of
    /// the comparison log at the same level (the shim's `criu-log-level`).
    /// A workload that `keepsConnections` gets `tcp-established` instead of `tcp-close` (the
    /// network lock stays skipped, as on the shim's side, decision 0045).
    static func criuConfig(logLevel: Int, keepsConnections: Bool = false) -> String {
        (keepsConnections ? "tcp-established\n" : "tcp-close\n")
            + "skip-in-flight\nnetwork-lock skip\nverbosity=\(logLevel)\n"
    }

    /// The bundle's cgroup yard: links to the host's hierarchies, as the shim gives its CRIU for a
    /// dump (decision 0072).
    var cgroupYard: String { path + "/cgroup-yard" }

    /// Names the bundle's cgroup yard in its CRIU configuration (`cgroup-yard`) for a dump, or
    /// takes it out for a restore, as the shim does (decision 0072: only its dumps use one). No
    /// yard (a hierarchy not mounted here) leaves the file without it.
    func useCgroupYard(_ on: Bool) throws {
        let file = path + "/criu.conf"
        var lines = try String(contentsOfFile: file, encoding: .utf8).split(separator: "\n").map(String.init)
        lines.removeAll { $0.hasPrefix("cgroup-yard ") }
        if on, FileManager.default.fileExists(atPath: cgroupYard) { lines.append("cgroup-yard \(cgroupYard)") }
        try (lines.joined(separator: "\n") + "\n").write(toFile: file, atomically: true, encoding: .utf8)
    }

    /// Capabilities a container gets (the common Docker default set).
    static let capabilities = [
        "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW", "CAP_SETGID",
        "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL",
        "CAP_AUDIT_WRITE",
    ]

    /// Copies `rootfs` into a fresh bundle at `path` and writes its config for `workload`.
    static func create(at path: String, rootfs: String, workload: Workload, criuLogLevel: Int) throws -> Bundle {
        runIgnoringFailure(["rm", "-rf", path])
        try runChecked(["mkdir", "-p", path])
        try runChecked(["cp", "-a", "--reflink=auto", rootfs, path + "/rootfs"])
        try runChecked(["runc", "spec", "--bundle", path])
        let bundle = Bundle(path: path)
        _ = CgroupYard.make(at: FilePath(bundle.cgroupYard), forProcess: getpid())
        try criuConfig(logLevel: criuLogLevel, keepsConnections: workload.keepsConnections)
            .write(toFile: path + "/criu.conf", atomically: true, encoding: .utf8)
        let configURL = URL(fileURLWithPath: path + "/config.json")
        guard var spec = try JSONSerialization.jsonObject(with: Data(contentsOf: configURL)) as? [String: Any] else {
            throw BenchError("\(configURL.path): runc spec did not write a JSON object")
        }
        let (uid, gid) = try lookupUser(workload.user, passwd: path + "/rootfs/etc/passwd")
        try edit(&spec, workload: workload, uid: uid, gid: gid, criuConfigPath: path + "/criu.conf")
        let data = try JSONSerialization.data(withJSONObject: spec, options: [.prettyPrinted, .sortedKeys])
        try data.write(to: configURL)
        return bundle
    }

    /// Applies the harness's edits to a `runc spec` document: process (args, env, cwd, user, no
    /// terminal, open-files limit 16384 — runc fails above this machine's hard limit of 20000),
    /// a writable rootfs, a fixed cgroup path (to read its memory), the workload's network namespace
    /// by path, and the CRIU config annotation.
    static func edit(_ spec: inout [String: Any], workload: Workload, uid: Int, gid: Int, criuConfigPath: String) throws
    {
        guard var process = spec["process"] as? [String: Any], var linux = spec["linux"] as? [String: Any],
            let namespaces = linux["namespaces"] as? [[String: Any]]
        else {
            throw BenchError("runc spec output lacks process or linux.namespaces")
        }
        process["terminal"] = false
        process["args"] = workload.args
        process["env"] =
            ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "LANG=C.UTF-8"]
            + workload.env
        process["cwd"] = workload.cwd
        process["user"] = ["uid": uid, "gid": gid]
        process["rlimits"] = [["type": "RLIMIT_NOFILE", "hard": 16384, "soft": 16384]]
        process["capabilities"] = ["bounding": capabilities, "effective": capabilities, "permitted": capabilities]
        process["noNewPrivileges"] = true
        spec["process"] = process
        spec["root"] = ["path": "rootfs", "readonly": false]
        spec["hostname"] = workload.name
        linux["cgroupsPath"] = workload.cgroupsPath
        linux["namespaces"] =
            namespaces.filter { $0["type"] as? String != "network" }
            + [["type": "network", "path": "/var/run/netns/\(workload.netns)"]]
        spec["linux"] = linux
        var annotations = spec["annotations"] as? [String: String] ?? [:]
        annotations["org.criu.config"] = criuConfigPath
        spec["annotations"] = annotations
    }

    /// Finds `user` in an /etc/passwd file and returns its uid and primary gid.
    static func lookupUser(_ user: String, passwd: String) throws -> (Int, Int) {
        let text = try String(contentsOfFile: passwd, encoding: .utf8)
        for line in text.split(separator: "\n") {
            let f = line.split(separator: ":", omittingEmptySubsequences: false)
            if f.count >= 4, f[0] == user, let uid = Int(f[2]), let gid = Int(f[3]) { return (uid, gid) }
        }
        throw BenchError("user '\(user)' not found in \(passwd)")
    }
}

/// Network namespaces and veth links of the benchmark (10.77.x.0/24 per workload).
enum BenchNetwork {
    /// Creates `zpbench-<name>` with eth0 peered to host interface `zpbh<subnet>` (replacing
    /// leftovers of an earlier run).
    static func create(for w: Workload) throws {
        remove(for: w)
        let host = "zpbh\(w.subnet)"
        try runChecked(["ip", "netns", "add", w.netns])
        try runChecked(["ip", "link", "add", host, "type", "veth", "peer", "name", "eth0", "netns", w.netns])
        try runChecked(["ip", "addr", "add", "10.77.\(w.subnet).1/24", "dev", host])
        try runChecked(["ip", "link", "set", host, "up"])
        try runChecked(["ip", "-n", w.netns, "addr", "add", "\(w.address)/24", "dev", "eth0"])
        try runChecked(["ip", "-n", w.netns, "link", "set", "eth0", "up"])
        try runChecked(["ip", "-n", w.netns, "link", "set", "lo", "up"])
    }

    /// Links a workload and its sidecar with a veth pair named eth1 on both sides.
    static func link(_ w: Workload, _ s: Sidecar) throws {
        try runChecked([
            "ip", "-n", w.netns, "link", "add", "eth1", "type", "veth", "peer", "name", "eth1", "netns",
            s.workload.netns,
        ])
        try runChecked(["ip", "-n", w.netns, "addr", "add", s.localAddress, "dev", "eth1"])
        try runChecked(["ip", "-n", s.workload.netns, "addr", "add", s.peerAddress, "dev", "eth1"])
        try runChecked(["ip", "-n", w.netns, "link", "set", "eth1", "up"])
        try runChecked(["ip", "-n", s.workload.netns, "link", "set", "eth1", "up"])
    }

    /// Deletes the namespace (its veth ends, and so their peers, go with it).
    static func remove(for w: Workload) {
        runIgnoringFailure(["ip", "netns", "del", w.netns])
        runIgnoringFailure(["ip", "link", "del", "zpbh\(w.subnet)"])
    }
}
