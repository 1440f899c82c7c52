import SystemPackage
import ZPSystem

// File work at the edge: atomic writes (temp + fsync + rename), copies, modes, globbing, on
// ZPSystem's syscall funnel and descriptor owner. Every failure is an `InstallerError` naming the
// path and errno's text.
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// What `stat` says about a path.
public struct FileStatus: Sendable, Equatable {
    /// Permission bits (e.g. 0o755).
    public var permissions: mode_t
    /// Owner.
    public var uid: uid_t
    /// Whether it is a directory.
    public var isDirectory: Bool
    /// Whether it is a regular file.
    public var isRegularFile: Bool
    /// Whether it is a symbolic link.
    public var isSymbolicLink = false
}

/// The host's files, as the installer sees them (in a pod, host folders are mounted at their host paths).
public struct HostFiles: Sendable {
    /// Creates the accessor.
    public init() {}

    private func failure(_ what: String, _ path: String, _ code: Int32 = errno) -> InstallerError {
        InstallerError("\(what): \(String(cString: strerror(code)))", file: path)
    }

    private func failure(_ what: String, _ path: String, _ error: SystemError) -> InstallerError {
        failure(what, path, error.errno.rawValue)
    }

    /// The file's bytes, or nil when it does not exist.
    /// - Throws: `InstallerError` for any other failure.
    public func read(_ path: String) throws(InstallerError) -> [UInt8]? {
        do {
            return try Files.read(FilePath(path))
        } catch  where error.errno == .noSuchFileOrDirectory && error.call == "open" {
            return nil
        } catch {
            throw failure(error.call == "open" ? "cannot open" : "cannot read", path, error)
        }
    }

    /// The file as UTF-8 text, or nil when absent.
    /// - Throws: `InstallerError` if unreadable or not UTF-8.
    public func readText(_ path: String) throws(InstallerError) -> String? {
        guard let bytes = try read(path) else { return nil }
        guard let text = String(validating: bytes, as: UTF8.self) else {
            throw InstallerError("is not UTF-8 text", file: path)
        }
        return text
    }

    /// Writes `bytes` to `path` atomically: a temporary file in the same folder, with `mode`,
    /// flushed to disk, renamed over `path`. A process that has the old file open keeps it.
    /// - Throws: `InstallerError`; the temporary file is removed on failure.
    public func write(_ path: String, _ bytes: [UInt8], mode: mode_t) throws(InstallerError) {
        let temp = temporaryName(for: path)
        let file: OwnedDescriptor
        do { file = try OwnedDescriptor.open(FilePath(temp), O_WRONLY | O_CREAT | O_EXCL, mode: mode) } catch {
            throw failure("cannot create", temp, error)
        }
        var ok = false
        defer {
            if !ok { unlink(temp) }
        }
        do {
            let fd = file.rawValue
            do { try file.writeAll(bytes) } catch { throw failure("cannot write", temp, error) }
            do { try systemCall("fchmod", temp) { fchmod(fd, mode) } } catch {
                throw failure("cannot chmod", temp, error)
            }
            do { try systemCall("fsync", temp) { fsync(fd) } } catch { throw failure("cannot fsync", temp, error) }
        }
        _ = consume file  // closed before the rename
        do { try systemCall("rename", "\(temp) to \(path)") { rename(temp, path) } } catch {
            throw failure("cannot rename \(temp) to", path, error)
        }
        ok = true
        syncDirectory(of: path)
    }

    /// Writes text atomically (see `write(_:_:mode:)`).
    /// - Throws: `InstallerError`.
    public func writeText(_ path: String, _ text: String, mode: mode_t) throws(InstallerError) {
        try write(path, Array(text.utf8), mode: mode)
    }

    /// Copies a file atomically with `mode`.
    /// - Throws: `InstallerError` naming the source if it is missing.
    public func copy(from source: String, to destination: String, mode: mode_t) throws(InstallerError) {
        guard let bytes = try read(source) else { throw InstallerError("does not exist", file: source) }
        try write(destination, bytes, mode: mode)
    }

