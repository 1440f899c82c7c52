import Foundation
import Testing
import ZPTestSupport

/// The test beds' subnets (`unusedSubnet`): a bridge left behind by a killed test run, still up
/// with its address, once took a new bed's pod packets (CI, 2026-12-07: "the app ... never
/// answered at 10.89.197.2:8080" beside a stale bridge on 10.89.197.0/24).
@Suite(
    .enabled(
        if: Privileges.isRoot && Privileges.hasTool("ip"),
        "needs root and iproute2 (a link in the host's namespace)"
    )
)
struct TestBedSubnetTests {
    @Test func unusedSubnet_skipsWhatTheHostUses_andNeverHandsOutOneTwice() throws {
        // A bridge (this kernel has no dummy links) holding 248 of the 250 candidates of a prefix
        // no other test uses.
        let link = "zpsub" + String(UInt32.random(in: 0...UInt32.max), radix: 36)
        try sh(["ip", "link", "add", link, "type", "bridge"], timeout: 20)
        defer { _ = try? run(["ip", "link", "del", link], timeout: 20) }
        let batch = (1...250).filter { $0 != 17 && $0 != 203 }.map { "addr add 10.84.\($0).1/24 dev \(link)" }
        let file = FileManager.default.temporaryDirectory.appendingPathComponent(link + ".batch").path
        try Data((batch.joined(separator: "\n") + "\n").utf8).write(to: URL(fileURLWithPath: file))
        defer { try? FileManager.default.removeItem(atPath: file) }
        try sh(["ip", "-batch", file], timeout: 60)

        let first = try unusedSubnet("10.84.")
        let second = try unusedSubnet("10.84.")
        #expect(Set([first, second]) == ["10.84.17.", "10.84.203."])
        #expect(throws: LabError.self) { try unusedSubnet("10.84.") }
    }
}
