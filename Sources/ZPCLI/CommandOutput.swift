import ZPSystem

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
    public init(
        line: @escaping @Sendable (String) -> Void,
        text: @escaping @Sendable (String) -> Void,
        problem: @escaping @Sendable (String) -> Void
    ) {
        self.line = line
        self.text = text
        self.problem = problem
    }

    /// The process's stdout and stderr through ZPSystem's `StandardStream` (`write(2)` until done,
    /// no buffering), so every line of `status --watch` reaches a pipe or file as soon as it is
    /// printed. A write that fails (the reader is gone: `EPIPE`) is dropped: there is nowhere left
    /// to report it.
    public static let standard = CommandOutput(
        line: { try? StandardStream.output.write($0 + "\n") },
        text: { try? StandardStream.output.write($0) },
        problem: { try? StandardStream.error.write($0 + "\n") }
    )
}
