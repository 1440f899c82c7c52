import Foundation
import Testing

@testable import ZPShim

/// `lazy-restore = auto` decides on the pages of the whole chain a restore reads (decisions 0077,
/// 0078): the folder's own, then its parents' as CRIU's `parent` links name them (a pre-dump, or a
/// tracked restore's kept images), or the kept `prev` of a restore not yet dumped on.
@Suite struct ChainPageBytesTests {
    func folder() throws -> String {
        let dir = "/tmp/zpshim-chain-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        return dir
    }

    func pages(_ dir: String, _ name: String = "pages-1.img", bytes: Int) throws {
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try Data(count: bytes).write(to: URL(fileURLWithPath: dir + "/" + name))
    }

    @Test func aDumpOnAPreDump_countsThePreDumpsPages() throws {
        let dir = try folder()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try pages(dir, bytes: 8192)
        try pages(dir + "/pre-dump", bytes: 1 << 20)
        try pages(dir + "/pre-dump", "pages-2.img", bytes: 4096)
        #expect(CRIUCheckpoints.chainPageBytes(dir) == 8192, "no parent link yet: the folder's own")
        try FileManager.default.createSymbolicLink(atPath: dir + "/parent", withDestinationPath: "pre-dump")
        #expect(CRIUCheckpoints.chainPageBytes(dir) == 8192 + (1 << 20) + 4096)
    }

    @Test func keptRestoreImages_countThroughTheirChain() throws {
        let dir = try folder()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        // A restore's images kept as `prev` (the folder has none of its own yet), themselves a dump
        // on a pre-dump.
        try pages(dir + "/prev", bytes: 4096)
        try pages(dir + "/prev/pre-dump", bytes: 65536)
        try FileManager.default.createSymbolicLink(atPath: dir + "/prev/parent", withDestinationPath: "pre-dump")
        #expect(CRIUCheckpoints.chainPageBytes(dir) == 4096 + 65536)
        // The next dump on them links `parent` → `prev`.
        try pages(dir, bytes: 12288)
        try FileManager.default.createSymbolicLink(atPath: dir + "/parent", withDestinationPath: "prev")
        #expect(CRIUCheckpoints.chainPageBytes(dir) == 12288 + 4096 + 65536)
    }
}
