import Foundation
import SystemPackage
import Testing
import ZPSystem
import ZPTestSupport

@testable import ZPCheckpoint

/// Decision 0075: a dump with `leavesConntrackOut` leaves the conntrack entries of its external
/// network namespace out (zeropod's CRIU build, scripts/criu/0006-conntrack-of-external-netns.patch,
/// reads the worker's environment); without it CRIU dumps them as before. Either way the restore
/// into the same namespace serves again.
@Suite(
    "Conntrack of an external network namespace (decision 0075)",
    .serialized,
    .enabled(if: isRoot, "needs root for CRIU")
)
struct ConntrackTests {
    /// Dumps the server, restores it into the same namespace, and returns the dump log's lines
    /// about conntrack and the count the restored server answers.
    func dumpAndRestore(
        _ pid: Int32,
        netns: TestNetns,
        port: UInt16,
        leavingConntrackOut: Bool
    ) throws -> (leftOut: Bool, restored: Int32, count: Int) {
        let images = try TemporaryDirectory("zpck-conntrack")
        var o = DumpOptions()
        o.external = [try NetworkNamespace.externalEntry(for: netns.filePath)]
        o.leavesConntrackOut = leavingConntrackOut
        _ = try Checkpointer().dump(pid: pid, imagesDir: images.filePath, options: o)
        #expect(eventually(every: 0.01) { !isAlive(pid) }, "dumped process is gone")
        var status: Int32 = 0
        _ = waitpid(pid, &status, WNOHANG)
        let log = try String(contentsOfFile: images.filePath.appending("dump.log").string, encoding: .utf8)
        let leftOut = log.contains("conntrack of the external netns")
        let ns = SharedDescriptor(try OwnedDescriptor.open(netns.filePath, O_RDONLY))
        let restored = try Checkpointer().restore(imagesDir: images.filePath, options: processRestoreOptions(netns: ns))
            .pid
        return (leftOut, restored, try counter(netns: netns, port: port).count)
    }

    @Test func leftOut_onlyWhenAsked_andTheRestoreServesEitherWay() throws {
        let netns = try TestNetns("zpck-ct")
        let port: UInt16 = 8094
        var live = try startCounterServer(netns: netns, port: port)
        defer { killAndReap(live) }
        #expect(try counter(netns: netns, port: port).count == 2)  // the start's probe was the first

        let asked = try dumpAndRestore(live, netns: netns, port: port, leavingConntrackOut: true)
        live = asked.restored
        #expect(asked.leftOut, "the dump log says the conntrack was left out (zeropod's CRIU build: make setup)")
        #expect(asked.count == 3)

        let notAsked = try dumpAndRestore(live, netns: netns, port: port, leavingConntrackOut: false)
        live = notAsked.restored
        #expect(!notAsked.leftOut, "without the option CRIU dumps the conntrack as before")
        #expect(notAsked.count == 4)
    }
}
