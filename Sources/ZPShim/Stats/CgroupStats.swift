import SystemPackage
import ZPAPI
import ZPCore
import ZPSystem

#if canImport(Glibc)
import Glibc
#endif

// The task API's `Stats`: a container's cgroup statistics in containerd's cgroups metrics
// (decision 0042), read from the cgroup files of the container's init the way
// containerd-shim-runc-v2 reads them (containerd/cgroups: cgroup1 `Stat`, cgroup2 `Stat`), and a
// small, well-formed figure while zeropod has the container scaled down.

/// Which statistics a host gets, decided as containerd decides (`cgroups.Mode()`): cgroup v2
/// metrics when `/sys/fs/cgroup` is a cgroup2 file system (unified), cgroup v1 metrics otherwise
/// (legacy, and hybrid hosts with cgroup2 at `/sys/fs/cgroup/unified`, like these test machines).
public enum CgroupHostMode: Sendable, Equatable {
    /// cgroup2 at `/sys/fs/cgroup`.
    case unified
    /// cgroup v1 controllers, cgroup2 at `/sys/fs/cgroup/unified`.
    case hybrid
    /// cgroup v1 only.
    case legacy

    /// The mode of this host, from its mounts: what is mounted at `/sys/fs/cgroup` and
    /// `/sys/fs/cgroup/unified`.
    public static let current: CgroupHostMode = of(mounts: (try? MountInfo.read()) ?? [])

    /// The mode of a host with `mounts`.
    public static func of(mounts: [MountInfo]) -> CgroupHostMode {
        func isCgroup2(_ path: String) -> Bool { mounts.last { $0.mountPoint == path }?.fsType == "cgroup2" }
        if isCgroup2("/sys/fs/cgroup") { return .unified }
        return isCgroup2("/sys/fs/cgroup/unified") ? .hybrid : .legacy
    }
}

/// The statistics of one container as the task API's `Stats` returns them.
public enum ContainerStatistics: Sendable, Equatable {
    /// `io.containerd.cgroups.v1.Metrics`.
    case v1(CgroupV1Metrics)
    /// `io.containerd.cgroups.v2.Metrics`.
    case v2(CgroupV2Metrics)

    /// The Any for `StatsResponse`.
    public var any: ProtobufAny {
        switch self {
        case .v1(let m): ProtobufAny(typeURL: CgroupV1Metrics.typeURL, value: m.encoded())
        case .v2(let m): ProtobufAny(typeURL: CgroupV2Metrics.typeURL, value: m.encoded())
        }
    }

    /// The cumulative CPU time in these statistics, in nanoseconds (nil when the CPU controller's
    /// files were missing).
    public var cpuNanoseconds: UInt64? {
        switch self {
        case .v1(let m): m.cpu?.usage?.total
        case .v2(let m): m.cpu.map { $0.usageUsec &* 1000 }
        }
    }

    /// What a scaled-down container reports (after the original): 1 byte of memory, so that
    /// metrics-server and `kubectl top` show `0Mi` instead of dropping the pod for zero usage
    /// (containerd's CRI turns it into a working set of 1 byte), and as cumulative CPU time the
    /// last real figure reported (`cpuNanoseconds`), at least 1 µs. The original reports 1 µs
    /// flat; a cumulative counter that goes back makes containerd 1.6's CRI compute
    /// `usage_nano_cores` from an unsigned underflow (about 5.6e18), so ours stays where it was:
    /// no CPU used while down, `0m`.
    public static func scaledDown(mode: CgroupHostMode, cpuNanoseconds: UInt64 = 0) -> ContainerStatistics {
        let cpuTotal = max(cpuNanoseconds, 1000)
        switch mode {
        case .unified:
            var m = CgroupV2Metrics()
            var cpu = CgroupV2Metrics.CPUStat()
            cpu.usageUsec = cpuTotal / 1000
            cpu.userUsec = cpuTotal / 1000
            m.cpu = cpu
            var memory = CgroupV2Metrics.MemoryStat()
            memory.stat = [.usage: 1, .anon: 1]
            m.memory = memory
            return .v2(m)
        case .hybrid, .legacy:
            var m = CgroupV1Metrics()
            var cpu = CgroupV1Metrics.CPUStat()
            var usage = CgroupV1Metrics.CPUUsage()
            usage.total = cpuTotal
            usage.user = cpuTotal
            cpu.usage = usage
            m.cpu = cpu
            var memory = CgroupV1Metrics.MemoryStat()
            var entry = CgroupV1Metrics.MemoryEntry()
            entry.usage = 1
            memory.usage = entry
            memory.stat = [.rss: 1, .totalRSS: 1]
            m.memory = memory
            return .v1(m)
        }
    }
}

