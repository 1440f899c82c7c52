import NIOPosix
import Synchronization
import Testing
import ZPAPI
import ZPCore
import ZPTTRPC
import ZPTestSupport

// The typed clients against a fake shim (ZPTTRPC's server with canned answers) over a real unix
// socket: what goes on the wire (service, method, metadata, request fields) and what comes back.

@Suite struct StatusClientTests {
    /// A status service that answers from fixed data and records the requests.
    static func fakeStatusService(requests: EventLog<String>) -> TTRPCRouter {
        var router = TTRPCRouter()
        let s = StatusAPI.service
        router.register(service: s, method: StatusAPI.getStatus) { call in
            let request = try StatusAPI.ContainerRequest(decoding: call.payload)
            requests.sink("GetStatus \(request.id)")
            guard request.id == "c1" else {
                throw TTRPCStatusError(.notFound, "container \"\(request.id)\" is not served here")
            }
            return StatusAPI.ContainerStatus(id: "c1", name: "web", lifecyclePhase: .scaledDown, pid: 7).encoded()
        }
        router.register(service: s, method: StatusAPI.listContainers) { call in
            _ = try StatusAPI.Empty(decoding: call.payload)
            requests.sink("ListContainers")
            return StatusAPI.ListContainersResponse(containers: [
                StatusAPI.ContainerStatus(id: "c1", lifecyclePhase: .running),
                StatusAPI.ContainerStatus(id: "c2", lifecyclePhase: .restoring),
            ]).encoded()
        }
        router.register(service: s, method: StatusAPI.metrics) { _ in
            requests.sink("Metrics")
            return StatusAPI.MetricsResponse(containers: [
                StatusAPI.ContainerMetrics(id: "c1", running: true, checkpointErrorsTotal: 3)
            ]).encoded()
        }
        router.register(service: s, method: StatusAPI.wake) { call in
            let request = try StatusAPI.WakeRequest(decoding: call.payload)
            requests.sink("Wake \(request.id) from \(request.origin)")
            return StatusAPI.WakeResponse(outcome: .woken, lifecyclePhase: .running, waited: .milliseconds(40))
                .encoded()
        }
        router.registerServerStream(service: s, method: StatusAPI.subscribeStatus) { call, writer in
            let request = try StatusAPI.SubscribeStatusRequest(decoding: call.payload)
            requests.sink("SubscribeStatus snapshot=\(request.initialSnapshot)")
            let time = ProtobufTimestamp(seconds: 1, nanos: 0)
            try await writer.send(
                StatusAPI.StatusChange(
                    sequence: 1,
                    time: time,
                    status: StatusAPI.ContainerStatus(id: "c1"),
                    snapshot: true
                ).encoded()
            )
            try await writer.send(
                StatusAPI.StatusChange(
                    sequence: 2,
                    missed: 4,
                    time: time,
                    status: StatusAPI.ContainerStatus(id: "c1", lifecyclePhase: .scaledDown),
                    event: .checkpointFinished(duration: .milliseconds(12))
                ).encoded()
            )
        }
        return router
    }

    @Test func everyMethod_overARealSocket() async throws {
        let requests = EventLog<String>()
        try await withTTRPCTestServer(Self.fakeStatusService(requests: requests)) { _, socket in
            let client = try await ShimStatusClient.connect(
                socketPath: socket,
                group: MultiThreadedEventLoopGroup.singleton
            )
            let status = try await client.status(id: "c1")
            #expect(status == StatusAPI.ContainerStatus(id: "c1", name: "web", lifecyclePhase: .scaledDown, pid: 7))
            await #expect { _ = try await client.status(id: "nope") } throws: { error in
                (error as? TTRPCStatusError)?.code == .notFound && "\(error)".contains("nope")
            }
            #expect(try await client.list().map(\.lifecyclePhase) == [.running, .restoring])
            #expect(try await client.metrics().map(\.checkpointErrorsTotal) == [3])
            let wake = try await client.wake(id: "db", origin: "wp/web")
            #expect(
                wake == StatusAPI.WakeResponse(outcome: .woken, lifecyclePhase: .running, waited: .milliseconds(40))
            )
            var changes: [StatusAPI.StatusChange] = []
            for try await change in client.subscribe(initialSnapshot: true) { changes.append(change) }
            #expect(changes.map(\.sequence) == [1, 2] && changes[0].snapshot && changes[1].missed == 4)
            #expect(changes[1].event == .checkpointFinished(duration: .milliseconds(12)))
            await client.close()
        }
        #expect(
            requests.all == [
                "GetStatus c1", "GetStatus nope", "ListContainers", "Metrics", "Wake db from wp/web",
                "SubscribeStatus snapshot=true",
            ]
        )
    }
}

