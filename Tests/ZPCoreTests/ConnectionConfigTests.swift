import Testing
import ZPCore

// `zeropod-swift/keep-connections` and `zeropod-swift/listener-handover` (decisions 0045, 0046),
// and the parser of the kernel's /proc/<pid>/net/tcp tables.

@Test func connectionSettings_defaultOn_goBoolSyntax_badValueNamed() throws {
    let defaults = try ContainerConfig(annotations: [:])
    #expect(defaults.keepConnections && defaults.listenerHandover)
    let off = try ContainerConfig(annotations: [
        "zeropod-swift/keep-connections": "false", "zeropod-swift/listener-handover": "0",
    ])
    #expect(!off.keepConnections && !off.listenerHandover)
    let empty = try ContainerConfig(annotations: ["zeropod-swift/keep-connections": ""])
    #expect(empty.keepConnections, "an empty annotation means the default")
    #expect(throws: ConfigError(key: "zeropod-swift/keep-connections", value: "yes", reason: .invalidBoolean)) {
        try ContainerConfig(annotations: ["zeropod-swift/keep-connections": "yes"])
    }
    #expect(throws: ConfigError(key: "zeropod-swift/listener-handover", value: "maybe", reason: .invalidBoolean)) {
        try ContainerConfig(annotations: ["zeropod-swift/listener-handover": "maybe"])
    }
    #expect(
        ContainerConfig.unrecognizedKeys(in: [
            "zeropod-swift/keep-connections": "true", "zeropod-swift/listener-handover": "true",
        ]).isEmpty
    )
}

@Test func procNetTCP_parsesIPv4AndIPv6Rows() {
    let tcp = """
          sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
           0: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 3357405 1 000000008bbdd0d7 100 0 0 10 0
           1: 0100630A:A564 0200630A:1B58 01 00000000:00000000 00:00000000 00000000     0        0 3357403 1 000000006f85d71f 20 4 30 11 -1
           2: 0100630A:1F90 0200630A:E23E 06 00000000:00000000 03:000015EB 00000000     0        0 0 3 00000000a282d7d2
        garbage
        """
    let rows = ProcNetTCP.parse(tcp, ipv6: false)
    #expect(rows.count == 3)
    #expect(rows[0].state == .listen && rows[0].localPort == 8080 && rows[0].local == .v4(0) && !rows[0].isConnection)
    #expect(
        rows[1].tuple
            == TCPConnectionTuple(
                local: IPAddress("10.99.0.1")!,
                localPort: 42340,
                remote: IPAddress("10.99.0.2")!,
                remotePort: 7000
            )
    )
    #expect(rows[1].state == .established && rows[1].inode == 3_357_403 && rows[1].isConnection)
    #expect(rows[2].state == .timeWait && rows[2].inode == 0 && !rows[2].isConnection)

    let tcp6 = """
          sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
           0: 00000000000000000000000000000000:0050 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 111 1 0 100 0 0 10 0
           1: 0000000000000000FFFF00000100007F:0050 0000000000000000FFFF00000500007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 222 1 0 20 4 30 10 -1
           2: 000077FD000000000000000001000000:0050 000077FD000000000000000002000000:D431 08 00000000:00000000 00:00000000 00000000     0        0 333 1 0 20 4 30 10 -1
        """
    let rows6 = ProcNetTCP.parse(tcp6, ipv6: true)
    #expect(rows6.count == 3)
    #expect(rows6[0].local == .v6(high: 0, low: 0) && rows6[0].state == .listen)
    #expect(
        rows6[1].tuple
            == TCPConnectionTuple(
                local: IPAddress("::ffff:127.0.0.1")!,
                localPort: 80,
                remote: IPAddress("::ffff:127.0.0.5")!,
                remotePort: 50000
            )
    )
    #expect(rows6[2].tuple.local == IPAddress("fd77::1")! && rows6[2].state == .closeWait && rows6[2].isConnection)
    #expect(rows6[2].tuple.description == "[fd77::1]:80 -> [fd77::2]:54321")
}

@Test func listenerAddress_describesFamilyAndV6Only() {
    #expect(TCPListenerAddress(address: .v4(0), port: 80).description == "0.0.0.0:80")
    #expect(!TCPListenerAddress(address: .v4(0), port: 80).isIPv6)
    let v6 = TCPListenerAddress(address: IPAddress("::")!, port: 80, v6Only: true)
    #expect(v6.isIPv6 && v6.description == "[::]:80 (v6only)")
}

