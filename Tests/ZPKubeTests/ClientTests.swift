import Foundation
import KubeAPIDouble
import Testing
import ZPKube
import ZPTestSupport

/// ZPKube's client against the API double (a test double of the Kubernetes API server, see
/// ``KubectlTests`` for how its wire compatibility is proven with real kubectl).
@Suite struct ClientTests {
    @Test func createGetListUpdateDelete() async throws {
        try await withDoubleAndClient { double, client in
            let created = try await client.create(
                Pod(
                    metadata: ObjectMeta(name: "web", labels: ["app": "web"]),
                    spec: PodSpec(nodeName: "node-a", containers: [Container(name: "app", image: "busybox")])
                ),
                .pods,
                namespace: "default"
            )
            #expect(created.metadata.uid?.isEmpty == false)
            #expect(created.metadata.creationTimestamp != nil)
            let version = try #require(created.metadata.resourceVersion)

            let got = try await client.get(Pod.self, .pods, namespace: "default", name: "web")
            #expect(got == created)

            for index in 0..<4 {
                _ = try await client.create(
                    Pod(
                        metadata: ObjectMeta(name: "p\(index)"),
                        spec: PodSpec(containers: [Container(name: "c", image: "x")])
                    ),
                    .pods,
                    namespace: "default"
                )
            }
            var page = try await client.list(Pod.self, .pods, options: ListOptions(limit: 2))
            var names = page.items.map { $0.metadata.name ?? "" }
            while let token = page.metadata.continue, !token.isEmpty {
                page = try await client.list(Pod.self, .pods, options: ListOptions(limit: 2, continueToken: token))
                names += page.items.map { $0.metadata.name ?? "" }
            }
            #expect(names == ["p0", "p1", "p2", "p3", "web"])
            let selected = try await client.list(
                Pod.self,
                .pods,
                namespace: "default",
                options: ListOptions(labelSelector: "app=web")
            )
            #expect(selected.items.map(\.metadata.name) == ["web"])
            let onNode = try await client.list(
                Pod.self,
                .pods,
                options: ListOptions(fieldSelector: "spec.nodeName=node-a")
            )
            #expect(onNode.items.map(\.metadata.name) == ["web"])

            // PUT the whole object as JSON: fields the typed model does not know survive.
            var raw = try await client.get(JSON.self, .pods, namespace: "default", name: "web")
            raw[path: ["metadata", "labels", "tier"]] = "front"
            let updated = try await client.update(raw, .pods, namespace: "default", name: "web")
            #expect(updated[path: ["metadata", "labels", "tier"]] == "front")
            #expect(updated[path: ["metadata", "resourceVersion"]]?.stringValue != version)
            #expect(updated[path: ["status", "qosClass"]] == "BestEffort")

            try await client.delete(.pods, namespace: "default", name: "web")
            let gone = await kubeError { _ = try await client.get(Pod.self, .pods, namespace: "default", name: "web") }
            #expect(gone?.kind == .notFound)
            #expect(gone?.reason == "NotFound")
            #expect(gone?.message == #"pods "web" not found"#)
            #expect(gone?.verb == "GET")
            #expect(gone?.path == "/api/v1/namespaces/default/pods/web")
        }
    }

