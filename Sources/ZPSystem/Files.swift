import SystemPackage

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Whole-file reads and writes and the few path queries the project makes, on the syscall funnel.
///
/// For small files (state, pid and config files, `/proc` entries, logs): the content is read into
/// memory at once.
public enum Files {
    /// The whole content of `path` (or its first `limit` bytes).
    /// - Parameters:
    ///   - path: the file.
    ///   - limit: the most bytes to read.
    /// - Throws: ``SystemError`` naming `open` or `read` and the path.
    public static func read(_ path: FilePath, limit: Int = .max) throws(SystemError) -> [UInt8] {
        let fd = try OwnedDescriptor.open(path, O_RDONLY)
        do throws(SystemError) {
            return try fd.readAll(limit: limit)
        } catch {
            throw SystemError(call: error.call, subject: path.string, errno: error.errno)
        }
    }

    /// The content of `path` as UTF-8 text (invalid bytes replaced).
    /// - Parameter path: the file.
    /// - Throws: ``SystemError`` naming `open` or `read` and the path.
    public static func readText(_ path: FilePath) throws(SystemError) -> String {
        String(decoding: try read(path), as: UTF8.self)
    }

    /// The last `maxBytes` bytes of `path` (all of it when shorter), e.g. the tail of a log.
    /// - Parameters:
    ///   - path: the file.
    ///   - maxBytes: how many bytes from the end to read at most.
    /// - Throws: ``SystemError`` naming `open`, `lseek` or `pread` and the path.
    public static func readTail(_ path: FilePath, maxBytes: Int) throws(SystemError) -> [UInt8] {
        let fd = try OwnedDescriptor.open(path, O_RDONLY)
        let raw = fd.rawValue
        let p = path.string
        let size = try systemCall("lseek", p) { lseek(raw, 0, SEEK_END) }
        var offset = max(0, Int(size) - maxBytes)
        var out = [UInt8](repeating: 0, count: Int(size) - offset)
        var filled = 0
        while filled < out.count {
            let n = try out.withUnsafeMutableBytes { buffer in
                Result { () throws(SystemError) -> Int in
                    try systemCall("pread", p) {
                        pread(raw, buffer.baseAddress! + filled, buffer.count - filled, off_t(offset))
                    }
                }
            }.get()
            if n == 0 { break }
            filled += n
            offset += n
        }
        return Array(out[0..<filled])
    }

    /// Writes `bytes` to `path`, creating or truncating it (not atomic; see ``replace(_:with:mode:)``).
    /// - Parameters:
    ///   - path: the file.
    ///   - bytes: the new content.
    ///   - mode: the permissions of a created file.
    /// - Throws: ``SystemError`` naming `open` or `write` and the path.
    public static func write(
        _ path: FilePath,
        _ bytes: some Collection<UInt8>,
        mode: mode_t = 0o644
    ) throws(SystemError) {
        let fd = try OwnedDescriptor.open(path, O_WRONLY | O_CREAT | O_TRUNC, mode: mode)
        do throws(SystemError) {
            try fd.writeAll(bytes)
        } catch {
            throw SystemError(call: error.call, subject: path.string, errno: error.errno)
        }
        try fd.close()
    }

    /// Replaces `path` atomically: writes a temporary file next to it, then renames it over
    /// `path` (no fsync), so readers see the old or the new content, never a part.
    /// - Parameters:
    ///   - path: the file.
    ///   - bytes: the new content.
    ///   - mode: the permissions of the new file.
    /// - Throws: ``SystemError`` naming `open`, `write` or `rename`; the temporary file is removed.
    public static func replace(
        _ path: FilePath,
        with bytes: some Collection<UInt8>,
        mode: mode_t = 0o644
    ) throws(SystemError) {
        let temporary = path.string + ".zp-tmp"
        do throws(SystemError) {
            try write(FilePath(temporary), bytes, mode: mode)
            try systemCall("rename", "\(temporary) to \(path)") { rename(temporary, path.string) }
        } catch {
            _ = unlink(temporary)
            throw error
        }
    }

