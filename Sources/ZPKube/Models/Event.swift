/// A `core/v1 Event` with the fields the original's manager sets (see docs/decisions/0020).
///
/// Note the wire name of the reporting controller: `core/v1` calls it `reportingComponent`
/// (Go's `ReportingController`); `events.k8s.io/v1` calls it `reportingController`.
public struct Event: Codable, Sendable, Hashable {
    /// `apiVersion` (`v1`).
    public var apiVersion: String?
    /// `kind` (`Event`).
    public var kind: String?
    /// `metadata` (the original uses `generateName: zeropod-status-event-`).
    public var metadata: ObjectMeta
    /// `involvedObject`: the pod (and container, through `fieldPath`) the event is about.
    public var involvedObject: ObjectReference
    /// `reason` (`Running`, `Scaled down`, …).
    public var reason: String?
    /// `message`.
    public var message: String?
    /// `source`.
    public var source: EventSource?
    /// `firstTimestamp` (`Time`).
    public var firstTimestamp: String?
    /// `lastTimestamp` (`Time`).
    public var lastTimestamp: String?
    /// `count`.
    public var count: Int?
    /// `type` (`Normal` or `Warning`).
    public var type: String?
    /// `eventTime` (`MicroTime`).
    public var eventTime: String?
    /// `action`.
    public var action: String?
    /// `reportingComponent` (Go: `ReportingController`).
    public var reportingComponent: String?
    /// `reportingInstance`.
    public var reportingInstance: String?

    /// An event with the given fields (`apiVersion: v1`, `kind: Event`).
    public init(
        metadata: ObjectMeta,
        involvedObject: ObjectReference,
        reason: String? = nil,
        message: String? = nil,
        source: EventSource? = nil,
        firstTimestamp: String? = nil,
        lastTimestamp: String? = nil,
        count: Int? = nil,
        type: String? = nil,
        eventTime: String? = nil,
        action: String? = nil,
        reportingComponent: String? = nil,
        reportingInstance: String? = nil
    ) {
        self.apiVersion = "v1"
        self.kind = "Event"
        self.metadata = metadata
        self.involvedObject = involvedObject
        self.reason = reason
        self.message = message
        self.source = source
        self.firstTimestamp = firstTimestamp
        self.lastTimestamp = lastTimestamp
        self.count = count
        self.type = type
        self.eventTime = eventTime
        self.action = action
        self.reportingComponent = reportingComponent
        self.reportingInstance = reportingInstance
    }
}

/// `core/v1 ObjectReference`.
public struct ObjectReference: Codable, Sendable, Hashable {
    /// `apiVersion` of the referenced object.
    public var apiVersion: String?
    /// `kind` of the referenced object.
    public var kind: String?
    /// `name`.
    public var name: String?
    /// `namespace`.
    public var namespace: String?
    /// `uid`.
    public var uid: String?
    /// `resourceVersion`.
    public var resourceVersion: String?
    /// `fieldPath` (`spec.containers{name}`).
    public var fieldPath: String?

    /// A reference with the given fields.
    public init(
        apiVersion: String? = nil,
        kind: String? = nil,
        name: String? = nil,
        namespace: String? = nil,
        uid: String? = nil,
        resourceVersion: String? = nil,
        fieldPath: String? = nil
    ) {
        self.apiVersion = apiVersion
        self.kind = kind
        self.name = name
        self.namespace = namespace
        self.uid = uid
        self.resourceVersion = resourceVersion
        self.fieldPath = fieldPath
    }
}

/// `core/v1 EventSource`.
public struct EventSource: Codable, Sendable, Hashable {
    /// `component`.
    public var component: String?
    /// `host`.
    public var host: String?

    /// A source with the given fields.
    public init(component: String? = nil, host: String? = nil) {
        self.component = component
        self.host = host
    }
}
