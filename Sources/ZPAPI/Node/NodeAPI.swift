// The manager's node service, `zeropod.node.v1.Node` (docs/decisions/0048-migration-protocol.md):
// served on `<run-dir>/node.sock` for the node's shims and on TCP with mutual TLS for the managers of
// other nodes. The original's service, method and field names and numbers; our additions carry
// numbers above the original's. Encoded by hand on ZPCore's codec (decision 0001);
// Tests/ZPAPITests/Fixtures/node.proto describes the messages and ZPAPITests compare the bytes with
// `protoc --encode`.
import ZPCore

/// The messages and method names of the manager's node service (`zeropod.node.v1.Node`).
public enum NodeAPI {
    /// The ttrpc service name (the original's).
    public static let service = "zeropod.node.v1.Node"
    /// The size of one ``Image`` chunk a server sends (the last one of a window may be shorter).
    public static let imageChunkSize = 256 << 10
    /// The bytes one ``PullImageRequest`` asks for at most: 64 chunks.
    public static let imageWindowSize: Int64 = 64 * Int64(imageChunkSize)

    /// The methods. The shims call the first four and ``Method/abortEvac`` on the node socket;
    /// peer managers call ``Method/pullImage`` over mutual TLS.
    public enum Method: String, Sendable, CaseIterable {
        /// Source shim, before a scaled-down (or live) container is killed: waits until the
        /// Migration is claimed by a target and the target is ready (``EvacResponse``).
        case prepareEvac = "PrepareEvac"
        /// Source shim, after the image was handed over: the node publishes its image server.
        case evac = "Evac"
        /// Target shim, at Create: waits for the image, pulls it, answers where it is.
        case restore = "Restore"
        /// Target shim, after the container was created from the image (or from scratch).
        case finishRestore = "FinishRestore"
        /// Peer manager: streams the image archive (server stream of ``Image``).
        case pullImage = "PullImage"
        /// zeropod-swift. Source shim, after a published live migration's dump ended without the
        /// target taking the pages (node.conf's `pages-transfer-timeout` passed, or CRIU failed):
        /// the node marks the Migration Failed with `migration_info.failure` and closes the
        /// container's page-server proxy at once (decision 0064). ``EvacRequest`` with
        /// `migration_uid` from the Evac answer; answers an ``EvacResponse`` (``EvacOutcome/failed``).
        case abortEvac = "AbortEvac"
    }
}

extension NodeAPI {
    /// `PodInfo`: which pod and container a request is about.
    public struct PodInfo: ProtobufTableMessage, Equatable {
        /// The pod's name.
        public var name = ""
        /// The pod's namespace.
        public var namespace = ""
        /// The container's name in the pod.
        public var containerName = ""
        /// The container's ports (those the activator listens on).
        public var ports: [Int32] = []

        /// Empty.
        public init() {}

        /// A pod info from its fields.
        public init(name: String, namespace: String, containerName: String, ports: [Int32] = []) {
            self.name = name
            self.namespace = namespace
            self.containerName = containerName
            self.ports = ports
        }

        /// The fields.
        public static let fields = ProtobufFieldTable<Self>(
            "zeropod.node.v1.PodInfo",
            [
                .string(1, \.name),
                .string(2, \.namespace),
                .string(3, \.containerName),
                .packedInt32s(4, \.ports),
            ]
        )
    }

    /// `MigrationInfo`: the container's side of a migration.
    public struct MigrationInfo: ProtobufTableMessage, Equatable {
        /// The container id whose image this is: the source container's in ``Method/prepareEvac`` and
        /// ``Method/evac``, the target container's in ``Method/restore`` and
        /// ``Method/finishRestore`` (the image is then under
        /// `NodeLayout.migrationDirectory(containerID:)`).
        public var imageID = ""
        /// Unused (the original's field 2).
        public var bundleDirectory = ""
        /// A live migration (memory pages on demand through the page server).
        public var liveMigration = false
        /// When the source stopped serving (the checkpoint's start).
        public var pausedAt: ProtobufTimestamp?
        /// When the target's restore started.
        public var restoreStart: ProtobufTimestamp?
        /// When the target's restore finished.
        public var restoreEnd: ProtobufTimestamp?
        /// The container's ports, from the source (a target without `ports-map` adopts them).
        public var ports: [Int32] = []
        /// zeropod-swift: the image carries the container's changed files (no `disable-migrate-data`).
        public var migrateData = false
        /// zeropod-swift: in ``Method/finishRestore``, why the target started from scratch instead
        /// (the Migration then ends Failed with this reason); empty after a restore from the image.
        /// In ``Method/abortEvac``, why the source's live dump ended without the target.
        public var failure = ""
        // Field 10 (`page_server_port`, a loopback TCP port) is reserved: the shim and the manager
        // meet through the container's page socket in the run folder instead (decision 0063).
        /// zeropod-swift (field 11): the `metadata.uid` of the Migration this call is about. The
        /// node answers it in ``Method/restore``'s response (and ``EvacResponse/migrationUID`` for
        /// ``Method/evac``); the shim sends it back in ``Method/finishRestore`` and
        /// ``Method/abortEvac``, and the node refuses a report about another Migration than the
        /// current one (decision 0065).
        public var migrationUID = ""

