/// Why the installer (or uninstaller) refused or failed: the file and line it concerns, and why.
///
/// Every refusal happens before any file is changed, unless `description` says otherwise.
public struct InstallerError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The file concerned (a path as the installer sees it), if any.
    public var file: String?
    /// The 1-based line in `file`, if known.
    public var line: Int?
    /// What is wrong and, where there is one, what to do.
    public var reason: String

    /// An error about `file` (and `line`), or about nothing in particular.
    public init(_ reason: String, file: String? = nil, line: Int? = nil) {
        self.reason = reason
        self.file = file
        self.line = line
    }

    /// `file:line: reason`, `file: reason` or `reason`.
    public var description: String {
        switch (file, line) {
        case let (file?, line?): return "\(file):\(line): \(reason)"
        case let (file?, nil): return "\(file): \(reason)"
        case (nil, _): return reason
        }
    }
}
