import Logging
import NIOCore
import ZPAPI
import ZPCore
import ZPSystem
import ZPTTRPC

/// Sends task events to containerd in the order they were published.
///
/// Events go into an unbounded queue; ``run()`` forwards them one by one over a ttrpc connection to
/// `$TTRPC_ADDRESS` (`containerd.services.events.ttrpc.v1.Events/Forward`), reconnecting and retrying
/// each event up to five times with a growing pause, as containerd's own shims do. A single consumer
/// keeps the required order (create → start → exit → delete; exec-added → exec-started → exit).
public final class EventPublisher: Sendable {
    /// The ttrpc service and method events are forwarded to.
    public static let service = EventsAPI.service

    private struct Item: Sendable {
        var namespace: String
        var event: TaskEvent
        var timestamp: Int64
    }

    private let address: String
    private let group: any EventLoopGroup
    private let logger: Logger
    private let stream: AsyncStream<Item>
    private let continuation: AsyncStream<Item>.Continuation

    /// - Parameters:
    ///   - address: containerd's ttrpc socket (`TTRPC_ADDRESS`); empty drops events (logged).
    ///   - group: Event loops for the connection.
    ///   - logger: Failures are logged here.
    public init(address: String, group: any EventLoopGroup, logger: Logger) {
        self.address = address
        self.group = group
        self.logger = logger
        (stream, continuation) = AsyncStream.makeStream(of: Item.self)
    }

    /// Queues `event` for `namespace`; never blocks.
    public func publish(_ event: TaskEvent, namespace: String) {
        continuation.yield(Item(namespace: namespace, event: event, timestamp: SystemClock.realtimeNanoseconds()))
    }

    /// Stops accepting events; ``run()`` returns after forwarding the queue.
    public func finish() {
        continuation.finish()
    }

    /// Forwards queued events until ``finish()`` or cancellation.
    public func run() async {
        var client: TTRPCClient?
        for await item in stream {
            let request = EventForwardRequest(
                timestamp: ProtobufTimestamp(unixNanoseconds: item.timestamp),
                namespace: item.namespace,
                topic: item.event.topic,
                event: ProtobufAny(typeURL: item.event.typeURL, value: item.event.encoded())
            )
            var attempt = 0
            while true {
                attempt += 1
                do {
                    if client == nil {
                        guard !address.isEmpty else {
                            logger.warning(
                                "no TTRPC_ADDRESS: event dropped",
                                metadata: ["topic": "\(item.event.topic)"]
                            )
                            break
                        }
                        client = try await TTRPCClient.connect(unixSocketPath: address, group: group)
                    }
                    _ = try await client!.call(
                        service: Self.service,
                        method: EventsAPI.forward,
                        payload: request.encoded(),
                        metadata: [(TaskAPI.namespaceMetadataKey, item.namespace)],
                        timeout: .seconds(5)
                    )
                    logger.debug("event forwarded", metadata: ["topic": "\(item.event.topic)"])
                    break
                } catch {
                    logger.debug(
                        "event forward failed",
                        metadata: ["topic": "\(item.event.topic)", "attempt": "\(attempt)", "error": "\(error)"]
                    )
                    await client?.close()
                    client = nil
                    if attempt >= 5 || Task.isCancelled {
                        logger.error(
                            "event dropped after \(attempt) attempts",
                            metadata: ["topic": "\(item.event.topic)", "error": "\(error)"]
                        )
                        break
                    }
                    try? await Task.sleep(for: .seconds(attempt))
                }
            }
        }
        await client?.close()
    }
}
