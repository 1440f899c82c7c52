// The pure planners: labels, resize and events (no I/O, no root).
import Foundation
import Testing
import ZPCore
import ZPKube

@testable import ZPManager

private func pod(
    _ name: String = "web",
    labels: [String: String] = [:],
    annotations: [String: String] = [:],
    containers: [Container] = [
        Container(name: "app", resources: ResourceRequirements(requests: ["cpu": "250m", "memory": "64Mi"]))
    ]
) -> Pod {
    Pod(
        metadata: ObjectMeta(
            name: name,
            namespace: "default",
            uid: "uid-1",
            resourceVersion: "7",
            labels: labels.isEmpty ? nil : labels,
            annotations: annotations.isEmpty ? nil : annotations
        ),
        spec: PodSpec(nodeName: "node-a", containers: containers)
    )
}

private let labelsOnly = PodFeatures(statusLabels: true, inPlaceScaling: false)
private let resizeOnly = PodFeatures(statusLabels: false, inPlaceScaling: true)
private let both = PodFeatures(statusLabels: true, inPlaceScaling: true)

@Suite struct LabelPlannerTests {
    @Test func scaledDown_setsTheLabel_andOnlyIt() {
        let plan = PodPlanner.plan(pod: pod(labels: ["app": "web"]), phases: ["app": .scaledDown], features: labelsOnly)
        #expect(plan.metadataPatch == ["metadata": ["labels": ["status.zeropod.ctrox.dev/app": "SCALED_DOWN"]]])
        #expect(plan.resizePatch == nil)
    }

    @Test func labelAlreadyThere_planIsEmpty() {
        let plan = PodPlanner.plan(
            pod: pod(labels: ["status.zeropod.ctrox.dev/app": "RUNNING"]),
            phases: ["app": .running],
            features: labelsOnly
        )
        #expect(plan.isEmpty)
    }

    @Test func unknownContainers_andStopping_areIgnored() {
        let plan = PodPlanner.plan(pod: pod(), phases: ["other": .scaledDown, "app": .stopping], features: labelsOnly)
        #expect(plan.isEmpty)
    }

    @Test func featuresOff_writeNothing() {
        let plan = PodPlanner.plan(
            pod: pod(),
            phases: ["app": .scaledDown],
            features: PodFeatures(statusLabels: false, inPlaceScaling: false)
        )
        #expect(plan.isEmpty)
    }

    @Test func twoContainers_eachGetsItsLabel() {
        let p = pod(containers: [Container(name: "a"), Container(name: "b")])
        let plan = PodPlanner.plan(pod: p, phases: ["a": .running, "b": .scaledDown], features: labelsOnly)
        #expect(
            plan.metadataPatch
                == [
                    "metadata": [
                        "labels": [
                            "status.zeropod.ctrox.dev/a": "RUNNING", "status.zeropod.ctrox.dev/b": "SCALED_DOWN",
                        ]
                    ]
                ]
        )
    }
}

