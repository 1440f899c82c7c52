// Where zeropod-swift keeps its files on a node, as pure values derived from the node settings
// (`run-dir`, `state-dir`). The shim, its `delete` command, the scale-down driver, the `zeropod` CLI
// and the manager all compute paths here, so no second copy of a layout rule exists.

/// The paths of a node's sockets, registries and checkpoint images, from ``NodeConfig``'s
/// `run-dir` and `state-dir`.
///
/// ```
/// <run-dir>/s/<shim>.sock                       status socket of one shim (folder 0700, socket 0600)
/// <run-dir>/wake-groups/<ns>/<pod ns|_>/<group>  wake group registry (docs/decisions/0011)
/// <run-dir>/node.sock                            the manager's node service (migration)
/// <run-dir>/p/<container id>.sock               a live migration's pages, source side: the shim listens (0700/0600)
/// <run-dir>/t/<container id>.sock               a live migration's pages, target side: the manager listens (0700/0600)
/// <state-dir>/i/<containerd ns>/<container id>   checkpoint images of one container
/// <state-dir>/m/<container id>/image.zpimg       a migration image (source: handed over; target: pulled)
/// ```
///
/// Only string values: nothing here touches the file system. Container ids and containerd
/// namespaces come from containerd, which allows only `[A-Za-z0-9._-]` in them, so they are used
/// as path components as they are.
public struct NodeLayout: Sendable, Equatable {
    /// The folder for runtime files and sockets (`run-dir`).
    public var runDirectory: String
    /// The folder for checkpoint images and work files (`state-dir`).
    public var stateDirectory: String

    /// The longest unix socket path a client can reach: SwiftNIO (the ttrpc transport) refuses
    /// paths longer than 103 bytes, the smallest `sun_path` among its platforms (Linux's holds 107
    /// and the NUL). A status socket bound at a longer path would be served but never reached.
    public static let maximumSocketPathLength = 103

    /// The longest `run-dir` whose status sockets stay within ``maximumSocketPathLength``:
    /// `<run-dir>/s/` plus a 64-character shim socket name plus `.sock` (31 bytes).
    public static let maximumRunDirectoryLength = maximumSocketPathLength - "/s/".utf8.count - 64 - ".sock".utf8.count

    /// A layout from its two folders (the defaults are ``NodeConfig``'s).
    /// - Parameters:
    ///   - runDirectory: `run-dir`, an absolute path.
    ///   - stateDirectory: `state-dir`, an absolute path.
    public init(runDirectory: String = NodeConfig().runDirectory, stateDirectory: String = NodeConfig().stateDirectory)
    {
        self.runDirectory = runDirectory
        self.stateDirectory = stateDirectory
    }

    /// The layout of `node`'s `run-dir` and `state-dir`.
    public init(_ node: NodeConfig) {
        self.init(runDirectory: node.runDirectory, stateDirectory: node.stateDirectory)
    }

    // MARK: run-dir

    /// `<run-dir>/s`: the folder of status sockets, one per shim (mode 0700).
    public var statusSocketDirectory: String { runDirectory + "/s" }

    /// The status socket of the shim whose task API socket is `shimSocket`:
    /// `<run-dir>/s/<last path component of shimSocket>.sock`. The component is the hash that names
    /// the shim's group under `/run/containerd/s/`, so the two sockets pair up by name.
    ///
    /// - Parameter shimSocket: The shim's task API socket, with or without `unix://`.
    public func statusSocket(forShimSocket shimSocket: String) -> String {
        let name = shimSocket.split(separator: "/").last.map(String.init) ?? "shim"
        return statusSocketDirectory + "/" + name + ".sock"
    }

    /// Whether `path` is a status socket of this layout: a `.sock` file directly in
    /// ``statusSocketDirectory``.
    public func isStatusSocket(_ path: String) -> Bool {
        let prefix = statusSocketDirectory + "/"
        guard path.hasPrefix(prefix), path.hasSuffix(".sock") else { return false }
        return !path.dropFirst(prefix.count).contains("/")
    }

