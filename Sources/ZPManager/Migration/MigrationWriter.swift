// The Migration writes of a manager (decision 0051): merge patches that carry the resourceVersion
// they were computed from, so a concurrent writer's change is never overwritten (409), and on a
// 409 the object is read again and the change computed anew — the original retried the same
// stale object (kubernetes.md §2.2). No full-object PUT.
import Foundation
import Logging
import ZPKube

/// Reads and writes Migrations with preconditions.
public struct MigrationWriter: Sendable {
    let client: KubeClient
    let logger: Logger
    /// How often a write is computed again after a conflict.
    let attempts = 6

    /// A writer on `client`.
    public init(client: KubeClient, logger: Logger) {
        self.client = client
        self.logger = logger
    }

    /// The Migration as the server has it now, nil when it does not exist.
    /// - Throws: ``KubeError`` other than not found.
    public func get(namespace: String, name: String) async throws(KubeError) -> Migration? {
        do {
            return try await client.get(Migration.self, Migration.resource, namespace: namespace, name: name)
        } catch  where error.kind == .notFound {
            return nil
        }
    }

    /// Creates `migration`; when one of that name exists already (a retry, another manager's
    /// cache lag), returns the existing one if it was made for the same pod, else nil.
    /// - Throws: ``KubeError``.
    public func create(_ migration: Migration) async throws(KubeError) -> Migration? {
        let namespace = migration.metadata.namespace ?? "default"
        do {
            return try await client.create(migration, Migration.resource, namespace: namespace)
        } catch  where error.kind == .conflict && error.reason == "AlreadyExists" {
            guard let existing = try await get(namespace: namespace, name: migration.metadata.name ?? "") else {
                return nil
            }
            let sameOwner =
                existing.metadata.ownerReferences?.first?.uid == migration.metadata.ownerReferences?.first?.uid
            return existing.spec.sourcePod == migration.spec.sourcePod
                && existing.spec.sourceNode == migration.spec.sourceNode
                && sameOwner ? existing : nil
        }
    }

    /// Changes a Migration: `change` gets the current object and returns the merge patch of the
    /// main resource (or of `status` when `subresource` is "status"), or nil for nothing to do.
    /// The patch carries the object's resourceVersion; after a 409 the object is read again and
    /// `change` runs again (at most a few times).
    /// - Returns: the patched object, or the current one when there was nothing to do; nil when
    ///   the Migration does not exist.
    /// - Throws: ``KubeError`` (a conflict only after every attempt).
    @discardableResult
    public func modify(
        namespace: String,
        name: String,
        subresource: String? = nil,
        start: Migration? = nil,
        _ change: (Migration) -> JSON?
    ) async throws(KubeError) -> Migration? {
        var current = start
        for attempt in 1...attempts {
            if current == nil {
                current = try await get(namespace: namespace, name: name)
            }
            guard let object = current else { return nil }
            guard var patch = change(object) else { return object }
            patch[path: ["metadata", "resourceVersion"]] = .string(object.metadata.resourceVersion ?? "")
            do {
                return try await client.patch(
                    Migration.self,
                    Migration.resource,
                    namespace: namespace,
                    name: name,
                    patch: .merge(patch),
                    subresource: subresource
                )
            } catch  where error.kind == .conflict && attempt < attempts {
                logger.debug(
                    "migration changed meanwhile; reading it again",
                    metadata: ["migration": "\(namespace)/\(name)"]
                )
                current = nil
            } catch  where error.kind == .notFound {
                return nil
            }
        }
        return nil
    }

    /// Sets container `container`'s status with `change` (read, change, patch `/status` with the
    /// resourceVersion; again after a conflict).
    /// - Throws: ``KubeError``.
    @discardableResult
    public func updateStatus(
        namespace: String,
        name: String,
        container: String,
        _ change: @escaping (inout MigrationContainerStatus) -> Void
    ) async throws(KubeError) -> Migration? {
        try await modify(namespace: namespace, name: name, subresource: "status") { migration in
            let status = MigrationPlanner.status(migration.status, setting: container, change)
            guard status != migration.status else { return nil }
            return ["status": MigrationWriter.json(status)]
        }
    }

    /// The JSON of a Codable value (the models encode as the API spells them).
    static func json(_ value: some Encodable) -> JSON {
        let data = (try? JSONEncoder().encode(value)) ?? Data("null".utf8)
        return (try? JSON(parsing: Array(data))) ?? .null
    }
}
