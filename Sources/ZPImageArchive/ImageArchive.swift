// The migration image archive (decision 0050): one file per migrated container, written by the
// source shim from its checkpoint images and the container's changed files, streamed as opaque
// bytes by the managers (checked with a SHA-256 digest there), and extracted by the target shim.
//
// Format: zstd (one frame) over a stream of records. Each record is a varint length, an
// `ArchiveEntry` protobuf message (ZPCore's codec) and, for a regular file, `size` bytes of data.
// The stream starts with the 8 bytes "ZPIMG1\n\0" and ends with an entry of kind `end`, so a
// truncated archive is refused instead of half extracted. Written by hand: no listed Swift package
// writes tar or zstd; libzstd is the C library behind `zstd` (CZstd).
import CZstd
import SystemPackage
import ZPCore
import ZPSystem

#if canImport(Glibc)
import Glibc
#endif

/// One entry of an image archive.
public struct ArchiveEntry: ProtobufTableMessage, Equatable {
    /// What an entry is.
    public enum Kind: Int32, Sendable, CaseIterable {
        /// A regular file; `size` bytes of data follow the entry.
        case file = 1
        /// A directory (`opaque`: an overlayfs opaque directory, whose lower contents are hidden).
        case directory = 2
        /// A symbolic link to `link`.
        case symlink = 3
        /// An overlayfs whiteout: the path was deleted in the container.
        case whiteout = 4
        /// The end of the archive.
        case end = 5
    }

    /// The path relative to the archive's root, `/`-separated, without `.` or `..`.
    public var path = ""
    /// The kind's wire number.
    public var kindNumber: Int32 = 0
    /// The permission bits (and setuid/setgid/sticky).
    public var mode: UInt32 = 0
    /// The owner.
    public var uid: UInt32 = 0
    /// The group.
    public var gid: UInt32 = 0
    /// A file's size.
    public var size: UInt64 = 0
    /// Modification time, nanoseconds since the epoch.
    public var modifiedNanoseconds: Int64 = 0
    /// A symlink's target.
    public var link = ""
    /// An opaque directory (overlayfs `trusted.overlay.opaque=y`).
    public var opaque = false

    /// Empty.
    public init() {}

    /// The kind, nil for a number this version does not know.
    public var kind: Kind? { Kind(rawValue: kindNumber) }

    /// The fields.
    public static let fields = ProtobufFieldTable<Self>(
        "zeropod.image.v1.ArchiveEntry",
        [
            .string(1, \.path),
            .int32(2, \.kindNumber),
            .uint32(3, \.mode),
            .uint32(4, \.uid),
            .uint32(5, \.gid),
            .uint64(6, \.size),
            .int64(7, \.modifiedNanoseconds),
            .string(8, \.link),
            .bool(9, \.opaque),
        ]
    )
}

/// An image archive could not be written or read; the text names the file and the reason.
public struct ImageArchiveError: Error, Sendable, CustomStringConvertible, Equatable {
    /// What went wrong.
    public var description: String

    /// An error.
    public init(_ description: String) {
        self.description = description
    }
}

/// What writing or extracting an archive did.
public struct ImageArchiveSummary: Sendable, Equatable {
    /// Entries (files, directories, links, whiteouts).
    public var entries = 0
    /// Bytes of file data.
    public var dataBytes: UInt64 = 0
    /// Bytes of the compressed archive.
    public var archiveBytes: UInt64 = 0
}

/// Writes and extracts image archives.
public enum ImageArchive {
    /// The first bytes of the uncompressed stream.
    static let magic: [UInt8] = Array("ZPIMG1\n\0".utf8)
    /// zstd level: 1 (fastest); measured in decision 0050 against 3 and no compression.
    public static let defaultLevel: Int32 = 1

