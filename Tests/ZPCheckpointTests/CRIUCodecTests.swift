import SystemPackage
import Testing
import ZPCore
import ZPTestSupport

@testable import ZPCheckpoint

/// The folder with rpc.proto, the protoc text inputs and the golden .bin files.
let fixturesDir = FilePath(#filePath).removingLastComponent().appending("Fixtures")

func readFixture(_ name: String) throws -> [UInt8] {
    let fd = try FileDescriptor.open(fixturesDir.appending(name), .readOnly)
    defer { try? fd.close() }
    var out: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 4096)
    while true {
        let n = try chunk.withUnsafeMutableBytes { try fd.read(into: $0) }
        if n == 0 { return out }
        out += chunk[0..<n]
    }
}

@Suite("CRIU RPC codec against protoc golden bytes")
struct CRIUCodecTests {
    static func dumpRequest() -> CRIURequest {
        var o = CRIUOptions()
        o.pid = 4242
        o.leaveRunning = false
        o.externalUnixSockets = true
        o.shellJob = false
        o.fileLocks = true
        o.logLevel = 4
        o.logFile = "dump.log"
        o.notifyScripts = true
        o.root = "/run/zp/rootfs"
        o.workDirFD = 7
        o.externalMountMap = [CRIUKeyValue(key: "/etc/hosts", value: "/etc/hosts")]
        o.manageCgroups = true
        o.manageCgroupsMode = .soft
        o.external = ["net[4026532290]:extRootNetNS", "mnt[/data]:data"]
        o.freezeCgroup = "/sys/fs/cgroup/freezer/zp"
        o.tcpSkipInFlight = true
        o.orphanPtsMaster = true
        o.tcpClose = true
        o.networkLock = .skip
        o.imagesDir = "/var/lib/zp/img"
        return CRIURequest(type: .dump, options: o)
    }

    static func restoreRequest() -> CRIURequest {
        var o = CRIUOptions()
        o.imagesDirFD = 5
        o.evasiveDevices = true
        o.logLevel = 2
        o.logFile = "restore.log"
        o.pageServer = CRIUPageServerInfo(address: "127.0.0.1", port: 27000)
        o.root = "/run/zp/criu-root"
        o.cgroupRoots = [CRIUCgroupRoot(path: "/zp/ctr"), CRIUCgroupRoot(controller: "memory", path: "/zp/mem")]
        o.restoreSibling = true
        o.inheritFDs = [CRIUInheritFD(key: "extRootNetNS", fd: 4), CRIUInheritFD(key: "pipe:[12345]", fd: 5)]
        o.emptyNamespaces = 0x4000_0000
        o.joinNamespaces = [CRIUJoinNamespace(namespace: "ipc", namespaceFile: "/proc/1/ns/ipc")]
        o.lazyPages = true
        o.statusFD = 9
        o.networkLock = .skip
        return CRIURequest(type: .restore, options: o)
    }

    @Test func versionRequest_matchesProtoc() throws {
        #expect(CRIURequest(type: .version).encoded() == (try readFixture("req_version.bin")))
    }

    @Test func featureCheckRequest_matchesProtoc() throws {
        let r = CRIURequest(type: .featureCheck, features: CRIUFeatures(memoryTracking: true, lazyPages: true))
        #expect(r.encoded() == (try readFixture("req_feature_check.bin")))
    }

    @Test func notifyReply_matchesProtoc() throws {
        #expect(CRIURequest(type: .notify, notifySuccess: true).encoded() == (try readFixture("req_notify_reply.bin")))
    }

    @Test func dumpRequest_withEveryContainerOption_matchesProtoc() throws {
        let golden = try readFixture("req_dump.bin")
        #expect(Self.dumpRequest().encoded() == golden)
        #expect(try CRIURequest(decoding: golden) == Self.dumpRequest())
    }

    @Test func restoreRequest_withInheritFDsAndCgroupRoots_matchesProtoc() throws {
        let golden = try readFixture("req_restore.bin")
        #expect(Self.restoreRequest().encoded() == golden)
        #expect(try CRIURequest(decoding: golden) == Self.restoreRequest())
    }

    @Test func imagesDirFD_isAlwaysWritten_evenMinusOne() {
        let bytes = CRIUOptions().encoded()
        #expect(bytes == [0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01])
    }

    @Test func restoreResponse_decodesPid() throws {
        let r = try CRIUResponse(decoding: try readFixture("resp_restore.bin"))
        #expect(r.type == .restore && r.success && r.restoredPID == 31337)
        var expected = CRIUResponse(type: .restore, success: true)
        expected.restoredPID = 31337
        #expect(expected.encoded() == (try readFixture("resp_restore.bin")))
    }

    @Test func notifyResponse_decodesScriptAndPid() throws {
        let r = try CRIUResponse(decoding: try readFixture("resp_notify.bin"))
        #expect(r.type == .notify && r.notify == CRIUNotify(script: "post-restore", pid: 31337))
    }

