// Collecting events that code under test reports through a callback.
import Synchronization

/// Collects the events a component reports through a `@Sendable` callback (``sink``), for
/// assertions in any order and from any thread.
public final class EventLog<Event: Sendable>: Sendable {
    private let events = Mutex<[Event]>([])

    /// Creates an empty log.
    public init() {}

    /// The callback to hand to the component: appends every event.
    public var sink: @Sendable (Event) -> Void { { event in self.events.withLock { $0.append(event) } } }

    /// Every event so far, in the order they arrived.
    public var all: [Event] { events.withLock { $0 } }

    /// How many events so far satisfy `predicate`.
    public func count(where predicate: (Event) -> Bool) -> Int { all.filter(predicate).count }
}
