/// A `core/v1 Pod`: the fields the manager reads. Decoding ignores every other field, so send a
/// decoded `Pod` back with `PUT` only if losing them is intended; prefer patches, or keep the object
/// as ``JSON``.
public struct Pod: Codable, Sendable, Hashable {
    /// `apiVersion` (`v1`).
    public var apiVersion: String?
    /// `kind` (`Pod`).
    public var kind: String?
    /// `metadata`.
    public var metadata: ObjectMeta
    /// `spec`.
    public var spec: PodSpec?
    /// `status`.
    public var status: PodStatus?

    /// A pod with the given parts (`apiVersion: v1`, `kind: Pod`).
    public init(metadata: ObjectMeta, spec: PodSpec? = nil, status: PodStatus? = nil) {
        self.apiVersion = "v1"
        self.kind = "Pod"
        self.metadata = metadata
        self.spec = spec
        self.status = status
    }
}

/// `spec` of a pod.
public struct PodSpec: Codable, Sendable, Hashable {
    /// `spec.nodeName`: the node the pod is bound to.
    public var nodeName: String?
    /// `spec.runtimeClassName`.
    public var runtimeClassName: String?
    /// `spec.containers`.
    public var containers: [Container]

    /// A spec with the given containers.
    public init(nodeName: String? = nil, runtimeClassName: String? = nil, containers: [Container]) {
        self.nodeName = nodeName
        self.runtimeClassName = runtimeClassName
        self.containers = containers
    }
}

/// One entry of `spec.containers`.
public struct Container: Codable, Sendable, Hashable {
    /// `name`, the key of the list (strategic merge patches merge containers by it).
    public var name: String
    /// `image`.
    public var image: String?
    /// `resources`.
    public var resources: ResourceRequirements?

    /// A container with the given fields.
    public init(name: String, image: String? = nil, resources: ResourceRequirements? = nil) {
        self.name = name
        self.image = image
        self.resources = resources
    }
}

/// `resources` of a container: quantities by resource name (`cpu`, `memory`), kept as the strings the
/// server sent (`"250m"`, `"1Ki"`).
public struct ResourceRequirements: Codable, Sendable, Hashable {
    /// `requests`.
    public var requests: [String: String]?
    /// `limits`.
    public var limits: [String: String]?

    /// Requirements with the given quantities.
    public init(requests: [String: String]? = nil, limits: [String: String]? = nil) {
        self.requests = requests
        self.limits = limits
    }
}

/// `status` of a pod.
public struct PodStatus: Codable, Sendable, Hashable {
    /// `status.phase` (`Pending`, `Running`, …).
    public var phase: String?
    /// `status.podIP`.
    public var podIP: String?
    /// `status.containerStatuses`.
    public var containerStatuses: [ContainerStatus]?

    /// A status with the given fields.
    public init(phase: String? = nil, podIP: String? = nil, containerStatuses: [ContainerStatus]? = nil) {
        self.phase = phase
        self.podIP = podIP
        self.containerStatuses = containerStatuses
    }
}

/// One entry of `status.containerStatuses`.
public struct ContainerStatus: Codable, Sendable, Hashable {
    /// `name` of the container.
    public var name: String
    /// `containerID` (`containerd://<id>`).
    public var containerID: String?
    /// `ready`.
    public var ready: Bool?
    /// `restartCount`.
    public var restartCount: Int?
    /// `resources`: what the kubelet applied (in-place resize).
    public var resources: ResourceRequirements?
    /// `allocatedResources`: what the node allocated (in-place resize).
    public var allocatedResources: [String: String]?

    /// A container status with the given fields.
    public init(
        name: String,
        containerID: String? = nil,
        ready: Bool? = nil,
        restartCount: Int? = nil,
        resources: ResourceRequirements? = nil,
        allocatedResources: [String: String]? = nil
    ) {
        self.name = name
        self.containerID = containerID
        self.ready = ready
        self.restartCount = restartCount
        self.resources = resources
        self.allocatedResources = allocatedResources
    }
}

/// A `core/v1 Node`, metadata only.
public struct Node: Codable, Sendable, Hashable {
    /// `apiVersion` (`v1`).
    public var apiVersion: String?
    /// `kind` (`Node`).
    public var kind: String?
    /// `metadata`.
    public var metadata: ObjectMeta

    /// A node with the given metadata.
    public init(metadata: ObjectMeta) {
        self.apiVersion = "v1"
        self.kind = "Node"
        self.metadata = metadata
    }
}
