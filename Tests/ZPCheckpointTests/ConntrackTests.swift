import Foundation
import SystemPackage
import Testing
import ZPSystem
import ZPTestSupport

@testable import ZPCheckpoint

/// Decision 0075: a dump with `leavesConntrackOut` leaves the conntrack entries of its external
/// network namespace out (zeropod's CRIU build, scripts/criu/0006-conntrack-of-external-netns.patch,
/// reads the worker's environment); without it CRIU dumps them as before. The namespace keeps its
/// entries in the kernel either way, and the restore into it serves again. The namespace gets an
/// iptables rule that matches on conntrack state (iptables comes with `make setup`), so that its
/// connections leave real entries behind.
@Suite(
    "Conntrack of an external network namespace (decision 0075)",
    .serialized,
    .enabled(if: isRoot, "needs root for CRIU")
)
struct ConntrackTests {
    /// The namespace's conntrack entry count (`nf_conntrack_count` is per namespace).
    func entries(_ netns: TestNetns) throws -> Int {
        let out = try shell("nsenter --net=\(netns.filePath) cat /proc/sys/net/netfilter/nf_conntrack_count")
        return try #require(Int(out.trimmingCharacters(in: .whitespacesAndNewlines)), "nf_conntrack_count: '\(out)'")
    }

    /// Bytes of CRIU's conntrack images (`netns-ct-<id>.img`) in `images`.
    func conntrackImageBytes(_ images: TemporaryDirectory) throws -> Int {
        try FileManager.default.contentsOfDirectory(atPath: images.filePath.string)
            .filter { $0.hasPrefix("netns-ct-") }
            .reduce(0) { total, name in
                let a = try FileManager.default.attributesOfItem(atPath: images.filePath.appending(name).string)
                return total + ((a[.size] as? NSNumber)?.intValue ?? 0)
            }
    }

    /// Dumps the server, restores it into the same namespace; returns whether the dump log says the
    /// conntrack was left out, the conntrack images' size, the restored pid and the count it answers.
    func dumpAndRestore(
        _ pid: Int32,
        netns: TestNetns,
        port: UInt16,
        leavingConntrackOut: Bool
    ) throws -> (leftOut: Bool, imageBytes: Int, restored: Int32, count: Int) {
        let images = try TemporaryDirectory("zpck-conntrack")
        var o = DumpOptions()
        o.external = [try NetworkNamespace.externalEntry(for: netns.filePath)]
        o.leavesConntrackOut = leavingConntrackOut
        _ = try Checkpointer().dump(pid: pid, imagesDir: images.filePath, options: o)
        #expect(eventually(every: 0.01) { !isAlive(pid) }, "dumped process is gone")
        var status: Int32 = 0
        _ = waitpid(pid, &status, WNOHANG)
        let log = try String(contentsOfFile: images.filePath.appending("dump.log").string, encoding: .utf8)
        let bytes = try conntrackImageBytes(images)
        let ns = SharedDescriptor(try OwnedDescriptor.open(netns.filePath, O_RDONLY))
        let restored = try Checkpointer().restore(imagesDir: images.filePath, options: processRestoreOptions(netns: ns))
            .pid
        let count = try counter(netns: netns, port: port).count
        return (log.contains("conntrack of the external netns"), bytes, restored, count)
    }

    @Test func leftOut_onlyWhenAsked_theNamespaceKeepsItsEntries_andTheRestoreServesEitherWay() throws {
        let netns = try TestNetns("zpck-ct")
        _ = try shell(
            "nsenter --net=\(netns.filePath) iptables -A INPUT -m conntrack --ctstate NEW,ESTABLISHED,RELATED -j ACCEPT"
        )
        let port: UInt16 = 8094
        var live = try startCounterServer(netns: netns, port: port)
        defer { killAndReap(live) }
        #expect(try counter(netns: netns, port: port).count == 2)  // the start's probe was the first
        let before = try entries(netns)
        #expect(before > 0, "the namespace's connections left conntrack entries")

        let asked = try dumpAndRestore(live, netns: netns, port: port, leavingConntrackOut: true)
        live = asked.restored
        #expect(asked.leftOut, "the dump log says the conntrack was left out (zeropod's CRIU build: make setup)")
        #expect(asked.count == 3)
        #expect(try entries(netns) >= before, "the namespace kept its entries across the dump and restore")

        let notAsked = try dumpAndRestore(live, netns: netns, port: port, leavingConntrackOut: false)
        live = notAsked.restored
        #expect(!notAsked.leftOut, "without the option CRIU dumps the conntrack as before")
        #expect(notAsked.count == 4)
        print("conntrack images: \(asked.imageBytes) bytes left out, \(notAsked.imageBytes) bytes dumped")
        #expect(
            notAsked.imageBytes > asked.imageBytes,
            "the dumped entries are in the images only when not left out (\(notAsked.imageBytes) vs \(asked.imageBytes) bytes)"
        )
    }
}