@Suite struct ResizePlannerTests {
    @Test func scaledDown_storesOriginals_andLowersSetRequests() {
        let plan = PodPlanner.plan(pod: pod(), phases: ["app": .scaledDown], features: both)
        #expect(
            plan.metadataPatch
                == [
                    "metadata": [
                        "labels": ["status.zeropod.ctrox.dev/app": "SCALED_DOWN"],
                        "annotations": [
                            "zeropod.ctrox.dev/cpu-requests": #"{"app":"250m"}"#,
                            "zeropod.ctrox.dev/memory-requests": #"{"app":"64Mi"}"#,
                        ],
                    ]
                ]
        )
        #expect(
            plan.resizePatch == [
                "spec": ["containers": [["name": "app", "resources": ["requests": ["cpu": "1m", "memory": "1Ki"]]]]]
            ]
        )
    }

    @Test func onlySetRequestsAreLowered_limitsUntouched() {
        let p = pod(containers: [
            Container(
                name: "app",
                resources: ResourceRequirements(requests: ["memory": "64Mi"], limits: ["memory": "128Mi"])
            )
        ])
        let plan = PodPlanner.plan(pod: p, phases: ["app": .scaledDown], features: resizeOnly)
        #expect(
            plan.resizePatch == [
                "spec": ["containers": [["name": "app", "resources": ["requests": ["memory": "1Ki"]]]]]
            ]
        )
        #expect(
            plan.metadataPatch == [
                "metadata": ["annotations": ["zeropod.ctrox.dev/memory-requests": #"{"app":"64Mi"}"#]]
            ]
        )
    }

    @Test func running_restoresTheOriginals() {
        let p = pod(
            annotations: [
                "zeropod.ctrox.dev/cpu-requests": #"{"app":"250m"}"#,
                "zeropod.ctrox.dev/memory-requests": #"{"app":"64Mi"}"#,
            ],
            containers: [
                Container(name: "app", resources: ResourceRequirements(requests: ["cpu": "1m", "memory": "1Ki"]))
            ]
        )
        let plan = PodPlanner.plan(pod: p, phases: ["app": .running], features: resizeOnly)
        #expect(plan.metadataPatch == nil)
        #expect(
            plan.resizePatch == [
                "spec": [
                    "containers": [["name": "app", "resources": ["requests": ["cpu": "250m", "memory": "64Mi"]]]]
                ]
            ]
        )
    }

    @Test func alreadyLowered_scaledDownAgain_isEmpty_andKeepsOriginals() {
        let p = pod(
            annotations: [
                "zeropod.ctrox.dev/cpu-requests": #"{"app":"250m"}"#,
                "zeropod.ctrox.dev/memory-requests": #"{"app":"64Mi"}"#,
            ],
            containers: [
                Container(name: "app", resources: ResourceRequirements(requests: ["cpu": "0.001", "memory": "1024"]))
            ]
        )
        #expect(PodPlanner.plan(pod: p, phases: ["app": .scaledDown], features: resizeOnly).isEmpty)
    }

    @Test func running_afterTheUserChangedRequests_leavesThem() {
        let p = pod(
            annotations: ["zeropod.ctrox.dev/cpu-requests": #"{"app":"250m"}"#],
            containers: [Container(name: "app", resources: ResourceRequirements(requests: ["cpu": "500m"]))]
        )
        #expect(PodPlanner.plan(pod: p, phases: ["app": .running], features: resizeOnly).isEmpty)
    }

    @Test func userChangedRequests_nextScaleDownUpdatesTheOriginal() {
        let p = pod(
            annotations: ["zeropod.ctrox.dev/cpu-requests": #"{"app":"250m"}"#],
            containers: [Container(name: "app", resources: ResourceRequirements(requests: ["cpu": "500m"]))]
        )
        let plan = PodPlanner.plan(pod: p, phases: ["app": .scaledDown], features: resizeOnly)
        #expect(
            plan.metadataPatch == ["metadata": ["annotations": ["zeropod.ctrox.dev/cpu-requests": #"{"app":"500m"}"#]]]
        )
    }

    @Test func originalsZero_fromTheOriginalManager_areNotRestored() {
        #expect(PodPlanner.originals(#"{"app":"0","b":"100m","c":7}"#) == ["b": "100m"])
        #expect(PodPlanner.originals("not json").isEmpty)
    }

    @Test func guaranteedPod_isNotResized() {
        let p = pod(containers: [
            Container(
                name: "app",
                resources: ResourceRequirements(
                    requests: ["cpu": "1", "memory": "1Gi"],
                    limits: ["cpu": "1", "memory": "1Gi"]
                )
            )
        ])
        let plan = PodPlanner.plan(pod: p, phases: ["app": .scaledDown], features: both)
        #expect(plan.resizePatch == nil)
        #expect(plan.resizeSkipped != nil)
        #expect(plan.metadataPatch == ["metadata": ["labels": ["status.zeropod.ctrox.dev/app": "SCALED_DOWN"]]])
    }

    @Test func quantities_compareByValue() {
        #expect(Quantity("1Ki") == Quantity("1024"))
        #expect(Quantity("0.5") == Quantity("500m"))
        #expect(Quantity("1e3") == Quantity("1k"))
        #expect(Quantity("64Mi")!.value == 67_108_864)
        #expect(Quantity("1m") != Quantity("1"))
        #expect(Quantity("abc") == nil)
        #expect(Quantity("1X") == nil)
        #expect(Quantity("") == nil)
    }
}

@Suite struct EventPlannerTests {
    @Test func event_hasTheOriginalsFields() {
        let p = pod()
        let time: Int64 = 1_790_000_000_123_456_789
        let event = EventPlanner.event(
            .restored(duration: .milliseconds(312)),
            container: "app",
            containerID: "cid",
            pod: p,
            time: time,
            identity: "42",
            reporter: EventReporter(instance: "host-1", nodeName: "node-a")
        )
        #expect(event.type == "Normal")
        #expect(event.reason == "Running")
        #expect(event.action == "Running")
        #expect(event.message == "Restored container app in 312ms")
        #expect(event.reportingComponent == "zeropod.ctrox.dev/manager")
        #expect(event.reportingInstance == "host-1")
        #expect(event.source == EventSource(component: "zeropod.ctrox.dev/manager", host: "node-a"))
        #expect(event.involvedObject.fieldPath == "spec.containers{app}")
        #expect(event.involvedObject.uid == "uid-1")
        #expect(event.involvedObject.resourceVersion == "7")
        #expect(event.involvedObject.kind == "Pod")
        #expect(event.metadata.generateName == "zeropod-status-event-")
        #expect(event.metadata.name?.hasPrefix("zeropod-status-event-") == true)
        #expect(event.eventTime == "2026-09-21T14:13:20.123456Z")
        #expect(event.firstTimestamp == "2026-09-21T14:13:20Z")
    }

    @Test func reasons_areTheOriginals() {
        #expect(StatusOccurrence.scaledDown(duration: .zero).reason == "Scaled down")
        #expect(StatusOccurrence.restored(duration: .zero).reason == "Running")
        #expect(StatusOccurrence.checkpointFailed(reason: "x").reason == "Checkpoint failed")
        #expect(StatusOccurrence.restoreFailed(reason: "x").reason == "Restore failed")
    }

    @Test func names_areDeterministic_andDistinct() {
        let a = EventPlanner.name(podUID: "u", containerID: "c", kind: "running", identity: "1")
        #expect(a == EventPlanner.name(podUID: "u", containerID: "c", kind: "running", identity: "1"))
        #expect(a != EventPlanner.name(podUID: "u", containerID: "c", kind: "running", identity: "2"))
        #expect(a != EventPlanner.name(podUID: "u", containerID: "c", kind: "scaled-down", identity: "1"))
        #expect(a.count == "zeropod-status-event-".count + 16)
    }

    @Test func durations_printLikeGo() {
        #expect(EventPlanner.text(.milliseconds(312)) == "312ms")
        #expect(EventPlanner.text(.microseconds(312_500)) == "312.5ms")
        #expect(EventPlanner.text(.milliseconds(1200)) == "1.2s")
        #expect(EventPlanner.text(.nanoseconds(800)) == "800ns")
    }
}
