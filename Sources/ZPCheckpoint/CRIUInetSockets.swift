// The TCP sockets a CRIU dump recorded, read from its `files.img` (decisions 0045, 0046): the
// connections a `tcp_established` dump keeps (their peers' segments must be held until the restore)
// and the listening sockets (a handover listener copies each one's address). Field numbers from
// CRIU's images/fdinfo.proto (`file_entry`: type 1, isk 4) and images/sk-inet.proto
// (`inet_sk_entry`); magic numbers from criu/include/magic.h.
import SystemPackage
import ZPCore
import ZPSystem

/// One inet socket of a checkpoint (`inet_sk_entry` of a `file_entry` of type INETSK).
public struct CRIUInetSocket: Sendable, Hashable {
    /// `AF_INET` (2) or `AF_INET6` (10) (field 3).
    public var family: UInt32
    /// `SOCK_STREAM` (1), `SOCK_DGRAM` (2), ... (field 4).
    public var type: UInt32
    /// `IPPROTO_TCP` (6), ... (field 5).
    public var proto: UInt32
    /// The kernel TCP state (`TCP_ESTABLISHED` 1, `TCP_LISTEN` 10, ...) (field 6).
    public var state: UInt32
    /// The socket's inode (field 2).
    public var inode: UInt32
    /// Local address (field 11) and port (field 7).
    public var local: IPAddress
    /// Local port.
    public var localPort: UInt16
    /// Remote address (field 12) and port (field 8); any address and 0 for a listener.
    public var remote: IPAddress
    /// Remote port.
    public var remotePort: UInt16
    /// The listen backlog (field 10).
    public var backlog: UInt32
    /// `IPV6_V6ONLY` (field 15).
    public var v6Only: Bool
    /// The device the socket is bound to, if any (field 17).
    public var boundDevice: String?

    /// Whether this is a TCP socket.
    public var isTCP: Bool { proto == 6 && type == 1 }

    /// Whether this is a listening TCP socket.
    public var isListener: Bool { isTCP && state == 10 }

    /// Whether this is a TCP connection CRIU dumped with `tcp_established` (one that has a peer).
    public var isConnection: Bool { isTCP && remotePort != 0 && state != 10 }

    /// The connection, container side first.
    public var tuple: TCPConnectionTuple {
        TCPConnectionTuple(local: local, localPort: localPort, remote: remote, remotePort: remotePort)
    }

    /// The listening address as a handover listener copies it.
    public var listenerAddress: TCPListenerAddress {
        TCPListenerAddress(
            address: local,
            port: localPort,
            v6Only: family == 10 && v6Only,
            backlog: Int32(clamping: backlog)
        )
    }
}

/// The inet sockets of a checkpoint's `files.img`.
public enum CRIUInetSockets {
    /// The file CRIU writes into the image directory.
    public static let fileName = "files.img"
    /// `IMG_COMMON_MAGIC`, the first word of CRIU's images.
    static let commonMagic: UInt32 = 0x5456_4319
    /// `FILES_MAGIC`.
    static let filesMagic: UInt32 = 0x5630_3138

    /// Every inet socket in the images at `imagesDir`.
    /// - Throws: ``CRIUImageError`` naming the file and what is wrong with it.
    public static func read(imagesDir: FilePath) throws(CRIUImageError) -> [CRIUInetSocket] {
        let path = imagesDir.appending(fileName)
        let bytes: [UInt8]
        do { bytes = try Files.read(path) } catch {
            throw CRIUImageError(path: path.string, reason: "cannot be read: \(error)")
        }
        return try decode(file: bytes, path: path.string)
    }

