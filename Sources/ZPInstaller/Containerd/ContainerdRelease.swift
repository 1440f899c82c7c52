// containerd's version, as `containerd --version` prints it, and what it means for the config.

/// A containerd release, and the config behaviour that the installer relies on for it.
public struct ContainerdRelease: Sendable, Equatable, CustomStringConvertible {
    /// How a release merges imported config files (docs/decisions/0023-installer-containerd-config.md).
    public enum Generation: Sendable, Equatable {
        /// containerd 1.6 and 1.7: an imported file **replaces** each plugin section it names
        /// (containerd#5837), so a drop-in with only our handler would drop the node's CRI settings.
        case one
        /// containerd 2.0 to 2.3: imported files are merged key by key into the main config
        /// (containerd#9982), so a drop-in with only our handler is safe.
        case two
    }

    /// Major version.
    public var major: Int
    /// Minor version.
    public var minor: Int
    /// Patch version (0 when absent).
    public var patch: Int
    /// The version text as printed, e.g. `1.6.20~ds1` or `v2.1.9-k3s1`.
    public var text: String

    /// The releases the installer knows: 1.6, 1.7, 2.0 to 2.3.
    public static let supported = "1.6, 1.7, 2.0, 2.1, 2.2, 2.3"

    /// Makes a release from its numbers.
    public init(major: Int, minor: Int, patch: Int = 0, text: String? = nil) {
        self.major = major
        self.minor = minor
        self.patch = patch
        self.text = text ?? "\(major).\(minor).\(patch)"
    }

    /// "containerd 1.6.20~ds1".
    public var description: String { "containerd \(text)" }

    /// Parses the output of `containerd --version`, e.g.
    /// `containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+deb12u3`,
    /// `containerd github.com/containerd/containerd/v2 2.1.9+unknown`,
    /// `containerd github.com/k3s-io/containerd v1.7.23-k3s2`: the first word that starts with a
    /// digit (or `v` and a digit) after the program name.
    /// - Throws: `InstallerError` naming the text when no version is in it.
    public init(versionOutput: String) throws(InstallerError) {
        let words = versionOutput.split(whereSeparator: { $0 == " " || $0 == "\n" || $0 == "\t" }).map(String.init)
        for word in words.dropFirst() {
            if let release = ContainerdRelease(versionText: word) {
                self = release
                return
            }
        }
        throw InstallerError("cannot read a containerd version from \"\(versionOutput.trimmedLine)\"")
    }

    /// Parses a bare version such as `1.7.23`, `v2.1.9-k3s1` or `2.0` (nil if it is none).
    public init?(versionText: String) {
        var text = Substring(versionText)
        if text.first == "v" { text = text.dropFirst() }
        guard let first = text.first, first.isASCII, first.isNumber else { return nil }
        // Numbers up to the first character that is neither a digit nor a dot.
        let numeric = text.prefix(while: { ($0.isASCII && $0.isNumber) || $0 == "." })
        let parts = numeric.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count >= 2, parts.count <= 3, let major = Int(parts[0]), let minor = Int(parts[1]) else {
            return nil
        }
        var patch = 0
        if parts.count == 3 {
            guard let p = Int(parts[2]) else { return nil }
            patch = p
        }
        self.init(major: major, minor: minor, patch: patch, text: String(text))
    }

    /// Whether the CRI plugin honours a handler's `runtime_path`: containerd 1.7.1 and later.
    /// containerd 1.6 (every patch) and 1.7.0 ignore it for CRI pods (containerd#8207, fixed in
    /// 1.7.1) and start the shim that `runtime_type` names instead (decision 0023, "1.6").
    public var honoursRuntimePath: Bool {
        !(major == 1 && (minor < 7 || (minor == 7 && patch < 1)))
    }

    /// The generation, or an error for a release the installer does not know.
    /// - Throws: `InstallerError` "unknown containerd version" naming the supported ones.
    public func generation() throws(InstallerError) -> Generation {
        switch (major, minor) {
        case (1, 6), (1, 7): return .one
        case (2, 0), (2, 1), (2, 2), (2, 3): return .two
        default:
            throw InstallerError(
                "unknown containerd version \(text): the installer knows \(Self.supported); "
                    + "refusing to guess how this one reads its config"
            )
        }
    }
}

extension String {
    /// The first line, trimmed, for error messages.
    var trimmedLine: String {
        let line = split(separator: "\n", omittingEmptySubsequences: true).first.map(String.init) ?? ""
        return line.trimmingSpaces
    }

    /// Without leading and trailing spaces and tabs (and a trailing carriage return).
    var trimmingSpaces: String {
        var s = Substring(self)
        while let c = s.first, c == " " || c == "\t" { s = s.dropFirst() }
        while let c = s.last, c == " " || c == "\t" || c == "\r" { s = s.dropLast() }
        return String(s)
    }
}
