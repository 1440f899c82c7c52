import ZPCore

// The container statistics a shim answers `Stats` with: containerd's cgroups metrics
// (github.com/containerd/cgroups, `io.containerd.cgroups.v1.Metrics` from stats/v1 (cgroup1/stats)
// and `io.containerd.cgroups.v2.Metrics` from cgroup2/stats; proto3), in the Any of `StatsResponse`.
// containerd's CRI plugin turns them into `ContainerStats` (CPU usage, working set = usage minus
// inactive file pages, RSS, page faults). Field numbers are protocol facts written once per field;
// the scalar blocks of the memory statistics are enums whose cases carry the field number and the
// key of the kernel's `memory.stat`, so the reader fills them by name. Decision 0042.

/// A varint field that appears packed or not; written packed (proto3's default for repeated scalars).
private func packedUInt64s<M>(_ number: Int, _ path: ProtobufFieldPath<M, [UInt64]>) -> ProtobufFieldRule<M> {
    .custom(
        number,
        write: { m, n, w in w.writePackedVarints(field: n, m[keyPath: path]) },
        read: { m, f, name throws(ProtobufError) in m[keyPath: path] += try f.packedVarints(in: name) }
    )
}

/// A block of `uint64` fields kept as a dictionary by field: each present, non-zero value is written
/// in field-number order (proto3 omits zeros), and read back by number.
private func scalarBlock<M, F: RawRepresentable & CaseIterable & Hashable & Sendable>(
    _ path: ProtobufFieldPath<M, [F: UInt64]>
) -> [ProtobufFieldRule<M>] where F.RawValue == Int {
    F.allCases.map { field in
        .custom(
            field.rawValue,
            write: { m, n, w in w.writeUInt64IfNotDefault(field: n, m[keyPath: path][field] ?? 0) },
            read: { m, f, name throws(ProtobufError) in m[keyPath: path][field] = try f.uint64(in: name) }
        )
    }
}

// MARK: - cgroup v1

/// `io.containerd.cgroups.v1.Metrics`: what containerd-shim-runc-v2 reports on cgroup v1 and hybrid
/// hosts.
public struct CgroupV1Metrics: ProtobufTableMessage, Equatable {
    /// The type URL of the Any.
    public static let typeURL = "io.containerd.cgroups.v1.Metrics"

    /// Huge pages per page size (1).
    public var hugetlb: [HugetlbStat] = []
    /// Process count and limit (2).
    public var pids: PidsStat?
    /// CPU time and throttling (3).
    public var cpu: CPUStat?
    /// Memory (4).
    public var memory: MemoryStat?
    /// Block I/O (5).
    public var blkio: BlkIOStat?
    /// The OOM control state (9).
    public var memoryOOMControl: MemoryOOMControl?

    /// No statistics.
    public init() {}

    /// The fields (6 rdma, 7 network and 8 cgroup_stats are never filled by a runc shim).
    public static let fields = ProtobufFieldTable<Self>(
        "io.containerd.cgroups.v1.Metrics",
        [
            .messages(1, \.hugetlb),
            .message(2, \.pids),
            .message(3, \.cpu),
            .message(4, \.memory),
            .message(5, \.blkio),
            .message(9, \.memoryOOMControl),
        ]
    )

    /// `HugetlbStat`: 1 usage, 2 max, 3 failcnt, 4 pagesize.
    public struct HugetlbStat: ProtobufTableMessage, Equatable {
        /// Bytes in use (1), the most used (2), allocation failures (3).
        public var usage: UInt64 = 0, max: UInt64 = 0, failcnt: UInt64 = 0
        /// The page size, e.g. `2MB` (4).
        public var pagesize = ""
        /// An empty entry.
        public init() {}
        /// The fields.
        public static let fields = ProtobufFieldTable<Self>(
            "io.containerd.cgroups.v1.HugetlbStat",
            [
                .uint64(1, \.usage), .uint64(2, \.max), .uint64(3, \.failcnt), .string(4, \.pagesize),
            ]
        )
    }