@Test func listenerHandover_appliesOnlyWhereProbesNeedNoActivator() throws {
    let defaults = try ContainerConfig(annotations: [:])
    #expect(defaults.listenerHandoverApplies(probesRecognisedWithoutContent: true))
    #expect(
        !defaults.listenerHandoverApplies(probesRecognisedWithoutContent: false),
        "content-detected probes would wake the app"
    )
    let noDetection = try ContainerConfig(annotations: ["zeropod.ctrox.dev/disable-probe-detection": "true"])
    #expect(noDetection.listenerHandoverApplies(probesRecognisedWithoutContent: false))
    let off = try ContainerConfig(annotations: [
        "zeropod-swift/listener-handover": "false",
        "zeropod.ctrox.dev/disable-probe-detection": "true",
    ])
    #expect(!off.listenerHandoverApplies(probesRecognisedWithoutContent: true))
}

@Test func procNetTCP_pendingConnections_countsAcceptQueuesAndIncompleteHandshakes() {
    let tcp = """
          sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
           0: 00000000:1F90 00000000:0000 0A 00000000:00000007 00:00000000 00000000     0        0 3357405 1 000000008bbdd0d7 100 0 0 10 0
           1: 00000000:0050 00000000:0000 0A 00000000:00000003 00:00000000 00000000     0        0 3357406 1 000000008bbdd0d8 100 0 0 10 0
           2: 0100540A:1F90 0200540A:E23E 03 00000000:00000000 01:00000064 00000002     0        0 0 1 00000000a282d7d2
           3: 0100540A:1F90 0200540A:E23F 03 00000000:00000000 01:00000064 00000002     0        0 0 1 00000000a282d7d3
           4: 0100540A:1F90 0200540A:E240 01 00000000:00000010 00:00000000 00000000     0        0 3357407 1 000000006f85d71f 20 4 30 11 -1
           5: 0100540A:0050 0200540A:E241 03 00000000:00000000 01:00000064 00000002     0        0 0 1 00000000a282d7d4
        """
    let rows = ProcNetTCP.parse(tcp, ipv6: false)
    #expect(rows.count == 6)
    #expect(rows[0].receiveQueue == 7 && rows[4].receiveQueue == 16)
    // 8080: 7 queued + 2 handshakes; the established connection's unread bytes are not pending.
    #expect(ProcNetTCP.pendingConnections(rows, ports: [8080]) == 9)
    #expect(ProcNetTCP.pendingConnections(rows, ports: [80]) == 4)
    #expect(ProcNetTCP.pendingConnections(rows, ports: [80, 8080]) == 13)
    #expect(ProcNetTCP.pendingConnections(rows, ports: [9090]) == 0)
    #expect(ProcNetTCP.pendingConnections(rows, ports: []) == 0)
}

@Test func procNetStat_listenerPressure_sumsListenDropsAndSyncookiesSent() {
    let text = """
        TcpExt: SyncookiesSent SyncookiesRecv SyncookiesFailed EmbryonicRsts ListenOverflows ListenDrops
        TcpExt: 12 3 0 0 40 41
        IpExt: InNoRoutes InTruncatedPkts
        IpExt: 0 0
        """
    #expect(ProcNetStat.listenerPressure(text) == 53)
    // A missing counter, a mismatched value line, a number that does not parse, no TcpExt at all.
    #expect(ProcNetStat.listenerPressure("TcpExt: SyncookiesSent ListenOverflows\nTcpExt: 1 2\n") == nil)
    #expect(ProcNetStat.listenerPressure("TcpExt: SyncookiesSent ListenDrops\nTcpExt: 1\n") == nil)
    #expect(ProcNetStat.listenerPressure("TcpExt: SyncookiesSent ListenDrops\nTcpExt: 1 x\n") == nil)
    #expect(ProcNetStat.listenerPressure("IpExt: InNoRoutes\nIpExt: 0\n") == nil)
    #expect(ProcNetStat.listenerPressure("TcpExt: SyncookiesSent ListenDrops") == nil)
    // This kernel's own table parses.
    if let real = try? String(contentsOfFile: "/proc/self/net/netstat", encoding: .utf8) {
        #expect(ProcNetStat.listenerPressure(real) != nil)
    }
}
