import Foundation
import Testing
import ZPKube

@testable import KubeAPIDouble

/// The double's patch engines, on the RFCs' own examples and the Kubernetes merge rules.
@Suite struct PatchTests {
    func parse(_ text: String) throws -> JSON { try JSON(parsing: Array(text.utf8)) }

    @Test func mergePatch_rfc7386Example() throws {
        let target = try parse(
            #"{"title":"Goodbye!","author":{"givenName":"John","familyName":"Doe"},"tags":["example","sample"],"content":"This will be unchanged"}"#
        )
        let patch = try parse(
            #"{"title":"Hello!","phoneNumber":"+01-123-456-7890","author":{"familyName":null},"tags":["example"]}"#
        )
        let expected = try parse(
            #"{"title":"Hello!","author":{"givenName":"John"},"tags":["example"],"content":"This will be unchanged","phoneNumber":"+01-123-456-7890"}"#
        )
        #expect(applyMergePatch(patch, to: target) == expected)
    }

    @Test func jsonPatch_rfc6902Operations() throws {
        let target = try parse(#"{"a":{"b":["x","y"]},"c":1}"#)
        let patched = try applyJSONPatch(
            try parse(
                #"[{"op":"add","path":"/a/b/1","value":"new"},{"op":"add","path":"/a/b/-","value":"end"},{"op":"remove","path":"/c"},{"op":"copy","from":"/a/b/0","path":"/d"},{"op":"move","from":"/d","path":"/e"},{"op":"replace","path":"/a/b/0","value":"X"},{"op":"test","path":"/e","value":"x"}]"#
            ),
            to: target
        )
        #expect(patched == (try parse(#"{"a":{"b":["X","new","y","end"]},"e":"x"}"#)))
        #expect(throws: PatchError.self) {
            try applyJSONPatch(try parse(#"[{"op":"replace","path":"/missing","value":1}]"#), to: target)
        }
        #expect(throws: PatchError.self) {
            try applyJSONPatch(try parse(#"[{"op":"test","path":"/c","value":2}]"#), to: target)
        }
        #expect(throws: PatchError.self) { try applyJSONPatch(try parse(#"{"op":"add"}"#), to: target) }
        let escaped = try applyJSONPatch(
            try parse(#"[{"op":"add","path":"/l/a~1b~0c","value":"v"}]"#),
            to: try parse(#"{"l":{}}"#)
        )
        #expect(escaped == (try parse(#"{"l":{"a/b~c":"v"}}"#)))
    }

    @Test func strategicMerge_containersByName_directives() throws {
        let pod = try parse(
            #"{"metadata":{"labels":{"a":"1","b":"2"},"finalizers":["f1"]},"spec":{"containers":[{"name":"app","image":"i1","env":[{"name":"A","value":"1"}]},{"name":"side","image":"s1"}],"tolerations":[{"key":"t1"}]}}"#
        )
        let patched = try applyStrategicMergePatch(
            try parse(
                #"{"metadata":{"labels":{"a":null,"c":"3"},"finalizers":["f2"]},"spec":{"containers":[{"name":"side","image":"s2"},{"name":"new","image":"n1"},{"name":"app","env":[{"name":"B","value":"2"}]}],"tolerations":[{"key":"t2"}]}}"#
            ),
            to: pod
        )
        #expect(patched[path: ["metadata", "labels"]] == ["b": "2", "c": "3"])
        #expect(patched[path: ["metadata", "finalizers"]] == ["f1", "f2"])
        let containers = patched[path: ["spec", "containers"]]?.arrayValue ?? []
        #expect(containers.map { $0["name"] } == ["app", "side", "new"])
        #expect(containers[0]["env"] == [["name": "A", "value": "1"], ["name": "B", "value": "2"]])
        #expect(containers[1]["image"] == "s2")
        // Lists without a strategy are replaced.
        #expect(patched[path: ["spec", "tolerations"]] == [["key": "t2"]])

        let deleted = try applyStrategicMergePatch(
            try parse(
                #"{"spec":{"containers":[{"name":"side","$patch":"delete"}],"$setElementOrder/containers":[{"name":"side"},{"name":"app"}]}}"#
            ),
            to: pod
        )
        #expect(deleted[path: ["spec", "containers"]]?.arrayValue?.map { $0["name"] } == ["app"])
        let ordered = try applyStrategicMergePatch(
            try parse(
                #"{"spec":{"$setElementOrder/containers":[{"name":"side"},{"name":"app"}],"containers":[{"name":"app","image":"i2"}]}}"#
            ),
            to: pod
        )
        #expect(ordered[path: ["spec", "containers"]]?.arrayValue?.map { $0["name"] } == ["side", "app"])
        let replaced = try applyStrategicMergePatch(
            try parse(#"{"metadata":{"labels":{"$patch":"replace","z":"9"}}}"#),
            to: pod
        )
        #expect(replaced[path: ["metadata", "labels"]] == ["z": "9"])
        #expect(throws: PatchError.self) {
            try applyStrategicMergePatch(try parse(#"{"spec":{"containers":[{"image":"no-name"}]}}"#), to: pod)
        }
        #expect(throws: PatchError.self) { try applyStrategicMergePatch(try parse(#"[]"#), to: pod) }
    }

    @Test func selectors_andQuantities() throws {
        let labels = try parseLabelSelector("app=web,tier!=db,env in (prod, staging),!legacy,zone")
        let object: JSON = ["metadata": ["labels": ["app": "web", "env": "prod", "zone": "a"]]]
        #expect(ObjectFilter(labels: labels).matches(object))
        #expect(!ObjectFilter(labels: try parseLabelSelector("env notin (prod)")).matches(object))
        #expect(throws: SelectorError.self) { try parseFieldSelector("spec.foo=bar", resource: "pods") }
        let fields = try parseFieldSelector("spec.nodeName=node-a,status.phase!=Failed", resource: "pods")
        #expect(ObjectFilter(fields: fields).matches(["spec": ["nodeName": "node-a"], "status": ["phase": "Running"]]))
        #expect(Quantity.value("250m") == 0.25)
        #expect(Quantity.value("1Ki") == 1024)
        #expect(Quantity.value("1e3") == 1000)
        #expect(Quantity.value("1.5Gi") == 1.5 * 1_073_741_824)
        #expect(Quantity.value("12x") == nil)
        #expect(
            Validation.qosClass(["spec": ["containers": [["resources": ["limits": ["cpu": "1", "memory": "1Gi"]]]]]])
                == "Guaranteed"
        )
        #expect(
            Validation.qosClass(["spec": ["containers": [["resources": ["requests": ["cpu": "1"]]]]]]) == "Burstable"
        )
        #expect(Validation.qosClass(["spec": ["containers": [["name": "a"]]]]) == "BestEffort")
    }

    @Test func backoff_growsWithJitterAndResets() {
        var backoff = Backoff(initial: .milliseconds(100), maximum: .seconds(1), factor: 2, jitter: 0.5)
        #expect(backoff.nextDelay(random: 0) == .milliseconds(100))
        #expect(backoff.nextDelay(random: 1) == .milliseconds(300))
        #expect(backoff.nextDelay(random: 0) == .milliseconds(400))
        for _ in 0..<10 { _ = backoff.nextDelay(random: 0) }
        #expect(backoff.nextDelay(random: 0) == .seconds(1))
        #expect(backoff.nextDelay(random: 0.5) == .milliseconds(1250))
        backoff.reset()
        #expect(backoff.nextDelay(random: 0) == .milliseconds(100))
    }

    @Test func kubeTime_formats() {
        let date = Date(timeIntervalSince1970: 1_796_000_000.123456)
        #expect(KubeTime.time(date) == "2026-11-30T00:53:20Z")
        #expect(KubeTime.microTime(date) == "2026-11-30T00:53:20.123456Z")
        #expect(KubeTime.parse("2026-11-30T00:53:20Z") == Date(timeIntervalSince1970: 1_796_000_000))
    }
}
