// Kernel BPF objects as bpftool lists them, to prove that a test left no link, program or map.
import Foundation
import Glibc

/// Kernel object IDs that `bpftool -j <kind> show` lists (`kind`: "link", "prog", "map").
/// bpftool fails (EAGAIN, ENOENT) when an object vanishes while it walks the IDs, which tests
/// running in parallel make likely: it is retried up to 20 times.
/// - Throws: ``LabError`` when bpftool keeps failing.
public func bpftoolIDs(_ kind: String) throws -> Set<UInt32> {
    var attempt = 0
    while true {
        do {
            let json = try sh(["bpftool", "-j", kind, "show"])
            guard let array = try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [[String: Any]] else {
                return []
            }
            return Set(array.compactMap { ($0["id"] as? NSNumber)?.uint32Value })
        } catch {
            attempt += 1
            if attempt == 20 { throw error }
            usleep(50_000)
        }
    }
}