    @Test func conflicts_staleResourceVersion_alreadyExists_deletePrecondition() async throws {
        try await withDoubleAndClient { double, client in
            try double.create("pods", namespace: "default", podJSON("web"))
            let stale = try await client.get(JSON.self, .pods, namespace: "default", name: "web")
            _ = try await client.patch(
                JSON.self,
                .pods,
                namespace: "default",
                name: "web",
                patch: .merge(["metadata": ["labels": ["a": "1"]]])
            )

            var update = stale
            update[path: ["metadata", "labels", "b"]] = "2"
            let conflict = await kubeError {
                _ = try await client.update(update, .pods, namespace: "default", name: "web")
            }
            #expect(conflict?.kind == .conflict)
            #expect(conflict?.reason == "Conflict")
            #expect(conflict?.httpStatus == 409)
            #expect(conflict?.message.contains("the object has been modified") == true)

            // A patch carrying metadata.resourceVersion is a precondition too.
            let staleVersion = stale[path: ["metadata", "resourceVersion"]]!
            let patchConflict = await kubeError {
                _ = try await client.patch(
                    JSON.self,
                    .pods,
                    namespace: "default",
                    name: "web",
                    patch: .merge(["metadata": ["resourceVersion": staleVersion, "labels": ["c": "3"]]])
                )
            }
            #expect(patchConflict?.kind == .conflict)
            #expect(
                double.object("pods", namespace: "default", name: "web")?[path: ["metadata", "labels", "c"]] == nil
            )

            let exists = await kubeError { _ = try await client.create(podJSON("web"), .pods, namespace: "default") }
            #expect(exists?.kind == .conflict)
            #expect(exists?.reason == "AlreadyExists")

            let delete = await kubeError {
                try await client.delete(
                    .pods,
                    namespace: "default",
                    name: "web",
                    preconditionResourceVersion: staleVersion.stringValue
                )
            }
            #expect(delete?.kind == .conflict)
            #expect(double.object("pods", namespace: "default", name: "web") != nil)
        }
    }

    @Test func everyPatchType() async throws {
        try await withDoubleAndClient { double, client in
            try double.create(
                "pods",
                namespace: "default",
                podJSON(
                    "web",
                    labels: ["keep": "yes", "drop": "yes"],
                    containers: [("app", ["cpu": "1"], [:]), ("side", ["cpu": "10m"], [:])]
                )
            )
            let label = "status.zeropod.ctrox.dev/app"

            // Strategic merge: labels merge, null deletes, containers merge by name.
            let strategic = try await client.patch(
                Pod.self,
                .pods,
                namespace: "default",
                name: "web",
                patch: .strategicMerge([
                    "metadata": ["labels": [label: "SCALED_DOWN", "drop": nil]],
                    "spec": ["containers": [["name": "side", "image": "busybox:2"]]],
                ])
            )
            #expect(strategic.metadata.labels == ["keep": "yes", label: "SCALED_DOWN"])
            #expect(strategic.spec?.containers.map(\.name) == ["app", "side"])
            #expect(strategic.spec?.containers.last?.image == "busybox:2")
            #expect(strategic.spec?.containers.first?.resources?.requests == ["cpu": "1"])

            // JSON merge patch: maps merge, null deletes.
            let merged = try await client.patch(
                Pod.self,
                .pods,
                namespace: "default",
                name: "web",
                patch: .merge([
                    "metadata": [
                        "labels": ["keep": nil], "annotations": ["zeropod.ctrox.dev/memory-requests": #"{"app":"0"}"#],
                    ]
                ])
            )
            #expect(merged.metadata.labels == [label: "SCALED_DOWN"])
            #expect(merged.metadata.annotations?["zeropod.ctrox.dev/memory-requests"] == #"{"app":"0"}"#)

            // JSON patch with an escaped key, a test precondition that holds, then one that fails.
            let escaped = "/metadata/labels/" + JSONPatchOperation.escape(label)
            let jsonPatched = try await client.patch(
                Pod.self,
                .pods,
                namespace: "default",
                name: "web",
                patch: .json([
                    JSONPatchOperation(op: .test, path: escaped, value: "SCALED_DOWN"),
                    JSONPatchOperation(op: .replace, path: escaped, value: "RUNNING"),
                    JSONPatchOperation(op: .add, path: "/metadata/labels/extra", value: "1"),
                ])
            )
            #expect(jsonPatched.metadata.labels == [label: "RUNNING", "extra": "1"])
            let failedTest = await kubeError {
                _ = try await client.patch(
                    Pod.self,
                    .pods,
                    namespace: "default",
                    name: "web",
                    patch: .json([
                        JSONPatchOperation(op: .test, path: escaped, value: "SCALED_DOWN"),
                        JSONPatchOperation(op: .remove, path: "/metadata/labels/extra"),
                    ])
                )
            }
            #expect(failedTest?.kind == .invalid)
            #expect(
                double.object("pods", namespace: "default", name: "web")?[path: ["metadata", "labels", "extra"]] == "1"
            )

            let recorded = double.requests.filter { $0.verb == "PATCH" }.map(\.contentType)
            #expect(
                recorded == [
                    "application/strategic-merge-patch+json", "application/merge-patch+json",
                    "application/json-patch+json",
                    "application/json-patch+json",
                ]
            )

            // Server-side apply is not emulated: the double says so with 415.
            let apply = await kubeError {
                _ = try await client.patch(
                    Pod.self,
                    .pods,
                    namespace: "default",
                    name: "web",
                    patch: .apply(["metadata": ["labels": ["x": "y"]]]),
                    options: WriteOptions(fieldManager: "zeropod", force: true)
                )
            }
            #expect(apply?.kind == .unsupportedMediaType)
            #expect(double.requests.last?.query["fieldManager"] == "zeropod")
        }
    }

    @Test func fieldValidation_strictRefusesUnknownFields_warnDropsThem() async throws {
        try await withDoubleAndClient { double, client in
            var pod = podJSON("web")
            pod[path: ["spec", "containers"]] = [["name": "app", "image": "busybox", "imagePullPolcy": "Always"]]
            let strict = await kubeError {
                _ = try await client.create(
                    pod,
                    .pods,
                    namespace: "default",
                    options: WriteOptions(fieldValidation: "Strict")
                )
            }
            #expect(strict?.kind == .badRequest)
            #expect(strict?.message == #"strict decoding error: unknown field "spec.containers[0].imagePullPolcy""#)
            let created = try await client.create(pod, .pods, namespace: "default")
            #expect(created[path: ["spec", "containers"]]?.arrayValue?.first?["imagePullPolcy"] == nil)

            let malformed = await kubeError {
                _ = try await client.send(
                    verb: "POST",
                    path: "/api/v1/namespaces/default/pods",
                    body: Data("{not json".utf8)
                )
            }
            #expect(malformed?.kind == .badRequest)
            let wrongKind = await kubeError {
                _ = try await client.create(
                    ["kind": "Service", "apiVersion": "v1", "metadata": ["name": "s"]] as JSON,
                    .pods,
                    namespace: "default"
                )
            }
            #expect(wrongKind?.kind == .badRequest)
            let invalid = await kubeError {
                _ = try await client.create(
                    ["metadata": ["name": "Bad_Name"], "spec": ["containers": []]] as JSON,
                    .pods,
                    namespace: "default"
                )
            }
            #expect(invalid?.kind == .invalid)
            #expect(invalid?.status?.details?.causes?.map(\.field) == ["metadata.name", "spec.containers"])
            let noNamespace = await kubeError {
                _ = try await client.create(podJSON("x", namespace: "nope"), .pods, namespace: "nope")
            }
            #expect(noNamespace?.kind == .notFound)
            #expect(noNamespace?.message == #"namespaces "nope" not found"#)
        }
    }

    @Test func resize_onANewServer() async throws {
        try await withDoubleAndClient { double, client in
            try double.create(
                "pods",
                namespace: "default",
                podJSON(
                    "web",
                    containers: [("app", ["cpu": "250m", "memory": "64Mi"], ["cpu": "1", "memory": "128Mi"])]
                )
            )
            let lower: JSON = [
                "spec": ["containers": [["name": "app", "resources": ["requests": ["cpu": "1m", "memory": "1Ki"]]]]]
            ]
            // Changing resources through the pod itself is refused from 1.33 on.
            let plain = await kubeError {
                _ = try await client.patch(
                    Pod.self,
                    .pods,
                    namespace: "default",
                    name: "web",
                    patch: .strategicMerge(lower)
                )
            }
            #expect(plain?.kind == .invalid)
            #expect(plain?.message.contains("pod updates may not change fields other than") == true)

            // Through the resize subresource it works; a label in the same patch is dropped silently.
            var withLabel = lower
            withLabel[path: ["metadata", "labels"]] = ["sneaky": "yes"]
            let resized = try await client.patch(
                Pod.self,
                .pods,
                namespace: "default",
                name: "web",
                patch: .strategicMerge(withLabel),
                subresource: "resize"
            )
            #expect(resized.spec?.containers.first?.resources?.requests == ["cpu": "1m", "memory": "1Ki"])
            #expect(resized.spec?.containers.first?.resources?.limits == ["cpu": "1", "memory": "128Mi"])
            #expect(resized.metadata.labels?["sneaky"] == nil)
            #expect(double.requests.last?.path == "/api/v1/namespaces/default/pods/web/resize")

            // A resize may not change the QoS class (Guaranteed → Burstable).
            try double.create(
                "pods",
                namespace: "default",
                podJSON("db", containers: [("db", ["cpu": "1", "memory": "1Gi"], ["cpu": "1", "memory": "1Gi"])])
            )
            let qos = await kubeError {
                _ = try await client.patch(
                    Pod.self,
                    .pods,
                    namespace: "default",
                    name: "db",
                    patch: .strategicMerge([
                        "spec": ["containers": [["name": "db", "resources": ["requests": ["cpu": "1m"]]]]]
                    ]),
                    subresource: "resize"
                )
            }
            #expect(qos?.kind == .invalid)
            #expect(qos?.message.contains("Pod QoS is immutable") == true)
            let get = try await client.get(Pod.self, .pods, namespace: "default", name: "web", subresource: "resize")
            #expect(get.metadata.name == "web")
        }
    }

    @Test func resize_onAnOldServer_fallsBackToThePod() async throws {
        try await withDoubleAndClient(settings: { $0.serverVersion = .v1_31 }) { double, client in
            try double.create("pods", namespace: "default", podJSON("web", containers: [("app", ["cpu": "250m"], [:])]))
            let lower: JSON = ["spec": ["containers": [["name": "app", "resources": ["requests": ["cpu": "1m"]]]]]]
            let missing = await kubeError {
                _ = try await client.patch(
                    Pod.self,
                    .pods,
                    namespace: "default",
                    name: "web",
                    patch: .strategicMerge(lower),
                    subresource: "resize"
                )
            }
            #expect(missing?.kind == .notFound)
            let patched = try await client.patch(
                Pod.self,
                .pods,
                namespace: "default",
                name: "web",
                patch: .strategicMerge(lower)
            )
            #expect(patched.spec?.containers.first?.resources?.requests == ["cpu": "1m"])
        }
    }

    @Test func events_theOriginalsFieldsAreAccepted_incompleteOnesAreNot() async throws {
        try await withDoubleAndClient { double, client in
            let now = Date()
            var event = Event(
                metadata: ObjectMeta(generateName: "zeropod-status-event-", namespace: "default"),
                involvedObject: ObjectReference(
                    apiVersion: "v1",
                    kind: "Pod",
                    name: "web",
                    namespace: "default",
                    fieldPath: "spec.containers{app}"
                ),
                reason: "Running",
                message: "Restored container app in 80ms",
                source: EventSource(component: "zeropod.ctrox.dev/manager", host: "node-a"),
                firstTimestamp: KubeTime.time(now),
                lastTimestamp: KubeTime.time(now),
                type: "Normal",
                eventTime: KubeTime.microTime(now),
                action: "Running",
                reportingComponent: "zeropod.ctrox.dev/manager",
                reportingInstance: "node-a"
            )
            let created = try await client.create(event, .events, namespace: "default")
            #expect(created.reportingComponent == "zeropod.ctrox.dev/manager")
            #expect(created.eventTime == event.eventTime)
            let stored = try #require(double.objects("events").first)
            #expect(stored["reportingComponent"] == "zeropod.ctrox.dev/manager")
            #expect(stored["reportingController"] == nil)

            event.reportingInstance = nil
            let missing = await kubeError { _ = try await client.create(event, .events, namespace: "default") }
            #expect(missing?.kind == .invalid)
            #expect(missing?.status?.details?.causes?.map(\.field) == ["reportingInstance"])
            event.reportingInstance = "node-a"
            // Without eventTime (an old-style event) the namespaces must match.
            event.eventTime = nil
            event.involvedObject.namespace = "other"
            let mismatch = await kubeError { _ = try await client.create(event, .events, namespace: "default") }
            #expect(mismatch?.kind == .invalid)
            let events = try await client.list(
                Event.self,
                .events,
                namespace: "default",
                options: ListOptions(fieldSelector: "reason=Running")
            )
            #expect(events.items.count == 1)
        }
    }

    @Test func authentication_andAuthorization() async throws {
        try await withDoubleAndClient(
            settings: {
                $0.authorization = [
                    "tester": [
                        KubeAPIDouble.PolicyRule(verbs: ["get", "list", "watch"], resources: ["pods"]),
                        KubeAPIDouble.PolicyRule(verbs: ["patch"], resources: ["pods/resize"]),
                    ]
                ]
            }
        ) { double, client in
            try double.create("pods", namespace: "default", podJSON("web"))
            _ = try await client.get(Pod.self, .pods, namespace: "default", name: "web")
            let forbidden = await kubeError {
                _ = try await client.patch(
                    Pod.self,
                    .pods,
                    namespace: "default",
                    name: "web",
                    patch: .merge(["metadata": ["labels": ["a": "b"]]])
                )
            }
            #expect(forbidden?.kind == .forbidden)
            #expect(
                forbidden?.message
                    == #"pods "web" is forbidden: User "tester" cannot patch resource "pods" in API group "" in the namespace "default""#
            )
        }
        let double = try await KubeAPIDouble.start(
            settings: {
                var s = KubeAPIDouble.Settings()
                s.tokens = ["right": "u"]
                return s
            }()
        )
        let client = try KubeClient(configuration: double.clientConfiguration(token: "wrong"))
        let unauthorized = await kubeError { _ = try await client.list(Pod.self, .pods) }
        #expect(unauthorized?.kind == .unauthorized)
        #expect(unauthorized?.message == "Unauthorized")
        try await client.shutdown()
        await double.stop()
    }

    @Test func clientCertificate_authenticatesAsItsCommonName() async throws {
        let double = try await KubeAPIDouble.start()
        let (certificate, key) = try double.certificateAuthority.issue(
            commonName: "system:node:node-a",
            organizations: ["system:nodes"],
            server: false
        )
        var configuration = double.clientConfiguration()
        configuration.clientCertificate = ClientCertificate(
            certificatePEM: Array(certificate.utf8),
            keyPEM: Array(key.utf8)
        )
        let client = try KubeClient(configuration: configuration)
        let result = await kubeError { _ = try await client.list(Pod.self, .pods) }
        try await client.shutdown()
        await double.stop()
        #expect(result == nil)
        #expect(double.requests.last?.user == "system:node:node-a")
    }

    @Test func tokenFile_isReadAgainWhenRotated() async throws {
        let folder = try TemporaryDirectory("zpkube")
        defer { folder.remove() }
        let tokenFile = try folder.write("token", "first-token\n")
        var settings = KubeAPIDouble.Settings()
        settings.tokens = ["first-token": "sa"]
        let double = try await KubeAPIDouble.start(settings: settings)
        var configuration = double.clientConfiguration()
        configuration.token = .file(path: tokenFile, rereadEvery: .seconds(3600))
        let client = try KubeClient(configuration: configuration)
        do {
            _ = try await client.list(Pod.self, .pods)
            #expect(client.tokenReads == 1)
            // The kubelet rotates the projected token; the server no longer accepts the old one.
            _ = try folder.write("token", "second-token\n")
            double.update { $0.tokens = ["second-token": "sa"] }
            _ = try await client.list(Pod.self, .pods)
            #expect(client.tokenReads == 2)
            let statuses = double.requests.map { $0.user ?? "-" }
            #expect(statuses == ["sa", "-", "sa"])
        } catch {
            try? await client.shutdown()
            await double.stop()
            throw error
        }
        try await client.shutdown()

        // A short re-read interval picks up a new token without a 401.
        var periodic = double.clientConfiguration()
        periodic.token = .file(path: tokenFile, rereadEvery: .milliseconds(50))
        let second = try KubeClient(configuration: periodic)
        _ = try await second.list(Pod.self, .pods)
        _ = try folder.write("token", "third-token\n")
        double.update { $0.tokens = ["second-token": "sa", "third-token": "sa3"] }
        try await Task.sleep(for: .milliseconds(100))
        _ = try await second.list(Pod.self, .pods)
        #expect(double.requests.last?.user == "sa3")
        try await second.shutdown()
        await double.stop()
    }

    @Test func throttling_retryAfterIsHonoured_thenHandedToTheCaller() async throws {
        let sleeper = SleepRecorder()
        try await withDoubleAndClient(sleeper: sleeper) { double, client in
            double.failNext(2, status: 429, retryAfterSeconds: 2)
            let list = try await client.list(Pod.self, .pods)
            #expect(list.items.isEmpty)
            #expect(sleeper.sleeps == [.seconds(2), .seconds(2)])
            double.failNext(5, status: 429, retryAfterSeconds: 1)
            let error = await kubeError { _ = try await client.list(Pod.self, .pods) }
            #expect(error?.kind == .tooManyRequests)
            #expect(error?.retryAfter == .seconds(1))
            #expect(sleeper.sleeps.count == 5)
        }
    }

    @Test func timeouts_andUnreachableServers() async throws {
        // The timeout is far below the delay but far above what a loaded 2-core machine needs for
        // a plain answer (a 300 ms timeout once turned the 500 below into a time-out).
        try await withDoubleAndClient(client: { $0.requestTimeout = .seconds(3) }) { double, client in
            double.update { $0.responseDelay = .seconds(20) }
            let slow = await kubeError { _ = try await client.list(Pod.self, .pods) }
            #expect(slow?.kind == .timedOut)
            double.update { $0.responseDelay = .zero }
            await double.stopListening()
            let down = await kubeError { _ = try await client.list(Pod.self, .pods) }
            #expect(down?.kind == .unreachable)
            try await double.startListening()
            #expect(await eventuallyAsync { (try? await client.list(Pod.self, .pods)) != nil })
            double.failNext(1, status: 500)
            let failed = await kubeError { _ = try await client.list(Pod.self, .pods) }
            #expect(failed?.kind == .serverError)
            #expect(failed?.reason == "InternalError")
        }
    }

    @Test func watch_eventsBookmarksAndSelectorTransitions() async throws {
        try await withDoubleAndClient(settings: { $0.bookmarkInterval = .milliseconds(100) }) { double, client in
            try double.create("pods", namespace: "default", podJSON("web", labels: ["app": "web"]))
            let list = try await client.list(Pod.self, .pods)
            let version = try #require(list.metadata.resourceVersion)
            let stream = try await client.watch(
                Pod.self,
                .pods,
                options: WatchOptions(labelSelector: "app=web", resourceVersion: version, timeoutSeconds: 10)
            )
            try double.create("pods", namespace: "default", podJSON("api", labels: ["app": "web"]))
            double.call(
                "PATCH",
                "/api/v1/namespaces/default/pods/web",
                body: ["metadata": ["labels": ["app": "other"]]],
                contentType: "application/merge-patch+json"
            )
            double.call("DELETE", "/api/v1/namespaces/default/pods/api")
            var seen: [String] = []
            var bookmark: String?
            for try await event in stream {
                switch event {
                case .added(let pod): seen.append("ADDED \(pod.metadata.name ?? "")")
                case .modified(let pod): seen.append("MODIFIED \(pod.metadata.name ?? "")")
                case .deleted(let pod): seen.append("DELETED \(pod.metadata.name ?? "")")
                case .bookmark(let resourceVersion): bookmark = resourceVersion
                case .error(let status): Issue.record("unexpected error \(status)")
                }
                // A bookmark may come before the last change (bookmarks are periodic): wait for
                // one at the store's current version.
                if seen.count == 3, bookmark == String(double.resourceVersion) { break }
            }
            // The label change moves `web` out of the selector: a DELETED for it.
            #expect(seen == ["ADDED api", "DELETED web", "DELETED api"])
            #expect(bookmark == String(double.resourceVersion))
        }
    }

    @Test func watch_fromACompactedVersion_getsGone() async throws {
        try await withDoubleAndClient { double, client in
            try double.create("pods", namespace: "default", podJSON("web"))
            let old = String(double.resourceVersion - 1)
            double.compact()
            let stream = try await client.watch(
                Pod.self,
                .pods,
                options: WatchOptions(resourceVersion: old, timeoutSeconds: 5)
            )
            var statuses: [Status] = []
            for try await event in stream {
                if case .error(let status) = event { statuses.append(status) }
            }
            #expect(statuses.map(\.code) == [410])
            #expect(statuses.first?.reason == "Expired")
            double.update { $0.goneAsHTTPStatus = true }
            let gone = await kubeError {
                _ = try await client.watch(Pod.self, .pods, options: WatchOptions(resourceVersion: old))
            }
            #expect(gone?.kind == .gone)
        }
    }

    @Test func plainHTTP_theClientSendsNoToken() async throws {
        var settings = KubeAPIDouble.Settings()
        settings.tls = false
        settings.tokens = ["token": "tester"]
        let double = try await KubeAPIDouble.start(settings: settings)
        let client = try KubeClient(configuration: KubeConfiguration(server: double.url, token: .value("token")))
        let refused = await kubeError { _ = try await client.list(Pod.self, .pods) }
        double.update { $0.allowAnonymous = true }
        let anonymous = await kubeError { _ = try await client.list(Pod.self, .pods) }
        try await client.shutdown()
        await double.stop()
        #expect(refused?.kind == .unauthorized)
        #expect(anonymous == nil)
        #expect(double.requests.allSatisfy { $0.user == nil })
    }

    @Test func statusSubresource_andThePod_ignoreEachOthersFields() async throws {
        try await withDoubleAndClient { double, client in
            try double.create("pods", namespace: "default", podJSON("web"))
            var pod = try await client.get(JSON.self, .pods, namespace: "default", name: "web")
            #expect(pod[path: ["metadata", "generation"]] == 1)
            pod[path: ["status", "phase"]] = "Running"
            pod[path: ["metadata", "labels"]] = ["a": "1"]
            let updated = try await client.update(pod, .pods, namespace: "default", name: "web")
            #expect(updated[path: ["status", "phase"]] == "Pending")
            #expect(updated[path: ["metadata", "labels", "a"]] == "1")
            #expect(updated[path: ["metadata", "generation"]] == 1)

            var status = updated
            status[path: ["status", "phase"]] = "Running"
            status[path: ["metadata", "labels"]] = ["a": "2"]
            status[path: ["spec", "containers"]] = [["name": "app", "image": "other"]]
            let afterStatus = try await client.update(
                status,
                .pods,
                namespace: "default",
                name: "web",
                subresource: "status"
            )
            #expect(afterStatus[path: ["status", "phase"]] == "Running")
            #expect(afterStatus[path: ["metadata", "labels", "a"]] == "1")
            #expect(afterStatus[path: ["spec", "containers"]]?.arrayValue?.first?["image"] == "busybox")

            let image = try await client.patch(
                JSON.self,
                .pods,
                namespace: "default",
                name: "web",
                patch: .strategicMerge(["spec": ["containers": [["name": "app", "image": "busybox:2"]]]])
            )
            #expect(image[path: ["metadata", "generation"]] == 2)
        }
    }
}
