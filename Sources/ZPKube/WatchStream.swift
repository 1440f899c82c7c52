import AsyncHTTPClient
import Foundation
import NIOCore

/// One event of a watch.
public enum WatchEvent<Object: Decodable & Sendable>: Sendable {
    /// An object appeared (or existed when a watch without resourceVersion started).
    case added(Object)
    /// An object changed.
    case modified(Object)
    /// An object was deleted (its last state).
    case deleted(Object)
    /// Nothing changed up to this resourceVersion: resume from it.
    case bookmark(resourceVersion: String)
    /// The server ended the watch with an error (code 410 / reason `Expired`: the resourceVersion
    /// was compacted; list again).
    case error(Status)
}

/// The events of one watch response, decoded line by line (the server writes one JSON object per
/// line). Pull-based: nothing is buffered beyond the line being read, so a slow consumer slows the
/// connection down instead of growing a queue.
public struct WatchStream<Object: Decodable & Sendable>: AsyncSequence, Sendable {
    /// The watch's events.
    public typealias Element = WatchEvent<Object>

    let body: HTTPClientResponse.Body
    let path: String

    /// A single line longer than this ends the watch with `.malformedResponse` (16 MiB).
    static var maximumLineBytes: Int { 16 << 20 }

    /// The iterator; use it from one task.
    public struct AsyncIterator: AsyncIteratorProtocol {
        var body: HTTPClientResponse.Body.AsyncIterator
        let path: String
        var buffer = ByteBuffer()
        var finished = false

        /// The next event, or nil when the server ended the watch.
        /// - Throws: ``KubeError`` (`.timedOut`, `.unreachable` when the connection broke,
        ///   `.malformedResponse` for a line that is not a watch event).
        public mutating func next() async throws(KubeError) -> WatchEvent<Object>? {
            while true {
                if let line = nextLine() {
                    if line.allSatisfy({ $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: "\r") }) { continue }
                    return try decode(line)
                }
                if finished {
                    if buffer.readableBytes > 0 {
                        let rest = buffer.readBytes(length: buffer.readableBytes) ?? []
                        return try decode(rest)
                    }
                    return nil
                }
                do {
                    if var chunk = try await body.next() {
                        buffer.writeBuffer(&chunk)
                        if buffer.readableBytes > WatchStream.maximumLineBytes {
                            throw KubeError(
                                kind: .malformedResponse,
                                verb: "GET",
                                path: path,
                                underlying: WatchDecodingError(reason: "a watch event longer than 16 MiB")
                            )
                        }
                    } else {
                        finished = true
                    }
                } catch let error as KubeError {
                    throw error
                } catch {
                    throw transportError(error)
                }
            }
        }

        private func transportError(_ error: any Error) -> KubeError {
            if let client = error as? HTTPClientError, client == .readTimeout || client == .deadlineExceeded {
                return KubeError(kind: .timedOut, verb: "GET", path: path, underlying: error)
            }
            if error is CancellationError || Task.isCancelled {
                return KubeError(kind: .cancelled, verb: "GET", path: path)
            }
            return KubeError(kind: .unreachable, verb: "GET", path: path, underlying: error)
        }

        private mutating func nextLine() -> [UInt8]? {
            guard let index = buffer.readableBytesView.firstIndex(of: UInt8(ascii: "\n")) else { return nil }
            let length = index - buffer.readerIndex
            let line = buffer.readBytes(length: length) ?? []
            buffer.moveReaderIndex(forwardBy: 1)
            buffer.discardReadBytes()
            return line
        }

        private func decode(_ line: [UInt8]) throws(KubeError) -> WatchEvent<Object> {
            let raw: RawWatchEvent
            do {
                raw = try JSONDecoder().decode(RawWatchEvent.self, from: Data(line))
            } catch {
                throw KubeError(kind: .malformedResponse, verb: "GET", path: path, underlying: error)
            }
            do {
                switch raw.type {
                case "ADDED": return .added(try raw.object.decode(Object.self))
                case "MODIFIED": return .modified(try raw.object.decode(Object.self))
                case "DELETED": return .deleted(try raw.object.decode(Object.self))
                case "BOOKMARK":
                    let version = raw.object[path: ["metadata", "resourceVersion"]]?.stringValue ?? ""
                    return .bookmark(resourceVersion: version)
                case "ERROR": return .error(try raw.object.decode(Status.self))
                default:
                    throw WatchDecodingError(reason: "unknown watch event type '\(raw.type)'")
                }
            } catch {
                throw KubeError(kind: .malformedResponse, verb: "GET", path: path, underlying: error)
            }
        }
    }

    /// Starts reading the events.
    public func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(body: body.makeAsyncIterator(), path: path)
    }
}

struct RawWatchEvent: Decodable {
    var type: String
    var object: JSON
}

/// A watch line that is not a watch event.
public struct WatchDecodingError: Error, CustomStringConvertible {
    /// What is wrong with it.
    public var reason: String
    /// The reason.
    public var description: String { reason }
}