    /// `PidsStat`: 1 current, 2 limit (0: no limit).
    public struct PidsStat: ProtobufTableMessage, Equatable {
        /// Processes now (1) and the limit (2).
        public var current: UInt64 = 0, limit: UInt64 = 0
        /// An empty entry.
        public init() {}
        /// The fields.
        public static let fields = ProtobufFieldTable<Self>(
            "io.containerd.cgroups.v1.PidsStat",
            [
                .uint64(1, \.current), .uint64(2, \.limit),
            ]
        )
    }

    /// `CPUStat`: 1 usage, 2 throttling.
    public struct CPUStat: ProtobufTableMessage, Equatable {
        /// CPU time (1).
        public var usage: CPUUsage?
        /// CFS throttling (2).
        public var throttling: Throttle?
        /// An empty entry.
        public init() {}
        /// The fields.
        public static let fields = ProtobufFieldTable<Self>(
            "io.containerd.cgroups.v1.CPUStat",
            [
                .message(1, \.usage), .message(2, \.throttling),
            ]
        )
    }

    /// `CPUUsage` in nanoseconds: 1 total, 2 kernel, 3 user, 4 per_cpu (packed).
    public struct CPUUsage: ProtobufTableMessage, Equatable {
        /// All CPU time (1), in the kernel (2) and in user space (3).
        public var total: UInt64 = 0, kernel: UInt64 = 0, user: UInt64 = 0
        /// Per CPU (4).
        public var perCPU: [UInt64] = []
        /// An empty entry.
        public init() {}
        /// The fields.
        public static let fields = ProtobufFieldTable<Self>(
            "io.containerd.cgroups.v1.CPUUsage",
            [
                .uint64(1, \.total), .uint64(2, \.kernel), .uint64(3, \.user), packedUInt64s(4, \.perCPU),
            ]
        )
    }

    /// `Throttle`: 1 periods, 2 throttled_periods, 3 throttled_time (ns).
    public struct Throttle: ProtobufTableMessage, Equatable {
        /// Enforcement periods (1), those throttled (2), the time throttled (3).
        public var periods: UInt64 = 0, throttledPeriods: UInt64 = 0, throttledTime: UInt64 = 0
        /// An empty entry.
        public init() {}
        /// The fields.
        public static let fields = ProtobufFieldTable<Self>(
            "io.containerd.cgroups.v1.Throttle",
            [
                .uint64(1, \.periods), .uint64(2, \.throttledPeriods), .uint64(3, \.throttledTime),
            ]
        )
    }

    /// `MemoryStat`: the `memory.stat` counters (1-32) and four usage entries (33-36).
    public struct MemoryStat: ProtobufTableMessage, Equatable {
        /// Fields 1-32 by their `memory.stat` key.
        public enum Field: Int, CaseIterable, Hashable, Sendable {
            /// 1-17: this cgroup's own counters.
            case cache = 1
            case rss, rssHuge, mappedFile, dirty, writeback, pgPgIn, pgPgOut, pgFault, pgMajFault
            case inactiveAnon, activeAnon, inactiveFile, activeFile, unevictable, hierarchicalMemoryLimit
            case hierarchicalSwapLimit
            /// 18-32: the same counters with its descendants (`total_*`).
            case totalCache, totalRSS, totalRSSHuge, totalMappedFile, totalDirty, totalWriteback, totalPgPgIn
            case totalPgPgOut, totalPgFault, totalPgMajFault, totalInactiveAnon, totalActiveAnon
            case totalInactiveFile, totalActiveFile, totalUnevictable

            /// The key in the kernel's `memory.stat` (cgroup v1).
            public var statKey: String {
                let own = [
                    "cache", "rss", "rss_huge", "mapped_file", "dirty", "writeback", "pgpgin", "pgpgout",
                    "pgfault", "pgmajfault", "inactive_anon", "active_anon", "inactive_file", "active_file",
                    "unevictable", "hierarchical_memory_limit", "hierarchical_memsw_limit",
                ]
                return rawValue <= own.count ? own[rawValue - 1] : "total_" + own[rawValue - 18]
            }
        }

