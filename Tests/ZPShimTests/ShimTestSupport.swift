import Foundation
import ZPTestSupport

@testable import ZPShim

extension PrivateContainerd {
    /// The zeropod shim socket serving container (group) `id` in this containerd's namespace.
    func shimSocket(group id: String) -> String {
        StartCommand.socketPath(containerdAddress: socket, namespace: namespace, group: id)
    }
}
