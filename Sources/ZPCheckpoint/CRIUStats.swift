// CRIU's `stats-dump` image: what a dump or pre-dump did (frozen time, pages written, pages left
// in the parent image). Field numbers from CRIU's images/stats.proto (`dump_stats_entry`), magic
// numbers from criu/include/magic.h.
import SystemPackage
import ZPCore
import ZPSystem

/// CRIU's statistics of one dump or pre-dump (`stats-dump`, message `dump_stats_entry`).
///
/// Times are CRIU's own measurements (microseconds on the wire). An incremental dump (parent
/// image and memory tracking) counts the pages it found unchanged in ``pagesSkippedParent`` and
/// writes only ``pagesWritten``.
public struct CRIUDumpStats: Sendable, Equatable, CustomStringConvertible {
    /// The file CRIU writes into the image directory.
    public static let fileName = "stats-dump"
    /// `IMG_SERVICE_MAGIC`, the first word of CRIU's service images.
    static let serviceMagic: UInt32 = 0x5510_5940
    /// `STATS_MAGIC`.
    static let statsMagic: UInt32 = 0x5709_3306

    /// Stopping (freezing) the tasks (field 1).
    public var freezingTime: Duration = .zero
    /// The tasks stayed frozen (field 2).
    public var frozenTime: Duration = .zero
    /// Collecting memory into pipes (field 3).
    public var memdumpTime: Duration = .zero
    /// Writing the collected memory to the images (field 4).
    public var memwriteTime: Duration = .zero
    /// Pages looked at (field 5).
    public var pagesScanned: UInt64 = 0
    /// Pages not written because the parent image holds them unchanged (field 6).
    public var pagesSkippedParent: UInt64 = 0
    /// Pages written to this image (field 7).
    public var pagesWritten: UInt64 = 0
    /// Pages left for a lazy restore (field 9).
    public var pagesLazy: UInt64 = 0

    /// Empty statistics.
    public init() {}

    /// Decodes the body of a `stats-dump` file (after its two magic words and size).
    /// - Throws: `ProtobufError` for a malformed message.
    public init(decodingEntry bytes: ArraySlice<UInt8>) throws(ProtobufError) {
        var stats = ProtobufReader(bytes)
        while let field = try stats.nextField() {
            guard field.number == 1 else { continue }  // 2 is restore_stats_entry
            var dump = try field.message(in: "stats_entry")
            while let f = try dump.nextField() {
                let m = "dump_stats_entry"
                switch f.number {
                case 1: freezingTime = .microseconds(try f.uint64(in: m))
                case 2: frozenTime = .microseconds(try f.uint64(in: m))
                case 3: memdumpTime = .microseconds(try f.uint64(in: m))
                case 4: memwriteTime = .microseconds(try f.uint64(in: m))
                case 5: pagesScanned = try f.uint64(in: m)
                case 6: pagesSkippedParent = try f.uint64(in: m)
                case 7: pagesWritten = try f.uint64(in: m)
                case 9: pagesLazy = try f.uint64(in: m)
                default: break
                }
            }
        }
    }

    /// Decodes a whole `stats-dump` file.
    /// - Throws: `CRIUStatsError` naming the file and what is wrong with it.
    public init(file bytes: [UInt8], path: String = fileName) throws(CRIUStatsError) {
        func word(_ at: Int) -> UInt32 {
            (0..<4).reduce(UInt32(0)) { $0 | UInt32(bytes[at + $1]) << (8 * $1) }
        }
        guard bytes.count >= 12 else { throw CRIUStatsError(path: path, reason: "only \(bytes.count) bytes") }
        guard word(0) == Self.serviceMagic, word(4) == Self.statsMagic else {
            throw CRIUStatsError(
                path: path,
                reason:
                    "magic 0x\(String(word(0), radix: 16)) 0x\(String(word(4), radix: 16)) is not CRIU's stats image"
            )
        }
        let size = Int(word(8))
        guard bytes.count >= 12 + size else {
            throw CRIUStatsError(path: path, reason: "entry of \(size) bytes but only \(bytes.count - 12) follow")
        }
        do {
            try self.init(decodingEntry: bytes[12..<(12 + size)])
        } catch {
            throw CRIUStatsError(path: path, reason: "\(error)")
        }
    }

    /// Reads `stats-dump` at `path`.
    /// - Throws: `CRIUStatsError` when it is missing, unreadable or malformed.
    public init(contentsOf path: FilePath) throws(CRIUStatsError) {
        let bytes: [UInt8]
        do { bytes = try Files.read(path) } catch {
            throw CRIUStatsError(path: path.string, reason: "cannot be read: \(error)")
        }
        try self.init(file: bytes, path: path.string)
    }

    /// "frozen 12.3 ms, memdump 4.0 ms, memwrite 8.1 ms, pages written 150 of 206 scanned (0 in parent)".
    public var description: String {
        "frozen \(milliseconds(frozenTime)) ms, memdump \(milliseconds(memdumpTime)) ms, "
            + "memwrite \(milliseconds(memwriteTime)) ms, pages written \(pagesWritten) of \(pagesScanned) scanned "
            + "(\(pagesSkippedParent) in parent)"
    }
}

/// A `stats-dump` file that could not be read.
public struct CRIUStatsError: Error, Sendable, CustomStringConvertible {
    /// The file.
    public var path: String
    /// What is wrong with it.
    public var reason: String

    /// "CRIU statistics <path>: <reason>".
    public var description: String { "CRIU statistics \(path): \(reason)" }
}
