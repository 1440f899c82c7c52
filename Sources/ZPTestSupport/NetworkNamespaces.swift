// Network namespaces and veth pairs made by a test (`ip netns add`, `ip link add ... type veth`),
// and work done inside them. Traffic stays in namespaces the test made itself.
import Foundation
import Glibc
import Synchronization
import SystemPackage
import ZPSystem

/// A network namespace of the test's own, with loopback up; deleted by ``delete()`` or on deinit.
public final class TestNetns: Sendable {
    /// Its name under `/var/run/netns`.
    public let name: String
    private let deleted = Atomic<Bool>(false)

    /// Creates `<uniqueName(prefix)>`.
    /// - Throws: ``LabError`` when `ip` fails (not root, no iproute2).
    public convenience init(_ prefix: String) throws {
        try self.init(exactName: uniqueName(prefix))
    }

    /// Creates a namespace named `name`, deleting a stale one of that name first (a crashed run's).
    /// - Throws: ``LabError`` when `ip` fails.
    public init(exactName name: String) throws {
        self.name = name
        _ = try? ZPTestSupport.run(["ip", "netns", "del", name], timeout: 20)
        try sh(["ip", "netns", "add", name], timeout: 20)
        do {
            try sh(["ip", "-n", name, "link", "set", "lo", "up"], timeout: 20)
        } catch {
            delete()
            throw error
        }
    }

    deinit { delete() }

    /// `/var/run/netns/NAME`, e.g. for `ctr run --with-ns network:` or `nsenter --net=`.
    public var path: String { "/var/run/netns/\(name)" }

    /// ``path`` as a `FilePath`.
    public var filePath: FilePath { FilePath(path) }

    /// Deletes the namespace (once; later calls do nothing).
    public func delete() {
        guard !deleted.exchange(true, ordering: .acquiringAndReleasing) else { return }
        _ = try? ZPTestSupport.run(["ip", "netns", "del", name], timeout: 20)
    }

    /// Runs `ip netns exec NAME arguments...`.
    public func exec(_ arguments: [String], timeout: Int = 60) throws -> CommandResult {
        try ZPTestSupport.run(["ip", "netns", "exec", name] + arguments, timeout: timeout)
    }

    /// `ip -n NAME arguments...`, which must succeed.
    /// - Throws: ``LabError`` with ip's output.
    @discardableResult
    public func ip(_ arguments: [String]) throws -> String {
        try sh(["ip", "-n", name] + arguments, timeout: 20)
    }

    /// A GET from inside the namespace with curl (a real TCP client; the host's static busybox
    /// wget crashes): the body, or nil when it fails or times out (3 s).
    public func httpGet(port: Int, host: String = "127.0.0.1", path: String = "/", agent: String? = nil) -> String? {
        let agentArguments = agent.map { ["-A", $0] } ?? []
        guard
            let result = try? exec(
                ["curl", "-s", "--max-time", "3"] + agentArguments + ["http://\(host):\(port)\(path)"],
                timeout: 10
            ),
            result.status == 0
        else { return nil }
        return result.stdout
    }

    /// Runs `body` on a new thread that entered this namespace (the thread then ends, so no other
    /// code runs in the namespace). Sockets made there stay in it.
    /// - Throws: ``LabError`` when the namespace cannot be joined, or what `body` threw.
    public func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) throws -> T {
        try inNetworkNamespace(path, body)
    }
}

/// Runs `body` on a new thread that joined the network namespace at `path` (ZPSystem's
/// `NetworkNamespace.perform`; `setns` is per thread: the caller's threads stay where they are).
/// - Throws: ZPSystem's `SystemError` when the namespace cannot be opened or joined, or what
///   `body` threw.
public func inNetworkNamespace<T: Sendable>(_ path: String, _ body: @escaping @Sendable () throws -> T) throws -> T {
    try NetworkNamespace(path: FilePath(path)).perform { Result { try body() } }.get()
}

/// Joins two namespaces with a veth pair: `firstName` in `first`, `secondName` in `second`, each
/// given its addresses (CIDR, e.g. "10.77.0.1/24"; IPv6 ones without duplicate address detection)
/// and brought up. The pair goes away with either namespace.
/// - Throws: ``LabError`` when `ip` fails.
public func connectVeth(
    _ first: TestNetns,
    _ firstName: String,
    addresses firstAddresses: [String],
    to second: TestNetns,
    _ secondName: String,
    addresses secondAddresses: [String]
) throws {
    try sh(
        [
            "ip", "link", "add", firstName, "netns", first.name, "type", "veth",
            "peer", "name", secondName, "netns", second.name,
        ],
        timeout: 20
    )
    for (netns, device, addresses) in [(first, firstName, firstAddresses), (second, secondName, secondAddresses)] {
        for address in addresses {
            try netns.ip(["addr", "add", address, "dev", device] + (address.contains(":") ? ["nodad"] : []))
        }
        try netns.ip(["link", "set", device, "up"])
    }
}

/// The `/24` prefixes ``unusedSubnet(_:)`` handed out in this process.
private let handedOutSubnets = Mutex<Set<String>>([])

/// A `<prefix><k>.` (k in 1...250, e.g. "10.89.17.") that no address or route of the host's
/// namespace lies in and that this process has not handed out before. A test bed whose bridge is
/// made later (by a CNI plugin on its first pod) still gets a subnet of its own; and one left
/// behind by a killed test run (its bridge still up with the same address) cannot take the new
/// bed's packets: with two connected routes for one subnet the kernel uses the older one.
/// - Parameter prefix: the first two octets with their dots, e.g. "10.89.".
/// - Throws: ``LabError`` when all 250 are taken.
public func unusedSubnet(_ prefix: String) throws -> String {
    let addresses = (try? run(["ip", "-4", "-o", "addr"], timeout: 20).stdout) ?? ""
    let routes = (try? run(["ip", "-4", "route", "show", "table", "all"], timeout: 20).stdout) ?? ""
    let inUse = { (candidate: String) in
        " \(addresses)\n\(routes)".split(whereSeparator: { $0 == " " || $0 == "\n" }).contains {
            $0.hasPrefix(candidate)
        }
    }
    return try handedOutSubnets.withLock { handedOut in
        let first = Int.random(in: 1...250)
        for step in 0..<250 {
            let candidate = "\(prefix)\((first + step) % 250 + 1)."
            guard !handedOut.contains(candidate), !inUse(candidate) else { continue }
            handedOut.insert(candidate)
            return candidate
        }
        throw LabError("no free \(prefix)<k>.0/24 subnet left on this host")
    }
}
