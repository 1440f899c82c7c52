import SystemPackage
import ZPCore
import ZPSystem

/// An error from a CRIU request: what failed, CRIU's own errno and message when it sent them, and
/// the tail of CRIU's log from the work directory.
public struct CRIUError: Error, Sendable, CustomStringConvertible {
    /// What kind of failure this is.
    public enum Code: Sendable, Equatable {
        /// Starting `criu swrk` failed (binary missing, spawn refused).
        case spawnFailed
        /// Sending or receiving on the RPC socket failed.
        case transport
        /// CRIU sent bytes that do not decode as `criu_resp`, or an answer of the wrong type.
        case protocolViolation
        /// CRIU answered the request with success=false.
        case requestFailed
        /// The CRIU worker exited or was killed before answering.
        case workerDied
        /// A feature the request needs is not available (FEATURE_CHECK said no, or CRIU too old).
        case notSupported
        /// A caller's notification hook threw; CRIU was told the "script" failed and aborted.
        case hookFailed
        /// The caller's input is wrong (missing directory, bad option combination).
        case invalidArgument
        /// No answer within the caller's deadline; the worker was killed.
        case timedOut
    }

    /// The kind of failure.
    public var code: Code
    /// The request that failed.
    public var request: CRIURequestType
    /// CRIU's errno (`cr_errno`), when it sent one.
    public var criuErrno: Errno?
    /// A message: CRIU's `cr_errmsg`, or ours naming the input and the reason.
    public var message: String
    /// The log file CRIU wrote, when known.
    public var logPath: FilePath?
    /// The last lines of that log (errors are usually there).
    public var logTail: [String]
    /// For a failed restore: the root pid CRIU had created (from a notification), already reaped.
    public var restoredPID: Int32?

    /// Creates an error.
    public init(
        code: Code,
        request: CRIURequestType,
        criuErrno: Errno? = nil,
        message: String,
        logPath: FilePath? = nil,
        logTail: [String] = []
    ) {
        self.code = code
        self.request = request
        self.criuErrno = criuErrno
        self.message = message
        self.logPath = logPath
        self.logTail = logTail
    }

    /// One paragraph: code, request, errno, message, and the log tail indented below.
    public var description: String {
        var s = "CRIU \(request) \(code): \(message)"
        if let criuErrno { s += " (cr_errno \(criuErrno.rawValue): \(criuErrno))" }
        if let logPath { s += " [log: \(logPath)]" }
        for line in logTail { s += "\n    \(line)" }
        return s
    }
}

/// Reads the last `lines` lines of a log file; empty when it cannot be read.
func tailOfFile(_ path: FilePath, lines: Int = 12, maxBytes: Int = 16384) -> [String] {
    guard let bytes = try? Files.readTail(path, maxBytes: maxBytes) else { return [] }
    let text = String(decoding: bytes, as: UTF8.self)
    return Array(text.split(separator: "\n", omittingEmptySubsequences: true).suffix(lines).map(String.init))
}
