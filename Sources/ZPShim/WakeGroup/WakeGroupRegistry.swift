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

/// A wake group problem: names the group or member and the reason.
struct WakeGroupError: Error, CustomStringConvertible {
    /// What went wrong, naming the group or member.
    var description: String
}

/// Which members wake together: the containerd namespace, the pod namespace and the group name
/// from `zeropod-swift/wake-group`. Groups of different pod namespaces never wake each other, even
/// with the same name.
struct WakeGroupKey: Hashable, Sendable, CustomStringConvertible {
    /// The containerd namespace (`k8s.io` under Kubernetes).
    var containerdNamespace: String
    /// The pod namespace (`io.kubernetes.cri.sandbox-namespace`); empty outside Kubernetes.
    var podNamespace: String
    /// The group name (a DNS label, checked by `ContainerConfig`).
    var group: String

    /// `<containerd namespace>/<pod namespace or _>/<group>`: the registry folder below its root.
    /// `_` cannot be a pod namespace (DNS label), so an empty one never collides with a real one.
    var relativePath: String { "\(containerdNamespace)/\(podNamespace.isEmpty ? "_" : podNamespace)/\(group)" }

    var description: String { relativePath }
}

/// One member of a wake group as the registry lists it: the container and the status socket of
/// the shim that serves it.
struct WakeGroupEntry: Equatable, Sendable {
    /// The containerd container id (the entry's file name).
    var containerID: String
    /// The status socket of the shim serving the container (`<run-dir>/s/<hash>.sock`).
    var statusSocket: String

    /// The file's content: `status-socket=<path>` and a newline.
    var rendered: [UInt8] { Array("status-socket=\(statusSocket)\n".utf8) }

    /// Parses a file written by ``rendered``; nil when it holds no `status-socket=` line with an
    /// absolute path (a torn or foreign file).
    init?(containerID: String, parsing bytes: [UInt8]) {
        let text = String(decoding: bytes, as: UTF8.self)
        let prefix = "status-socket="
        guard let line = text.split(separator: "\n").first(where: { $0.hasPrefix(prefix) }) else { return nil }
        let path = String(line.dropFirst(prefix.count))
        guard path.hasPrefix("/") else { return nil }
        self.init(containerID: containerID, statusSocket: path)
    }

    /// An entry from its fields.
    init(containerID: String, statusSocket: String) {
        self.containerID = containerID
        self.statusSocket = statusSocket
    }
}

/// The node's list of wake group members: one small file per member at
/// `<root>/<containerd ns>/<pod ns or _>/<group>/<container id>` naming its shim's status socket
/// (``WakeGroupEntry``). Each shim writes the entries of its own members when their scale-down
/// driver starts and removes them on Delete; the `delete` command containerd runs for a lost shim
/// removes that shim's entries (``unlistLostMember(containerID:containerdNamespace:annotations:)``).
/// Callers skip an entry whose socket does not answer.
///
/// Folders are created with mode 0700 (root only, like the status sockets), the registry root
/// included, so other users can neither list the containerd and pod namespaces nor read the
/// entries; files are written to a temporary name and renamed, so a reader never sees half an entry.
struct WakeGroupRegistry: Sendable {
    /// The registry root, `<run-dir>/wake-groups` (``NodeLayout/wakeGroupDirectory``).
    let root: String

    /// The registry of the node's layout.
    init(layout: NodeLayout) {
        root = layout.wakeGroupDirectory
    }

    /// The registry below run directory `runDirectory`.
    init(runDirectory: String) {
        self.init(layout: NodeLayout(runDirectory: runDirectory))
    }

    /// The folder of group `key`.
    func directory(of key: WakeGroupKey) -> String { root + "/" + key.relativePath }

    /// Why `component` cannot name a registry folder or file, or nil. containerd ids and namespaces
    /// are `[A-Za-z0-9._-]` and group names DNS labels, so this refuses only what containerd would.
    static func componentProblem(_ component: String) -> String? {
        if component.isEmpty { return "is empty" }
        if component == "." || component == ".." { return "is \(component)" }
        if component.hasPrefix(".") { return "starts with \".\"" }
        if component.utf8.contains(where: { $0 == UInt8(ascii: "/") || $0 == 0 }) { return "contains \"/\" or NUL" }
        if component.utf8.count > 255 { return "is longer than 255 bytes" }
        return nil
    }

    /// Writes (or replaces) the entry of `entry.containerID` in group `key`.
    /// - Throws: ``WakeGroupError`` when a name cannot be a path component; ``SystemError`` naming
    ///   the path when a folder or the file cannot be written.
    func register(_ entry: WakeGroupEntry, in key: WakeGroupKey) throws {
        var components = [("containerd namespace", key.containerdNamespace), ("container id", entry.containerID)]
        if !key.podNamespace.isEmpty { components.append(("pod namespace", key.podNamespace)) }
        for (what, component) in components {
            if let problem = Self.componentProblem(component) {
                throw WakeGroupError(description: "wake group \(key): \(what) \"\(component)\" \(problem)")
            }
        }
        let folder = directory(of: key)
        try ShimStatusService.makeOwnerOnlyDirectory(root)  // hides the namespaces below it
        try ShimStatusService.makeOwnerOnlyDirectory(folder)
        let path = folder + "/" + entry.containerID
        let temporary = folder + "/." + entry.containerID + ".tmp"
        try Files.write(FilePath(temporary), entry.rendered, mode: 0o600)
        do {
            try systemCall("rename", "\(temporary) to \(path)") { rename(temporary, path) }
        } catch {
            unlink(temporary)
            throw error
        }
    }

    /// Removes the entry of `containerID` from group `key`, then the group's folders that became
    /// empty. Missing files are not an error.
    func unregister(containerID: String, in key: WakeGroupKey) {
        guard Self.componentProblem(containerID) == nil else { return }
        let folder = directory(of: key)
        unlink(folder + "/" + containerID)
        // rmdir fails (ENOTEMPTY) while another member is listed: that is the check.
        var path = folder
        while path.count > root.count, rmdir(path) == 0 {
            path = String(path[..<(path.lastIndex(of: "/") ?? path.startIndex)])
        }
    }

    /// Removes the entry of a container whose shim was lost (the `delete` command): the group and
    /// pod namespace come from the bundle's annotations. Nothing happens when they name no valid
    /// group.
    /// - Parameters:
    ///   - containerID: The container being deleted.
    ///   - containerdNamespace: Its containerd namespace.
    ///   - annotations: The annotations of its OCI spec.
    func unlistLostMember(containerID: String, containerdNamespace: String, annotations: [String: String]) {
        guard let config = try? ContainerConfig(annotations: annotations), let group = config.wakeGroup else { return }
        unregister(
            containerID: containerID,
            in: WakeGroupKey(containerdNamespace: containerdNamespace, podNamespace: config.podNamespace, group: group)
        )
    }

    /// The members listed in group `key`, ordered by container id; files that do not parse are
    /// left out.
    func members(of key: WakeGroupKey) -> [WakeGroupEntry] {
        let folder = directory(of: key)
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: folder) else { return [] }
        return names.filter { !$0.hasPrefix(".") }.sorted().compactMap { name in
            (try? Files.read(FilePath(folder + "/" + name))).flatMap { WakeGroupEntry(containerID: name, parsing: $0) }
        }
    }
}
