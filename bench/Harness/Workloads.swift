/// One benchmarked container: what to run, where it listens and how its answer is checked.
/// Each workload gets its own network namespace `zpbench-<name>` with `eth0` at 10.77.<subnet>.2/24,
/// peered with host interface `zpbh<subnet>` at 10.77.<subnet>.1.
struct Workload: Sendable {
    /// Short name, also the container id suffix and netns suffix.
    var name: String
    /// The `scripts/rootfs.sh` recipe that builds the root filesystem.
    var recipe: String
    /// A folder inside the recipe's output that holds this container's root (WordPress: web or db).
    var rootfsSubdir: String?
    /// The container's process.
    var args: [String]
    /// Extra environment (PATH is always set).
    var env: [String] = []
    /// Working directory inside the container.
    var cwd: String = "/"
    /// User name from the rootfs's /etc/passwd that the process runs as.
    var user: String = "root"
    /// The TCP port the workload serves on.
    var port: UInt16
    /// The check for a correct answer.
    var probe: Probe
    /// The third octet of its 10.77.x.0/24 link to the host.
    var subnet: Int
    /// How long a cold start may take before the run counts as failed.
    var startDeadline: Duration = .seconds(120)
    /// A container that must run (unmeasured) before this one, e.g. WordPress's database.
    var sidecar: Sidecar?
    /// Whether the workload and its sidecar are also measured checkpointed together (the
    /// cascade); false when the sidecar is only the peer the workload keeps a connection to.
    var measuresCascade = true
    /// Whether its established TCP connections are dumped and restored (CRIU `tcp-established`)
    /// instead of closed; runc's side gets it through the CRIU config file, ours by default
    /// (`zeropod-swift/keep-connections`, decision 0045).
    var keepsConnections = false

    /// The container's address as seen from the host.
    var address: String { "10.77.\(subnet).2" }
    /// Its network namespace name (under /var/run/netns).
    var netns: String { "zpbench-\(name)" }
    /// Its container id.
    var containerID: String { "zpbench-\(name)" }
    /// Its cgroup path (below each cgroup v1 controller's root).
    var cgroupsPath: String { "/zpbench/\(name)" }
    /// True for workloads answering HTTP (those a steady-state wrk run can load).
    var httpURL: String? {
        guard case .http(let path, _, _) = probe else { return nil }
        return "http://\(address):\(port)\(path)"
    }
}

/// A helper container that runs next to a workload for the whole run and is linked to it by an
/// extra veth pair (`eth1` on both sides) carrying a fixed /30. A class, since a workload holds it.
final class Sidecar: Sendable {
    /// The sidecar's own definition (its own netns and host link).
    let workload: Workload
    /// The workload's address on the extra link.
    let localAddress: String
    /// The sidecar's address on the extra link (what the workload is configured to reach).
    let peerAddress: String

    init(workload: Workload, localAddress: String, peerAddress: String) {
        self.workload = workload
        self.localAddress = localAddress
        self.peerAddress = peerAddress
    }
}

extension Workload {
    /// busybox httpd (static, one process, root).
    static let busybox = Workload(
        name: "busybox",
        recipe: "busybox",
        args: ["/bin/httpd", "-f", "-p", "80", "-h", "/www"],
        port: 80,
        probe: .http(path: "/", host: "busybox", expect: "zeropod busybox"),
        subnet: 11
    )

    /// nginx-light: a root master and two www-data workers.
    static let nginx = Workload(
        name: "nginx",
        recipe: "nginx",
        args: ["/usr/sbin/nginx"],
        port: 80,
        probe: .http(path: "/", host: "nginx", expect: "zeropod nginx"),
        subnet: 12
    )

    /// MariaDB as the mysql user, checked with a real query over the MySQL protocol.
    static let mariadb = mariadbWorkload(
        name: "mariadb",
        recipe: "mariadb",
        subdir: nil,
        subnet: 13,
        probe: .mysql(
            user: "bench",
            query: "SELECT v FROM zpbench.t WHERE id = 1",
            expect: "zeropod-mariadb"
        )
    )