/// Reads cgroup statistics from cgroup files. The parsing is pure: files come through `read`
/// (a path → its text, nil when missing), so tests give it fixtures.
public struct CgroupStatsReader: Sendable {
    /// Returns a file's text, nil when it does not exist or cannot be read.
    public var read: @Sendable (String) -> String?
    /// Lists a folder's entries (for the hugetlb page sizes).
    public var list: @Sendable (String) -> [String]
    /// Clock ticks per second (`sysconf(_SC_CLK_TCK)`), for `cpuacct.stat`.
    public var clockTicks: UInt64

    /// A reader of the real files.
    public static let system = CgroupStatsReader(
        read: { path in try? Files.readText(FilePath(path)) },
        list: { path in (try? Files.list(FilePath(path))) ?? [] },
        clockTicks: UInt64(max(1, sysconf(Int32(_SC_CLK_TCK))))
    )

    /// A reader over `read` and `list`.
    public init(
        read: @escaping @Sendable (String) -> String?,
        list: @escaping @Sendable (String) -> [String],
        clockTicks: UInt64
    ) {
        self.read = read
        self.list = list
        self.clockTicks = clockTicks
    }

    // MARK: cgroup v1

    /// The v1 statistics of the cgroups in `folders` (controller → folder), as containerd's
    /// cgroup1 `Stat` fills them; a controller without a folder or with missing files is left out.
    public func v1(folders: [String: String]) -> CgroupV1Metrics {
        var m = CgroupV1Metrics()
        if let dir = folders["pids"] {
            var pids = CgroupV1Metrics.PidsStat()
            pids.current = number(dir + "/pids.current") ?? 0
            pids.limit = number(dir + "/pids.max") ?? 0
            m.pids = pids
        }
        if let dir = folders["cpuacct"] ?? folders["cpu"], let total = number(dir + "/cpuacct.usage") {
            var usage = CgroupV1Metrics.CPUUsage()
            usage.total = total
            usage.perCPU = words(dir + "/cpuacct.usage_percpu").compactMap { UInt64($0) }
            let ticks = keyed(dir + "/cpuacct.stat")
            usage.user = (ticks["user"] ?? 0) * 1_000_000_000 / clockTicks
            usage.kernel = (ticks["system"] ?? 0) * 1_000_000_000 / clockTicks
            var cpu = CgroupV1Metrics.CPUStat()
            cpu.usage = usage
            if let dir = folders["cpu"], read(dir + "/cpu.stat") != nil {
                let stat = keyed(dir + "/cpu.stat")
                var throttle = CgroupV1Metrics.Throttle()
                throttle.periods = stat["nr_periods"] ?? 0
                throttle.throttledPeriods = stat["nr_throttled"] ?? 0
                throttle.throttledTime = stat["throttled_time"] ?? 0
                cpu.throttling = throttle
            }
            m.cpu = cpu
        }
        if let dir = folders["memory"], read(dir + "/memory.stat") != nil {
            var memory = CgroupV1Metrics.MemoryStat()
            let stat = keyed(dir + "/memory.stat")
            for field in CgroupV1Metrics.MemoryStat.Field.allCases {
                if let v = stat[field.statKey] { memory.stat[field] = v }
            }
            memory.usage = memoryEntry(dir, "memory.")
            memory.swap = memoryEntry(dir, "memory.memsw.")
            memory.kernel = memoryEntry(dir, "memory.kmem.")
            memory.kernelTCP = memoryEntry(dir, "memory.kmem.tcp.")
            m.memory = memory
            if read(dir + "/memory.oom_control") != nil {
                let oom = keyed(dir + "/memory.oom_control")
                var control = CgroupV1Metrics.MemoryOOMControl()
                control.oomKillDisable = oom["oom_kill_disable"] ?? 0
                control.underOOM = oom["under_oom"] ?? 0
                control.oomKill = oom["oom_kill"] ?? 0
                m.memoryOOMControl = control
            }
        }
        if let dir = folders["blkio"] {
            m.blkio = blkio(dir)
        }
        if let dir = folders["hugetlb"] {
            for size in hugePageSizes(dir, suffix: ".usage_in_bytes") {
                var entry = CgroupV1Metrics.HugetlbStat()
                entry.pagesize = size
                entry.usage = number("\(dir)/hugetlb.\(size).usage_in_bytes") ?? 0
                entry.max = number("\(dir)/hugetlb.\(size).max_usage_in_bytes") ?? 0
                entry.failcnt = number("\(dir)/hugetlb.\(size).failcnt") ?? 0
                m.hugetlb.append(entry)
            }
        }
        return m
    }

