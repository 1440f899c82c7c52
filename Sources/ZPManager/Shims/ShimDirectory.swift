// Finds the shims of a node: the status sockets in `<run-dir>/s` (NodeLayout). An inotify watch
// on the folder tells when a socket appears or goes; only then is the folder listed again (plus a
// full listing every `rescanInterval` as a safety net, and whenever the kernel says its event
// queue overflowed). Reading the non-blocking inotify descriptor costs one system call per tick,
// whatever the number of shims: no listing storm with hundreds of them.
import Logging
import SystemPackage
import ZPCore
import ZPSystem

#if canImport(Glibc)
import Glibc
#endif

/// Follows the status socket folder of a node.
public struct ShimDirectory: Sendable {
    /// The folder (`<run-dir>/s`).
    public var directory: String
    /// How often the inotify descriptor is read (the delay before a new shim is seen).
    public var tick: Duration
    /// How often the folder is listed even without an inotify event.
    public var rescanInterval: Duration

    /// A watcher of `layout`'s status socket folder.
    public init(layout: NodeLayout, tick: Duration = .milliseconds(200), rescanInterval: Duration = .seconds(30)) {
        self.directory = layout.statusSocketDirectory
        self.tick = tick
        self.rescanInterval = rescanInterval
    }

    /// What the watcher did (for the benchmark and tests).
    public struct Statistics: Sendable, Hashable {
        /// Folder listings.
        public var listings = 0
        /// inotify reads that returned events.
        public var notifications = 0
        /// Whether inotify is in use (false: listing every tick).
        public var usingInotify = false
    }

    /// The status sockets in the folder now (`*.sock` directly in it); empty when it does not exist.
    public func sockets() -> Set<String> {
        guard let names = try? Files.list(FilePath(directory)) else { return [] }
        return Set(names.filter { $0.hasSuffix(".sock") }.map { directory + "/" + $0 })
    }

    /// Calls `onChange` with the set of sockets at start and whenever it changed, until the task
    /// is cancelled.
    /// - Parameters:
    ///   - statistics: Receives the counters after each tick (optional).
    ///   - onChange: Gets the complete set each time.
    public func run(
        logger: Logger,
        statistics: (@Sendable (Statistics) -> Void)? = nil,
        onChange: (Set<String>) async -> Void
    ) async {
        var stats = Statistics()
        var watch = InotifyWatch(directory: directory)
        stats.usingInotify = watch != nil
        if watch == nil {
            logger.debug("no inotify watch yet: listing every tick", metadata: ["directory": "\(directory)"])
        }
        var known: Set<String>?
        var lastListing = ContinuousClock.now
        while !Task.isCancelled {
            var list = known == nil || ContinuousClock.now - lastListing >= rescanInterval
            if watch == nil {
                watch = InotifyWatch(directory: directory)
                stats.usingInotify = watch != nil
                list = true
            }
            if let w = watch {
                switch w.drain() {
                case .nothing: break
                case .changed:
                    stats.notifications += 1
                    list = true
                case .lost:
                    // The folder went away (or the queue overflowed): watch again, list again.
                    stats.notifications += 1
                    watch = InotifyWatch(directory: directory)
                    list = true
                }
            }
            if list {
                let now = sockets()
                stats.listings += 1
                lastListing = .now
                if now != known {
                    known = now
                    await onChange(now)
                }
            }
            statistics?(stats)
            try? await Task.sleep(for: tick)
        }
    }
}

/// The owner of a non-blocking inotify descriptor (closed when the watch is dropped) watching one folder for entries created, deleted or moved.
final class InotifyWatch {
    enum Outcome { case nothing, changed, lost }

    private let descriptor: OwnedDescriptor

    /// nil when the folder does not exist (or inotify is not available).
    init?(directory: String) {
        guard let fd = try? systemCall("inotify_init1", directory, { inotify_init1(Int32(IN_NONBLOCK | IN_CLOEXEC)) })
        else { return nil }
        let owned = OwnedDescriptor(adopting: fd)
        let mask = UInt32(
            IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR
        )
        guard
            (try? systemCall("inotify_add_watch", directory, { inotify_add_watch(owned.rawValue, directory, mask) }))
                != nil
        else {
            return nil
        }
        descriptor = owned
    }

    /// Reads every queued event: whether any arrived, or the watch is gone.
    func drain() -> Outcome {
        var outcome = Outcome.nothing
        var buffer = [UInt8](repeating: 0, count: 8192)
        while true {
            let n = buffer.withUnsafeMutableBytes { raw in Glibc.read(descriptor.rawValue, raw.baseAddress, raw.count) }
            if n <= 0 { break }
            var offset = 0
            while offset + 16 <= n {
                let mask = buffer.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: offset + 4, as: UInt32.self) }
                let length = buffer.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: offset + 12, as: UInt32.self) }
                if mask & UInt32(IN_IGNORED | IN_Q_OVERFLOW | IN_DELETE_SELF | IN_MOVE_SELF) != 0 {
                    outcome = .lost
                } else if case .nothing = outcome {
                    outcome = .changed
                }
                offset += 16 + Int(length)
            }
        }
        return outcome
    }
}