    /// Writes an archive of `sources` (each a folder whose contents go under `name/` in the archive)
    /// to `archive`.
    ///
    /// Regular files, directories, symlinks and overlayfs whiteouts (character devices 0:0) are
    /// archived with mode, owner and modification time; sockets, fifos and other devices are
    /// skipped (CRIU's images have none; a container's changed files may).
    /// - Parameters:
    ///   - sources: `(name, folder)` pairs, e.g. `("images", <checkpoint images>)`, `("upper", <changed files>)`.
    ///   - archive: The archive file to create (replaced if it exists), mode 0600.
    ///   - level: The zstd compression level; 0 writes an uncompressed zstd frame (level 0 means
    ///     "default" to libzstd, so it is mapped to a store-like level -5).
    /// - Throws: ``ImageArchiveError`` naming the file.
    @discardableResult
    public static func write(
        sources: [(name: String, folder: String)],
        to archive: String,
        level: Int32 = defaultLevel
    )
        throws(ImageArchiveError) -> ImageArchiveSummary
    {
        let compressor = try ZstdCompressor(
            level: level == 0 ? -5 : level,
            output: open(archive, O_WRONLY | O_CREAT | O_TRUNC, mode: 0o600, "cannot create \(archive)"),
            path: archive
        )
        var summary = ImageArchiveSummary()
        do {
            try compressor.write(magic)
            for (name, folder) in sources {
                var top = ArchiveEntry()
                top.path = name
                top.kindNumber = ArchiveEntry.Kind.directory.rawValue
                top.mode = 0o700
                try emit(top, compressor)
                summary.entries += 1
                try walk(folder: folder, prefix: name, compressor: compressor, summary: &summary)
            }
            var end = ArchiveEntry()
            end.kindNumber = ArchiveEntry.Kind.end.rawValue
            try emit(end, compressor)
            summary.archiveBytes = try compressor.finish()
        } catch {
            _ = unlink(archive)
            throw error
        }
        return summary
    }

    private static func emit(_ entry: ArchiveEntry, _ compressor: ZstdCompressor) throws(ImageArchiveError) {
        let body = entry.encoded()
        var header = ProtobufWriter()
        header.appendVarint(UInt64(body.count))
        try compressor.write(header.bytes)
        try compressor.write(body)
    }

    private static func walk(
        folder: String,
        prefix: String,
        compressor: ZstdCompressor,
        summary: inout ImageArchiveSummary
    )
        throws(ImageArchiveError)
    {
        let names: [String]
        do {
            names = try Files.list(FilePath(folder)).sorted()
        } catch {
            throw ImageArchiveError("cannot list \(folder): \(error)")
        }
        for name in names {
            let path = folder + "/" + name
            var st = stat()
            guard lstat(path, &st) == 0 else {
                throw ImageArchiveError("cannot stat \(path): \(Errno(rawValue: errno))")
            }
            var entry = ArchiveEntry()
            entry.path = prefix + "/" + name
            entry.mode = UInt32(st.st_mode) & 0o7777
            entry.uid = st.st_uid
            entry.gid = st.st_gid
            entry.modifiedNanoseconds = Int64(st.st_mtim.tv_sec) * 1_000_000_000 + Int64(st.st_mtim.tv_nsec)
            switch st.st_mode & S_IFMT {
            case S_IFREG:
                entry.kindNumber = ArchiveEntry.Kind.file.rawValue
                entry.size = UInt64(st.st_size)
                try emit(entry, compressor)
                try copyFile(path, size: entry.size, into: compressor)
                summary.dataBytes += entry.size
            case S_IFDIR:
                entry.kindNumber = ArchiveEntry.Kind.directory.rawValue
                entry.opaque = isOpaque(path)
                try emit(entry, compressor)
                summary.entries += 1
                try walk(folder: path, prefix: entry.path, compressor: compressor, summary: &summary)
                continue
            case S_IFLNK:
                entry.kindNumber = ArchiveEntry.Kind.symlink.rawValue
                do {
                    entry.link = try Files.readLink(FilePath(path))
                } catch {
                    throw ImageArchiveError("cannot read the link \(path): \(error)")
                }
                try emit(entry, compressor)
            case S_IFCHR where st.st_rdev == 0:
                entry.kindNumber = ArchiveEntry.Kind.whiteout.rawValue
                try emit(entry, compressor)
            default:
                continue  // sockets, fifos, devices: not part of a migration
            }
            summary.entries += 1
        }
    }

    private static func isOpaque(_ path: String) -> Bool {
        var value = [UInt8](repeating: 0, count: 2)
        let n = lgetxattr(path, "trusted.overlay.opaque", &value, 2)
        return n == 1 && value[0] == UInt8(ascii: "y")
    }

    /// `open(2)` with the failure as an ``ImageArchiveError`` that starts with `what`.
    static func open(
        _ path: String,
        _ flags: CInt,
        mode: mode_t = 0o600,
        _ what: @autoclosure () -> String
    ) throws(ImageArchiveError)
        -> OwnedDescriptor
    {
        do {
            return try OwnedDescriptor.open(FilePath(path), flags | O_CLOEXEC, mode: mode)
        } catch {
            throw ImageArchiveError("\(what()): \(error)")
        }
    }

