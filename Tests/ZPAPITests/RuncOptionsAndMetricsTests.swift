import Testing
import ZPAPI
import ZPCore

// containerd's runc options, ResizePty and the cgroups metrics, hand-written (decision 0042),
// against `protoc --encode` on Fixtures/runc_options.proto, cgroups_v1.proto and cgroups_v2.proto.

@Suite(.enabled(if: Protoc.isInstalled, Protoc.missingReason))
struct RuncOptionsAndMetricsTests {
    @Test func runcOptions_everyField_decodesProtocBytes_andEncodesThemBack() throws {
        let text = """
            no_pivot_root: true no_new_keyring: true shim_cgroup: "/zp/shim" io_uid: 1234 io_gid: 4321
            binary_name: "/opt/runc" root: "/run/zp-runc" criu_path: "/opt/criu" systemd_cgroup: true
            criu_image_path: "/img" criu_work_path: "/work" task_api_address: "ttrpc+unix:///x" task_api_version: 3
            """
        let bytes = try Protoc.encode("containerd.runc.v1.Options", in: "runc_options.proto", text)
        let o = try RuncOptions(decoding: bytes)
        #expect(o.noPivotRoot && o.noNewKeyring && o.shimCgroup == "/zp/shim" && o.ioUID == 1234 && o.ioGID == 4321)
        #expect(o.binaryName == "/opt/runc" && o.root == "/run/zp-runc" && o.criuPath == "/opt/criu" && o.systemdCgroup)
        #expect(o.criuImagePath == "/img" && o.criuWorkPath == "/work" && o.taskAPIAddress == "ttrpc+unix:///x")
        #expect(o.taskAPIVersion == 3)
        #expect(o.encoded() == bytes)
    }