    /// The slow-starting JVM server (256 MiB heap written, ~3 s of CPU before it listens).
    static let jvm = Workload(
        name: "jvm",
        recipe: "jvm",
        args: [
            "/usr/bin/java", "-Xms384m", "-Xmx512m", "-XX:+UseSerialGC", "-XX:-UsePerfData",
            // the JDK server writes headers and body in two segments: without TCP_NODELAY,
            // Nagle + delayed ACK add ~40 ms to every keep-alive response under wrk
            "-Dsun.net.httpserver.nodelay=true",
            "-cp", "/opt/zeropod", "ZeropodBench",
        ],
        env: ["ZP_PORT=8080", "ZP_HEAP_MIB=256", "ZP_BURN_MS=3000"],
        port: 8080,
        probe: .http(path: "/", host: "jvm", expect: "zeropod jvm heap=256MiB"),
        subnet: 14
    )

    /// WordPress (Apache prefork + mod_php) with its database in a separate MariaDB container at
    /// 10.78.0.2 (the address baked into the rootfs by scripts/rootfs.sh).
    static let wordpress = Workload(
        name: "wordpress",
        recipe: "wordpress",
        rootfsSubdir: "web",
        args: [
            "/bin/sh", "-c",
            ". /etc/apache2/envvars && mkdir -p \"$APACHE_RUN_DIR\" \"$APACHE_LOCK_DIR\" && exec /usr/sbin/apache2 -DFOREGROUND",
        ],
        port: 80,
        probe: .http(path: "/", host: "10.77.15.2", expect: "zeropod hello"),
        subnet: 15,
        sidecar: Sidecar(
            workload: mariadbWorkload(
                name: "wordpress-db",
                recipe: "wordpress",
                subdir: "db",
                subnet: 16,
                probe: .mysql(
                    user: "bench",
                    query: "SELECT v FROM zpbench.t WHERE id = 1",
                    expect: "zeropod-mariadb"
                )
            ),
            localAddress: "10.78.0.1/30",
            peerAddress: "10.78.0.2/30"
        )
    )

    /// The pooled-app (scripts/testapps/pooled-app.c) holding one pooled connection to a MariaDB
    /// in another network namespace (its sidecar, at 10.78.1.2): every HTTP request makes one query
    /// on that connection, so restore → first response includes the first use of a connection
    /// that went through the checkpoint. The answer must name no reconnect: the pooled connection
    /// survived (runc's side dumps it with `tcp-established`, as the shim does).
    static let pooled = Workload(
        name: "pooled",
        recipe: "pooled",
        args: ["/bin/pooled-app", "mysql", "10.78.1.2", "3306", "8080"],
        port: 8080,
        probe: .http(path: "/", host: "pooled", expect: "reconnects=0"),
        subnet: 17,
        sidecar: Sidecar(
            workload: mariadbWorkload(
                name: "pooled-db",
                recipe: "mariadb",
                subdir: nil,
                subnet: 18,
                probe: .mysql(
                    user: "bench",
                    query: "SELECT v FROM zpbench.t WHERE id = 1",
                    expect: "zeropod-mariadb"
                )
            ),
            localAddress: "10.78.1.1/30",
            peerAddress: "10.78.1.2/30"
        ),
        measuresCascade: false,
        keepsConnections: true
    )

    /// Every workload by name, in run order.
    static let all: [Workload] = [.busybox, .nginx, .mariadb, .jvm, .wordpress, .pooled]

    private static func mariadbWorkload(
        name: String,
        recipe: String,
        subdir: String?,
        subnet: Int,
        probe: Probe
    ) -> Workload {
        Workload(
            name: name,
            recipe: recipe,
            rootfsSubdir: subdir,
            args: ["/usr/sbin/mariadbd", "--innodb-use-native-aio=0", "--skip-log-bin"],
            user: "mysql",
            port: 3306,
            probe: probe,
            subnet: subnet
        )
    }
}
