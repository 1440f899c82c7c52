import SystemPackage
import Testing

@testable import ZPSystem

#if canImport(Glibc)
import Glibc
#endif

/// What `/proc/self/fd/N` points to, or nil when N is not open. Compared against a file of the
/// test's own, so that another test reusing the number cannot make a closed descriptor look open.
private func target(of fd: CInt) -> String? {
    try? Files.readLink(FilePath("/proc/self/fd/\(fd)"))
}

/// A fresh file of this test's own.
private func scratchFile(_ name: String) throws -> FilePath {
    let path = FilePath("/tmp/zpsystem-\(getpid())-\(name)")
    try Files.write(path, Array("x".utf8))
    return path
}

@Suite struct DescriptorTests {
    @Test func ownedDescriptor_closesAtTheEndOfItsLife() throws {
        let path = try scratchFile("deinit")
        defer { unlink(path.string) }
        var number: CInt = -1
        do {
            let fd = try OwnedDescriptor.open(path, O_RDONLY)
            number = fd.rawValue
            #expect(target(of: number) == path.string)
        }
        #expect(target(of: number) != path.string)
    }

    @Test func disown_handsTheDescriptorOver_withoutClosingIt() throws {
        let path = try scratchFile("disown")
        defer { unlink(path.string) }
        let fd = try OwnedDescriptor.open(path, O_RDONLY)
        let number = fd.disown()
        #expect(target(of: number) == path.string, "still open after the owner is gone")
        let adopted = OwnedDescriptor(adopting: number)
        try adopted.close()
        #expect(target(of: number) != path.string)
    }

    @Test func sharedDescriptor_take_movesOwnershipOut_once() throws {
        let path = try scratchFile("take")
        defer { unlink(path.string) }
        let shared = SharedDescriptor(try OwnedDescriptor.open(path, O_RDONLY))
        let number = shared.rawValue
        #expect(shared.isOpen)
        guard let owner = shared.take() else {
            Issue.record("take() returned nil")
            return
        }
        #expect(!shared.isOpen)
        let second = shared.take()
        let tookAgain = second != nil
        #expect(!tookAgain, "a second take gets nothing")
        shared.close()  // no effect: the owner moved out
        #expect(target(of: number) == path.string)
        #expect(owner.rawValue == number)
        _ = consume owner
        #expect(target(of: number) != path.string)
    }

    @Test func sharedDescriptor_closesOnce_atCloseOrWhenTheLastReferenceGoes() throws {
        let path = try scratchFile("shared")
        defer { unlink(path.string) }
        var shared: SharedDescriptor? = SharedDescriptor(try OwnedDescriptor.open(path, O_RDONLY))
        let first = shared!.rawValue
        shared = nil
        #expect(target(of: first) != path.string)

        let explicit = SharedDescriptor(try OwnedDescriptor.open(path, O_RDONLY))
        let second = explicit.rawValue
        explicit.close()
        explicit.close()
        #expect(target(of: second) != path.string)
        #expect(explicit.description == "closed fd")
        #expect(throws: SystemError.self) { _ = try explicit.duplicate() }
    }

    @Test func duplicate_isASecondOwnerOfTheSameFile() throws {
        let path = try scratchFile("dup")
        defer { unlink(path.string) }
        let fd = try OwnedDescriptor.open(path, O_RDONLY)
        let copy = try fd.duplicate()
        #expect(copy.rawValue != fd.rawValue)
        #expect(target(of: copy.rawValue) == path.string)
        let number = fd.rawValue
        try fd.close()
        #expect(target(of: number) != path.string)
        #expect(try copy.readAll() == Array("x".utf8))
    }

    @Test func pipe_carriesBytes_andEndsAtEndOfFile() throws {
        let ends = try OwnedDescriptor.pipe()
        let writer = ends.writeEnd
        let reader = ends.readEnd
        try writer.writeAll(Array("hello".utf8))
        try writer.close()
        #expect(try reader.readAll() == Array("hello".utf8))
    }
}

@Suite struct FilesTests {
    @Test func write_read_replace_andTail() throws {
        let path = FilePath("/tmp/zpsystem-\(getpid())-files")
        defer { unlink(path.string) }
        try Files.write(path, Array("first\n".utf8), mode: 0o600)
        #expect(try Files.readText(path) == "first\n")
        try Files.replace(path, with: Array("0123456789".utf8), mode: 0o600)
        #expect(try Files.read(path) == Array("0123456789".utf8))
        #expect(try Files.read(path, limit: 3) == Array("012".utf8))
        #expect(try Files.readTail(path, maxBytes: 4) == Array("6789".utf8))
        #expect(try Files.readTail(path, maxBytes: 100) == Array("0123456789".utf8))
        #expect(throws: SystemError(call: "open", subject: path.string + "-missing", errno: .noSuchFileOrDirectory)) {
            try Files.read(FilePath(path.string + "-missing"))
        }
        #expect(!Files.isFIFO(path))
    }

    @Test func list_andInode() throws {
        let dir = FilePath("/tmp/zpsystem-\(getpid())-dir")
        _ = mkdir(dir.string, 0o700)
        defer {
            for name in (try? Files.list(dir)) ?? [] { unlink(dir.appending(name).string) }
            rmdir(dir.string)
        }
        try Files.write(dir.appending("b"), [1])
        try Files.write(dir.appending("a"), [2])
        #expect(try Files.list(dir) == ["a", "b"])
        #expect(try Files.inode(of: dir.appending("a")) != Files.inode(of: dir.appending("b")))
    }

    @Test func descriptorTable_reserve_growsTheTable_andLeavesNothingOpen() throws {
        let before = try #require(DescriptorTable.size, "FDSize in /proc/self/status")
        let count = CInt(max(before * 2, 512))
        try DescriptorTable.reserve(count)
        let after = try #require(DescriptorTable.size)
        #expect(after >= Int(count), "the table holds \(count) descriptors (it held \(before), now \(after))")
        #expect(target(of: count - 1) == nil, "the copy that grew the table is closed")
    }

    @Test func descriptorTable_reserve_beyondTheLimit_fails() throws {
        var limit = rlimit()
        try #require(getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit) == 0)
        #expect(throws: SystemError.self) { try DescriptorTable.reserve(CInt(clamping: limit.rlim_cur) + 1) }
    }
}
