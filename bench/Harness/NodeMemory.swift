import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Where one process's memory goes, from `/proc/<pid>/smaps`, `smaps_rollup` and `status`
/// (KiB). Anonymous mappings are told apart by shape: glibc's malloc arenas are 64 MiB
/// reservations (a small read-write head and a `---p` tail), thread stacks are 8 MiB
/// read-write mappings right above a 4 KiB `---p` guard page.
struct ProcessFootprint: Sendable {
    /// `Rss` / `Pss` of the whole process (smaps_rollup).
    var rssKiB: Int
    var pssKiB: Int
    /// `Private_Clean + Private_Dirty`: what the process alone keeps resident.
    var privateKiB: Int
    /// Threads (`/proc/<pid>/status`).
    var threads: Int
    /// Named parts (see ``Part``), each with RSS, PSS and private KiB.
    var parts: [Part: Usage]

    /// One line of the breakdown.
    enum Part: String, CaseIterable, Sendable {
        /// The executable's mappings, clean pages (text, read-only data): shared by every copy.
        case binaryClean = "executable: text and read-only data (clean, shared)"
        /// The executable's written pages: relocations applied at start (PIE), .data and .bss.
        case binaryDirty = "executable: relocated and written pages (.data, .bss, relocations)"
        /// Swift runtime and Foundation as shared libraries (a dynamically linked build).
        case swiftLibraries = "Swift runtime + Foundation libraries (.so)"
        /// Other shared libraries (libc, libstdc++, libbpf, libelf, libz, ...), clean pages.
        case systemLibraries = "other libraries (libc, libstdc++, libbpf, ...)"
        /// The main heap (`[heap]`, brk).
        case heap = "malloc: main heap"
        /// glibc malloc arenas of other threads (64 MiB reservations).
        case arenas = "malloc: per-thread arenas"
        /// Thread stacks (8 MiB each) and the main stack.
        case stacks = "thread stacks (main + threads)"
        /// Other anonymous memory (runtime metadata, libdispatch, TLS, ...).
        case otherAnonymous = "other anonymous (Swift metadata, dispatch, TLS, ...)"
    }

    /// Resident, proportional and private KiB of one part.
    struct Usage: Sendable {
        var rss = 0
        var pss = 0
        var privateKiB = 0
    }

    /// Reads the footprint of `pid`; nil when the process is gone.
    static func read(pid: Int32) -> ProcessFootprint? {
        guard let rollup = readProcFile("/proc/\(pid)/smaps_rollup"), let status = readProcFile("/proc/\(pid)/status"),
            let smaps = readProcFile("/proc/\(pid)/smaps")
        else { return nil }
        let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/exe")) ?? ""
        var fp = ProcessFootprint(
            rssKiB: kib(rollup, "Rss") ?? 0,
            pssKiB: kib(rollup, "Pss") ?? 0,
            privateKiB: (kib(rollup, "Private_Clean") ?? 0) + (kib(rollup, "Private_Dirty") ?? 0),
            threads: kib(status, "Threads") ?? 0,
            parts: [:]
        )
        let maps = Mapping.parse(smaps)
        for (i, m) in maps.enumerated() {
            let part: Part
            if m.path == exe {
                // Clean pages of the executable are shared; dirty ones are private copies.
                var clean = Usage(
                    rss: m.rss - m.privateDirty,
                    pss: m.pss - m.privateDirty,
                    privateKiB: m.privateClean
                )
                if clean.pss < 0 { clean.pss = 0 }
                fp.add(.binaryClean, clean)
                fp.add(.binaryDirty, Usage(rss: m.privateDirty, pss: m.privateDirty, privateKiB: m.privateDirty))
                continue
            } else if m.path.hasPrefix("/") {
                let name = (m.path as NSString).lastPathComponent
                part =
                    name.hasPrefix("libswift") || name.hasPrefix("libFoundation") || name.hasPrefix("lib_Foundation")
                        || name.hasPrefix("libdispatch") || name.hasPrefix("libBlocksRuntime")
                    ? .swiftLibraries : .systemLibraries
            } else if m.path == "[heap]" {
                part = .heap
            } else if m.path == "[stack]" {
                part = .stacks
            } else if m.path.isEmpty && m.perms.hasPrefix("rw") {
                let next = i + 1 < maps.count ? maps[i + 1] : nil
                let previous = i > 0 ? maps[i - 1] : nil
                if let next, next.path.isEmpty, next.perms.hasPrefix("---"), next.start == m.end,
                    (m.sizeKiB + next.sizeKiB) == 65536
                {
                    part = .arenas
                } else if let previous, previous.path.isEmpty, previous.perms.hasPrefix("---"), previous.sizeKiB == 4,
                    previous.end == m.start, m.sizeKiB >= 1024
                {
                    part = .stacks
                } else if let exeEnd = maps.last(where: { $0.path == exe })?.end, m.start == exeEnd {
                    // The anonymous tail right after the executable: the rest of its .bss.
                    fp.add(.binaryDirty, Usage(rss: m.rss, pss: m.pss, privateKiB: m.privateClean + m.privateDirty))
                    continue
                } else {
                    part = .otherAnonymous
                }
            } else {
                part = .otherAnonymous
            }
            fp.add(part, Usage(rss: m.rss, pss: m.pss, privateKiB: m.privateClean + m.privateDirty))
        }
        return fp
    }

