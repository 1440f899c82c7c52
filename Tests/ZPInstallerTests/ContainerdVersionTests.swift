// containerd's version over its socket (the Version service, decision 0038) from the real 1.6 and
// 2.x, the answer's decoding, and which source the lookup takes.
import Foundation
import Testing
import ZPCore
import ZPTestSupport

@testable import ZPInstaller

/// Answers for programs, for the lookup's fallback.
struct FakeCommands: HostCommands {
    var answers: [String: ZPInstaller.CommandResult]
    func run(_ program: String, _ arguments: [String], timeout: Double) -> ZPInstaller.CommandResult {
        answers[program] ?? ZPInstaller.CommandResult(status: -1, output: "", errors: "\(program): not found on PATH")
    }
    func which(_ program: String) -> String? { answers[program] == nil ? nil : program }
}

@Suite struct ContainerdVersionDecodingTests {
    @Test func versionResponse_decodes_andSkipsUnknownFields() throws {
        var w = ProtobufWriter()
        w.writeString(field: 1, "v2.1.9")
        w.writeString(field: 2, "abc123")
        w.writeString(field: 7, "from the future")
        #expect(try ContainerdVersionService.decode(w.bytes) == .init(version: "v2.1.9", revision: "abc123"))
        #expect(try ContainerdVersionService.decode([]) == .init(version: "", revision: ""))
    }

    @Test func lookup_givenFirst_thenAnExplicitBinary_thenTheSocket_thenTheDefaultBinary() async throws {
        let commands = FakeCommands(answers: [
            "containerd": ZPInstaller.CommandResult(
                status: 0,
                output: "containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1\n"
            ),
            "/x/containerd": ZPInstaller.CommandResult(
                status: 0,
                output: "containerd github.com/containerd/containerd/v2 v2.1.9\n"
            ),
        ])
        let missing = "/tmp/\(uniqueName("zpnosock")).sock"
        let (given, s1) = try await ContainerdVersionLookup.resolve(
            given: "1.7.22",
            binary: "/x/containerd",
            socket: missing,
            flavour: .containerd,
            commands: commands,
            timeout: 5
        )
        #expect(given.text == "1.7.22" && s1 == .given)
        let (binary, s2) = try await ContainerdVersionLookup.resolve(
            given: nil,
            binary: "/x/containerd",
            socket: missing,
            flavour: .containerd,
            commands: commands,
            timeout: 5
        )
        #expect(binary.text == "2.1.9" && s2 == .binary("/x/containerd"))
        let (fallback, s3) = try await ContainerdVersionLookup.resolve(
            given: nil,
            binary: nil,
            socket: missing,
            flavour: .containerd,
            commands: commands,
            timeout: 5
        )
        #expect(fallback.text == "1.6.20~ds1" && s3 == .binary("containerd"))
        let error = await #expect(throws: InstallerError.self) {
            _ = try await ContainerdVersionLookup.resolve(
                given: nil,
                binary: nil,
                socket: missing,
                flavour: .k3s,
                commands: commands,
                timeout: 5
            )
        }
        #expect(
            error?.description.contains(missing) == true && error?.description.contains("--containerd-version") == true,
            "\(String(describing: error))"
        )
        await #expect(throws: InstallerError.self) {
            _ = try await ContainerdVersionLookup.resolve(
                given: "soon",
                binary: nil,
                socket: missing,
                flavour: .containerd,
                commands: commands,
                timeout: 5
            )
        }
    }
}

@Suite(.serialized, .enabled(if: Privileges.isRoot, "starts a private containerd (root)"))
struct ContainerdVersionSocketTests {
    @Test(arguments: ContainerdFlavor.all)
    func theRealContainerd_answersItsVersionOverTheSocket(_ flavor: ContainerdFlavor) async throws {
        let containerd = try PrivateContainerd(flavor: flavor, tag: "ver")
        defer { containerd.stop() }
        let answer = try await ContainerdVersionService.ask(socket: containerd.socket)
        let printed = try sh([flavor.binDirectory + "/containerd", "--version"])
        print(
            "[zpinst] \(flavor.name): Version service \(answer); --version: \(printed.trimmingCharacters(in: .newlines))"
        )
        let release = try #require(ContainerdRelease(versionText: answer.version))
        let binary = try ContainerdRelease(versionOutput: printed)
        #expect(
            release.major == binary.major && release.minor == binary.minor && release.patch == binary.patch,
            "socket \(answer.version) vs binary \(printed)"
        )
        #expect(release.major == flavor.majorVersion)
        let (looked, source) = try await ContainerdVersionLookup.resolve(
            given: nil,
            binary: nil,
            socket: containerd.socket,
            flavour: .containerd,
            commands: LocalCommands(),
            timeout: 10
        )
        #expect(looked == release && source == .socket(containerd.socket))
    }
}
