import Synchronization
import ZPSystem

/// The hold on a restored tree's write tracking (docs/decisions/0077-write-tracking-for-incremental-checkpoints.md).
///
/// A full restore by a checkpointer that ``Checkpointer/tracksWrites`` leaves every restored
/// process's private memory write-protected through an asynchronous userfaultfd that only CRIU's
/// restorer holds, until it ends: the kernel then drops the protection with the last descriptor.
/// ``CRIUHooks/holdingWriteTracking(in:)`` takes copies of those descriptors at `post-restore`
/// (the processes wait for CRIU there) and keeps them here, so the kernel goes on recording which
/// pages each process writes. A later dump with `DumpOptions.dirtyFromWriteTracking` and the restored
/// images as its parent then writes only those pages.
///
/// What is held is one process tree's, from one restore; ``release()`` closes it (the processes
/// keep running, their next dump is a full one). A process without a userfaultfd (forked after
/// the restore, or whose restorer could not set one up) is simply untracked: all its pages count
/// as written.
public final class WriteTracking: Sendable {
    /// What a hold covers.
    public struct Summary: Sendable, Equatable, CustomStringConvertible {
        /// The restored tree's root.
        public var root: Int32
        /// Processes of the tree at `post-restore`.
        public var processes: Int
        /// Userfaultfds held: one per tracked process.
        public var tracked: Int

        /// "1 of 2 processes", as the restore's log line shows it.
        public var description: String { "\(tracked) of \(processes) processes" }
    }

    private struct Held {
        var summary: Summary
        var descriptors: [SharedDescriptor]
    }

    private let state = Mutex<Held?>(nil)

    /// An empty hold.
    public init() {}

    /// What is held now; nil when nothing is.
    public var summary: Summary? { state.withLock { $0?.summary } }

    /// Takes a copy of every userfaultfd of the tree at `root` (after releasing what was held
    /// before). A process whose descriptor cannot be copied stays untracked.
    /// - Returns: what is held now; nil when the tree has no userfaultfd (nothing tracked: another
    ///   CRIU, a lazy restore, a kernel without asynchronous write-protect).
    @discardableResult
    public func take(treeAt root: Int32) -> Summary? {
        release()
        let processes = PreparedContainerRestore.processTree(root)
        var descriptors: [SharedDescriptor] = []
        for pid in processes {
            let numbers = ProcessDescriptors.numbers(of: pid, linkingTo: ProcessDescriptors.userfaultfdLink)
            guard !numbers.isEmpty, let handle = try? ListeningSockets.processDescriptor(pid) else { continue }
            let process = SharedDescriptor(handle)
            for number in numbers {
                if let copy = try? ProcessDescriptors.copy(descriptor: number, ofProcess: process) {
                    descriptors.append(SharedDescriptor(copy))
                }
            }
            process.close()
        }
        guard !descriptors.isEmpty else { return nil }
        let summary = Summary(root: root, processes: processes.count, tracked: descriptors.count)
        state.withLock { $0 = Held(summary: summary, descriptors: descriptors) }
        return summary
    }

    /// Keeps a userfaultfd that a pre-dump handed over (decision 0078) for one task of the tree at
    /// `root`, beside those already held for that tree (a hold of another tree is released first).
    /// - Returns: what is held now.
    @discardableResult
    public func adopt(_ descriptor: consuming OwnedDescriptor, treeAt root: Int32) -> Summary {
        let copy = SharedDescriptor(descriptor)
        let processes = PreparedContainerRestore.processTree(root).count
        let (summary, replaced) = state.withLock { s -> (Summary, Held?) in
            var replaced: Held?
            if let held = s, held.summary.root != root {
                replaced = held
                s = nil
            }
            var held = s ?? Held(summary: Summary(root: root, processes: 0, tracked: 0), descriptors: [])
            held.descriptors.append(copy)
            held.summary.tracked = held.descriptors.count
            held.summary.processes = max(processes, held.summary.tracked)
            s = held
            return (held.summary, replaced)
        }
        for descriptor in replaced?.descriptors ?? [] { descriptor.close() }
        return summary
    }

    /// Ends the hold (the kernel drops the protection; the processes run on). Idempotent.
    public func release() {
        let held = state.withLock { s -> Held? in
            defer { s = nil }
            return s
        }
        for descriptor in held?.descriptors ?? [] { descriptor.close() }
    }

    /// Whether a tree is held and its root still runs (not gone, a zombie or exiting).
    public var holdsRunningTree: Bool {
        guard let root = summary?.root else { return false }
        return !ProcessDescriptors.isEndingOrGone(root)
    }

    deinit { release() }
}

extension CRIUHooks {
    /// Adds taking the restored tree's write tracking into `tracking` to CRIU's `post-restore`
    /// notification, after any hook already set for it (those release held connections: they go
    /// first; the restorers keep their userfaultfds until CRIU has its answer). Finding nothing to
    /// take is not an error (the restore is just untracked).
    public mutating func holdingWriteTracking(in tracking: WriteTracking) {
        let before = self["post-restore"]
        self["post-restore"] = { note in
            try before?(note)
            if let root = note.pid { tracking.take(treeAt: root) } else { tracking.release() }
        }
    }
}

extension CRIUHooks {
    /// Keeps, in `tracking`, the userfaultfds a pre-dump of the tree at `root` hands over
    /// (``Checkpointer/writeTrackingScript`` notifications, decision 0078), beside what it holds for
    /// that tree. The hold is for the tree's next dump with the pre-dump as its parent: release
    /// what `tracking` held before the pre-dump starts.
    public mutating func holdingPreDumpTracking(in tracking: WriteTracking, treeAt root: Int32) {
        let before = self[Checkpointer.writeTrackingScript]
        self[Checkpointer.writeTrackingScript] = { note in
            try before?(note)
            if let descriptor = note.receivedFD?.take() { tracking.adopt(descriptor, treeAt: root) }
        }
    }
}