        /// The counters (absent: 0).
        public var stat: [Field: UInt64] = [:]
        /// `memory.usage_in_bytes` etc. (33), `memory.memsw.*` (34), `memory.kmem.*` (35),
        /// `memory.kmem.tcp.*` (36).
        public var usage: MemoryEntry?, swap: MemoryEntry?, kernel: MemoryEntry?, kernelTCP: MemoryEntry?
        /// An empty entry.
        public init() {}
        /// The fields.
        public static let fields = ProtobufFieldTable<Self>(
            "io.containerd.cgroups.v1.MemoryStat",
            scalarBlock(\.stat) + [
                .message(33, \.usage), .message(34, \.swap), .message(35, \.kernel), .message(36, \.kernelTCP),
            ]
        )
    }

    /// `MemoryEntry`: 1 limit, 2 usage, 3 max, 4 failcnt.
    public struct MemoryEntry: ProtobufTableMessage, Equatable {
        /// The limit (1), bytes in use (2), the most used (3), times the limit was hit (4).
        public var limit: UInt64 = 0, usage: UInt64 = 0, max: UInt64 = 0, failcnt: UInt64 = 0
        /// An empty entry.
        public init() {}
        /// The fields.
        public static let fields = ProtobufFieldTable<Self>(
            "io.containerd.cgroups.v1.MemoryEntry",
            [
                .uint64(1, \.limit), .uint64(2, \.usage), .uint64(3, \.max), .uint64(4, \.failcnt),
            ]
        )
    }

    /// `MemoryOomControl`: 1 oom_kill_disable, 2 under_oom, 3 oom_kill.
    public struct MemoryOOMControl: ProtobufTableMessage, Equatable {
        /// The OOM killer is off (1), the cgroup is under OOM now (2), processes OOM-killed (3).
        public var oomKillDisable: UInt64 = 0, underOOM: UInt64 = 0, oomKill: UInt64 = 0
        /// An empty entry.
        public init() {}
        /// The fields.
        public static let fields = ProtobufFieldTable<Self>(
            "io.containerd.cgroups.v1.MemoryOomControl",
            [
                .uint64(1, \.oomKillDisable), .uint64(2, \.underOOM), .uint64(3, \.oomKill),
            ]
        )
    }

    /// `BlkIOStat`: eight lists of `BlkIOEntry` (1-8), from the blkio controller's `*_recursive` files.
    public struct BlkIOStat: ProtobufTableMessage, Equatable {
        /// `io_service_bytes_recursive` (1), `io_serviced_recursive` (2), `io_queued_recursive` (3),
        /// `io_service_time_recursive` (4), `io_wait_time_recursive` (5), `io_merged_recursive` (6),
        /// `time_recursive` (7), `sectors_recursive` (8).
        public var ioServiceBytesRecursive: [BlkIOEntry] = [], ioServicedRecursive: [BlkIOEntry] = []
        public var ioQueuedRecursive: [BlkIOEntry] = [], ioServiceTimeRecursive: [BlkIOEntry] = []
        public var ioWaitTimeRecursive: [BlkIOEntry] = [], ioMergedRecursive: [BlkIOEntry] = []
        public var ioTimeRecursive: [BlkIOEntry] = [], sectorsRecursive: [BlkIOEntry] = []
        /// An empty entry.
        public init() {}
        /// The fields.
        public static let fields = ProtobufFieldTable<Self>(
            "io.containerd.cgroups.v1.BlkIOStat",
            [
                .messages(1, \.ioServiceBytesRecursive), .messages(2, \.ioServicedRecursive),
                .messages(3, \.ioQueuedRecursive), .messages(4, \.ioServiceTimeRecursive),
                .messages(5, \.ioWaitTimeRecursive), .messages(6, \.ioMergedRecursive),
                .messages(7, \.ioTimeRecursive), .messages(8, \.sectorsRecursive),
            ]
        )
    }

    /// `BlkIOEntry`: 1 op, 2 device, 3 major, 4 minor, 5 value.
    public struct BlkIOEntry: ProtobufTableMessage, Equatable {
        /// `Read`, `Write`, `Sync`, `Async`, `Discard`, `Total` or empty (1); the device name (2).
        public var op = "", device = ""
        /// The device numbers (3, 4) and the value (5).
        public var major: UInt64 = 0, minor: UInt64 = 0, value: UInt64 = 0
        /// An empty entry.
        public init() {}
        /// An entry from its fields.
        public init(op: String, major: UInt64, minor: UInt64, value: UInt64) {
            self.op = op
            self.major = major
            self.minor = minor
            self.value = value
        }
        /// The fields.
        public static let fields = ProtobufFieldTable<Self>(
            "io.containerd.cgroups.v1.BlkIOEntry",
            [
                .string(1, \.op), .string(2, \.device), .uint64(3, \.major), .uint64(4, \.minor), .uint64(5, \.value),
            ]
        )
    }
}