        /// Empty.
        public init() {}

        /// The fields.
        public static let fields = ProtobufFieldTable<Self>(
            "zeropod.node.v1.MigrationInfo",
            [
                .string(1, \.imageID),
                .string(2, \.bundleDirectory),
                .bool(3, \.liveMigration),
                .message(4, \.pausedAt),
                .message(5, \.restoreStart),
                .message(6, \.restoreEnd),
                .packedInt32s(7, \.ports),
                .bool(8, \.migrateData),
                .string(9, \.failure),
                .string(11, \.migrationUID),
            ]
        )
    }

    /// `EvacRequest`: a source shim's ``Method/prepareEvac`` and ``Method/evac``.
    public struct EvacRequest: ProtobufTableMessage, Equatable {
        /// The pod and container.
        public var podInfo: PodInfo?
        /// The migration's side of the container.
        public var migrationInfo: MigrationInfo?

        /// Empty.
        public init() {}

        /// A request from its parts.
        public init(podInfo: PodInfo, migrationInfo: MigrationInfo) {
            self.podInfo = podInfo
            self.migrationInfo = migrationInfo
        }

        /// The fields.
        public static let fields = ProtobufFieldTable<Self>(
            "zeropod.node.v1.EvacRequest",
            [
                .message(1, \.podInfo),
                .message(2, \.migrationInfo),
            ]
        )
    }

    /// What ``Method/prepareEvac`` decided (`EvacOutcome`, zeropod-swift).
    public enum EvacOutcome: Int32, Sendable, CaseIterable {
        /// A target claimed the Migration and is ready: hand the image over, then call ``Method/evac``.
        case claimed = 1
        /// No target claimed it in time (the Migration is Unclaimed): stop the container as usual.
        case unclaimed = 2
        /// There is no Migration for this pod (not being deleted, or no migration annotation).
        case noMigration = 3
        /// The Migration failed (for example a running container without `live-migrate`): stop
        /// the container as usual.
        case failed = 4
    }

    /// `EvacResponse`.
    public struct EvacResponse: ProtobufMessage, Equatable {
        /// What to do next (``Method/prepareEvac``); ``EvacOutcome/claimed`` for ``Method/evac``.
        public var outcome: EvacOutcome
        /// Why, for logs (the Migration's name, the timeout that passed).
        public var reason: String
        /// zeropod-swift (field 4): ``Method/evac``'s answer names the Migration's `metadata.uid`,
        /// which a later ``Method/abortEvac`` sends back (decision 0065).
        public var migrationUID: String

        /// A response.
        public init(outcome: EvacOutcome, reason: String = "", migrationUID: String = "") {
            self.outcome = outcome
            self.reason = reason
            self.migrationUID = migrationUID
        }

        /// Writes `empty` (the original's field 1, always present), `outcome`, `reason` and
        /// `migration_uid`.
        public func encode(into w: inout ProtobufWriter) {
            w.writeMessage(field: 1, encoded: [])
            w.writeInt32IfNotDefault(field: 2, outcome.rawValue)
            w.writeStringIfNotDefault(field: 3, reason)
            w.writeStringIfNotDefault(field: 4, migrationUID)
        }

        /// Decodes the message; unknown fields are skipped.
        /// - Throws: `ProtobufError.invalidValue` for a missing or unknown outcome.
        public init(decoding r: inout ProtobufReader) throws(ProtobufError) {
            let name = "zeropod.node.v1.EvacResponse"
            var outcome: Int32 = 0
            var reason = ""
            var uid = ""
            while let f = try r.nextField() {
                switch f.number {
                case 2: outcome = try f.int32(in: name)
                case 3: reason = try f.string(in: name)
                case 4: uid = try f.string(in: name)
                default: break
                }
            }
            guard let known = EvacOutcome(rawValue: outcome) else {
                throw .invalidValue(message: name, field: 2, value: Int64(outcome))
            }
            self.outcome = known
            self.reason = reason
            self.migrationUID = uid
        }
    }