    /// Creates the folder `path` and its missing parents (`mkdir -p`), every created one with mode
    /// 0700, and makes `path` itself owner-only: an existing `path` with group or other permission
    /// bits is set to 0700 (`chmod`) before the caller puts anything in it. Existing parents are
    /// left as they are.
    ///
    /// For folders whose content no other user may read or list (checkpoint images, sockets,
    /// registries): created this way, nothing in them is ever reachable by another uid.
    ///
    /// A parent that another process removes meanwhile (a shim removing its empty namespace folder
    /// of checkpoint images while another shim of that namespace creates its own in it) makes a
    /// `mkdir` fail with `ENOENT`: the walk then starts again from the root, a few times.
    /// - Parameter path: an absolute folder path.
    /// - Throws: ``SystemError`` naming `mkdir`, `stat` (`ENOTDIR` when `path` is not a folder)
    ///   or `chmod` and the path.
    public static func makeOwnerOnlyDirectory(_ path: FilePath) throws(SystemError) {
        var attempt = 0
        walk: while true {
            var prefix = ""
            for component in path.string.split(separator: "/") {
                prefix += "/" + component
                if mkdir(prefix, 0o700) != 0 {
                    let e = Errno(rawValue: errno)
                    if e == .fileExists { continue }
                    if e == .noSuchFileOrDirectory && attempt < 8 {
                        attempt += 1
                        continue walk
                    }
                    throw SystemError(call: "mkdir", subject: prefix, errno: e)
                }
            }
            break
        }
        var st = stat()
        try systemCall("stat", path.string) { stat(path.string, &st) }
        guard (st.st_mode & S_IFMT) == S_IFDIR else {
            throw SystemError(call: "stat", subject: path.string, errno: .notDirectory)
        }
        if st.st_mode & 0o077 != 0 {
            try systemCall("chmod", path.string) { chmod(path.string, 0o700) }
        }
    }

    /// The permission bits of `path` (`stat(2)`, symbolic links followed), e.g. `0o700`.
    /// - Throws: ``SystemError`` naming `stat` and the path.
    public static func permissions(of path: FilePath) throws(SystemError) -> mode_t {
        var st = stat()
        try systemCall("stat", path.string) { stat(path.string, &st) }
        return st.st_mode & 0o7777
    }

    /// Whether `path` names a FIFO (`stat(2)`; false when it does not exist).
    /// - Parameter path: the path.
    public static func isFIFO(_ path: FilePath) -> Bool {
        var st = stat()
        guard stat(path.string, &st) == 0 else { return false }
        return (st.st_mode & S_IFMT) == S_IFIFO
    }

    /// Whether `path` names a regular file with an execute bit set (`stat(2)`; false when it does
    /// not exist). Root's `access(X_OK)` says yes to folders, this does not.
    /// - Parameter path: the path.
    public static func isExecutableFile(_ path: FilePath) -> Bool {
        var st = stat()
        guard stat(path.string, &st) == 0 else { return false }
        return (st.st_mode & S_IFMT) == S_IFREG && (st.st_mode & 0o111) != 0
    }

    /// The target of the symbolic link at `path` (`readlink(2)`), e.g. `pipe:[123]` for
    /// `/proc/PID/fd/0`.
    /// - Parameter path: the link.
    /// - Throws: ``SystemError`` naming `readlink` and the path.
    public static func readLink(_ path: FilePath) throws(SystemError) -> String {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let p = path.string
        let n = try systemCall("readlink", p) { readlink(p, &buffer, buffer.count - 1) }
        return String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// The names in the directory `path` without `.` and `..`, sorted.
    /// - Parameter path: the directory.
    /// - Throws: ``SystemError`` naming `opendir` and the path.
    public static func list(_ path: FilePath) throws(SystemError) -> [String] {
        let p = path.string
        let dir = try systemCallReturningPointer("opendir", p) { opendir(p) }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names.sorted()
    }

    /// The inode number of `path` (`stat(2)`), e.g. of a namespace file.
    /// - Parameter path: the file.
    /// - Throws: ``SystemError`` naming `stat` and the path.
    public static func inode(of path: FilePath) throws(SystemError) -> UInt64 {
        var st = stat()
        let p = path.string
        try systemCall("stat", p) { stat(p, &st) }
        return UInt64(st.st_ino)
    }

    /// The working directory (`getcwd`), or "." when it cannot be read.
    public static func currentDirectory() -> String {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        guard getcwd(&buffer, buffer.count) != nil else { return "." }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

/// The process's standard input, output and error: descriptors 0-2, which the process owns for
/// its whole life (so no ``OwnedDescriptor`` holds them).
public enum StandardStream: CInt, Sendable {
    /// Descriptor 0.
    case input = 0
    /// Descriptor 1.
    case output = 1
    /// Descriptor 2.
    case error = 2

    /// Writes all of `bytes` (`write(2)` until done).
    /// - Throws: ``SystemError`` naming `write` (e.g. `EPIPE` when the reader is gone).
    public func write(_ bytes: some Collection<UInt8>) throws(SystemError) {
        try writeFully(rawValue, bytes, subject: "\(self)")
    }

    /// Writes `text` as UTF-8.
    /// - Throws: ``SystemError`` naming `write`.
    public func write(_ text: String) throws(SystemError) {
        try write(Array(text.utf8))
    }

    /// Reads until end of file.
    /// - Throws: ``SystemError`` naming `read`.
    public func readAll() throws(SystemError) -> [UInt8] {
        try readToEnd(rawValue, limit: .max, subject: "\(self)")
    }

    /// Whether the stream is a pipe or FIFO (`fstat(2)`).
    public var isPipe: Bool {
        var st = stat()
        return fstat(rawValue, &st) == 0 && (st.st_mode & S_IFMT) == S_IFIFO
    }
}