// MARK: - cgroup v2

/// `io.containerd.cgroups.v2.Metrics`: what containerd-shim-runc-v2 reports on cgroup v2 (unified)
/// hosts.
public struct CgroupV2Metrics: ProtobufTableMessage, Equatable {
    /// The type URL of the Any.
    public static let typeURL = "io.containerd.cgroups.v2.Metrics"

    /// Process count and limit (1).
    public var pids: PidsStat?
    /// CPU (2).
    public var cpu: CPUStat?
    /// Memory (4).
    public var memory: MemoryStat?
    /// I/O per device (6).
    public var io: IOStat?
    /// Huge pages per page size (7).
    public var hugetlb: [HugeTlbStat] = []
    /// `memory.events` (8).
    public var memoryEvents: MemoryEvents?

    /// No statistics.
    public init() {}

    /// The fields (5 rdma and 9 network are never filled by a runc shim).
    public static let fields = ProtobufFieldTable<Self>(
        "io.containerd.cgroups.v2.Metrics",
        [
            .message(1, \.pids),
            .message(2, \.cpu),
            .message(4, \.memory),
            .message(6, \.io),
            .messages(7, \.hugetlb),
            .message(8, \.memoryEvents),
        ]
    )

    /// `PidsStat`: 1 current, 2 limit (0: `max`).
    public struct PidsStat: ProtobufTableMessage, Equatable {
        /// Processes now (1) and the limit (2).
        public var current: UInt64 = 0, limit: UInt64 = 0
        /// An empty entry.
        public init() {}
        /// The fields.
        public static let fields = ProtobufFieldTable<Self>(
            "io.containerd.cgroups.v2.PidsStat",
            [
                .uint64(1, \.current), .uint64(2, \.limit),
            ]
        )
    }

    /// `CPUStat`, microseconds, from `cpu.stat`: 1 usage_usec, 2 user_usec, 3 system_usec,
    /// 4 nr_periods, 5 nr_throttled, 6 throttled_usec, 8 nr_bursts, 9 burst_usec (7 psi: not read).
    public struct CPUStat: ProtobufTableMessage, Equatable {
        /// CPU time (1), in user space (2), in the kernel (3).
        public var usageUsec: UInt64 = 0, userUsec: UInt64 = 0, systemUsec: UInt64 = 0
        /// CFS periods (4), throttled ones (5), time throttled (6).
        public var nrPeriods: UInt64 = 0, nrThrottled: UInt64 = 0, throttledUsec: UInt64 = 0
        /// Bursts (8) and their time (9).
        public var nrBursts: UInt64 = 0, burstUsec: UInt64 = 0
        /// An empty entry.
        public init() {}
        /// The fields.
        public static let fields = ProtobufFieldTable<Self>(
            "io.containerd.cgroups.v2.CPUStat",
            [
                .uint64(1, \.usageUsec), .uint64(2, \.userUsec), .uint64(3, \.systemUsec), .uint64(4, \.nrPeriods),
                .uint64(5, \.nrThrottled), .uint64(6, \.throttledUsec), .uint64(8, \.nrBursts), .uint64(9, \.burstUsec),
            ]
        )
    }

    /// `MemoryStat`: `memory.stat` counters (1-31) and the usage figures (32-37), all by field.
    public struct MemoryStat: ProtobufTableMessage, Equatable {
        /// Fields 1-37.
        public enum Field: Int, CaseIterable, Hashable, Sendable {
            /// 1-31: keys of the kernel's `memory.stat` (cgroup v2).
            case anon = 1
            case file, kernelStack, slab, sock, shmem, fileMapped, fileDirty, fileWriteback, anonTHP
            case inactiveAnon, activeAnon, inactiveFile, activeFile, unevictable, slabReclaimable
            case slabUnreclaimable, pgfault, pgmajfault, workingsetRefault, workingsetActivate
            case workingsetNodereclaim, pgrefill, pgscan, pgsteal, pgactivate, pgdeactivate, pglazyfree
            case pglazyfreed, thpFaultAlloc, thpCollapseAlloc
            /// 32-37: `memory.current`, `memory.max`, `memory.swap.current`, `memory.swap.max`,
            /// `memory.peak`, `memory.swap.peak`.
            case usage, usageLimit, swapUsage, swapLimit, maxUsage, swapMaxUsage