    private static func copyFile(
        _ path: String,
        size: UInt64,
        into compressor: ZstdCompressor
    ) throws(ImageArchiveError) {
        let file = try open(path, O_RDONLY | O_NOFOLLOW, "cannot open \(path)")
        var remaining = size
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        while remaining > 0 {
            let want = Int(min(UInt64(buffer.count), remaining))
            let n = buffer.withUnsafeMutableBytes { read(file.rawValue, $0.baseAddress, want) }
            guard n > 0 else {
                throw ImageArchiveError("\(path) changed while it was archived (\(remaining) of \(size) bytes missing)")
            }
            try compressor.write(buffer[0..<n])
            remaining -= UInt64(n)
        }
    }

    // MARK: extract

    /// Extracts `archive` into `destination` (created; it must not exist yet), refusing anything
    /// that could escape it: absolute paths, `..`, paths through a symlink of the archive, entries
    /// after the end, a truncated or corrupt stream. On failure the destination is removed.
    /// - Parameter ownership: Set owners (root only); off in tests run as another user.
    /// - Throws: ``ImageArchiveError`` naming the archive and the reason.
    @discardableResult
    public static func extract(
        _ archive: String,
        into destination: String,
        ownership: Bool = true
    ) throws(ImageArchiveError)
        -> ImageArchiveSummary
    {
        guard mkdir(destination, 0o700) == 0 else {
            throw ImageArchiveError("cannot create \(destination): \(Errno(rawValue: errno))")
        }
        do {
            return try extractChecked(archive, into: destination, ownership: ownership)
        } catch {
            removeTree(destination)
            throw error
        }
    }

    private static func extractChecked(
        _ archive: String,
        into destination: String,
        ownership: Bool
    ) throws(ImageArchiveError)
        -> ImageArchiveSummary
    {
        let stream = try ZstdDecompressor(input: open(archive, O_RDONLY, "cannot open \(archive)"), path: archive)
        var reader = EntryReader(stream: stream, archive: archive)
        guard try reader.take(magic.count) == magic else {
            throw ImageArchiveError("\(archive) is not an image archive (wrong magic)")
        }
        var summary = ImageArchiveSummary()
        var symlinks: Set<String> = []
        var directories: [(String, ArchiveEntry)] = []
        while true {
            let entry = try reader.entry()
            guard let kind = entry.kind else {
                throw ImageArchiveError("\(archive): entry \"\(entry.path)\" has unknown kind \(entry.kindNumber)")
            }
            if kind == .end { break }
            try checkPath(entry.path, symlinks: symlinks, archive: archive)
            let target = destination + "/" + entry.path
            switch kind {
            case .file:
                let file = try open(
                    target,
                    O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW,
                    mode: mode_t(entry.mode & 0o777),
                    "\(archive): cannot create \(entry.path)"
                )
                try reader.copy(entry.size, to: file, name: entry.path)
                summary.dataBytes += entry.size
                if ownership { _ = fchown(file.rawValue, entry.uid, entry.gid) }
                _ = fchmod(file.rawValue, mode_t(entry.mode))
                var times = [timespec(entry.modifiedNanoseconds), timespec(entry.modifiedNanoseconds)]
                _ = futimens(file.rawValue, &times)
            case .directory:
                if mkdir(target, 0o700) != 0 && errno != EEXIST {
                    throw ImageArchiveError(
                        "\(archive): cannot create the folder \(entry.path): \(Errno(rawValue: errno))"
                    )
                }
                if entry.opaque { _ = lsetxattr(target, "trusted.overlay.opaque", "y", 1, 0) }
                directories.append((target, entry))
            case .symlink:
                guard symlink(entry.link, target) == 0 else {
                    throw ImageArchiveError(
                        "\(archive): cannot create the link \(entry.path): \(Errno(rawValue: errno))"
                    )
                }
                symlinks.insert(entry.path)
                if ownership { _ = lchown(target, entry.uid, entry.gid) }
            case .whiteout:
                guard mknod(target, S_IFCHR | 0o000, 0) == 0 else {
                    throw ImageArchiveError(
                        "\(archive): cannot create the whiteout \(entry.path): \(Errno(rawValue: errno))"
                    )
                }
                if ownership { _ = lchown(target, entry.uid, entry.gid) }
            case .end:
                break
            }
            summary.entries += 1
        }
        guard try reader.atEnd() else { throw ImageArchiveError("\(archive): data after the end entry") }
        // Folder modes and owners last (a read-only folder must not stop its own contents).
        for (path, entry) in directories.reversed() {
            if ownership { _ = lchown(path, entry.uid, entry.gid) }
            _ = chmod(path, mode_t(entry.mode))
        }
        var st = stat()
        if stat(archive, &st) == 0 { summary.archiveBytes = UInt64(st.st_size) }
        return summary
    }