    private mutating func add(_ part: Part, _ u: Usage) {
        var cur = parts[part] ?? Usage()
        cur.rss += u.rss
        cur.pss += u.pss
        cur.privateKiB += u.privateKiB
        parts[part] = cur
    }

    /// The number of KiB after `name:` in a `/proc` key-value text.
    static func kib(_ text: String, _ name: String) -> Int? {
        for line in text.split(separator: "\n") where line.hasPrefix(name + ":") {
            return line.split(whereSeparator: { $0 == " " || $0 == "\t" }).dropFirst().first.flatMap {
                Int($0.filter(\.isNumber))
            }
        }
        return nil
    }
}

/// One mapping of `/proc/<pid>/smaps` with the fields the breakdown needs (KiB).
private struct Mapping {
    var start: UInt64
    var end: UInt64
    var perms: String
    var path: String
    var rss = 0
    var pss = 0
    var privateClean = 0
    var privateDirty = 0
    var sizeKiB: Int { Int((end - start) / 1024) }

    static func parse(_ smaps: String) -> [Mapping] {
        var out: [Mapping] = []
        for line in smaps.split(separator: "\n", omittingEmptySubsequences: true) {
            let first = line.prefix { $0 != " " }
            if first.contains("-"), let dash = first.firstIndex(of: "-"),
                let lo = UInt64(first[..<dash], radix: 16),
                let hi = UInt64(first[first.index(after: dash)...], radix: 16)
            {
                let fields = line.split(separator: " ", maxSplits: 5, omittingEmptySubsequences: true)
                let path = fields.count > 5 ? String(fields[5]).trimmingCharacters(in: .whitespaces) : ""
                out.append(Mapping(start: lo, end: hi, perms: fields.count > 1 ? String(fields[1]) : "", path: path))
                continue
            }
            guard !out.isEmpty, let colon = line.firstIndex(of: ":") else { continue }
            let key = line[..<colon]
            let value = Int(line[line.index(after: colon)...].filter(\.isNumber)) ?? 0
            switch key {
            case "Rss": out[out.count - 1].rss = value
            case "Pss": out[out.count - 1].pss = value
            case "Private_Clean": out[out.count - 1].privateClean = value
            case "Private_Dirty": out[out.count - 1].privateDirty = value
            default: break
            }
        }
        return out
    }
}

/// What one pod keeps on the node besides its (stopped) application, read from the shim that
/// serves it: the shim process, its CRIU children (the restore worker prepared while scaled down,
/// a `criu lazy-pages` daemon), the BPF maps and programs it holds, and its sockets.
struct PodFootprint: Sendable {
    /// The shim process.
    var shim: ProcessFootprint
    /// The shim's CRIU children (`criu swrk`, `criu lazy-pages`).
    var criu: [ProcessFootprint]
    /// Kernel memory of the BPF maps the shim holds (fdinfo `memlock`), of the programs its links
    /// hold (`bpftool prog show`: `bytes_memlock`) and of their BTF objects, in bytes.
    var bpfBytes: Int
    /// Sockets the shim holds (activator listeners, ttrpc, status), and their kernel memory
    /// estimated as sockets × the TCP socket slab object (an upper bound for unix sockets).
    var sockets: Int
    var socketBytes: Int

    /// PSS of the shim and its CRIU children plus the kernel memory above, in KiB.
    var totalKiB: Int {
        shim.pssKiB + criu.map(\.pssKiB).reduce(0, +) + (bpfBytes + socketBytes) / 1024
    }

