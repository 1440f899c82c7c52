import Foundation
import Testing
import ZPCore
import ZPImageArchive
import ZPTestSupport

#if canImport(Glibc)
import Glibc
#endif

// The migration image archive (decision 0050): what goes in comes out, and what could escape or is
// broken is refused with the archive's name and the reason.

@Suite struct ImageArchiveTests {
    /// A folder like a checkpoint plus a container's changed files.
    func makeSources(in dir: String) throws -> [(name: String, folder: String)] {
        let images = dir + "/images"
        let upper = dir + "/upper"
        try FileManager.default.createDirectory(atPath: images, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: upper + "/var/log", withIntermediateDirectories: true)
        var pages = [UInt8](repeating: 0, count: 3 << 20)
        for i in stride(from: 0, to: pages.count, by: 4096) { pages[i] = UInt8(truncatingIfNeeded: i >> 12) }
        FileManager.default.createFile(atPath: images + "/pages-1.img", contents: Data(pages))
        FileManager.default.createFile(atPath: images + "/core-1.img", contents: Data("core".utf8))
        FileManager.default.createFile(atPath: upper + "/var/log/app.log", contents: Data("counter=41\n".utf8))
        chmod(upper + "/var/log/app.log", 0o640)
        symlink("/var/log/app.log", upper + "/latest")
        return [("images", images), ("upper", upper)]
    }

    @Test func roundTrip_keepsContentModesAndLinks() throws {
        let tmp = try TemporaryDirectory("zpimg")
        let sources = try makeSources(in: tmp.path + "/src")
        let archive = tmp.path + "/image.zpimg"
        let written = try ImageArchive.write(sources: sources, to: archive)
        #expect(written.dataBytes == (3 << 20) + 4 + 11)
        #expect(written.archiveBytes < 200_000, "3 MiB of mostly zero pages compress well: \(written.archiveBytes)")
        let out = tmp.path + "/out"
        let read = try ImageArchive.extract(archive, into: out, ownership: getuid() == 0)
        #expect(read.dataBytes == written.dataBytes && read.entries == written.entries)
        #expect(
            FileManager.default.contents(atPath: out + "/images/pages-1.img")
                == FileManager.default.contents(atPath: sources[0].folder + "/pages-1.img")
        )
        #expect(
            String(decoding: FileManager.default.contents(atPath: out + "/upper/var/log/app.log")!, as: UTF8.self)
                == "counter=41\n"
        )
        var st = stat()
        #expect(stat(out + "/upper/var/log/app.log", &st) == 0 && st.st_mode & 0o777 == 0o640)
        #expect(try FileManager.default.destinationOfSymbolicLink(atPath: out + "/upper/latest") == "/var/log/app.log")
    }

    @Test(.enabled(if: getuid() == 0, "whiteouts are character devices 0:0: mknod needs root"))
    func whiteouts_travel() throws {
        let tmp = try TemporaryDirectory("zpimg")
        let upper = tmp.path + "/upper"
        try FileManager.default.createDirectory(atPath: upper + "/etc", withIntermediateDirectories: true)
        #expect(mknod(upper + "/etc/motd", S_IFCHR, 0) == 0)
        try ImageArchive.write(sources: [("upper", upper)], to: tmp.path + "/a")
        try ImageArchive.extract(tmp.path + "/a", into: tmp.path + "/out")
        var st = stat()
        #expect(lstat(tmp.path + "/out/upper/etc/motd", &st) == 0 && st.st_mode & S_IFMT == S_IFCHR && st.st_rdev == 0)
    }

    @Test func truncatedArchive_isRefusedAndNothingIsLeft() throws {
        let tmp = try TemporaryDirectory("zpimg")
        let archive = tmp.path + "/image.zpimg"
        try ImageArchive.write(sources: try makeSources(in: tmp.path + "/src"), to: archive)
        let bytes = try #require(FileManager.default.contents(atPath: archive))
        FileManager.default.createFile(atPath: archive, contents: bytes.prefix(bytes.count / 2))
        #expect(throws: ImageArchiveError.self) { try ImageArchive.extract(archive, into: tmp.path + "/out") }
        #expect(!FileManager.default.fileExists(atPath: tmp.path + "/out"))
    }

    @Test func corruptArchive_isRefused() throws {
        let tmp = try TemporaryDirectory("zpimg")
        let archive = tmp.path + "/image.zpimg"
        try ImageArchive.write(sources: try makeSources(in: tmp.path + "/src"), to: archive)
        var bytes = [UInt8](try #require(FileManager.default.contents(atPath: archive)))
        for i in stride(from: 40, to: bytes.count - 8, by: 97) { bytes[i] ^= 0x5a }
        FileManager.default.createFile(atPath: archive, contents: Data(bytes))
        let error = #expect(throws: ImageArchiveError.self) {
            try ImageArchive.extract(archive, into: tmp.path + "/out")
        }
        #expect(error?.description.contains(archive) == true)
        #expect(!FileManager.default.fileExists(atPath: tmp.path + "/out"))
    }

    @Test func entriesThatEscape_areRefused() throws {
        let tmp = try TemporaryDirectory("zpimg")
        // An archive whose second entry writes through its own symlink.
        let upper = tmp.path + "/upper"
        try FileManager.default.createDirectory(atPath: upper + "/escape", withIntermediateDirectories: true)
        FileManager.default.createFile(atPath: upper + "/escape/file", contents: Data("x".utf8))
        try ImageArchive.write(sources: [("upper", upper)], to: tmp.path + "/a")
        // Rewrite the directory entry "upper/escape" into a symlink to /tmp by writing a crafted archive.
        let crafted = tmp.path + "/crafted"
        try FileManager.default.createDirectory(atPath: crafted, withIntermediateDirectories: true)
        symlink(tmp.path + "/outside", crafted + "/escape")
        try ImageArchive.write(sources: [("upper", crafted), ("upper/escape", upper + "/escape")], to: tmp.path + "/b")
        let error = #expect(throws: ImageArchiveError.self) {
            try ImageArchive.extract(tmp.path + "/b", into: tmp.path + "/out")
        }
        #expect(error?.description.contains("passes through the archive's symlink \"upper/escape\"") == true)
        #expect(!FileManager.default.fileExists(atPath: tmp.path + "/outside"))
    }

    @Test func notAnArchive_isRefused() throws {
        let tmp = try TemporaryDirectory("zpimg")
        FileManager.default.createFile(atPath: tmp.path + "/x", contents: Data("hello".utf8))
        let error = #expect(throws: ImageArchiveError.self) {
            try ImageArchive.extract(tmp.path + "/x", into: tmp.path + "/out")
        }
        #expect(error?.description.contains(tmp.path + "/x") == true)
    }
}