@Suite struct TaskClientTests {
    @Test func calls_carryTheNamespace_andTheChosenServiceVersion() async throws {
        let seen = EventLog<String>()
        var router = TTRPCRouter()
        for service in TaskAPI.serviceNames {
            let version = service == TaskAPI.serviceV3 ? "v3" : "v2"
            let record: @Sendable (TTRPCCall) -> Void = { call in
                seen.sink("\(version) \(call.method) ns=\(call.metadataValue(TaskAPI.namespaceMetadataKey) ?? "-")")
            }
            router.register(service: service, method: TaskAPI.Method.connect.rawValue) { call in
                record(call)
                let request = try TaskIDRequest(decoding: call.payload)
                return ConnectResponse(shimPID: 10, taskPID: request.id == "c1" ? 11 : 0, version: "0.1.0").encoded()
            }
            router.register(service: service, method: TaskAPI.Method.state.rawValue) { call in
                record(call)
                let request = try TaskProcessRequest(decoding: call.payload)
                var state = StateResponse()
                state.id = request.id
                state.execID = request.execID
                state.status = .running
                state.pid = 11
                return state.encoded()
            }
            router.register(service: service, method: TaskAPI.Method.pids.rawValue) { call in
                record(call)
                return PidsResponse(pids: [11, 12]).encoded()
            }
            router.register(service: service, method: TaskAPI.Method.kill.rawValue) { call in
                record(call)
                let request = try KillRequest(decoding: call.payload)
                guard request == KillRequest(id: "c1", signal: 15, all: true) else {
                    throw TTRPCStatusError(.invalidArgument, "\(request)")
                }
                return EmptyMessage().encoded()
            }
            router.register(service: service, method: TaskAPI.Method.wait.rawValue) { call in
                record(call)
                return WaitResponse(exitStatus: 143, exitedAt: ProtobufTimestamp(seconds: 5, nanos: 0)).encoded()
            }
        }
        try await withTTRPCTestServer(router) { _, socket in
            let v2 = try await ShimTaskClient.connect(
                socketPath: socket,
                namespace: "k8s.io",
                group: MultiThreadedEventLoopGroup.singleton
            )
            #expect(try await v2.connect(id: "c1") == ConnectResponse(shimPID: 10, taskPID: 11, version: "0.1.0"))
            let state = try await v2.state(id: "c1", execID: "e1")
            #expect(state.id == "c1" && state.execID == "e1" && state.status == .running && state.pid == 11)
            #expect(try await v2.pids(id: "c1") == [11, 12])
            try await v2.kill(id: "c1", signal: 15, all: true)
            await #expect(throws: TTRPCStatusError.self) { try await v2.kill(id: "c1", signal: 9) }
            #expect(try await v2.wait(id: "c1").exitStatus == 143)
            await v2.close()
            let v3 = try await ShimTaskClient.connect(
                socketPath: socket,
                namespace: "other",
                service: TaskAPI.serviceV3,
                group: MultiThreadedEventLoopGroup.singleton
            )
            #expect(try await v3.state(id: "c1").status == .running)
            await v3.close()
        }
        #expect(
            seen.all == [
                "v2 Connect ns=k8s.io", "v2 State ns=k8s.io", "v2 Pids ns=k8s.io", "v2 Kill ns=k8s.io",
                "v2 Kill ns=k8s.io",
                "v2 Wait ns=k8s.io", "v3 State ns=other",
            ]
        )
    }
}