    /// `memory.<prefix>{limit_in_bytes,usage_in_bytes,max_usage_in_bytes,failcnt}`; nil when the
    /// usage file is missing (no swap accounting, no kmem on cgroup v1 of newer kernels).
    private func memoryEntry(_ dir: String, _ prefix: String) -> CgroupV1Metrics.MemoryEntry? {
        guard let usage = number("\(dir)/\(prefix)usage_in_bytes") else { return nil }
        var entry = CgroupV1Metrics.MemoryEntry()
        entry.usage = usage
        entry.limit = number("\(dir)/\(prefix)limit_in_bytes") ?? 0
        entry.max = number("\(dir)/\(prefix)max_usage_in_bytes") ?? 0
        entry.failcnt = number("\(dir)/\(prefix)failcnt") ?? 0
        return entry
    }

    /// The blkio controller's recursive statistics; the throttle files when the scheduler's own are
    /// empty (no CFQ/BFQ accounting), as containerd does.
    private func blkio(_ dir: String) -> CgroupV1Metrics.BlkIOStat {
        var stat = CgroupV1Metrics.BlkIOStat()
        let ownServiced = entries(dir + "/blkio.io_serviced_recursive")
        let prefix = ownServiced.isEmpty ? "blkio.throttle." : "blkio."
        stat.ioServiceBytesRecursive = entries("\(dir)/\(prefix)io_service_bytes_recursive")
        stat.ioServicedRecursive = entries("\(dir)/\(prefix)io_serviced_recursive")
        if prefix == "blkio." {
            stat.ioQueuedRecursive = entries(dir + "/blkio.io_queued_recursive")
            stat.ioServiceTimeRecursive = entries(dir + "/blkio.io_service_time_recursive")
            stat.ioWaitTimeRecursive = entries(dir + "/blkio.io_wait_time_recursive")
            stat.ioMergedRecursive = entries(dir + "/blkio.io_merged_recursive")
            stat.ioTimeRecursive = entries(dir + "/blkio.time_recursive")
            stat.sectorsRecursive = entries(dir + "/blkio.sectors_recursive")
        }
        return stat
    }

    /// Lines `MAJ:MIN [Op] value` of a blkio file (the `Total N` line has no device and is left out).
    private func entries(_ path: String) -> [CgroupV1Metrics.BlkIOEntry] {
        guard let text = read(path) else { return [] }
        return text.split(separator: "\n").compactMap { line in
            let f = line.split(separator: " ")
            guard f.count >= 2, let colon = f[0].firstIndex(of: ":"),
                let major = UInt64(f[0][..<colon]), let minor = UInt64(f[0][f[0].index(after: colon)...]),
                let value = UInt64(f[f.count - 1])
            else { return nil }
            return CgroupV1Metrics.BlkIOEntry(
                op: f.count >= 3 ? String(f[1]) : "",
                major: major,
                minor: minor,
                value: value
            )
        }
    }

    // MARK: cgroup v2

