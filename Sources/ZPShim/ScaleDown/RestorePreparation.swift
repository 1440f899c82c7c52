#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Synchronization
import SystemPackage
import ZPCheckpoint
import ZPCore
import ZPSystem

#if canImport(Glibc)
import Glibc
#endif

/// A restore made ready while a container is scaled down (docs/decisions/0009-lazy-restore-in-driver.md):
/// the CRIU worker started with the inherited descriptors, the rootfs bind mount, and for a lazy
/// restore the `criu lazy-pages` daemon serving the image folder.
///
/// Owns all of them: ``run()`` uses the prepared restore once; ``discard()`` (idempotent) releases
/// whatever is left: the worker and mounts, and the daemon (killed if it still runs). After a lazy
/// restore the object stays alive while the daemon pushes the remaining pages; the image folder
/// must stay until ``daemonExited()`` says so. Every blocking call runs under the object's own
/// lock, so a discard never races a run.
final class RestorePreparation: Sendable {
    private struct Parts {
        var restore: PreparedContainerRestore?
        var daemon: LazyPagesDaemon?
        /// How the daemon ended, when this object reaped it (kept after `daemon` is dropped).
        var daemonTermination: LazyPagesDaemon.Termination?
    }

    private let parts: Mutex<Parts>
    /// Whether the prepared restore is lazy (a daemon was started for it).
    let lazy: Bool
    /// Why a lazy restore was wanted but not prepared (the daemon did not start); nil otherwise.
    let lazyFallbackReason: String?
    /// The daemon's pid, when lazy.
    let daemonPID: Int32?
    /// When the daemon was started (nanoseconds since the Unix epoch): an exit of its pid kept by
    /// the shim's reaper before that belongs to another process.
    let daemonStartedAt: Int64
    /// The daemon's log (`lazy-pages.log` in the image folder), when lazy.
    let daemonLog: FilePath?

    /// Prepares the restore of `container` from `imagesDir` (blocking: run it off the event loops).
    ///
    /// - Parameters:
    ///   - lazy: start `criu lazy-pages` for the images and prepare a RESTORE with `lazy_pages`.
    ///     When the daemon does not become ready, the restore is prepared as a full one and
    ///     ``lazyFallbackReason`` says why.
    /// - Throws: `ContainerCheckpointError` when the restore itself cannot be prepared (nothing
    ///   is left running then).
    init(checkpointer: ContainerCheckpointer, container: RuncContainer, imagesDir: FilePath,
         options: ContainerRestoreOptions, lazy: Bool) throws(ContainerCheckpointError) {
        var daemon: LazyPagesDaemon?
        var reason: String?
        let startedAt = SystemClock.realtimeNanoseconds()
        if lazy {
            do {
                daemon = try LazyPagesDaemon(criuPath: checkpointer.checkpointer.criuPath, imagesDir: imagesDir,
                                             readyTimeout: .seconds(20))
            } catch {
                reason = "criu lazy-pages did not start: \(error)"
            }
        }
        var o = options
        if daemon != nil {
            o.criu.lazyPages = true
            o.criu.workDir = imagesDir
        }
        let restore: PreparedContainerRestore
        do throws(ContainerCheckpointError) {
            restore = try checkpointer.prepareRestore(container, imagesDir: imagesDir, options: o)
        } catch {
            daemon?.stop()
            throw error
        }
        self.lazy = daemon != nil
        self.lazyFallbackReason = reason
        self.daemonPID = daemon?.pid
        self.daemonStartedAt = startedAt
        self.daemonLog = daemon?.logPath
        parts = Mutex(Parts(restore: restore, daemon: daemon))
    }

    /// Restores with the prepared worker (blocking). The prepared restore is used up whatever the
    /// outcome; on failure the daemon is stopped too, so only ``discard()`` remains to be called.
    /// - Throws: `ContainerCheckpointError`, or `.invalidState` when already run or discarded.
    func run() throws(ContainerCheckpointError) -> ContainerRestoreResult {
        try parts.withLock { (p) throws(ContainerCheckpointError) -> ContainerRestoreResult in
            guard let restore = p.restore else {
                throw .invalidState(container: "", reason: "the prepared restore was already used or discarded")
            }
            p.restore = nil
            do throws(ContainerCheckpointError) {
                return try restore.run()
            } catch {
                p.daemon?.stop()
                p.daemon = nil
                throw error
            }
        }
    }

    /// Whether the lazy-pages daemon is gone (true when there is none). Does not block.
    func daemonExited() -> Bool {
        parts.withLock { p in
            guard let daemon = p.daemon else { return true }
            guard daemon.waitForExit(timeout: .zero) else { return false }
            p.daemonTermination = daemon.termination
            p.daemon = nil
            return true
        }
    }

    /// How the daemon ended, when this object reaped it; nil while it runs, when there was none, or
    /// when the shim's reaper got its exit first (then ``PidIndex`` keeps it).
    var daemonTermination: LazyPagesDaemon.Termination? {
        parts.withLock { $0.daemonTermination }
    }

    /// Releases everything still held: cancels an unused prepared restore (worker, descriptors,
    /// mounts) and kills a daemon that still runs. Idempotent.
    func discard() {
        parts.withLock { p in
            p.restore?.cancel()
            p.restore = nil
            if let daemon = p.daemon {
                daemon.stop()
                p.daemonTermination = daemon.termination
            }
            p.daemon = nil
        }
    }

    deinit { discard() }

    // MARK: the lazy decision

    private static let userfaultfdCache = Mutex<[String: Bool]>([:])

    /// Whether CRIU at `criuPath` can restore lazily on this node (FEATURE_CHECK lazy_pages,
    /// which needs a usable userfaultfd); asked once per CRIU binary and process.
    static func userfaultfdUsable(criuPath: String) -> Bool {
        if let known = userfaultfdCache.withLock({ $0[criuPath] }) { return known }
        let features = try? Checkpointer(criuPath: FilePath(criuPath)).features(CRIUFeatures(lazyPages: true))
        let usable = features?.lazyPages == true
        userfaultfdCache.withLock { $0[criuPath] = usable }
        return usable
    }

    /// The bytes of memory pages in a checkpoint: the sizes of its `pages-*.img` files.
    static func pageBytes(inImages imagesDir: String) -> UInt64 {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: imagesDir)) ?? []
        var total: UInt64 = 0
        for name in names where name.hasPrefix("pages-") && name.hasSuffix(".img") {
            var st = stat()
            if stat(imagesDir + "/" + name, &st) == 0 { total += UInt64(max(0, st.st_size)) }
        }
        return total
    }
}

/// The driver's restore-side resources, kept in its locked state.
struct RestoreSideState {
    /// Prepared right after a checkpoint; taken by the restore, discarded by a stop or delete.
    var prepared: RestorePreparation?
    /// After a lazy restore: the preparation whose daemon still pushes pages into the process.
    var serving: RestorePreparation?
    /// The lifecycle asked to remove the images while the daemon still needed them.
    var cleanupDeferred = false
    /// The watcher is judging a finished daemon (and killing an untrusted process, removing the
    /// images): a checkpoint waits for it.
    var settling = false
    /// Why the restored process was killed after its daemon ended too early; a checkpoint
    /// requested meanwhile fails with it instead of dumping a dying process.
    var untrusted: String?
}