            /// The key in `memory.stat`, nil for the usage figures (separate files).
            public var statKey: String? {
                let keys = [
                    "anon", "file", "kernel_stack", "slab", "sock", "shmem", "file_mapped", "file_dirty",
                    "file_writeback", "anon_thp", "inactive_anon", "active_anon", "inactive_file",
                    "active_file", "unevictable", "slab_reclaimable", "slab_unreclaimable", "pgfault",
                    "pgmajfault", "workingset_refault", "workingset_activate", "workingset_nodereclaim",
                    "pgrefill", "pgscan", "pgsteal", "pgactivate", "pgdeactivate", "pglazyfree",
                    "pglazyfreed", "thp_fault_alloc", "thp_collapse_alloc",
                ]
                return rawValue <= keys.count ? keys[rawValue - 1] : nil
            }
        }

        /// The figures (absent: 0).
        public var stat: [Field: UInt64] = [:]
        /// An empty entry.
        public init() {}
        /// The fields.
        public static let fields = ProtobufFieldTable<Self>("io.containerd.cgroups.v2.MemoryStat", scalarBlock(\.stat))
    }

    /// `MemoryEvents` (`memory.events`): 1 low, 2 high, 3 max, 4 oom, 5 oom_kill.
    public struct MemoryEvents: ProtobufTableMessage, Equatable {
        /// The event counts.
        public var low: UInt64 = 0, high: UInt64 = 0, max: UInt64 = 0, oom: UInt64 = 0, oomKill: UInt64 = 0
        /// An empty entry.
        public init() {}
        /// The fields.
        public static let fields = ProtobufFieldTable<Self>(
            "io.containerd.cgroups.v2.MemoryEvents",
            [
                .uint64(1, \.low), .uint64(2, \.high), .uint64(3, \.max), .uint64(4, \.oom), .uint64(5, \.oomKill),
            ]
        )
    }

    /// `IOStat`: 1 usage (2 psi: not read).
    public struct IOStat: ProtobufTableMessage, Equatable {
        /// One entry per device (`io.stat`).
        public var usage: [IOEntry] = []
        /// An empty entry.
        public init() {}
        /// The fields.
        public static let fields = ProtobufFieldTable<Self>("io.containerd.cgroups.v2.IOStat", [.messages(1, \.usage)])
    }

    /// `IOEntry`: 1 major, 2 minor, 3 rbytes, 4 wbytes, 5 rios, 6 wios.
    public struct IOEntry: ProtobufTableMessage, Equatable {
        /// The device (1, 2); bytes read (3) and written (4); read (5) and write (6) operations.
        public var major: UInt64 = 0, minor: UInt64 = 0, rbytes: UInt64 = 0, wbytes: UInt64 = 0
        public var rios: UInt64 = 0, wios: UInt64 = 0
        /// An empty entry.
        public init() {}
        /// The fields.
        public static let fields = ProtobufFieldTable<Self>(
            "io.containerd.cgroups.v2.IOEntry",
            [
                .uint64(1, \.major), .uint64(2, \.minor), .uint64(3, \.rbytes), .uint64(4, \.wbytes),
                .uint64(5, \.rios), .uint64(6, \.wios),
            ]
        )
    }

    /// `HugeTlbStat`: 1 current, 2 max, 3 pagesize.
    public struct HugeTlbStat: ProtobufTableMessage, Equatable {
        /// Bytes in use (1) and the limit (2).
        public var current: UInt64 = 0, max: UInt64 = 0
        /// The page size, e.g. `2MB` (3).
        public var pagesize = ""
        /// An empty entry.
        public init() {}
        /// The fields.
        public static let fields = ProtobufFieldTable<Self>(
            "io.containerd.cgroups.v2.HugeTlbStat",
            [
                .uint64(1, \.current), .uint64(2, \.max), .string(3, \.pagesize),
            ]
        )
    }
}