    /// Reads the footprint of the pod served by shim `pid`; `bpf` is the node's program and BTF
    /// table (``BPFTable``).
    static func read(shimPID pid: Int32, bpf: BPFTable) -> PodFootprint? {
        guard let shim = ProcessFootprint.read(pid: pid) else { return nil }
        let criu = children(of: pid).filter { child in
            (try? String(contentsOfFile: "/proc/\(child)/comm", encoding: .utf8))?.hasPrefix("criu") == true
        }.compactMap { ProcessFootprint.read(pid: $0) }
        var bpfBytes = 0
        var sockets = 0
        var btfs = Set<Int>()
        var programs = Set<Int>()
        let fds = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd")) ?? []
        for fd in fds {
            guard let target = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/fd/\(fd)")
            else { continue }
            if target.hasPrefix("socket:") {
                sockets += 1
                continue
            }
            guard target.hasPrefix("anon_inode:bpf"),
                let info = readProcFile("/proc/\(pid)/fdinfo/\(fd)")
            else { continue }
            if target == "anon_inode:bpf-map" {
                bpfBytes += fdinfoValue(info, "memlock") ?? 0
            } else if let prog = fdinfoValue(info, "prog_id"), !programs.contains(prog), let p = bpf.programs[prog] {
                // A link's program or a program descriptor, counted once.
                programs.insert(prog)
                bpfBytes += p.memlock
                if let btf = p.btf, !btfs.contains(btf) {
                    btfs.insert(btf)
                    bpfBytes += bpf.btfSizes[btf] ?? 0
                }
            }
        }
        return PodFootprint(
            shim: shim,
            criu: criu,
            bpfBytes: bpfBytes,
            sockets: sockets,
            socketBytes: sockets * bpf.tcpSocketBytes
        )
    }

    private static func fdinfoValue(_ info: String, _ key: String) -> Int? {
        for line in info.split(separator: "\n") where line.hasPrefix(key + ":") {
            return Int(line.dropFirst(key.count + 1).trimmingCharacters(in: .whitespaces))
        }
        return nil
    }
}

/// The node's BPF programs (memlock, BTF id) and BTF objects (size), from `bpftool -j`, and the
/// kernel's TCP socket object size (`/proc/slabinfo`), read once per measurement.
struct BPFTable: Sendable {
    var programs: [Int: (memlock: Int, btf: Int?)] = [:]
    var btfSizes: [Int: Int] = [:]
    var tcpSocketBytes = 2560

    static func read() -> BPFTable {
        var t = BPFTable()
        if let out = try? runChecked(["bpftool", "-j", "prog", "show"]),
            let list = try? JSONSerialization.jsonObject(with: Data(out.utf8)) as? [[String: Any]]
        {
            for p in list {
                guard let id = p["id"] as? Int else { continue }
                t.programs[id] = ((p["bytes_memlock"] as? Int) ?? 0, p["btf_id"] as? Int)
            }
        }
        if let out = try? runChecked(["bpftool", "-j", "btf", "show"]),
            let list = try? JSONSerialization.jsonObject(with: Data(out.utf8)) as? [[String: Any]]
        {
            for b in list {
                if let id = b["id"] as? Int, let size = b["size"] as? Int { t.btfSizes[id] = size }
            }
        }
        if let slab = readProcFile("/proc/slabinfo") {
            for line in slab.split(separator: "\n") {
                let f = line.split(separator: " ", omittingEmptySubsequences: true)
                if f.count > 3, f[0] == "TCP", let size = Int(f[3]) { t.tcpSocketBytes = size }
            }
        }
        return t
    }
}

/// Child processes of `pid` (from `/proc/<pid>/task/*/children`).
func children(of pid: Int32) -> [Int32] {
    let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")) ?? []
    return tasks.flatMap { task -> [Int32] in
        let text = (try? String(contentsOfFile: "/proc/\(pid)/task/\(task)/children", encoding: .utf8)) ?? ""
        return text.split(separator: " ").compactMap { Int32($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
    }
}

/// Memory the kernel says is in use: MemTotal − MemAvailable (KiB), node-wide.
func nodeMemoryInUseKiB() -> Int {
    let text = readProcFile("/proc/meminfo") ?? ""
    return (ProcessFootprint.kib(text, "MemTotal") ?? 0) - (ProcessFootprint.kib(text, "MemAvailable") ?? 0)
}

/// The whole text of a `/proc` file (their size reads as 0, so read until EOF); nil when unreadable.
func readProcFile(_ path: String) -> String? {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { _ = close(fd) }
    var data = [UInt8]()
    var buf = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = read(fd, &buf, buf.count)
        if n > 0 {
            data.append(contentsOf: buf[0..<n])
            continue
        }
        if n < 0 && errno == EINTR { continue }
        if n < 0 { return nil }
        break
    }
    return String(decoding: data, as: UTF8.self)
}
