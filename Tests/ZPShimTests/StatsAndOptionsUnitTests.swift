import Foundation
import Synchronization
import Testing
import ZPAPI
import ZPCore
import ZPSystem
import ZPTestSupport

@testable import ZPShim

/// A reader over fixed files (path → text).
func fixtureReader(_ files: [String: String]) -> CgroupStatsReader {
    CgroupStatsReader(
        read: { files[$0] },
        list: { dir in files.keys.filter { $0.hasPrefix(dir + "/") }.map { String($0.dropFirst(dir.count + 1)) } },
        clockTicks: 100
    )
}

/// The statistics `Stats` answers with (decision 0042), from cgroup files given as text.
@Suite struct CgroupStatsReaderTests {
    @Test func v1_fillsWhatContainerdsCgroup1StatFills() {
        let m = "/sys/fs/cgroup/memory/k/c"
        let a = "/sys/fs/cgroup/cpuacct/k/c"
        let c = "/sys/fs/cgroup/cpu/k/c"
        let p = "/sys/fs/cgroup/pids/k/c"
        let b = "/sys/fs/cgroup/blkio/k/c"
        let h = "/sys/fs/cgroup/hugetlb/k/c"
        let reader = fixtureReader([
            "\(a)/cpuacct.usage": "123456789\n", "\(a)/cpuacct.usage_percpu": "100000000 23456789 \n",
            "\(a)/cpuacct.stat": "user 10\nsystem 2\n",
            "\(c)/cpu.stat": "nr_periods 5\nnr_throttled 1\nthrottled_time 777\n",
            "\(m)/memory.stat":
                "cache 4096\nrss 8192\npgpgin 3\nhierarchical_memsw_limit 9\ntotal_inactive_file 1024\ntotal_rss 8192\nunknown_key 5\n",
            "\(m)/memory.usage_in_bytes": "700416\n", "\(m)/memory.limit_in_bytes": "9223372036854771712\n",
            "\(m)/memory.max_usage_in_bytes": "900000\n", "\(m)/memory.failcnt": "0\n",
            "\(m)/memory.kmem.usage_in_bytes": "12\n",
            "\(m)/memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
            "\(p)/pids.current": "3\n", "\(p)/pids.max": "max\n",
            "\(b)/blkio.io_serviced_recursive": "",
            "\(b)/blkio.throttle.io_serviced_recursive": "8:0 Read 2\n8:0 Write 1\nTotal 3\n",
            "\(b)/blkio.throttle.io_service_bytes_recursive": "8:0 Read 8192\nTotal 8192\n",
            "\(h)/hugetlb.2MB.usage_in_bytes": "2097152\n", "\(h)/hugetlb.2MB.max_usage_in_bytes": "4194304\n",
            "\(h)/hugetlb.2MB.failcnt": "0\n", "\(h)/hugetlb.2MB.rsvd.usage_in_bytes": "0\n",
        ])
        let metrics = reader.v1(folders: ["memory": m, "cpuacct": a, "cpu": c, "pids": p, "blkio": b, "hugetlb": h])
        #expect(metrics.cpu?.usage?.total == 123_456_789 && metrics.cpu?.usage?.perCPU == [100_000_000, 23_456_789])
        #expect(metrics.cpu?.usage?.user == 100_000_000 && metrics.cpu?.usage?.kernel == 20_000_000, "ticks of 10 ms")
        #expect(metrics.cpu?.throttling?.throttledTime == 777 && metrics.cpu?.throttling?.periods == 5)
        #expect(metrics.memory?.usage?.usage == 700_416 && metrics.memory?.usage?.max == 900_000)
        #expect(metrics.memory?.stat[.totalInactiveFile] == 1024 && metrics.memory?.stat[.pgPgIn] == 3)
        #expect(metrics.memory?.stat[.hierarchicalSwapLimit] == 9 && metrics.memory?.stat.count == 6)
        #expect(metrics.memory?.swap == nil, "no memsw accounting files: no swap entry")
        #expect(metrics.memory?.kernel?.usage == 12 && metrics.memoryOOMControl?.oomKill == 2)
        #expect(metrics.pids?.current == 3 && metrics.pids?.limit == UInt64.max, "max reads as no limit")
        #expect(
            metrics.blkio?.ioServicedRecursive.map(\.op) == ["Read", "Write"],
            "throttle files when CFQ's are empty"
        )
        #expect(metrics.blkio?.ioServiceBytesRecursive.first?.value == 8192)
        #expect(metrics.hugetlb.map(\.pagesize) == ["2MB"] && metrics.hugetlb.first?.max == 4_194_304)
    }

    @Test func v2_fillsWhatContainerdsCgroup2StatFills() {
        let d = "/sys/fs/cgroup/k/c"
        let reader = fixtureReader([
            "\(d)/cpu.stat":
                "usage_usec 5000\nuser_usec 3000\nsystem_usec 2000\nnr_periods 0\nnr_throttled 0\nthrottled_usec 0\nnr_bursts 0\nburst_usec 0\n",
            "\(d)/memory.stat": "anon 4096\nfile 8192\ninactive_file 100\npgmajfault 2\nworkingset_refault_anon 0\n",
            "\(d)/memory.current": "16384\n", "\(d)/memory.max": "max\n", "\(d)/memory.peak": "20000\n",
            "\(d)/memory.events": "low 0\nhigh 0\nmax 0\noom 1\noom_kill 1\n",
            "\(d)/pids.current": "2\n", "\(d)/pids.max": "100\n",
            "\(d)/io.stat": "253:0 rbytes=512 wbytes=1024 rios=1 wios=2 dbytes=0 dios=0\n",
            "\(d)/hugetlb.1GB.current": "0\n", "\(d)/hugetlb.1GB.max": "max\n",
        ])
        let m = reader.v2(folder: d)
        #expect(m.cpu?.usageUsec == 5000 && m.cpu?.systemUsec == 2000)
        #expect(
            m.memory?.stat[.usage] == 16384 && m.memory?.stat[.usageLimit] == UInt64.max
                && m.memory?.stat[.maxUsage] == 20000
        )
        #expect(
            m.memory?.stat[.anon] == 4096 && m.memory?.stat[.inactiveFile] == 100 && m.memory?.stat[.swapUsage] == nil
        )
        #expect(m.memoryEvents?.oomKill == 1 && m.pids?.limit == 100)
        #expect(m.io?.usage.first?.major == 253 && m.io?.usage.first?.wbytes == 1024 && m.io?.usage.first?.wios == 2)
        #expect(m.hugetlb.first?.pagesize == "1GB" && m.hugetlb.first?.max == UInt64.max)
        // A cgroup whose memory controller is not enabled (cgroup2 beside v1 controllers) has no memory.
        #expect(fixtureReader(["\(d)/cpu.stat": "usage_usec 1\n"]).v2(folder: d).memory == nil)
    }

    @Test func scaledDown_isOneMicrosecondAndOneByte_inTheHostsFormat() throws {
        guard case .v1(let v1) = ContainerStatistics.scaledDown(mode: .hybrid) else {
            Issue.record("hybrid hosts get v1 metrics")
            return
        }
        #expect(
            v1.cpu?.usage?.total == 1000 && v1.memory?.usage?.usage == 1 && v1.memory?.stat[.totalInactiveFile] == nil
        )
        guard case .v2(let v2) = ContainerStatistics.scaledDown(mode: .unified) else {
            Issue.record("unified hosts get v2 metrics")
            return
        }
        #expect(v2.cpu?.usageUsec == 1 && v2.memory?.stat[.usage] == 1)
        let any = ContainerStatistics.scaledDown(mode: .legacy).any
        #expect(any.typeURL == "io.containerd.cgroups.v1.Metrics")
        #expect(try CgroupV1Metrics(decoding: any.value) == v1)
        #expect(ContainerStatistics.scaledDown(mode: .unified).any.typeURL == "io.containerd.cgroups.v2.Metrics")
        // With a CPU time reported before, the counter stays there (it must not go back).
        #expect(ContainerStatistics.scaledDown(mode: .hybrid, cpuNanoseconds: 17_000_000).cpuNanoseconds == 17_000_000)
        #expect(ContainerStatistics.scaledDown(mode: .unified, cpuNanoseconds: 17_000_000).cpuNanoseconds == 17_000_000)
        #expect(ContainerStatistics.scaledDown(mode: .hybrid, cpuNanoseconds: 5).cpuNanoseconds == 1000)
    }

    @Test func processCgroups_mapControllersToTheirMounts() {
        let mounts = MountInfo.parse(
            """
            30 25 0:26 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
            31 30 0:27 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
            32 30 0:28 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
            33 30 0:29 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
            34 30 0:30 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
            """
        )
        let folders = ProcessCgroups.folders(
            procCgroup: """
                9:name=systemd:/k/c
                4:memory:/k/c
                2:cpu,cpuacct:/k/c
                0::/k/c
                """,
            mounts: mounts
        )
        #expect(folders["memory"] == "/sys/fs/cgroup/memory/k/c" && folders["cpu"] == "/sys/fs/cgroup/cpu,cpuacct/k/c")
        #expect(folders["cpuacct"] == folders["cpu"] && folders["name=systemd"] == "/sys/fs/cgroup/systemd/k/c")
        #expect(folders[""] == "/sys/fs/cgroup/unified/k/c" && folders.count == 5)
    }
}