    /// Decodes a whole `files.img`.
    /// - Throws: ``CRIUImageError`` for a wrong magic, a truncated entry or a malformed message.
    public static func decode(file bytes: [UInt8], path: String = fileName) throws(CRIUImageError) -> [CRIUInetSocket] {
        func word(_ at: Int) -> UInt32 {
            (0..<4).reduce(UInt32(0)) { $0 | UInt32(bytes[at + $1]) << (8 * $1) }
        }
        guard bytes.count >= 8 else { throw CRIUImageError(path: path, reason: "only \(bytes.count) bytes") }
        guard word(0) == commonMagic, word(4) == filesMagic else {
            throw CRIUImageError(
                path: path,
                reason:
                    "magic 0x\(String(word(0), radix: 16)) 0x\(String(word(4), radix: 16)) is not CRIU's files image"
            )
        }
        var sockets: [CRIUInetSocket] = []
        var offset = 8
        while offset < bytes.count {
            guard offset + 4 <= bytes.count else {
                throw CRIUImageError(path: path, reason: "truncated entry size at byte \(offset)")
            }
            let size = Int(word(offset))
            offset += 4
            guard offset + size <= bytes.count else {
                throw CRIUImageError(
                    path: path,
                    reason: "entry of \(size) bytes at byte \(offset) but only \(bytes.count - offset) follow"
                )
            }
            do {
                if let socket = try decodeFileEntry(bytes[offset..<(offset + size)]) { sockets.append(socket) }
            } catch {
                throw CRIUImageError(path: path, reason: "entry at byte \(offset): \(error)")
            }
            offset += size
        }
        return sockets
    }

    /// A `file_entry`: its `inet_sk_entry` when its type is INETSK (4), else nil.
    static func decodeFileEntry(_ bytes: ArraySlice<UInt8>) throws(ProtobufError) -> CRIUInetSocket? {
        var entry = ProtobufReader(bytes)
        var type: UInt32 = 0
        var inet: ProtobufReader?
        while let field = try entry.nextField() {
            switch field.number {
            case 1: type = try field.uint32(in: "file_entry")
            case 4: inet = try field.message(in: "file_entry")
            default: break
            }
        }
        guard type == 4, var isk = inet else { return nil }
        let m = "inet_sk_entry"
        var family: UInt32 = 0
        var sockType: UInt32 = 0
        var proto: UInt32 = 0
        var state: UInt32 = 0
        var inode: UInt32 = 0
        var srcPort: UInt32 = 0
        var dstPort: UInt32 = 0
        var backlog: UInt32 = 0
        var src: [UInt32] = []
        var dst: [UInt32] = []
        var v6Only = false
        var device: String?
        while let f = try isk.nextField() {
            switch f.number {
            case 2: inode = try f.uint32(in: m)
            case 3: family = try f.uint32(in: m)
            case 4: sockType = try f.uint32(in: m)
            case 5: proto = try f.uint32(in: m)
            case 6: state = try f.uint32(in: m)
            case 7: srcPort = try f.uint32(in: m)
            case 8: dstPort = try f.uint32(in: m)
            case 10: backlog = try f.uint32(in: m)
            case 11: src += try f.packedVarints(in: m).map { UInt32(truncatingIfNeeded: $0) }
            case 12: dst += try f.packedVarints(in: m).map { UInt32(truncatingIfNeeded: $0) }
            case 15: v6Only = try f.bool(in: m)
            case 17: device = try f.string(in: m)
            default: break
            }
        }
        return CRIUInetSocket(
            family: family,
            type: sockType,
            proto: proto,
            state: state,
            inode: inode,
            local: address(src, family: family),
            localPort: UInt16(truncatingIfNeeded: srcPort),
            remote: address(dst, family: family),
            remotePort: UInt16(truncatingIfNeeded: dstPort),
            backlog: backlog,
            v6Only: v6Only,
            boundDevice: device.flatMap { $0.isEmpty ? nil : $0 }
        )
    }

    /// CRIU copies `in_addr`/`in6_addr` into 32-bit words (memcpy on a little-endian machine), so
    /// each word's bytes, low first, are the address bytes in network order. Missing words are 0.
    static func address(_ words: [UInt32], family: UInt32) -> IPAddress {
        var bytes: [UInt8] = []
        for word in words.prefix(family == 10 ? 4 : 1) {
            for shift in stride(from: 0, to: 32, by: 8) {
                bytes.append(UInt8(truncatingIfNeeded: word >> UInt32(shift)))
            }
        }
        let length = family == 10 ? 16 : 4
        bytes += [UInt8](repeating: 0, count: max(0, length - bytes.count))
        return IPAddress(bytes: bytes) ?? .v4(0)
    }
}

/// A CRIU image that could not be read.
public struct CRIUImageError: Error, Sendable, CustomStringConvertible {
    /// The file.
    public var path: String
    /// What is wrong with it.
    public var reason: String

    /// "CRIU image <path>: <reason>".
    public var description: String { "CRIU image \(path): \(reason)" }
}