    /// The v2 statistics of the cgroup folder `dir`, as containerd's cgroup2 `Stat` fills them; a
    /// controller whose files are missing (not enabled for the cgroup) is left out.
    public func v2(folder dir: String) -> CgroupV2Metrics {
        var m = CgroupV2Metrics()
        if let current = number(dir + "/pids.current") {
            var pids = CgroupV2Metrics.PidsStat()
            pids.current = current
            pids.limit = number(dir + "/pids.max") ?? 0
            m.pids = pids
        }
        if read(dir + "/cpu.stat") != nil {
            let s = keyed(dir + "/cpu.stat")
            var cpu = CgroupV2Metrics.CPUStat()
            cpu.usageUsec = s["usage_usec"] ?? 0
            cpu.userUsec = s["user_usec"] ?? 0
            cpu.systemUsec = s["system_usec"] ?? 0
            cpu.nrPeriods = s["nr_periods"] ?? 0
            cpu.nrThrottled = s["nr_throttled"] ?? 0
            cpu.throttledUsec = s["throttled_usec"] ?? 0
            cpu.nrBursts = s["nr_bursts"] ?? 0
            cpu.burstUsec = s["burst_usec"] ?? 0
            m.cpu = cpu
        }
        if read(dir + "/memory.stat") != nil {
            let s = keyed(dir + "/memory.stat")
            var memory = CgroupV2Metrics.MemoryStat()
            for field in CgroupV2Metrics.MemoryStat.Field.allCases {
                if let key = field.statKey, let v = s[key] { memory.stat[field] = v }
            }
            let files: [(CgroupV2Metrics.MemoryStat.Field, String)] = [
                (.usage, "memory.current"), (.usageLimit, "memory.max"), (.swapUsage, "memory.swap.current"),
                (.swapLimit, "memory.swap.max"), (.maxUsage, "memory.peak"), (.swapMaxUsage, "memory.swap.peak"),
            ]
            for (field, file) in files { if let v = number("\(dir)/\(file)") { memory.stat[field] = v } }
            m.memory = memory
            if read(dir + "/memory.events") != nil {
                let e = keyed(dir + "/memory.events")
                var events = CgroupV2Metrics.MemoryEvents()
                events.low = e["low"] ?? 0
                events.high = e["high"] ?? 0
                events.max = e["max"] ?? 0
                events.oom = e["oom"] ?? 0
                events.oomKill = e["oom_kill"] ?? 0
                m.memoryEvents = events
            }
        }
        if let text = read(dir + "/io.stat") {
            var io = CgroupV2Metrics.IOStat()
            for line in text.split(separator: "\n") {
                let f = line.split(separator: " ")
                guard let device = f.first, let colon = device.firstIndex(of: ":"),
                    let major = UInt64(device[..<colon]), let minor = UInt64(device[device.index(after: colon)...])
                else { continue }
                var entry = CgroupV2Metrics.IOEntry()
                entry.major = major
                entry.minor = minor
                for pair in f.dropFirst() {
                    let kv = pair.split(separator: "=")
                    guard kv.count == 2, let v = UInt64(kv[1]) else { continue }
                    switch kv[0] {
                    case "rbytes": entry.rbytes = v
                    case "wbytes": entry.wbytes = v
                    case "rios": entry.rios = v
                    case "wios": entry.wios = v
                    default: break
                    }
                }
                io.usage.append(entry)
            }
            m.io = io
        }
        for size in hugePageSizes(dir, suffix: ".current") {
            var entry = CgroupV2Metrics.HugeTlbStat()
            entry.pagesize = size
            entry.current = number("\(dir)/hugetlb.\(size).current") ?? 0
            entry.max = number("\(dir)/hugetlb.\(size).max") ?? 0
            m.hugetlb.append(entry)
        }
        return m
    }

    // MARK: file formats

    /// A file holding one number; `max` (no limit) reads as `UInt64.max`, as containerd reads it.
    private func number(_ path: String) -> UInt64? {
        guard let text = read(path) else { return nil }
        let word = text.split(whereSeparator: { $0 == " " || $0 == "\n" }).first.map(String.init) ?? ""
        return word == "max" ? UInt64.max : UInt64(word)
    }

    /// The whitespace-separated words of a file.
    private func words(_ path: String) -> [Substring] {
        read(path)?.split(whereSeparator: { $0 == " " || $0 == "\n" }) ?? []
    }

    /// `key value` lines (memory.stat, cpu.stat, cpuacct.stat, memory.events, memory.oom_control).
    private func keyed(_ path: String) -> [String: UInt64] {
        var out: [String: UInt64] = [:]
        for line in read(path)?.split(separator: "\n") ?? [] {
            let f = line.split(separator: " ")
            if f.count == 2, let v = UInt64(f[1]) { out[String(f[0])] = v }
        }
        return out
    }

    /// The page sizes of the `hugetlb.<size><suffix>` files in `dir`, sorted.
    private func hugePageSizes(_ dir: String, suffix: String) -> [String] {
        list(dir).filter { $0.hasPrefix("hugetlb.") && $0.hasSuffix(suffix) }
            .map { String($0.dropFirst("hugetlb.".count).dropLast(suffix.count)) }
            .filter { !$0.contains(".") }
            .sorted()
    }

    // MARK: a process

    /// The statistics of the cgroups process `pid` is in: v2 metrics of its cgroup2 folder on a
    /// unified host, v1 metrics of its controllers' folders otherwise.
    /// - Returns: nil when the process is gone (no `/proc/PID/cgroup`).
    public func statistics(
        ofProcess pid: Int32,
        mode: CgroupHostMode = .current,
        mounts: [MountInfo]? = nil
    ) -> ContainerStatistics? {
        guard pid > 0, let text = read("/proc/\(pid)/cgroup") else { return nil }
        let folders = ProcessCgroups.folders(procCgroup: text, mounts: mounts ?? ((try? MountInfo.read()) ?? []))
        switch mode {
        case .unified:
            guard let dir = folders[""] else { return nil }
            return .v2(v2(folder: dir))
        case .hybrid, .legacy:
            return .v1(v1(folders: folders))
        }
    }
}
