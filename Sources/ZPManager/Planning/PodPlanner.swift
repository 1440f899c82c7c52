// The pure planner of the manager's pod writes: status labels and in-place resize, computed from
// the pod as the API server last showed it and the containers' current phases. Level-based: the
// plan brings the pod to the state the phases ask for, whatever happened before (a lost stream,
// a manager restart, a failed write), and is empty once the pod is there.
import Foundation
import ZPCore
import ZPKube

/// Which pod writes the manager makes (its flags).
public struct PodFeatures: Sendable, Hashable {
    /// `-status-labels`: `status.zeropod.ctrox.dev/<container>` = RUNNING | SCALED_DOWN.
    public var statusLabels: Bool
    /// `-in-place-scaling`: lower a scaled-down container's requests, put them back when it runs.
    public var inPlaceScaling: Bool

    /// Features from their flags.
    public init(statusLabels: Bool, inPlaceScaling: Bool) {
        self.statusLabels = statusLabels
        self.inPlaceScaling = inPlaceScaling
    }

    /// Whether any pod write is on.
    public var any: Bool { statusLabels || inPlaceScaling }
}

/// The writes that bring one pod to the state its containers' phases ask for.
public struct PodPlan: Sendable, Hashable {
    /// A JSON merge patch of `metadata.labels` / `metadata.annotations` (only the manager's keys),
    /// sent to the pod itself; nil when nothing there changes.
    public var metadataPatch: JSON?
    /// A strategic merge patch of `spec.containers[].resources.requests` (containers merged by
    /// name), sent to `pods/<name>/resize` (or the pod itself on servers without it); nil when no
    /// request changes. Sent only after ``metadataPatch`` succeeded: the originals must be stored
    /// before the requests are lowered.
    public var resizePatch: JSON?
    /// Why a resize the phases ask for is not made (the pod's QoS class would change), if so.
    public var resizeSkipped: String?

    /// A plan from its parts.
    public init(metadataPatch: JSON? = nil, resizePatch: JSON? = nil, resizeSkipped: String? = nil) {
        self.metadataPatch = metadataPatch
        self.resizePatch = resizePatch
        self.resizeSkipped = resizeSkipped
    }

    /// Whether the pod is already where the phases ask for.
    public var isEmpty: Bool { metadataPatch == nil && resizePatch == nil }
}

/// Computes ``PodPlan``s (pure; the original's labeller and scaler, as patches).
public enum PodPlanner {
    /// The label key prefix: `status.zeropod.ctrox.dev/<container>`.
    public static let statusLabelPrefix = "status.zeropod.ctrox.dev/"
    /// The annotation holding the original cpu requests (`{"<container>":"<quantity>"}`).
    public static let cpuRequestsAnnotation = "zeropod.ctrox.dev/cpu-requests"
    /// The annotation holding the original memory requests.
    public static let memoryRequestsAnnotation = "zeropod.ctrox.dev/memory-requests"
    /// A scaled-down container's cpu request (non-zero, so the pod keeps its QoS class).
    public static let scaledDownCPU = "1m"
    /// A scaled-down container's memory request.
    public static let scaledDownMemory = "1Ki"

    /// The plan for `pod` given its containers' phases (container name → RUNNING / SCALED_DOWN).
    /// Containers without a phase (not served by a zeropod shim, or not reported yet) are left
    /// alone; phases of containers the pod does not have are ignored.
    ///
    /// - Parameters:
    ///   - pod: The pod as the API server last showed it.
    ///   - phases: The containers' current phases.
    ///   - features: Which writes are on.
    public static func plan(
        pod: Pod,
        phases: [String: ContainerLifecycle.StatusPhase],
        features: PodFeatures
    ) -> PodPlan {
        var plan = PodPlan()
        let containers = pod.spec?.containers ?? []
        let known = Set(containers.map(\.name))
        var labels: [String: JSON] = [:]
        var annotations: [String: JSON] = [:]
        if features.statusLabels {
            for (name, phase) in phases.sorted(by: { $0.key < $1.key }) where known.contains(name) {
                guard let value = labelValue(phase) else { continue }
                if pod.metadata.labels?[statusLabelPrefix + name] != value {
                    labels[statusLabelPrefix + name] = .string(value)
                }
            }
        }
        if features.inPlaceScaling {
            let resize = resizePlan(pod: pod, phases: phases)
            for (key, value) in resize.annotations { annotations[key] = .string(value) }
            plan.resizePatch = resize.patch
            plan.resizeSkipped = resize.skipped
        }
        if !labels.isEmpty || !annotations.isEmpty {
            var metadata: [String: JSON] = [:]
            if !labels.isEmpty { metadata["labels"] = .object(labels) }
            if !annotations.isEmpty { metadata["annotations"] = .object(annotations) }
            plan.metadataPatch = ["metadata": .object(metadata)]
        }
        return plan
    }

    /// The label value of a phase: RUNNING or SCALED_DOWN; nil for STOPPING and the one-off
    /// failures (the label keeps the last lasting phase).
    public static func labelValue(_ phase: ContainerLifecycle.StatusPhase) -> String? {
        switch phase {
        case .running, .scaledDown: return phase.name
        case .stopping, .checkpointFailed, .restoreFailed: return nil
        }
    }