    /// `<run-dir>/wake-groups`: the wake group registry (docs/decisions/0011-wake-groups.md).
    public var wakeGroupDirectory: String { runDirectory + "/wake-groups" }

    /// `<run-dir>/node.sock`: the manager's node service (ZPAPI's `NodeAPI`), served when the
    /// manager runs with `-migration` (decision 0048).
    public var nodeSocket: String { runDirectory + "/node.sock" }

    /// `<run-dir>/p`: the folder of live migrations' page sockets (mode 0700; decision 0063).
    public var pageSocketDirectory: String { runDirectory + "/p" }

    /// `<run-dir>/p/<container id>.sock`: where a live migration's memory pages leave the source
    /// node, between the node's manager (in its pod's network namespace) and the shim (in the
    /// host's), decision 0063. The shim listens (relaying to CRIU's page server on the host's
    /// loopback) and the manager's mutual-TLS page proxy connects. Within
    /// ``maximumSocketPathLength`` whenever `run-dir` is within ``maximumRunDirectoryLength``
    /// (`/p/` is as long as `/s/`).
    /// - Parameter containerID: The source container's containerd id.
    public func pageSocket(containerID: String) -> String {
        pageSocketDirectory + "/" + containerID + ".sock"
    }

    /// `<run-dir>/t`: the folder of live migrations' target-side page sockets (mode 0700;
    /// decision 0064). Only the manager listens here, so every socket in it when a manager starts
    /// was left by a previous life of the manager and is removed; the sockets in ``pageSocketDirectory``
    /// are the shims', which outlive a manager, and are never probed or removed by it.
    public var targetPageSocketDirectory: String { runDirectory + "/t" }

    /// `<run-dir>/t/<container id>.sock`: where a live migration's memory pages arrive on the
    /// target node (decisions 0063, 0064): the manager listens (relaying to the source's
    /// mutual-TLS page proxy) and the shim's `criu lazy-pages` reaches it through the shim's
    /// loopback relay. As long as ``pageSocket(containerID:)``.
    /// - Parameter containerID: The target container's containerd id.
    public func targetPageSocket(containerID: String) -> String {
        targetPageSocketDirectory + "/" + containerID + ".sock"
    }

    // MARK: state-dir

    /// `<state-dir>/i`: the root of every container's checkpoint images.
    public var imageRoot: String { stateDirectory + "/i" }

    /// `<state-dir>/i/<containerd namespace>`: the images of one containerd namespace.
    /// - Parameter containerdNamespace: The containerd namespace (`k8s.io` under Kubernetes).
    public func imageDirectory(containerdNamespace: String) -> String {
        imageRoot + "/" + containerdNamespace
    }

    /// `<state-dir>/i/<containerd namespace>/<container id>`: one container's checkpoint images
    /// (and its pre-dump folder, decision 0010).
    /// - Parameters:
    ///   - containerdNamespace: The containerd namespace.
    ///   - containerID: The containerd container id.
    public func imageDirectory(containerdNamespace: String, containerID: String) -> String {
        imageDirectory(containerdNamespace: containerdNamespace) + "/" + containerID
    }
}

extension NodeLayout {
    /// `<state-dir>/m`: migration images, one folder per container (decision 0050).
    public var migrationRoot: String { stateDirectory + "/m" }

    /// `<state-dir>/m/<container id>`: the migration image of a container: on the source the one
    /// its shim handed over, on the target the one its manager pulled.
    /// - Parameter containerID: The containerd container id.
    public func migrationDirectory(containerID: String) -> String {
        migrationRoot + "/" + containerID
    }

    /// `<state-dir>/m/<container id>/image.zpimg`: the archive itself.
    /// - Parameter containerID: The containerd container id.
    public func migrationArchive(containerID: String) -> String {
        migrationDirectory(containerID: containerID) + "/image.zpimg"
    }
}

extension NodeConfig {
    /// The paths derived from `run-dir` and `state-dir`.
    public var layout: NodeLayout { NodeLayout(self) }
}