    @Test func runcOptions_fromAny_acceptsOnlyTheRuncType() throws {
        var options = RuncOptions()
        options.systemdCgroup = true
        options.binaryName = "runc"
        // containerd's typeurl writes the full name; a type.googleapis.com/ prefix is accepted too.
        for url in [RuncOptions.typeURL, "type.googleapis.com/" + RuncOptions.typeURL] {
            #expect(try RuncOptions(any: ProtobufAny(typeURL: url, value: options.encoded())) == options)
        }
        #expect(try RuncOptions(any: nil) == RuncOptions())
        #expect(try RuncOptions(any: ProtobufAny(typeURL: "", value: [])) == RuncOptions())
        // The CRI plugin's generic options (a handler whose runtime_type is not io.containerd.runc.v2)
        // and ctr's CreateOptions are refused with a message naming the type.
        for url in ["cri.runtimeoptions.v1.Options", "containerd.linux.runc.CreateOptions"] {
            #expect {
                _ = try RuncOptions(any: ProtobufAny(typeURL: url, value: [0x08, 0x01]))
            } throws: { "\($0)".contains(url) && "\($0)".contains("io.containerd.runc.v2") }
        }
        // ... unless the generic options are empty (an options table without ConfigPath/ConfigBody).
        #expect(try RuncOptions(any: ProtobufAny(typeURL: "cri.runtimeoptions.v1.Options", value: [])) == RuncOptions())
        #expect { _ = try RuncOptions(any: ProtobufAny(typeURL: RuncOptions.typeURL, value: [0x0a])) } throws: {
            "\($0)".contains(RuncOptions.typeURL)
        }
    }

    @Test func resizePtyRequest_matchesProtoc() throws {
        let bytes = try Protoc.encode(
            "containerd.runc.v1.ResizePtyRequest",
            in: "runc_options.proto",
            #"id: "c1" exec_id: "e1" width: 120 height: 40"#
        )
        #expect(
            try ResizePtyRequest(decoding: bytes) == ResizePtyRequest(id: "c1", execID: "e1", width: 120, height: 40)
        )
        #expect(ResizePtyRequest(id: "c1", execID: "e1", width: 120, height: 40).encoded() == bytes)
    }

    @Test func cgroupV1Metrics_matchProtoc_bothWays() throws {
        var m = CgroupV1Metrics()
        var huge = CgroupV1Metrics.HugetlbStat()
        huge.usage = 2_097_152
        huge.max = 4_194_304
        huge.pagesize = "2MB"
        m.hugetlb = [huge]
        var pids = CgroupV1Metrics.PidsStat()
        pids.current = 3
        pids.limit = 1024
        m.pids = pids
        var usage = CgroupV1Metrics.CPUUsage()
        usage.total = 123_456_789
        usage.kernel = 20_000_000
        usage.user = 100_000_000
        usage.perCPU = [100_000_000, 23_456_789]
        var throttle = CgroupV1Metrics.Throttle()
        throttle.periods = 10
        throttle.throttledPeriods = 2
        throttle.throttledTime = 5000
        var cpu = CgroupV1Metrics.CPUStat()
        cpu.usage = usage
        cpu.throttling = throttle
        m.cpu = cpu
        var memory = CgroupV1Metrics.MemoryStat()
        memory.stat = [
            .cache: 4096, .rss: 8192, .pgFault: 77, .hierarchicalSwapLimit: 9, .totalInactiveFile: 1024,
            .totalRSS: 8192, .totalUnevictable: 1,
        ]
        var entry = CgroupV1Metrics.MemoryEntry()
        entry.limit = 9_223_372_036_854_771_712
        entry.usage = 700_416
        entry.max = 900_000
        memory.usage = entry
        var kernel = CgroupV1Metrics.MemoryEntry()
        kernel.usage = 12
        memory.kernel = kernel
        m.memory = memory
        var oom = CgroupV1Metrics.MemoryOOMControl()
        oom.oomKill = 1
        m.memoryOOMControl = oom
        var blkio = CgroupV1Metrics.BlkIOStat()
        blkio.ioServiceBytesRecursive = [CgroupV1Metrics.BlkIOEntry(op: "Read", major: 8, minor: 0, value: 4096)]
        blkio.ioServicedRecursive = [CgroupV1Metrics.BlkIOEntry(op: "Write", major: 8, minor: 16, value: 3)]
        m.blkio = blkio
        let golden = try Protoc.encode(
            "io.containerd.cgroups.v1.Metrics",
            in: "cgroups_v1.proto",
            """
            hugetlb { usage: 2097152 max: 4194304 pagesize: "2MB" }
            pids { current: 3 limit: 1024 }
            cpu { usage { total: 123456789 kernel: 20000000 user: 100000000 per_cpu: 100000000 per_cpu: 23456789 }
                  throttling { periods: 10 throttled_periods: 2 throttled_time: 5000 } }
            memory { cache: 4096 rss: 8192 pg_fault: 77 hierarchical_swap_limit: 9 total_rss: 8192
                     total_inactive_file: 1024 total_unevictable: 1
                     usage { limit: 9223372036854771712 usage: 700416 max: 900000 } kernel { usage: 12 } }
            blkio { io_service_bytes_recursive { op: "Read" major: 8 value: 4096 }
                    io_serviced_recursive { op: "Write" major: 8 minor: 16 value: 3 } }
            memory_oom_control { oom_kill: 1 }
            """
        )
        #expect(m.encoded() == golden)
        #expect(try CgroupV1Metrics(decoding: golden) == m)
    }

    @Test func cgroupV1MemoryStat_keys_areTheKernelsMemoryStatNames() {
        typealias F = CgroupV1Metrics.MemoryStat.Field
        #expect(F.allCases.count == 32 && F.allCases.map(\.rawValue) == Array(1...32))
        #expect(F.pgPgIn.statKey == "pgpgin" && F.hierarchicalSwapLimit.statKey == "hierarchical_memsw_limit")
        #expect(F.totalInactiveFile.statKey == "total_inactive_file" && F.totalRSS.statKey == "total_rss")
        #expect(F.totalPgMajFault.statKey == "total_pgmajfault" && F.totalUnevictable.rawValue == 32)
    }

    @Test func cgroupV2Metrics_matchProtoc_bothWays() throws {
        var m = CgroupV2Metrics()
        var pids = CgroupV2Metrics.PidsStat()
        pids.current = 2
        m.pids = pids
        var cpu = CgroupV2Metrics.CPUStat()
        cpu.usageUsec = 5000
        cpu.userUsec = 3000
        cpu.systemUsec = 2000
        cpu.nrBursts = 1
        m.cpu = cpu
        var memory = CgroupV2Metrics.MemoryStat()
        memory.stat = [
            .anon: 4096, .inactiveFile: 100, .pgmajfault: 2, .thpCollapseAlloc: 1, .usage: 8192,
            .usageLimit: UInt64.max, .swapMaxUsage: 7,
        ]
        m.memory = memory
        var io = CgroupV2Metrics.IOStat()
        var e = CgroupV2Metrics.IOEntry()
        e.major = 253
        e.rbytes = 512
        e.wios = 1
        io.usage = [e]
        m.io = io
        var huge = CgroupV2Metrics.HugeTlbStat()
        huge.pagesize = "1GB"
        m.hugetlb = [huge]
        var events = CgroupV2Metrics.MemoryEvents()
        events.oomKill = 2
        m.memoryEvents = events
        let golden = try Protoc.encode(
            "io.containerd.cgroups.v2.Metrics",
            in: "cgroups_v2.proto",
            """
            pids { current: 2 } cpu { usage_usec: 5000 user_usec: 3000 system_usec: 2000 nr_bursts: 1 }
            memory { anon: 4096 inactive_file: 100 pgmajfault: 2 thp_collapse_alloc: 1 usage: 8192
                     usage_limit: 18446744073709551615 swap_max_usage: 7 }
            io { usage { major: 253 rbytes: 512 wios: 1 } } hugetlb { pagesize: "1GB" } memory_events { oom_kill: 2 }
            """
        )
        #expect(m.encoded() == golden)
        #expect(try CgroupV2Metrics(decoding: golden) == m)
        typealias F = CgroupV2Metrics.MemoryStat.Field
        #expect(F.allCases.map(\.rawValue) == Array(1...37))
        #expect(F.thpCollapseAlloc.statKey == "thp_collapse_alloc" && F.usage.statKey == nil)
    }
}
