import Testing
import ZPAPI
import ZPCore

// containerd's task API and events, hand-written (decision 0001), against `protoc --encode` on the
// subset of containerd's .proto files in Fixtures/shim_subset.proto.

@Suite(.enabled(if: Protoc.isInstalled, Protoc.missingReason))
struct TaskCodecTests {
    @Test func createTaskRequest_decodesProtocBytes() throws {
        let bytes = try protocEncode(
            "CreateTaskRequest",
            """
            id: "c1" bundle: "/b" rootfs { type: "overlay" source: "overlay" options: "lowerdir=/l" options: "ro" }
            stdin: "/f/in" stdout: "/f/out" stderr: "file:///tmp/x" options { type_url: "t" value: "v" }
            """
        )
        let r = try CreateTaskRequest(decoding: bytes)
        #expect(
            r.id == "c1" && r.bundle == "/b" && r.stdin == "/f/in" && r.stdout == "/f/out"
                && r.stderr == "file:///tmp/x"
        )
        #expect(r.rootfs == [MountSpec(type: "overlay", source: "overlay", options: ["lowerdir=/l", "ro"])])
        #expect(r.options == ProtobufAny(typeURL: "t", value: Array("v".utf8)))
        #expect(r.encoded() == bytes)
    }

    @Test func execProcessRequest_decodesProtocBytes() throws {
        let bytes = try protocEncode(
            "ExecProcessRequest",
            #"id: "c1" exec_id: "e1" stdout: "/o" spec { type_url: "types.containerd.io/opencontainers/runtime-spec/1/Process" value: "{\"args\":[\"sh\"]}" }"#
        )
        let r = try ExecProcessRequest(decoding: bytes)
        #expect(r.id == "c1" && r.execID == "e1" && r.stdout == "/o" && !r.terminal)
        #expect(String(decoding: r.spec?.value ?? [], as: UTF8.self) == #"{"args":["sh"]}"#)
        #expect(r.encoded() == bytes)
    }

    @Test func killRequest_decodesProtocBytes() throws {
        let bytes = try protocEncode("KillRequest", #"id: "c1" signal: 9 all: true"#)
        #expect(try KillRequest(decoding: bytes) == KillRequest(id: "c1", signal: 9, all: true))
    }

    @Test func remainingRequestsAndStats_matchProtoc_bothWays() throws {
        let start = TaskProcessRequest(id: "c1", execID: "e1")
        #expect(start.encoded() == (try protocEncode("StartRequest", #"id: "c1" exec_id: "e1""#)))
        #expect(try TaskProcessRequest(decoding: start.encoded()) == start)
        var shutdown = TaskIDRequest(id: "c1")
        shutdown.now = true
        #expect(shutdown.encoded() == (try protocEncode("ShutdownRequest", #"id: "c1" now: true"#)))
        #expect(try TaskIDRequest(decoding: shutdown.encoded()) == shutdown)
        let close = CloseIORequest(id: "c1", execID: "e2", stdin: true)
        #expect(close.encoded() == (try protocEncode("CloseIORequest", #"id: "c1" exec_id: "e2" stdin: true"#)))
        #expect(try CloseIORequest(decoding: close.encoded()) == close)
        var update = UpdateTaskRequest(id: "c1")
        update.resources = ProtobufAny(
            typeURL: "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources",
            value: Array("{}".utf8)
        )
        update.annotations = ["b": "2", "a": "1"]
        let updateBytes = try protocEncode(
            "UpdateTaskRequest",
            """
            id: "c1" resources { type_url: "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources" value: "{}" }
            annotations { key: "a" value: "1" } annotations { key: "b" value: "2" }
            """
        )
        #expect(update.encoded() == updateBytes)
        let decoded = try UpdateTaskRequest(decoding: updateBytes)
        #expect(
            decoded.id == "c1" && decoded.resources == update.resources && decoded.annotations == update.annotations
        )
        let stats = StatsResponse(stats: ProtobufAny(typeURL: "io.containerd.cgroups.v1.Metrics", value: []))
        #expect(
            stats.encoded()
                == (try protocEncode("StatsResponse", #"stats { type_url: "io.containerd.cgroups.v1.Metrics" }"#))
        )
        #expect(try StatsResponse(decoding: stats.encoded()) == stats)
        #expect(EmptyMessage().encoded().isEmpty)
        #expect(try EmptyMessage(decoding: start.encoded()) == EmptyMessage())
    }

    @Test func stateResponse_matchesProtoc() throws {
        var s = StateResponse()
        s.id = "c1"
        s.bundle = "/b"
        s.pid = 4242
        s.status = .stopped
        s.stdout = "/o"
        s.exitStatus = 137
        s.exitedAt = ProtobufTimestamp(seconds: 1_700_000_000, nanos: 5)
        #expect(
            s.encoded()
                == (try protocEncode(
                    "StateResponse",
                    #"id: "c1" bundle: "/b" pid: 4242 status: 3 stdout: "/o" exit_status: 137 exited_at { seconds: 1700000000 nanos: 5 }"#
                ))
        )
        #expect(try StateResponse(decoding: s.encoded()) == s)
    }

    @Test func deleteWaitConnectPids_matchProtoc() throws {
        let at = ProtobufTimestamp(seconds: 12, nanos: 34)
        #expect(
            DeleteResponse(pid: 7, exitStatus: 137, exitedAt: at).encoded()
                == (try protocEncode("DeleteResponse", "pid: 7 exit_status: 137 exited_at { seconds: 12 nanos: 34 }"))
        )
        #expect(
            WaitResponse(exitStatus: 3, exitedAt: at).encoded()
                == (try protocEncode("WaitResponse", "exit_status: 3 exited_at { seconds: 12 nanos: 34 }"))
        )
        #expect(
            ConnectResponse(shimPID: 10, taskPID: 11, version: "0.1.0").encoded()
                == (try protocEncode("ConnectResponse", #"shim_pid: 10 task_pid: 11 version: "0.1.0""#))
        )
        #expect(
            PidsResponse(pids: [1, 300]).encoded()
                == (try protocEncode("PidsResponse", "processes { pid: 1 } processes { pid: 300 }"))
        )
    }

    @Test func taskEvents_andEnvelope_matchProtoc() throws {
        let at = ProtobufTimestamp(seconds: 99, nanos: 1)
        let exit = TaskEvent.exit(containerID: "c1", id: "e1", pid: 55, exitStatus: 4, exitedAt: at)
        #expect(
            exit.encoded()
                == (try protocEncode(
                    "TaskExit",
                    #"container_id: "c1" id: "e1" pid: 55 exit_status: 4 exited_at { seconds: 99 nanos: 1 }"#
                ))
        )
        let delete = TaskEvent.delete(containerID: "c1", pid: 55, exitStatus: 137, exitedAt: at, id: "c1")
        #expect(
            delete.encoded()
                == (try protocEncode(
                    "TaskDelete",
                    #"container_id: "c1" pid: 55 exit_status: 137 exited_at { seconds: 99 nanos: 1 } id: "c1""#
                ))
        )
        let create = TaskEvent.create(
            containerID: "c1",
            bundle: "/b",
            rootfs: [],
            stdin: "",
            stdout: "/o",
            stderr: "/e",
            terminal: false,
            pid: 9
        )
        #expect(
            create.encoded()
                == (try protocEncode(
                    "TaskCreate",
                    #"container_id: "c1" bundle: "/b" io { stdout: "/o" stderr: "/e" } pid: 9"#
                ))
        )
        let envelope = EventForwardRequest(
            timestamp: at,
            namespace: "ns",
            topic: exit.topic,
            event: ProtobufAny(typeURL: exit.typeURL, value: [1, 2])
        )
        #expect(
            envelope.encoded()
                == (try protocEncode(
                    "ForwardRequest",
                    #"envelope { timestamp { seconds: 99 nanos: 1 } namespace: "ns" topic: "/tasks/exit" event { type_url: "containerd.events.TaskExit" value: "\001\002" } }"#
                ))
        )
        #expect(try EventForwardRequest(decoding: envelope.encoded()) == envelope)
    }
}
