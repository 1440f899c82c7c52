import Glibc
import SystemPackage
import Testing

@testable import ZPSystem

/// `Netlink.exchange`'s loop, on a datagram socket pair standing in for the kernel's side (the
/// real socket diagnostics exchange is `PortDiscoveryTests`, ZPShimTests).
@Suite struct NetlinkTests {
    @Test func exchange_readsUntilTheLastDatagram() throws {
        let fds = try datagramPair()
        let ours = OwnedDescriptor(adopting: fds[0])
        let theirs = OwnedDescriptor(adopting: fds[1])
        // The "kernel" has answered already: three datagrams, the last one marked.
        for answer in [[1, 1], [2, 2, 2], [9]] as [[UInt8]] {
            _ = answer.withUnsafeBytes { send(theirs.rawValue, $0.baseAddress, $0.count, 0) }
        }
        let got = try Netlink.exchange([7, 7, 7], on: ours) { $0 == [9] }
        #expect(got == [[1, 1], [2, 2, 2], [9]])
        var request = [UInt8](repeating: 0, count: 16)
        #expect(recv(theirs.rawValue, &request, request.count, 0) == 3 && Array(request.prefix(3)) == [7, 7, 7])
    }

    @Test func exchange_givesUpWhenNoAnswerComes() throws {
        let fds = try datagramPair()
        let ours = OwnedDescriptor(adopting: fds[0])
        let theirs = OwnedDescriptor(adopting: fds[1])  // open and silent until the test ends
        defer { _ = theirs.rawValue }  // (a non-copyable value may otherwise be closed after its last use)
        let started = ContinuousClock.now
        #expect {
            _ = try Netlink.exchange([1], on: ours, timeout: .milliseconds(100)) { _ in true }
        } throws: { error in
            guard let error = error as? SystemError else { return false }
            return error.call == "recv" && error.errno == .resourceTemporarilyUnavailable
        }
        // It did wait (a reply that is late by less than the timeout would still be read).
        #expect(started.duration(to: .now) >= .milliseconds(90))
    }

    @Test func exchange_refusesAnAnswerCutShort() throws {
        // A sequenced-packet pair: once the other end has shut its sending side, `recv` returns 0
        // after the queued packets (our request can still be sent: that end still receives).
        var fds: [Int32] = [-1, -1]
        #expect(socketpair(AF_UNIX, Int32(SOCK_SEQPACKET.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &fds) == 0)
        let ours = OwnedDescriptor(adopting: fds[0])
        let answer: [UInt8] = [1, 2]
        _ = answer.withUnsafeBytes { send(fds[1], $0.baseAddress, $0.count, 0) }
        shutdown(fds[1], Int32(SHUT_WR))
        defer { close(fds[1]) }
        #expect {
            _ = try Netlink.exchange([7], on: ours, timeout: .seconds(5)) { _ in false }
        } throws: { error in
            guard let error = error as? SystemError else { return false }
            return error.call == "recv" && error.errno == .badMessage && "\(error)".contains("after 1 datagrams")
        }
    }

    /// A connected pair of datagram sockets (its numbers; the caller adopts them).
    private func datagramPair() throws -> [Int32] {
        var fds: [Int32] = [-1, -1]
        guard socketpair(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &fds) == 0 else {
            throw SystemError(call: "socketpair", errno: Errno(rawValue: errno))
        }
        return fds
    }
}
