// The node setting `lazy-restore` and the rule that turns it into a per-checkpoint decision
// (docs/decisions/0009-lazy-restore-in-driver.md).

/// How a scaled-down container's memory comes back on restore.
///
/// A lazy restore starts the process before its memory is in place: a `criu lazy-pages` daemon,
/// started while the container is scaled down, serves each page on first touch (userfaultfd) and
/// pushes the rest in the background. The first response then waits only for the pages it needs.
public enum LazyRestoreMode: String, CaseIterable, Sendable {
    /// Lazy when the checkpoint's memory is at least ``LazyRestoreMode/autoThresholdBytes`` and
    /// CRIU can use userfaultfd on this node; full otherwise.
    case auto
    /// Lazy whenever CRIU can use userfaultfd on this node.
    case on
    /// Always a full restore (every page copied before the process resumes).
    case off

    /// The memory size from which `auto` restores lazily: 160 MiB. A lazy restore costs more set-up
    /// than a full one (userfaultfd registration, the daemon's hand-over) and every first touch of a
    /// page is a round trip to the daemon while it pushes the rest on the same CPUs; the page copy it
    /// saves is ~0.55 ms per MiB here. Measured (issue 7, zpbench): MariaDB (75 MiB) restored in
    /// 100 ms lazily against 77 ms fully and answered its first query 26 ms later; its cascade with
    /// WordPress took 218 ms against 166 ms; the JVM (334 MiB) came back in 48 ms against ~200 ms.
    public static let autoThresholdBytes: UInt64 = 160 << 20

    /// Whether a restore of a checkpoint holding `pageBytes` bytes of memory pages is lazy.
    /// - Parameters:
    ///   - pageBytes: the size of the checkpoint's page images.
    ///   - userfaultfdUsable: whether CRIU reported lazy-pages support on this node.
    public func restoresLazily(pageBytes: UInt64, userfaultfdUsable: Bool) -> Bool {
        guard userfaultfdUsable else { return false }
        switch self {
        case .off: return false
        case .on: return true
        case .auto: return pageBytes >= Self.autoThresholdBytes
        }
    }
}