    /// Makes `path` a symbolic link to `target` atomically (a temporary link renamed over `path`).
    /// - Throws: `InstallerError`; the temporary link is removed on failure.
    public func symlink(_ path: String, to target: String) throws(InstallerError) {
        let temp = temporaryName(for: path)
        unlink(temp)
        if Glibc.symlink(target, temp) != 0 { throw failure("cannot create the link", temp) }
        if rename(temp, path) != 0 {
            let code = errno
            unlink(temp)
            throw failure("cannot rename \(temp) to", path, code)
        }
        syncDirectory(of: path)
    }

    /// The target of a symbolic link, or nil when `path` is absent or not a link.
    public func linkTarget(_ path: String) -> String? {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let n = readlink(path, &buffer, buffer.count - 1)
        guard n >= 0 else { return nil }
        return String(decoding: buffer[..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// Removes a file; a missing file is fine.
    /// - Throws: `InstallerError`.
    public func remove(_ path: String) throws(InstallerError) {
        if unlink(path) != 0, errno != ENOENT { throw failure("cannot remove", path) }
    }

    /// Creates a folder (and missing parents) owned by root with `mode`; an existing folder gets
    /// `mode` too. Returns the folders it created, outermost first.
    /// - Throws: `InstallerError`.
    @discardableResult
    public func makeDirectory(_ path: String, mode: mode_t) throws(InstallerError) -> [String] {
        var created: [String] = []
        var prefix = ""
        for part in path.split(separator: "/") {
            prefix += "/" + part
            if mkdir(prefix, mode) == 0 {
                created.append(prefix)
                if chmod(prefix, mode) != 0 { throw failure("cannot chmod", prefix) }
            } else if errno != EEXIST {
                throw failure("cannot create", prefix)
            }
        }
        if chmod(path, mode) != 0 { throw failure("cannot chmod", path) }
        return created
    }

    /// Removes a folder if it is empty; returns whether it did.
    public func removeDirectoryIfEmpty(_ path: String) -> Bool { rmdir(path) == 0 }

    /// `stat` (without following a final symlink), or nil when absent.
    public func status(_ path: String) -> FileStatus? {
        var st = stat()
        guard lstat(path, &st) == 0 else { return nil }
        let type = st.st_mode & S_IFMT
        return FileStatus(
            permissions: st.st_mode & 0o7777,
            uid: st.st_uid,
            isDirectory: type == S_IFDIR,
            isRegularFile: type == S_IFREG,
            isSymbolicLink: type == S_IFLNK
        )
    }

    /// Whether the path exists.
    public func exists(_ path: String) -> Bool { status(path) != nil }

    /// Paths matching a glob pattern (sorted), as containerd expands `imports`.
    public func glob(_ pattern: String) -> [String] {
        var g = glob_t()
        defer { globfree(&g) }
        guard Glibc.glob(pattern, 0, nil, &g) == 0 else { return [] }
        var out: [String] = []
        for i in 0..<Int(g.gl_pathc) {
            if let p = g.gl_pathv[i] { out.append(String(cString: p)) }
        }
        return out.sorted()
    }

    /// The names in a folder (empty if it is absent).
    public func list(_ path: String) -> [String] {
        (try? Files.list(FilePath(path))) ?? []
    }

    private func temporaryName(for path: String) -> String {
        let slash = path.lastIndex(of: "/")
        let dir = slash.map { String(path[..<$0]) } ?? "."
        let name = slash.map { String(path[path.index(after: $0)...]) } ?? path
        return "\(dir)/.\(name).zeropod-installer-\(getpid())"
    }

    private func syncDirectory(of path: String) {
        guard let slash = path.lastIndex(of: "/") else { return }
        let dir = slash == path.startIndex ? "/" : String(path[..<slash])
        guard let folder = try? OwnedDescriptor.open(FilePath(dir), O_RDONLY | O_DIRECTORY) else { return }
        _ = try? systemCall("fsync", dir) { fsync(folder.rawValue) }
    }
}
