// Checkpoint images hold a container's memory and files, secrets included: no other local user may
// read them, from the moment they are written (issue 15). These tests run CRIU for real under the
// umask a node usually has (022), then look at every file and folder, and try to read the images as
// the unprivileged user 65534 (`setpriv`), which must be refused.
import Foundation
import SystemPackage
import Testing
import ZPCheckpointTestKit
import ZPSystem
import ZPTestSupport

@testable import ZPCheckpoint

/// The user the refusal checks run as (`nobody` on Debian).
let unprivilegedUID = 65534

/// Runs `command` (argv) as uid/gid 65534 without supplementary groups; returns (exit status, output).
func runAsNobody(_ command: [String]) throws -> (Int32, String) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/setpriv")
    p.arguments = ["--reuid", "\(unprivilegedUID)", "--regid", "\(unprivilegedUID)", "--clear-groups", "--"] + command
    let out = Pipe()
    p.standardOutput = out
    p.standardError = out
    p.standardInput = FileHandle.nullDevice
    try p.run()
    let data = out.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return (p.terminationStatus, String(decoding: data, as: UTF8.self))
}

/// Every file, socket and folder below `root` (and `root`), with its permission bits.
func permissionsBelow(_ root: String) -> [(path: String, mode: mode_t)] {
    var out: [(String, mode_t)] = []
    var pending = [root]
    while let path = pending.popLast() {
        var st = stat()
        guard lstat(path, &st) == 0 else { continue }
        out.append((path, st.st_mode & 0o7777))
        if (st.st_mode & S_IFMT) == S_IFDIR {
            for name in (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? [] {
                pending.append(path + "/" + name)
            }
        }
    }
    return out.sorted { $0.0 < $1.0 }
}

/// Whether `needle` occurs in any regular file below `root` (raw bytes, as a reader would find it).
func anyFileContains(_ root: String, _ needle: String) -> [String] {
    let bytes = Array(needle.utf8)
    return permissionsBelow(root).map(\.path).filter { path in
        var st = stat()
        guard lstat(path, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG,
            let data = FileManager.default.contents(atPath: path)
        else { return false }
        return Array(data).firstRange(of: bytes) != nil
    }
}

/// Runs `body` with the process umask set to 022 (containerd's usual), then puts the old one back.
func withNodeUmask<T>(_ body: () throws -> T) rethrows -> T {
    let old = umask(0o022)
    defer { umask(old) }
    return try body()
}

@Suite(
    "Checkpoint images are owner-only from creation",
    .serialized,
    .enabled(if: isRoot, "needs root for CRIU and setpriv")
)
struct ImagePrivacyTests {
    let criu = Checkpointer()

    /// A process dump into a folder the caller made 0755 (as the shim's driver did): the folder is
    /// 0700 and every image and log 0600 or stricter; uid 65534 can neither list the folder nor read
    /// a page image, even once the folder is opened up afterwards (the file modes hold on their own).
    /// The shim's own umask is untouched: only CRIU's process got 077.
    @Test func processDump_imagesAndLogsAreOwnerOnly_andRefusedToNobody() throws {
        let netns = try TestNetns("priv")
        let port: UInt16 = 8091
        let pid = try startCounterServer(netns: netns, port: port, touchMiB: 4)
        defer { killAndReap(pid) }
        let images = try TemporaryDirectory("priv-img")
        #expect(try Files.permissions(of: images.filePath) == 0o755, "the caller's folder starts world-readable")
        var dump = DumpOptions()
        dump.external = [try NetworkNamespace.externalEntry(for: netns.filePath)]
        _ = try withNodeUmask { try criu.dump(pid: pid, imagesDir: images.filePath, options: dump) }
        let umaskNow = umask(0o022)
        umask(umaskNow)
        #expect(umaskNow != 0o077, "the test process's umask was not changed by the spawn")

        let entries = permissionsBelow(images.path)
        print("process dump: " + entries.map { "\(String($0.mode, radix: 8)) \($0.path)" }.joined(separator: "\n  "))
        #expect(entries.first?.mode == 0o700, "image folder: \(entries.first.map { String($0.mode, radix: 8) } ?? "?")")
        let pages = entries.filter { $0.path.contains("/pages-") }
        #expect(!pages.isEmpty, "CRIU wrote page images")
        for e in entries.dropFirst() {
            #expect(e.mode & 0o077 == 0, "\(e.path) is \(String(e.mode, radix: 8)): readable by others")
        }
        let (lsStatus, lsOut) = try runAsNobody(["/bin/ls", images.path])
        #expect(lsStatus != 0 && lsOut.contains("Permission denied"), "ls as 65534: \(lsStatus) \(lsOut)")
        let page = try #require(pages.first?.path)
        let (catStatus, catOut) = try runAsNobody(["/bin/cat", page])
        #expect(catStatus != 0 && catOut.contains("Permission denied"), "cat as 65534: \(catStatus) \(catOut)")
        // Even with the folder opened up after the fact, the page image itself stays unreadable.
        chmod(images.path, 0o755)
        let (openStatus, openOut) = try runAsNobody(["/bin/cat", page])
        #expect(
            openStatus != 0 && openOut.contains("Permission denied"),
            "cat as 65534, folder 0755: \(openStatus) \(openOut)"
        )
    }

    /// The lazy-pages daemon's socket and log (in the image folder, its work folder) are owner-only.
    @Test(
        .enabled(
            if: isRoot && ((try? Checkpointer().features(CRIUFeatures(lazyPages: true)).lazyPages) ?? nil) == true,
            "CRIU reports no lazy_pages (userfaultfd) support here"
        )
    )
    func lazyPagesDaemon_socketAndLogAreOwnerOnly() throws {
        let netns = try TestNetns("privlz")
        let pid = try startCounterServer(netns: netns, port: 8092)
        defer { killAndReap(pid) }
        let images = try TemporaryDirectory("priv-lazy")
        var dump = DumpOptions()
        dump.external = [try NetworkNamespace.externalEntry(for: netns.filePath)]
        _ = try withNodeUmask { try criu.dump(pid: pid, imagesDir: images.filePath, options: dump) }
        let daemon = try withNodeUmask { try LazyPagesDaemon(criuPath: criu.criuPath, imagesDir: images.filePath) }
        defer { daemon.stop() }
        let socket = try Files.permissions(of: images.filePath.appending("lazy-pages.socket"))
        let log = try Files.permissions(of: daemon.logPath)
        print("lazy-pages: socket \(String(socket, radix: 8)), log \(String(log, radix: 8))")
        #expect(socket & 0o077 == 0 && log & 0o077 == 0)
        let (status, out) = try runAsNobody(["/bin/cat", daemon.logPath.string])
        #expect(status != 0 && out.contains("Permission denied"), "\(out)")
    }

    /// A tmpfs bound into the container from the host, the way kubelet binds a secret volume, is
    /// an external mount: its content is in no image file, the restore binds the host's tmpfs again
    /// (so the restored process sees the secret as it is now, not as it was), and the restore's
    /// staging folder (tmpfs copies, rootfs bind) is 0700 while it waits.
    @Test func secretVolume_isNeverCopiedIntoTheImages_andStagingIsOwnerOnly() throws {
        let secretHost = "/tmp/\(uniqueName("secret"))"
        let token = "zp-secret-\(UUID().uuidString)"
        try shell(
            "mkdir -p \(secretHost) && mount -t tmpfs -o size=1m,mode=0755 zpck-secret \(secretHost)"
                + " && printf '%s' \(token) > \(secretHost)/token"
        )
        defer { _ = try? shell("umount -l \(secretHost); rmdir \(secretHost)", allowFailure: true) }
        let mountPoint = "/var/run/secrets/kubernetes.io/serviceaccount"
        let c = try TestContainer(
            .busybox,
            repoRoot: repoRoot,
            extraMounts: [
                ["destination": mountPoint, "type": "bind", "source": secretHost, "options": ["rbind", "ro"]]
            ]
        )
        defer { c.destroy() }
        try c.start()
        #expect(c.waitForResponse() != nil)
        let (rc0, seen0) = try c.runc(["exec", c.id, "/bin/cat", mountPoint + "/token"])
        #expect(rc0 == 0 && seen0 == token, "the container sees the secret: \(seen0)")

        let images = try TemporaryDirectory("priv-ctr")
        let cc = ContainerCheckpointer()
        let cp = try withNodeUmask { try cc.checkpoint(c.container, imagesDir: images.filePath) }
        #expect(cp.manifest.externalMounts[mountPoint] == secretHost, "\(cp.manifest.externalMounts)")
        #expect(cp.manifest.copiedTmpfs?[mountPoint] == nil, "copied: \(cp.manifest.copiedTmpfs?.keys.sorted() ?? [])")
        #expect(cp.manifest.copiedTmpfs?["/tmp"] != nil, "the container's own /tmp is still copied")
        #expect(anyFileContains(images.path, token).isEmpty, "the secret is in \(anyFileContains(images.path, token))")
        for e in permissionsBelow(images.path).dropFirst() {
            #expect(e.mode & 0o077 == 0, "\(e.path) is \(String(e.mode, radix: 8))")
        }

        // The secret changes while the container is scaled down (kubelet rotates tokens).
        let rotated = token + "-rotated"
        try shell("printf '%s' \(rotated) > \(secretHost)/token")
        var o = ContainerRestoreOptions()
        o.stdio = c.stdio.containerSide.map { Optional($0) }
        let prepared = try cc.prepareRestore(c.container, imagesDir: images.filePath, options: o)
        let staging = c.runcRoot.appending(c.id).appending(PreparedContainerRestore.stagingFolderName).string
        let staged = permissionsBelow(staging).filter { !$0.path.dropFirst(staging.count).contains("/criu-root/") }
        print(
            "staging: " + staged.prefix(8).map { "\(String($0.mode, radix: 8)) \($0.path)" }.joined(separator: "\n  ")
        )
        #expect(staged.first?.path == staging && staged.first?.mode == 0o700)
        let (lsStatus, lsOut) = try runAsNobody(["/bin/ls", staging + "/tmpfs-0"])
        #expect(lsStatus != 0 && lsOut.contains("Permission denied"), "staged /tmp copy listed by 65534: \(lsOut)")
        let r = try prepared.run()
        #expect(r.pid > 0)
        #expect(!FileManager.default.fileExists(atPath: staging), "the staging folder is removed after the restore")
        let (rc1, seen1) = try c.runc(["exec", c.id, "/bin/cat", mountPoint + "/token"])
        #expect(rc1 == 0 && seen1 == rotated, "the restored container sees the host's current secret: \(seen1)")
        #expect(try c.get().body.hasPrefix("count=2"), "the container's own /tmp counter came back")
    }
}
