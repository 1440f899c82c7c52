// CRIU with the shared libraries it needs, so it runs on a node that lacks them: the libraries
// come from `ldd`, glibc's own are left out (they must be the node's), and the installed binary
// looks in ../lib first (RUNPATH $ORIGIN/../lib, set with patchelf) without touching containerd's
// environment or the opt plugin.

/// Reading `ldd` output (pure).
public enum LddOutput {
    /// glibc's libraries and the loader: never copied, the node's own must be used.
    public static let excluded = [
        "linux-vdso.so", "linux-gate.so", "ld-linux", "libc.so", "libm.so", "libpthread.so",
        "libdl.so", "librt.so", "libresolv.so", "libutil.so", "libanl.so", "libnsl.so",
    ]

    /// The libraries to copy from `ldd` output: `name => /path (0x...)` lines whose name is not
    /// glibc's.
    /// - Throws: `InstallerError` for a library ldd could not find ("not found").
    public static func librariesToCopy(_ output: String, binary: String) throws(InstallerError) -> [String] {
        var out: [String] = []
        for raw in output.split(separator: "\n") {
            let line = String(raw).trimmingSpaces
            guard let arrow = line.range(of: " => ") else { continue }
            let name = String(line[..<arrow.lowerBound])
            let rest = line[arrow.upperBound...]
            if rest.hasPrefix("not found") {
                throw InstallerError("needs \(name), which ldd cannot find", file: binary)
            }
            guard let path = rest.split(separator: " ").first.map(String.init), path.hasPrefix("/") else { continue }
            if excluded.contains(where: { name.hasPrefix($0) }) { continue }
            out.append(path)
        }
        return out
    }
}
