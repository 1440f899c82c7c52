import Foundation
import SystemPackage
import Testing

@testable import ZPCheckpoint

#if canImport(Glibc)
import Glibc
#endif

/// `RuncState.adopt(initPID:seen:)`: a restored init that already exited (the handover lets it
/// answer its first client at CRIU's `post-resume`, before the shim records it) is recorded with
/// the identity read at `post-restore`; without one, a gone process is refused as before.
@Suite struct RuncStateAdoptTests {
    private func stateFolder() throws -> (FilePath, String) {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent(
            "zp-adopt-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        )
        let id = "adopt1"
        try FileManager.default.createDirectory(at: root.appendingPathComponent(id), withIntermediateDirectories: true)
        let json =
            #"{"id":"adopt1","init_process_pid":1,"init_process_start":5,"namespace_paths":{"NEWNET":"/proc/1/ns/net","NEWPID":"/proc/1/ns/pid"}}"#
        try Data(json.utf8).write(to: root.appendingPathComponent(id).appendingPathComponent("state.json"))
        return (FilePath(root.path), id)
    }

    /// A child that is gone (exited and reaped) by the time the function returns, and what was
    /// read of it while it lived.
    private func goneChild() throws -> (Int32, RuncState.ProcessIdentity) {
        let child = Process()
        child.executableURL = URL(fileURLWithPath: "/bin/sleep")
        child.arguments = ["30"]
        try child.run()
        let pid = child.processIdentifier
        let identity = try RuncState.ProcessIdentity.read(pid)
        kill(pid, SIGKILL)
        child.waitUntilExit()
        return (pid, identity)
    }

    @Test func goneInit_isAdoptedWithTheIdentitySeenBefore_andRefusedWithout() throws {
        let (root, id) = try stateFolder()
        defer { try? FileManager.default.removeItem(atPath: root.string) }
        let (pid, identity) = try goneChild()
        #expect(identity.pid == pid)
        #expect(identity.start > 0)
        #expect(identity.stdio.count == 3)

        var state = try RuncState(runcRoot: root, id: id)
        #expect(throws: RuncStateError.self) { try state.adopt(initPID: pid) }
        // An identity of another process does not stand in for this one.
        var other = identity
        other.pid = pid &+ 1
        #expect(throws: RuncStateError.self) { try state.adopt(initPID: pid, seen: other) }

        try state.adopt(initPID: pid, seen: identity)
        try state.write()
        let reread = try RuncState(runcRoot: root, id: id)
        #expect(reread.initPID == pid)
        #expect(reread.initStart == identity.start)
        #expect(reread.document["namespace_paths"]?["NEWNET"]?.stringValue == "/proc/\(pid)/ns/net")
        #expect(reread.document["external_descriptors"]?.arrayValue.compactMap(\.stringValue) == identity.stdio)
    }

    @Test func liveInit_isReadNow_evenWithAnIdentitySeenBefore() throws {
        let (root, id) = try stateFolder()
        defer { try? FileManager.default.removeItem(atPath: root.string) }
        var state = try RuncState(runcRoot: root, id: id)
        let me = getpid()
        var stale = try RuncState.ProcessIdentity.read(me)
        stale.stdio = ["/stale/0", "/stale/1", "/stale/2"]
        try state.adopt(initPID: me, seen: stale)
        #expect(state.initStart == stale.start)
        #expect(state.document["external_descriptors"]?.arrayValue.compactMap(\.stringValue) == stdioLinks(me))
    }
}
