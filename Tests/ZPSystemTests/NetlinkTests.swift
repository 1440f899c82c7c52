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
        let theirs = OwnedDescriptor(adopting: fds[1])  // open, silent
        defer { _ = theirs.rawValue }
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

    /// A connected pair of datagram sockets (its numbers; the caller adopts them).
    private func datagramPair() throws -> [Int32] {
        var fds: [Int32] = [-1, -1]
        guard socketpair(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &fds) == 0 else {
            throw SystemError(call: "socketpair", errno: Errno(rawValue: errno))
        }
        return fds
    }
}