    /// `RestoreRequest`: a target shim's ``Method/restore`` and ``Method/finishRestore``.
    public struct RestoreRequest: ProtobufTableMessage, Equatable {
        /// The pod and container.
        public var podInfo: PodInfo?
        /// The migration's side of the container (its id in `imageID`).
        public var migrationInfo: MigrationInfo?

        /// Empty.
        public init() {}

        /// A request from its parts.
        public init(podInfo: PodInfo, migrationInfo: MigrationInfo) {
            self.podInfo = podInfo
            self.migrationInfo = migrationInfo
        }

        /// The fields.
        public static let fields = ProtobufFieldTable<Self>(
            "zeropod.node.v1.RestoreRequest",
            [
                .message(1, \.podInfo),
                .message(2, \.migrationInfo),
            ]
        )
    }

    /// `RestoreResponse`: where the image is and what it holds.
    public struct RestoreResponse: ProtobufTableMessage, Equatable {
        /// The migration: `imageID` (the target container's id: the image folder), `liveMigration`,
        /// `ports`, `migrateData`, `pausedAt`.
        public var migrationInfo: MigrationInfo?

        /// Empty.
        public init() {}

        /// A response.
        public init(migrationInfo: MigrationInfo) {
            self.migrationInfo = migrationInfo
        }

        /// The fields.
        public static let fields = ProtobufFieldTable<Self>(
            "zeropod.node.v1.RestoreResponse",
            [
                .message(1, \.migrationInfo)
            ]
        )
    }

    /// `PullImageRequest`: which image, from which byte on (a resumed transfer), and the digest
    /// the puller expects.
    public struct PullImageRequest: ProtobufTableMessage, Equatable {
        /// The source container id (64 hex digits).
        public var imageID = ""
        /// zeropod-swift: the first byte of the archive to send (resume after a broken transfer).
        public var offset: Int64 = 0
        /// zeropod-swift: `sha256:<hex>` the puller read from the Migration; the server refuses
        /// when its archive has another one (a stale or replaced image).
        public var digest = ""
        /// zeropod-swift: at most this many bytes from `offset` (0: to the end). Pulling in windows
        /// gives the stream flow control, which ttrpc lacks: each window's chunks fit the client's
        /// buffer.
        public var length: Int64 = 0

        /// Empty.
        public init() {}

        /// A request from its fields.
        public init(imageID: String, offset: Int64 = 0, length: Int64 = 0, digest: String = "") {
            self.imageID = imageID
            self.offset = offset
            self.length = length
            self.digest = digest
        }

        /// The fields.
        public static let fields = ProtobufFieldTable<Self>(
            "zeropod.node.v1.PullImageRequest",
            [
                .string(1, \.imageID),
                .int64(2, \.offset),
                .string(3, \.digest),
                .int64(4, \.length),
            ]
        )
    }

    /// `Image`: one chunk of the compressed image archive.
    public struct Image: ProtobufMessage, Equatable {
        /// The chunk's bytes.
        public var imageData: [UInt8]

        /// A chunk.
        public init(imageData: [UInt8]) {
            self.imageData = imageData
        }

        /// Writes `image_data`.
        public func encode(into w: inout ProtobufWriter) {
            w.writeBytesIfNotDefault(field: 1, imageData)
        }

        /// Decodes the message; unknown fields are skipped.
        public init(decoding r: inout ProtobufReader) throws(ProtobufError) {
            var data: [UInt8] = []
            while let f = try r.nextField() {
                if f.number == 1 { data = Array(try f.bytes(in: "zeropod.node.v1.Image")) }
            }
            imageData = data
        }
    }
}

extension ProtobufFieldRule {
    /// `repeated int32`, written packed (proto3's default); read packed or not.
    public static func packedInt32s(_ number: Int, _ path: ProtobufFieldPath<Message, [Int32]>) -> Self {
        .custom(
            number,
            write: { m, n, w in
                w.writePackedVarints(field: n, m[keyPath: path].map { UInt64(bitPattern: Int64($0)) })
            },
            read: { m, f, name throws(ProtobufError) in
                for v in try f.packedVarints(in: name) {
                    m[keyPath: path].append(Int32(truncatingIfNeeded: Int64(bitPattern: v)))
                }
            }
        )
    }
}
