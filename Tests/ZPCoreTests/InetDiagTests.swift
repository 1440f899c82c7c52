import Testing

@testable import ZPCore

/// The socket diagnostics codec (`NETLINK_SOCK_DIAG`): the request's bytes as the kernel's
/// `inet_diag_req_v2` lays them out, and answers built by hand the same way.
@Suite struct InetDiagTests {
    @Test func dumpRequest_isANetlinkDumpOfTCPListeners() {
        let request = InetDiag.dumpRequest(ipv6: true, states: [.listen], sequence: 7)
        #expect(request.count == 72)
        #expect(Array(request[0..<4]) == [72, 0, 0, 0])  // nlmsg_len
        #expect(Array(request[4..<6]) == [20, 0])  // SOCK_DIAG_BY_FAMILY
        #expect(Array(request[6..<8]) == [0x01, 0x03])  // NLM_F_REQUEST | NLM_F_DUMP
        #expect(Array(request[8..<12]) == [7, 0, 0, 0])  // sequence
        #expect(Array(request[16..<20]) == [10, 6, 0, 0])  // AF_INET6, IPPROTO_TCP, no extensions
        #expect(Array(request[20..<24]) == [0x00, 0x04, 0, 0])  // 1 << TCP_LISTEN (10)
        #expect(request[24...].allSatisfy { $0 == 0 })
        let both = InetDiag.dumpRequest(ipv6: false, states: [.listen, .synReceived], sequence: 1)
        #expect(both[16] == 2 && Array(both[20..<24]) == [0x08, 0x04, 0, 0])
    }

    @Test func answer_givesRowsAsTheTablesDo() {
        let v4 = socketMessage(localPort: 8080, local: [127, 0, 0, 1], rqueue: 3, inode: 0x0102_0304, sequence: 9)
        let v6 = socketMessage(
            family: 10,
            localPort: 443,
            local: [UInt8](repeating: 0, count: 15) + [1],
            inode: 77,
            sequence: 9
        )
        let connection = socketMessage(
            state: 1,
            localPort: 8080,
            local: [10, 0, 0, 5],
            remotePort: 40123,
            remote: [10, 0, 0, 9],
            inode: 78,
            sequence: 9
        )
        let reply = InetDiag.decode(v4 + v6 + connection, sequence: 9)
        #expect(!reply.finished && reply.errno == nil)
        #expect(reply.rows.count == 3)
        #expect(reply.rows.first?.local == IPAddress("127.0.0.1") && reply.rows.first?.localPort == 8080)
        #expect(reply.rows.first?.state == .listen && reply.rows.first?.receiveQueue == 3)
        #expect(reply.rows.first?.inode == 0x0102_0304 && reply.rows.first?.remotePort == 0)
        #expect(reply.rows[1].local == IPAddress("::1") && reply.rows[1].localPort == 443 && reply.rows[1].inode == 77)
        #expect(
            reply.rows.last?.tuple
                == TCPConnectionTuple(
                    local: IPAddress("10.0.0.5")!,
                    localPort: 8080,
                    remote: IPAddress("10.0.0.9")!,
                    remotePort: 40123
                )
        )
        #expect(reply.rows.last?.state == .established && reply.rows.last?.isConnection == true)
        let end = InetDiag.decode(header(length: 20, type: 3, sequence: 9) + [0, 0, 0, 0], sequence: 9)
        #expect(end.finished && end.errno == nil && end.rows.isEmpty)
    }

    @Test func answer_refusalsAndStrangersAreToldApart() {
        // NLMSG_ERROR with -EINVAL (22), then NLMSG_DONE carrying -EINTR (4).
        let refused = InetDiag.decode(
            header(length: 36, type: 2, sequence: 5) + le32(UInt32(bitPattern: -22)) + [UInt8](repeating: 0, count: 16),
            sequence: 5
        )
        #expect(refused.finished && refused.errno == 22)
        let interrupted = InetDiag.decode(
            header(length: 20, type: 3, sequence: 5) + le32(UInt32(bitPattern: -4)),
            sequence: 5
        )
        #expect(interrupted.finished && interrupted.errno == 4)
        // Another request's messages, an unknown family and a truncated message are skipped.
        let other = socketMessage(localPort: 1, inode: 1, sequence: 6)
        let unknown = socketMessage(family: 1, localPort: 2, inode: 2, sequence: 5)
        let good = socketMessage(state: 1, localPort: 3, inode: 3, sequence: 5)
        let reply = InetDiag.decode(other + unknown + good + Array(good.prefix(40)), sequence: 5)
        #expect(reply.rows.map(\.localPort) == [3] && reply.rows.first?.state == .established && !reply.finished)
        #expect(InetDiag.decode([1, 2, 3], sequence: 5) == InetDiag.Reply())
    }

    private func le32(_ v: UInt32) -> [UInt8] { (0..<4).map { UInt8(truncatingIfNeeded: v >> (8 * $0)) } }

    private func header(length: UInt32, type: UInt16, sequence: UInt32) -> [UInt8] {
        le32(length) + [UInt8(truncatingIfNeeded: type), UInt8(truncatingIfNeeded: type >> 8), 0x02, 0] + le32(sequence)
            + le32(0)
    }

    /// An `inet_diag_msg` in a netlink message, as the kernel sends it (a listener on 10.0.0.1 by
    /// default).
    private func socketMessage(
        family: UInt8 = 2,
        state: UInt8 = 10,
        localPort: UInt16,
        local: [UInt8] = [10, 0, 0, 1],
        remotePort: UInt16 = 0,
        remote: [UInt8] = [],
        rqueue: UInt32 = 0,
        inode: UInt32,
        sequence: UInt32
    ) -> [UInt8] {
        func be16(_ v: UInt16) -> [UInt8] { [UInt8(v >> 8), UInt8(truncatingIfNeeded: v)] }
        var body: [UInt8] = [family, state, 0, 0]
        body += be16(localPort) + be16(remotePort)  // idiag_sport, idiag_dport (network order)
        body += local + [UInt8](repeating: 0, count: 16 - local.count)  // idiag_src
        body += remote + [UInt8](repeating: 0, count: 16 - remote.count)  // idiag_dst
        body += le32(0) + le32(0) + le32(0)  // idiag_if, idiag_cookie
        body += le32(0) + le32(rqueue) + le32(128) + le32(0) + le32(inode)  // expires, rqueue, wqueue, uid, inode
        return header(length: UInt32(16 + body.count), type: 20, sequence: sequence) + body
    }
}