    // MARK: - resize

    struct ResizePlan {
        var annotations: [String: String] = [:]
        var patch: JSON?
        var skipped: String?
    }

    /// Reads an originals annotation (`{"app":"250m"}`); entries that are not quantities or are
    /// zero (the original wrote `"0"` for unset requests) are dropped.
    static func originals(_ text: String?) -> [String: String] {
        guard let text, let json = try? JSON(parsing: Data(text.utf8)), let object = json.objectValue else {
            return [:]
        }
        var result: [String: String] = [:]
        for (name, value) in object {
            guard let string = value.stringValue, let q = Quantity(string), !q.isZero else { continue }
            result[name] = string
        }
        return result
    }

    static func encodeOriginals(_ values: [String: String]) -> String {
        JSON.object(values.mapValues(JSON.string)).text
    }

    static func resizePlan(pod: Pod, phases: [String: ContainerLifecycle.StatusPhase]) -> ResizePlan {
        var result = ResizePlan()
        let containers = pod.spec?.containers ?? []
        let annotations = pod.metadata.annotations ?? [:]
        var cpuOriginals = originals(annotations[cpuRequestsAnnotation])
        var memoryOriginals = originals(annotations[memoryRequestsAnnotation])
        let hadCPU = annotations[cpuRequestsAnnotation] != nil
        let hadMemory = annotations[memoryRequestsAnnotation] != nil
        let lowCPU = Quantity(scaledDownCPU)!
        let lowMemory = Quantity(scaledDownMemory)!
        var changes: [(name: String, requests: [String: String])] = []
        var lowering = false

        for container in containers {
            guard let phase = phases[container.name] else { continue }
            let requests = container.resources?.requests ?? [:]
            var wanted: [String: String] = [:]
            switch phase {
            case .scaledDown:
                // Remember the current request as the original unless it is already lowered.
                for (resource, low, table) in [("cpu", lowCPU, 0), ("memory", lowMemory, 1)] {
                    guard let current = requests[resource], let q = Quantity(current) else { continue }
                    if q == low { continue }
                    if table == 0 {
                        if cpuOriginals[container.name].flatMap(Quantity.init) != q {
                            cpuOriginals[container.name] = current
                        }
                    } else {
                        if memoryOriginals[container.name].flatMap(Quantity.init) != q {
                            memoryOriginals[container.name] = current
                        }
                    }
                    wanted[resource] = low.text
                    lowering = true
                }
            case .running:
                for (resource, original) in [
                    ("cpu", cpuOriginals[container.name]), ("memory", memoryOriginals[container.name]),
                ] {
                    guard let original, let q = Quantity(original) else { continue }
                    guard let current = requests[resource], let c = Quantity(current) else { continue }
                    // Only requests that are set; only back from the lowered value (a request
                    // the user changed while running stays theirs).
                    if c != q, c == (resource == "cpu" ? lowCPU : lowMemory) { wanted[resource] = original }
                }
            case .stopping, .checkpointFailed, .restoreFailed:
                continue
            }
            if !wanted.isEmpty { changes.append((container.name, wanted)) }
        }

        if lowering, isGuaranteed(containers) {
            // The server refuses a resize that changes the QoS class (`Pod QoS is immutable`);
            // lowering the requests of a Guaranteed pod would make it Burstable.
            result.skipped =
                "the pod's QoS class is Guaranteed (requests equal limits); lowering requests would change it"
            changes.removeAll { change in
                change.requests.contains { key, value in Quantity(value) == (key == "cpu" ? lowCPU : lowMemory) }
            }
        }
        if result.skipped == nil || !changes.isEmpty {
            let newCPU = encodeOriginals(cpuOriginals)
            let newMemory = encodeOriginals(memoryOriginals)
            if !cpuOriginals.isEmpty, !hadCPU || originals(annotations[cpuRequestsAnnotation]) != cpuOriginals {
                result.annotations[cpuRequestsAnnotation] = newCPU
            }
            if !memoryOriginals.isEmpty,
                !hadMemory || originals(annotations[memoryRequestsAnnotation]) != memoryOriginals
            {
                result.annotations[memoryRequestsAnnotation] = newMemory
            }
        }
        if !changes.isEmpty {
            let entries: [JSON] = changes.map { change in
                [
                    "name": .string(change.name),
                    "resources": ["requests": .object(change.requests.mapValues(JSON.string))],
                ]
            }
            result.patch = ["spec": ["containers": .array(entries)]]
        }
        return result
    }

    /// Guaranteed QoS: every container has cpu and memory limits, and its requests (which default
    /// to the limits) equal them.
    static func isGuaranteed(_ containers: [Container]) -> Bool {
        guard !containers.isEmpty else { return false }
        for container in containers {
            let limits = container.resources?.limits ?? [:]
            let requests = container.resources?.requests ?? [:]
            for resource in ["cpu", "memory"] {
                guard let limit = limits[resource].flatMap(Quantity.init), !limit.isZero else { return false }
                if let request = requests[resource].flatMap(Quantity.init), request != limit { return false }
            }
        }
        return true
    }
}
