#if canImport(Glibc)
import Glibc
#endif

/// Where a `zeropod` command writes its lines: standard output for results, standard error for
/// problems. Tests pass closures that collect the lines.
public struct CommandOutput: Sendable {
    /// Writes one line of results (a newline is added).
    public var line: @Sendable (String) -> Void
    /// Writes text of results as it is (no newline added), e.g. the Prometheus text.
    public var text: @Sendable (String) -> Void
    /// Writes one line about a problem (a newline is added).
    public var problem: @Sendable (String) -> Void

    /// An output from its three closures.
    public init(line: @escaping @Sendable (String) -> Void, text: @escaping @Sendable (String) -> Void,
                problem: @escaping @Sendable (String) -> Void) {
        self.line = line
        self.text = text
        self.problem = problem
    }

    /// The process's stdout and stderr, written with `write(2)` without buffering, so every line of
    /// `status --watch` reaches a pipe or file as soon as it is printed.
    public static let standard = CommandOutput(
        line: { writeAll(1, $0 + "\n") }, text: { writeAll(1, $0) }, problem: { writeAll(2, $0 + "\n") })
}

/// Writes all of `text` to `descriptor`, retrying after EINTR and partial writes; a closed stdout
/// (EPIPE) or another error drops the rest, as there is nowhere left to report it.
private func writeAll(_ descriptor: CInt, _ text: String) {
    let bytes = Array(text.utf8)
    var offset = 0
    while offset < bytes.count {
        let written = bytes[offset...].withUnsafeBytes { write(descriptor, $0.baseAddress, $0.count) }
        if written < 0 {
            if errno == EINTR { continue }
            return
        }
        offset += written
    }
}