/// containerd's runc options as the shim takes them (decision 0042); what reaches runc is tested
/// end to end (ZPCRITests.RuncOptionsCRITests), here the driver's configuration.
@Suite struct RuncOptionsUnitTests {
    @Test func driver_takesRootBinaryAndFlagsFromTheOptions() throws {
        var options = RuncOptions()
        options.root = "/run/zp-runc/"
        options.binaryName = "sh"  // a name found on PATH
        options.systemdCgroup = true
        options.noPivotRoot = true
        options.noNewKeyring = true
        let runc = try RuncDriver(namespace: "k8s.io", options: options)
        #expect(runc.root == "/run/zp-runc/k8s.io" && runc.binary.hasSuffix("/sh") && runc.binary.hasPrefix("/"))
        #expect(
            runc.globalArguments(logFile: "/b/log.json")
                == [
                    "--root", "/run/zp-runc/k8s.io", "--log", "/b/log.json", "--log-format", "json", "--systemd-cgroup",
                ]
        )
        #expect(runc.noPivotRoot && runc.noNewKeyring)
        let plain = try RuncDriver(namespace: "ns", options: RuncOptions())
        #expect(
            plain.root == "/run/containerd/runc/ns" && !plain.globalArguments(logFile: "l").contains("--systemd-cgroup")
        )
        // An explicit binary (the shim's tests) wins over BinaryName; without BinaryName the node
        // setting runc-path names the binary.
        #expect(try RuncDriver(namespace: "ns", options: options, binary: "/usr/sbin/runc").binary == "/usr/sbin/runc")
        #expect(try RuncDriver(namespace: "ns", options: RuncOptions(), nodeDefault: "/bin/true").binary == "/bin/true")
        #expect { _ = try RuncDriver(namespace: "ns", options: RuncOptions(), nodeDefault: "zp-no-runc") } throws: {
            "\($0)" == "runc-path (node setting) zp-no-runc is not found on PATH"
        }
    }

    @Test func driver_refusesABinaryNameThatIsNoExecutable() {
        var options = RuncOptions()
        options.binaryName = "zp-no-such-runc"
        #expect { _ = try RuncDriver(namespace: "ns", options: options) } throws: {
            "\($0)" == "BinaryName zp-no-such-runc is not found on PATH"
        }
        // A plain file without execute bits, and a folder.
        let plain = FileManager.default.temporaryDirectory.appendingPathComponent("zp-not-runc-\(getpid())").path
        FileManager.default.createFile(atPath: plain, contents: Data("x".utf8), attributes: [.posixPermissions: 0o644])
        defer { try? FileManager.default.removeItem(atPath: plain) }
        for path in [plain, "/usr"] {
            options.binaryName = path
            #expect { _ = try RuncDriver(namespace: "ns", options: options) } throws: {
                "\($0)" == "BinaryName \(path) is not an executable file"
            }
        }
    }

    @Test func unsupportedOptions_areRefusedByName() throws {
        var options = RuncOptions()
        options.systemdCgroup = true
        options.ioUID = 1000
        options.criuPath = "/opt/criu"
        try options.checkSupported()
        options.criuWorkPath = "/var/criu-work"
        #expect { try options.checkSupported() } throws: { "\($0)".contains("CriuWorkPath /var/criu-work") }
        options.criuWorkPath = ""
        options.criuImagePath = "/img"
        #expect { try options.checkSupported() } throws: {
            "\($0)".contains("CriuImagePath /img") && "\($0)".contains("Checkpoint")
        }
        options.criuImagePath = ""
        options.taskAPIAddress = "ttrpc+unix:///x"
        #expect { try options.checkSupported() } throws: { "\($0)".contains("TaskApiAddress") }
    }

    @Test func optionsFile_roundTripsInTheBundle_andIsAbsentForTheDefaults() throws {
        let dir = try TemporaryDirectory("zpshim-opts")
        #expect(RuncOptionsFile.read(bundle: dir.path) == RuncOptions())
        try RuncOptionsFile.write(RuncOptions(), bundle: dir.path)
        #expect(!FileManager.default.fileExists(atPath: dir.path + "/" + RuncOptionsFile.name))
        var options = RuncOptions()
        options.root = "/r"
        options.systemdCgroup = true
        try RuncOptionsFile.write(options, bundle: dir.path)
        #expect(RuncOptionsFile.read(bundle: dir.path) == options)
    }
}
