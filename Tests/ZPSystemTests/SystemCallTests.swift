import SystemPackage
import Testing

@testable import ZPSystem

#if canImport(Glibc)
import Glibc
#endif

@Suite struct SystemCallTests {
    @Test func systemCall_retriesInterruptedCalls_andReturnsTheResult() throws {
        var attempts = 0
        let result = try systemCall("fake", "subject") { () -> CInt in
            attempts += 1
            if attempts < 3 {
                currentErrno = EINTR
                return -1
            }
            return 42
        }
        #expect(result == 42)
        #expect(attempts == 3)
    }

    @Test func systemCall_throwsSystemError_namingCallSubjectAndErrno() {
        let path = "/nonexistent-\(getpid())/file"
        #expect(throws: SystemError(call: "open", subject: path, errno: .noSuchFileOrDirectory)) {
            try systemCall("open", path) { open(path, O_RDONLY | O_CLOEXEC) }
        }
    }

    @Test func systemCall_returningErrno_throwsTheReturnedNumber() throws {
        try systemCallReturningErrno("fake") { 0 }
        #expect(throws: SystemError(call: "posix_spawn", subject: "/x", errno: .permissionDenied)) {
            try systemCallReturningErrno("posix_spawn", "/x") { EACCES }
        }
    }

    @Test func systemCall_returningPointer_throwsForNull() {
        let path = "/nonexistent-\(getpid())"
        #expect(throws: SystemError(call: "opendir", subject: path, errno: .noSuchFileOrDirectory)) {
            try systemCallReturningPointer("opendir", path) { opendir(path) }
        }
    }

    @Test func systemError_description_namesEverything() {
        let error = SystemError(call: "bind", subject: "127.0.0.1:80", errno: .addressInUse)
        #expect(error.description == "bind(127.0.0.1:80): Address already in use (errno 98)")
        #expect(SystemError(call: "pipe2", errno: .tooManyOpenFiles).description.hasPrefix("pipe2: "))
    }
}

@Suite struct DurationFormatTests {
    @Test(arguments: [
        (Duration.zero, "0.0"),
        (.milliseconds(84), "84.0"),
        (.microseconds(84_060), "84.1"),
        (.microseconds(84_049), "84.0"),
        (.microseconds(50), "0.1"),
        (.microseconds(49), "0.0"),
        (.seconds(2) + .microseconds(500), "2000.5"),
        (.seconds(3600), "3600000.0"),
        (.microseconds(-1_250), "-1.3"),
    ])
    func milliseconds_roundsToOneDecimal(duration: Duration, text: String) {
        #expect(milliseconds(duration) == text)
    }
}

@Suite struct ClockTests {
    @Test func monotonicClock_neverGoesBack_andAgreesWithItsNanosecondForm() {
        let a = SystemClock.monotonicNow()
        let b = SystemClock.monotonicNanoseconds()
        let c = SystemClock.monotonicNow()
        #expect(a <= .nanoseconds(Int64(b)))
        #expect(.nanoseconds(Int64(b)) <= c)
        #expect(a > .zero)
    }

    @Test func realtimeClock_isAfter2024() {
        #expect(SystemClock.realtimeNanoseconds() > 1_704_067_200 * 1_000_000_000)
    }
}