    private static func checkPath(_ path: String, symlinks: Set<String>, archive: String) throws(ImageArchiveError) {
        let parts = path.split(separator: "/", omittingEmptySubsequences: false)
        guard !path.isEmpty, !path.hasPrefix("/"), !parts.contains(where: { $0.isEmpty || $0 == "." || $0 == ".." })
        else {
            throw ImageArchiveError("\(archive): refusing the entry path \"\(path)\" (absolute, empty or with . or ..)")
        }
        var prefix = ""
        for part in parts.dropLast() {
            prefix += prefix.isEmpty ? String(part) : "/" + part
            if symlinks.contains(prefix) {
                throw ImageArchiveError(
                    "\(archive): refusing \"\(path)\": it passes through the archive's symlink \"\(prefix)\""
                )
            }
        }
    }

    /// Removes a folder tree (no symlinks followed). Best effort.
    public static func removeTree(_ path: String) {
        var st = stat()
        guard lstat(path, &st) == 0 else { return }
        if st.st_mode & S_IFMT == S_IFDIR {
            _ = chmod(path, 0o700)
            for name in (try? Files.list(FilePath(path))) ?? [] { removeTree(path + "/" + name) }
            _ = rmdir(path)
        } else {
            _ = unlink(path)
        }
    }
}

extension timespec {
    init(_ nanoseconds: Int64) {
        self.init(tv_sec: Int(nanoseconds / 1_000_000_000), tv_nsec: Int(nanoseconds % 1_000_000_000))
    }
}

/// Reads entries and file data from the decompressed stream.
private struct EntryReader {
    let stream: ZstdDecompressor
    let archive: String
    var buffer: [UInt8] = []
    var position = 0

    init(stream: ZstdDecompressor, archive: String) {
        self.stream = stream
        self.archive = archive
    }

    private mutating func fill(_ count: Int) throws(ImageArchiveError) -> Bool {
        while buffer.count - position < count {
            if position > 0 {
                buffer.removeFirst(position)
                position = 0
            }
            guard let more = try stream.next() else { return false }
            buffer += more
        }
        return true
    }

    mutating func take(_ count: Int) throws(ImageArchiveError) -> [UInt8] {
        guard try fill(count) else { throw ImageArchiveError("\(archive) is truncated") }
        defer { position += count }
        return Array(buffer[position..<position + count])
    }

    mutating func entry() throws(ImageArchiveError) -> ArchiveEntry {
        var length: UInt64 = 0
        var shift: UInt64 = 0
        while true {
            let byte = try take(1)[0]
            length |= UInt64(byte & 0x7f) << shift
            if byte & 0x80 == 0 { break }
            shift += 7
            guard shift < 35 else { throw ImageArchiveError("\(archive) is corrupt (an entry length is too long)") }
        }
        guard length <= 1 << 20 else { throw ImageArchiveError("\(archive) is corrupt (an entry of \(length) bytes)") }
        do {
            return try ArchiveEntry(decoding: try take(Int(length)))
        } catch let error as ImageArchiveError {
            throw error
        } catch {
            throw ImageArchiveError("\(archive) is corrupt (an entry cannot be decoded: \(error))")
        }
    }

    mutating func copy(_ size: UInt64, to file: borrowing OwnedDescriptor, name: String) throws(ImageArchiveError) {
        var remaining = size
        while remaining > 0 {
            if buffer.count == position {
                guard try fill(1) else { throw ImageArchiveError("\(archive) is truncated inside \(name)") }
            }
            let n = Int(min(UInt64(buffer.count - position), remaining))
            do {
                try file.writeAll(Array(buffer[position..<position + n]))
            } catch {
                throw ImageArchiveError("cannot write \(name): \(error)")
            }
            position += n
            remaining -= UInt64(n)
        }
    }

    mutating func atEnd() throws(ImageArchiveError) -> Bool {
        try !fill(1)
    }
}

// MARK: - zstd streaming

/// zstd compression into a descriptor (`ZSTD_compressStream2`).
final class ZstdCompressor {
    private let context: OpaquePointer
    private let output: OwnedDescriptor
    private let path: String
    private var outBuffer = [UInt8](repeating: 0, count: ZSTD_CStreamOutSize())
    private var written: UInt64 = 0

