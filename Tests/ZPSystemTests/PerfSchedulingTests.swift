import Foundation
import Synchronization
import SystemPackage
import Testing
import ZPTestSupport

@testable import ZPSystem

#if canImport(Glibc)
import Glibc
#endif

/// Decision 0076: the dummy perf event the shim holds. What it buys (breakpoints without an RCU
/// grace period each) is timing, shown by the benchmark; here: it is a perf event, it outlives the
/// thread that opened it (the shim opens it on a pool thread), and closing releases it.
@Suite(
    .enabled(
        if: Privileges.isRoot && FileManager.default.fileExists(atPath: "/proc/sys/kernel/perf_event_paranoid"),
        "needs root (perf_event_paranoid) and a kernel with perf events"
    )
)
struct PerfSchedulingTests {
    @Test func holdHooks_isAPerfEvent_thatOutlivesItsThread_untilClosed() throws {
        let opened = Opened()
        let thread = Thread {
            opened.result.withLock { $0 = Result { () throws(SystemError) in try PerfScheduling.holdHooks().disown() } }
        }
        thread.start()
        #expect(eventually { opened.result.withLock { $0 != nil } })
        let fd = try #require(try opened.result.withLock { $0 }?.get())
        #expect(eventually { thread.isFinished }, "the opening thread did not end")
        #expect(try Files.readLink(FilePath("/proc/self/fd/\(fd)")) == "anon_inode:[perf_event]")
        try OwnedDescriptor(adopting: fd).close()
        #expect((try? Files.readLink(FilePath("/proc/self/fd/\(fd)"))) != "anon_inode:[perf_event]")
    }
}

/// The outcome of the open on the other thread.
private final class Opened: Sendable {
    let result = Mutex<Result<CInt, SystemError>?>(nil)
}
