import Testing
import ZPCore

@testable import ZPCheckpoint

// The inet sockets of a `files.img` (decisions 0045, 0046), from bytes laid out as CRIU writes
// them: the two magic words, then each `file_entry` after its 32-bit little-endian size; repeated
// address words unpacked, one `uint32` per field (proto2), each the `in_addr` bytes read as a
// little-endian word.

private func word(_ v: UInt32) -> [UInt8] { (0..<4).map { UInt8(truncatingIfNeeded: v >> (8 * UInt32($0))) } }

private func addressWord(_ a: UInt8, _ b: UInt8, _ c: UInt8, _ d: UInt8) -> UInt64 {
    UInt64(a) | UInt64(b) << 8 | UInt64(c) << 16 | UInt64(d) << 24
}

private func inetEntry(
    id: UInt32,
    state: UInt32,
    family: UInt32 = 2,
    src: [UInt64],
    srcPort: UInt32,
    dst: [UInt64],
    dstPort: UInt32,
    backlog: UInt32 = 0,
    v6Only: Bool? = nil
) -> [UInt8] {
    var file = ProtobufWriter()
    file.writeUInt32(field: 1, 4)  // INETSK
    file.writeUInt32(field: 2, id)
    file.writeMessage(field: 4) { isk in
        isk.writeUInt32(field: 1, id)
        isk.writeUInt32(field: 2, 1000 + id)
        isk.writeUInt32(field: 3, family)
        isk.writeUInt32(field: 4, 1)  // SOCK_STREAM
        isk.writeUInt32(field: 5, 6)  // IPPROTO_TCP
        isk.writeUInt32(field: 6, state)
        isk.writeUInt32(field: 7, srcPort)
        isk.writeUInt32(field: 8, dstPort)
        isk.writeUInt32(field: 9, 2)  // flags
        isk.writeUInt32(field: 10, backlog)
        for w in src { isk.writeUInt64(field: 11, w) }
        for w in dst { isk.writeUInt64(field: 12, w) }
        if let v6Only { isk.writeBool(field: 15, v6Only) }
    }
    return file.bytes
}

private func image(_ entries: [[UInt8]]) -> [UInt8] {
    var out = word(CRIUInetSockets.commonMagic) + word(CRIUInetSockets.filesMagic)
    for e in entries { out += word(UInt32(e.count)) + e }
    return out
}

@Test func filesImage_connectionsAndListeners_otherFilesSkipped() throws {
    var regular = ProtobufWriter()
    regular.writeUInt32(field: 1, 1)  // REG: not a socket
    regular.writeUInt32(field: 2, 7)
    regular.writeMessage(field: 3) { $0.writeString(field: 3, "/etc/hosts") }
    let bytes = image([
        regular.bytes,
        inetEntry(
            id: 1,
            state: 1,
            src: [addressWord(10, 81, 20, 1)],
            srcPort: 36058,
            dst: [addressWord(10, 81, 20, 2)],
            dstPort: 3306
        ),
        inetEntry(
            id: 2,
            state: 10,
            family: 10,
            src: [0, 0, 0, 0],
            srcPort: 8080,
            dst: [0, 0, 0, 0],
            dstPort: 0,
            backlog: 511,
            v6Only: false
        ),
    ])
    let sockets = try CRIUInetSockets.decode(file: bytes)
    #expect(sockets.count == 2)
    let connection = try #require(sockets.first { $0.isConnection })
    #expect(
        connection.tuple
            == TCPConnectionTuple(
                local: IPAddress("10.81.20.1")!,
                localPort: 36058,
                remote: IPAddress("10.81.20.2")!,
                remotePort: 3306
            )
    )
    #expect(!connection.isListener)
    let listener = try #require(sockets.first { $0.isListener })
    #expect(!listener.isConnection)
    #expect(
        listener.listenerAddress
            == TCPListenerAddress(address: IPAddress("::")!, port: 8080, v6Only: false, backlog: 511)
    )
}

@Test func filesImage_badMagicAndTruncation_areNamed() {
    #expect(throws: CRIUImageError.self) { try CRIUInetSockets.decode(file: word(0x1234_5678) + word(0)) }
    let truncated = Array(image([inetEntry(id: 1, state: 1, src: [1], srcPort: 1, dst: [2], dstPort: 2)]).dropLast(3))
    do {
        _ = try CRIUInetSockets.decode(file: truncated, path: "/x/files.img")
        Issue.record("a truncated image decoded")
    } catch {
        #expect(error.description.hasPrefix("CRIU image /x/files.img: entry of"), "\(error)")
    }
}