    init(level: Int32, output: consuming OwnedDescriptor, path: String) throws(ImageArchiveError) {
        guard let context = ZSTD_createCCtx() else {
            throw ImageArchiveError("zstd: cannot create a compression context")
        }
        self.context = context
        self.output = output
        self.path = path
        ZSTD_CCtx_setParameter(context, ZSTD_c_compressionLevel, level)
        ZSTD_CCtx_setParameter(context, ZSTD_c_checksumFlag, 1)
    }

    deinit { ZSTD_freeCCtx(context) }

    func write(_ bytes: some Collection<UInt8>) throws(ImageArchiveError) {
        try run(Array(bytes), ZSTD_e_continue)
    }

    /// Ends the frame; returns the archive's size.
    func finish() throws(ImageArchiveError) -> UInt64 {
        try run([], ZSTD_e_end)
        return written
    }

    private func run(_ input: [UInt8], _ mode: ZSTD_EndDirective) throws(ImageArchiveError) {
        var failure: ImageArchiveError?
        input.withUnsafeBytes { source in
            var inBuffer = ZSTD_inBuffer(src: source.baseAddress, size: source.count, pos: 0)
            while true {
                let (remaining, produced): (Int, Int) = outBuffer.withUnsafeMutableBytes { target in
                    var out = ZSTD_outBuffer(dst: target.baseAddress, size: target.count, pos: 0)
                    let r = ZSTD_compressStream2(context, &out, &inBuffer, mode)
                    return (r, out.pos)
                }
                if ZSTD_isError(remaining) != 0 {
                    failure = ImageArchiveError("zstd: \(String(cString: ZSTD_getErrorName(remaining)))")
                    return
                }
                if produced > 0 {
                    do {
                        try output.writeAll(Array(outBuffer[0..<produced]))
                    } catch {
                        failure = ImageArchiveError("cannot write \(path): \(error)")
                        return
                    }
                    written += UInt64(produced)
                }
                let done = mode == ZSTD_e_end ? remaining == 0 : inBuffer.pos == inBuffer.size
                if done { return }
            }
        }
        if let failure { throw failure }
    }
}

/// zstd decompression from a descriptor (`ZSTD_decompressStream`), chunk by chunk.
final class ZstdDecompressor {
    private let context: OpaquePointer
    private let input: OwnedDescriptor
    private let path: String
    private var inBuffer = [UInt8](repeating: 0, count: ZSTD_DStreamInSize())
    private var inCount = 0
    private var inPosition = 0
    private var inputEnded = false
    private var frameEnded = false

    init(input: consuming OwnedDescriptor, path: String) throws(ImageArchiveError) {
        guard let context = ZSTD_createDCtx() else {
            throw ImageArchiveError("zstd: cannot create a decompression context")
        }
        self.context = context
        self.input = input
        self.path = path
    }

    deinit { ZSTD_freeDCtx(context) }

    /// The next decompressed bytes, nil at the end of the frame.
    /// - Throws: ``ImageArchiveError`` for a corrupt or truncated frame.
    func next() throws(ImageArchiveError) -> [UInt8]? {
        while true {
            if frameEnded { return nil }
            if inPosition == inCount && !inputEnded {
                let n = inBuffer.withUnsafeMutableBytes { read(input.rawValue, $0.baseAddress, $0.count) }
                if n < 0 { throw ImageArchiveError("cannot read \(path): \(Errno(rawValue: errno))") }
                if n == 0 { inputEnded = true }
                inCount = n
                inPosition = 0
            }
            if inPosition == inCount && inputEnded {
                throw ImageArchiveError("\(path) is truncated (the zstd frame does not end)")
            }
            var out = [UInt8](repeating: 0, count: ZSTD_DStreamOutSize())
            let (result, produced, consumed): (Int, Int, Int) = inBuffer.withUnsafeBytes { source in
                out.withUnsafeMutableBytes { target in
                    var i = ZSTD_inBuffer(src: source.baseAddress, size: inCount, pos: inPosition)
                    var o = ZSTD_outBuffer(dst: target.baseAddress, size: target.count, pos: 0)
                    let r = ZSTD_decompressStream(context, &o, &i)
                    return (r, o.pos, i.pos)
                }
            }
            if ZSTD_isError(result) != 0 {
                throw ImageArchiveError("\(path) is corrupt: zstd: \(String(cString: ZSTD_getErrorName(result)))")
            }
            inPosition = consumed
            if result == 0 { frameEnded = true }
            if produced > 0 { return Array(out[0..<produced]) }
        }
    }
}