    @Test func errorResponse_decodesErrnoAndMessage() throws {
        let r = try CRIUResponse(decoding: try readFixture("resp_error.bin"))
        #expect(!r.success && r.crErrno == 2 && r.crErrmsg == "Can't open images dir")
    }

    @Test func versionResponse_decodes() throws {
        let r = try CRIUResponse(decoding: try readFixture("resp_version.bin"))
        #expect(r.version == CRIUVersion(major: 4, minor: 2, gitID: "abc", sublevel: 1))
        #expect(r.version?.number == 40201)
    }

    @Test func response_withoutSuccess_isRejected() {
        #expect(throws: ProtobufError.missingRequiredField(message: "criu_resp", field: 2)) {
            try CRIUResponse(decoding: [0x08, 0x01])
        }
    }

    @Test func restoreAnswer_withoutPid_isRejected() {
        #expect(throws: ProtobufError.missingRequiredField(message: "criu_restore_resp", field: 1)) {
            try CRIUResponse(decoding: [0x08, 0x02, 0x10, 0x01, 0x22, 0x00])
        }
    }

    @Test func unknownRequestType_isRejected() {
        #expect(throws: ProtobufError.invalidValue(message: "criu_resp", field: 1, value: 99)) {
            try CRIUResponse(decoding: [0x08, 99, 0x10, 0x01])
        }
    }

    /// Every prefix of a golden response decodes (at a field boundary) or throws a
    /// ``ProtobufError``; cut inside its last field it always throws.
    @Test func truncatedResponse_throwsInsteadOfCrashing() throws {
        let golden = try readFixture("resp_notify.bin")
        try #require(golden.count > 2)
        _ = try CRIUResponse(decoding: golden)
        var rejected = 0
        for cut in 1..<golden.count {
            do {
                _ = try CRIUResponse(decoding: Array(golden[0..<cut]))
            } catch let error as ProtobufError {
                _ = error
                rejected += 1
            } catch {
                Issue.record("cut at \(cut): not a ProtobufError: \(error)")
            }
        }
        #expect(throws: ProtobufError.self, "cut inside the last field") {
            try CRIUResponse(decoding: Array(golden.dropLast()))
        }
        #expect(rejected > 0)
    }

    /// Re-runs protoc when it is installed, so the .bin files cannot drift from rpc.proto.
    @Test(.enabled(if: Privileges.hasTool("protoc"), "needs protoc (scripts/setup.sh installs protobuf-compiler)"))
    func goldenFiles_matchProtocNow() throws {
        for (txt, msg) in [("req_dump", "criu_req"), ("req_restore", "criu_req"), ("resp_notify", "criu_resp")] {
            let text = try readFixture("\(txt).txt")
            let out = try run(["protoc", "--encode=\(msg)", "-I", fixturesDir.string, "rpc.proto"], input: text)
                .checked().output
            #expect(out == (try readFixture("\(txt).bin")), "\(txt)")
        }
    }
}

@Suite("CRIU RPC decoder robustness")
struct CRIUDecoderFuzzTests {
    /// Random and mutated inputs must decode or throw `ProtobufError`, never trap.
    @Test func randomAndMutatedBytes_neverCrash() throws {
        var rng = SystemRandomNumberGenerator()
        let seeds = try [
            "resp_restore.bin", "resp_notify.bin", "resp_error.bin", "resp_version.bin", "req_dump.bin",
            "req_restore.bin",
        ].map(readFixture)
        var decoded = 0
        var rejected = 0
        for i in 0..<20_000 {
            var bytes: [UInt8]
            if i % 2 == 0 {
                bytes = (0..<Int.random(in: 0...64, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            } else {
                bytes = seeds[i % seeds.count]
                for _ in 0..<Int.random(in: 1...4, using: &rng) where !bytes.isEmpty {
                    bytes[Int.random(in: 0..<bytes.count, using: &rng)] = UInt8.random(in: 0...255, using: &rng)
                }
            }
            // Decodes or throws a ProtobufError; what decodes survives a round trip unchanged.
            do {
                let response = try CRIUResponse(decoding: bytes)
                #expect(try CRIUResponse(decoding: response.encoded()) == response, "\(bytes)")
                decoded += 1
            } catch let error as ProtobufError {
                _ = error
                rejected += 1
            } catch {
                Issue.record("\(bytes): not a ProtobufError: \(error)")
            }
            if let request = try? CRIURequest(decoding: bytes) {
                #expect(try CRIURequest(decoding: request.encoded()) == request, "\(bytes)")
            }
        }
        print("decoder fuzz: \(decoded) decoded, \(rejected) rejected")
        // Both outcomes are exercised (mutated seeds mostly decode, random bytes mostly do not).
        #expect(decoded > 0 && rejected > 0)
    }
}
