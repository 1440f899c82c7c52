import Foundation
import Synchronization

/// Hands out the current bearer token; a token file is read again when its re-read interval passed
/// or after the server answered 401 (``invalidate()``), so a rotated projected token is picked up.
final class TokenProvider: Sendable {
    private struct State {
        var token: String?
        var readAt: ContinuousClock.Instant?
        var reads = 0
    }

    let source: BearerToken
    private let state = Mutex(State())

    init(source: BearerToken) {
        self.source = source
    }

    /// How often the file was read (tests check rotation through it).
    var reads: Int { state.withLock { $0.reads } }

    /// The token to send now.
    /// - Throws: ``KubeConfigError`` when the token file cannot be read or is empty and no earlier
    ///   token is known.
    func token() throws(KubeConfigError) -> String {
        switch source {
        case .value(let value):
            return value
        case .file(let path, let interval):
            let now = ContinuousClock.now
            let cached: String? = state.withLock { state in
                if let token = state.token, let readAt = state.readAt, now - readAt < interval { return token }
                return nil
            }
            if let cached { return cached }
            do throws(KubeConfigError) {
                let bytes = try readFile(path, source: path, field: nil)
                let token = String(decoding: bytes, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
                guard !token.isEmpty else { throw KubeConfigError(source: path, reason: "the token file is empty") }
                state.withLock {
                    $0.token = token
                    $0.readAt = now
                    $0.reads += 1
                }
                return token
            } catch {
                // A file being rewritten may be briefly missing or empty: keep the last token then.
                if let last = state.withLock({ $0.token }) { return last }
                throw error
            }
        }
    }

    /// Forgets the cached token so the next ``token()`` reads the file again (after a 401).
    /// Returns whether there is a file to read again (a fixed token cannot change).
    func invalidate() -> Bool {
        switch source {
        case .value: return false
        case .file:
            state.withLock { $0.readAt = nil }
            return true
        }
    }
}
