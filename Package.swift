// swift-tools-version: 6.0
// Layers (docs/architecture.md): ZPCore is pure; ZPSystem is the one system layer (syscall funnel,
// SystemError, descriptor owners, files, mountinfo, netns threads, clocks); mechanisms (ZPBPF,
// ZPCheckpoint, ZPActivator) import ZPCore, ZPSystem and their system libraries; ZPAPI (the shims'
// wire messages and clients) sits on ZPTTRPC; ZPShim/ZPManager compose; executables are thin.
import PackageDescription

let strict: [SwiftSetting] = [.enableUpcomingFeature("ExistentialAny")]

let package = Package(
    name: "zeropod-swift",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "ZPCore", targets: ["ZPCore"]),
        .library(name: "ZPSystem", targets: ["ZPSystem"]),
        .library(name: "ZPBPF", targets: ["ZPBPF"]),
        .library(name: "ZPCheckpoint", targets: ["ZPCheckpoint"]),
        .executable(name: "zeropod-checkpoint-bench", targets: ["zeropod-checkpoint-bench"]),
        .library(name: "ZPActivator", targets: ["ZPActivator"]),
        .library(name: "ZPScaleDown", targets: ["ZPScaleDown"]),
        .library(name: "ZPTTRPC", targets: ["ZPTTRPC"]),
        .library(name: "ZPAPI", targets: ["ZPAPI"]),
        .library(name: "ZPShim", targets: ["ZPShim"]),
        .executable(name: "containerd-shim-zeropod-v2", targets: ["containerd-shim-zeropod-v2"]),
        .executable(name: "zeropod", targets: ["zeropod"]),
        .library(name: "ZPKube", targets: ["ZPKube"]),
        .library(name: "ZPGRPC", targets: ["ZPGRPC"]),
        .library(name: "ZPInstaller", targets: ["ZPInstaller"]),
        .executable(name: "zeropod-installer", targets: ["zeropod-installer"]),
        .library(name: "ZPManager", targets: ["ZPManager"]),
        .executable(name: "zeropod-manager", targets: ["zeropod-manager"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio", from: "2.81.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-system", from: "1.4.0"),
        .package(url: "https://github.com/apple/swift-nio-http2", from: "1.46.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.0"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.0.0"),
        .package(url: "https://github.com/apple/swift-certificates", from: "1.21.0"),
        .package(url: "https://github.com/apple/swift-crypto", "3.12.3"..<"5.0.0"),
        .package(url: "https://github.com/apple/swift-asn1", from: "1.1.0"),
        .package(url: "https://github.com/LebJe/TOMLKit", from: "0.6.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
    ],
    targets: [
        // MARK: test helpers shared by every test target and the test kits (not part of any product):
        // commands, polling, privileges, netns/veth fixtures, sockets, PrivateContainerd, bpftool,
        // a ttrpc test server.
        .target(
            name: "ZPTestSupport",
            dependencies: [
                "ZPCore", "ZPSystem", "ZPTTRPC", .product(name: "SystemPackage", package: "swift-system"),
                .product(name: "NIOPosix", package: "swift-nio"), .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),

        // MARK: core (standard library only)
        .target(name: "ZPCore", swiftSettings: strict),
        .testTarget(name: "ZPCoreTests", dependencies: ["ZPCore", "ZPTestSupport"], resources: [.copy("Fixtures")], swiftSettings: strict),

        // MARK: system layer (standard library, Glibc, SystemPackage; its own C target for GNU calls)
        .target(name: "CZPSystem", cSettings: [.define("_GNU_SOURCE")]),
        .target(
            name: "ZPSystem",
            dependencies: ["CZPSystem", .product(name: "SystemPackage", package: "swift-system")],
            swiftSettings: strict
        ),
        .testTarget(
            name: "ZPSystemTests",
            dependencies: ["ZPSystem", "ZPTestSupport", .product(name: "SystemPackage", package: "swift-system")],
            swiftSettings: strict
        ),

        // MARK: mechanisms
        // CZPBPF: libbpf re-export, LIBBPF_OPTS/print-callback/setns helpers, the embedded BPF object.
        .target(
            name: "CZPBPF",
            cSettings: [.define("_GNU_SOURCE")],
            linkerSettings: [.linkedLibrary("bpf"), .linkedLibrary("elf"), .linkedLibrary("z")]
        ),
        .target(
            name: "ZPBPF",
            dependencies: ["CZPBPF", "ZPCore", "ZPSystem", .product(name: "SystemPackage", package: "swift-system")],
            swiftSettings: strict
        ),
        .testTarget(
            name: "ZPBPFTests", dependencies: ["ZPBPF", "CZPBPF", "ZPCore", "ZPSystem", "ZPTestSupport"], swiftSettings: strict),
        // Benchmark: `swift run -c release zpbpf-bench` (root) prints ZPBPF's figures.
        .executableTarget(
            name: "zpbpf-bench",
            dependencies: ["ZPBPF", "ZPSystem", .product(name: "SystemPackage", package: "swift-system")],
            swiftSettings: strict
        ),

        // MARK: ZPCheckpoint (CRIU RPC client, container checkpoint/restore)
        .target(
            name: "ZPCheckpoint",
            dependencies: ["ZPCore", "ZPSystem", .product(name: "SystemPackage", package: "swift-system")],
            swiftSettings: strict
        ),
        .target(
            name: "ZPCheckpointTestKit",
            dependencies: [
                "ZPCheckpoint", "ZPSystem", "ZPTestSupport", .product(name: "SystemPackage", package: "swift-system"),
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "ZPCheckpointTests",
            dependencies: [
                "ZPCheckpoint", "ZPCheckpointTestKit", "ZPCore", "ZPSystem", "ZPTestSupport",
                .product(name: "SystemPackage", package: "swift-system"),
            ],
            exclude: ["Fixtures"],
            swiftSettings: strict
        ),
        .executableTarget(
            name: "zeropod-checkpoint-bench",
            dependencies: [
                "ZPCheckpoint", "ZPCheckpointTestKit", "ZPSystem", "ZPTestSupport",
                .product(name: "SystemPackage", package: "swift-system"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: strict
        ),

        // MARK: ZPActivator (probes, single-flight restore, proxy)
        .target(
            name: "ZPActivator",
            dependencies: [
                "ZPCore", "ZPSystem",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHPACK", package: "swift-nio-http2"),
                .product(name: "SystemPackage", package: "swift-system"),
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "ZPActivatorTests",
            dependencies: [
                "ZPActivator", "ZPSystem", "ZPTestSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHPACK", package: "swift-nio-http2"),
                .product(name: "NIOHTTP2", package: "swift-nio-http2"),
                .product(name: "SystemPackage", package: "swift-system"),
            ],
            swiftSettings: strict
        ),
        // MARK: benchmarks (issue 7): `make bench` runs it through scripts/bench.sh
        .executableTarget(
            name: "zpbench",
            dependencies: [
                "ZPCore", "ZPCheckpoint", "ZPSystem", .product(name: "SystemPackage", package: "swift-system"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "bench/Harness", swiftSettings: strict),
        .testTarget(name: "zpbenchTests", dependencies: ["zpbench", "ZPTestSupport"], swiftSettings: strict),

        // MARK: ZPScaleDown (glue: the activator's listeners behind ZPBPF's redirect, in the pod netns)
        .target(
            name: "ZPScaleDown",
            dependencies: [
                "ZPCore", "ZPActivator", "ZPBPF", "ZPSystem",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "SystemPackage", package: "swift-system"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        // The driver with fakes of its protocols: milliseconds, no root.
        .testTarget(
            name: "ZPScaleDownDriverTests",
            dependencies: ["ZPScaleDown", "ZPCore", .product(name: "Logging", package: "swift-log")],
            swiftSettings: strict
        ),
        .testTarget(
            name: "ZPScaleDownTests",
            dependencies: [
                "ZPScaleDown", "ZPActivator", "ZPBPF", "ZPSystem", "ZPTestSupport",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "SystemPackage", package: "swift-system"),
            ],
            swiftSettings: strict
        ),
        // MARK: ttrpc transport (SwiftNIO over unix sockets; codec in ZPCore)
        .target(
            name: "ZPTTRPC",
            dependencies: [
                "ZPCore",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        .testTarget(name: "ZPTTRPCTests", dependencies: ["ZPTTRPC", "ZPTestSupport"], swiftSettings: strict),

        // MARK: the shims' wire API (messages and typed clients; imports no shim)
        .target(
            name: "ZPAPI",
            dependencies: ["ZPCore", "ZPTTRPC", .product(name: "NIOCore", package: "swift-nio")],
            swiftSettings: strict
        ),
        .testTarget(
            name: "ZPAPITests",
            dependencies: [
                "ZPAPI", "ZPCore", "ZPTTRPC", "ZPTestSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            exclude: ["Fixtures"],
            swiftSettings: strict
        ),

        // MARK: migration image archives (issue 16, decision 0050): zstd over a record stream,
        // written by the source shim, extracted by the target shim (libzstd behind CZstd).
        .systemLibrary(name: "CZstd", pkgConfig: "libzstd", providers: [.apt(["libzstd-dev"])]),
        .target(
            name: "ZPImageArchive",
            dependencies: ["CZstd", "ZPCore", "ZPSystem", .product(name: "SystemPackage", package: "swift-system")],
            swiftSettings: strict
        ),
        .testTarget(
            name: "ZPImageArchiveTests",
            dependencies: ["ZPImageArchive", "ZPCore", "ZPTestSupport"],
            swiftSettings: strict
        ),

        // MARK: containerd shim v2 (composition)
        .target(name: "CZPShim"),
        .target(
            name: "ZPShim",
            dependencies: [
                "ZPCore", "ZPSystem", "ZPAPI", "ZPTTRPC", "CZPShim", "ZPCheckpoint", "ZPBPF", "ZPActivator", "ZPScaleDown",
                "ZPImageArchive",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "SystemPackage", package: "swift-system"),
            ],
            // A file sees only the members of modules it imports itself: no full-Foundation API
            // reached through another file's import (decision 0061).
            swiftSettings: strict + [.enableUpcomingFeature("MemberImportVisibility")]
        ),
        // Task API edge cases through the real TaskService with a fake runc; a target of its own
        // because runc calls go through the shim's process-wide `wait4(-1)` reaper.
        .testTarget(
            name: "ZPShimTaskTests",
            dependencies: [
                "ZPShim", "ZPAPI", "ZPCore", "ZPSystem", "ZPTTRPC",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "SystemPackage", package: "swift-system"),
            ],
            swiftSettings: strict
        ),
        .executableTarget(
            name: "containerd-shim-zeropod-v2",
            dependencies: ["ZPShim"],
            swiftSettings: strict
        ),
        .testTarget(
            name: "ZPShimTests",
            dependencies: [
                "ZPShim", "ZPAPI", "ZPSystem", "ZPTTRPC", "ZPKube", "KubeAPIDouble", "ZPTestSupport",
                "ZPActivator", "ZPBPF", "ZPImageArchive", "ZPCRITestBed", "ZPManager",
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ],
            swiftSettings: strict
        ),

        // MARK: the `zeropod` CLI (commands in ZPCLI; the executable only calls it)
        .target(
            name: "ZPCLI",
            dependencies: [
                "ZPCore", "ZPSystem", "ZPAPI", "ZPInstaller",
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "SystemPackage", package: "swift-system"),
            ],
            swiftSettings: strict
        ),
        .executableTarget(name: "zeropod", dependencies: ["ZPCLI"], swiftSettings: strict),
        .testTarget(
            name: "ZPCLITests",
            dependencies: [
                "ZPCLI", "ZPAPI", "ZPCore", "ZPTTRPC", "ZPTestSupport", "ZPInstaller",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: strict
        ),

        // MARK: ZPKube (Kubernetes API client on async-http-client) and its API server double
        .target(
            name: "ZPKube",
            dependencies: [
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Yams", package: "Yams"),
            ],
            swiftSettings: strict
        ),
        // A Kubernetes API server double for tests (not part of any product): HTTPS, bearer tokens,
        // resourceVersions, watches, the patch types, the resize subresource (decision 0021).
        .target(
            name: "KubeAPIDouble",
            dependencies: [
                "ZPKube",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Yams", package: "Yams"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "ZPKubeTests",
            dependencies: ["ZPKube", "KubeAPIDouble", "ZPTestSupport", .product(name: "NIOCore", package: "swift-nio")],
            swiftSettings: strict
        ),
        // MARK: gRPC unary calls over HTTP/2 on a unix socket (containerd's API: CRI, Version),
        // hand-written on SwiftNIO's HTTP/2 (decisions 0026, 0038); messages are the callers'.
        .target(
            name: "ZPGRPC",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP2", package: "swift-nio-http2"),
                .product(name: "NIOHPACK", package: "swift-nio-http2"),
            ],
            swiftSettings: strict
        ),
        // MARK: installer and node checks (issue 13): containerd config rewriting, files, restart,
        // uninstall; the checks behind `zeropod doctor`. Pure planning, file and process work at the edge.
        .target(
            name: "ZPInstaller",
            dependencies: [
                "ZPCore", "ZPSystem", "ZPBPF", "ZPCheckpoint", "ZPGRPC",
                .product(name: "TOMLKit", package: "TOMLKit"),
                .product(name: "SystemPackage", package: "swift-system"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: strict
        ),
        .executableTarget(name: "zeropod-installer", dependencies: ["ZPInstaller"], swiftSettings: strict),
        // MARK: ZPManager (issue 12): the node manager — shim discovery and status subscriptions,
        // Prometheus metrics, status labels, events and in-place resize on ZPKube; pure planners.
        // Never ZPShim or ZPBPF (decision 0029).
        .target(
            name: "ZPManager",
            dependencies: [
                "ZPCore", "ZPSystem", "ZPTTRPC", "ZPAPI", "ZPKube",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"), .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "SystemPackage", package: "swift-system"),
            ],
            swiftSettings: strict
        ),
        .executableTarget(name: "zeropod-manager", dependencies: ["ZPManager"], swiftSettings: strict),
        // A status service without a shim (tests and the benchmark): ZPTTRPC's server + ZPAPI's messages.
        .target(
            name: "ZPManagerTestKit",
            dependencies: [
                "ZPAPI", "ZPCore", "ZPTTRPC",
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        // `make bench-manager`: manager RSS/CPU with N idle fake shims and a burst of phase changes.
        .executableTarget(
            name: "zeropod-manager-bench",
            dependencies: [
                "ZPManager", "ZPManagerTestKit", "ZPAPI", "ZPKube", "KubeAPIDouble",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "ZPManagerTests",
            dependencies: [
                "ZPManager", "ZPManagerTestKit", "ZPAPI", "ZPKube", "KubeAPIDouble", "ZPCore", "ZPTTRPC", "ZPTestSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Yams", package: "Yams"),
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "ZPInstallerTests",
            dependencies: ["ZPInstaller", "ZPTestSupport", .product(name: "SystemPackage", package: "swift-system")],
            resources: [.copy("Fixtures")],
            swiftSettings: strict
        ),

        // MARK: the CRI test bed (issue 18): containerd's CRI plugin driven as kubelet drives it
        .target(
            name: "ZPCRITestBed",
            dependencies: [
                "ZPCore", "ZPTestSupport", "ZPGRPC",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "ZPCRITests",
            dependencies: [
                "ZPCRITestBed", "ZPTestSupport", "ZPCore", "ZPAPI", "ZPShim", "ZPSystem",
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            exclude: ["Fixtures"],
            swiftSettings: strict
        ),
        // The images (make images) run through the CRI test bed: the installer as the DaemonSet's init
        // container, the manager as its main container (issue 13, item 4).
        .testTarget(
            name: "ZPImageTests",
            dependencies: [
                "ZPCRITestBed", "ZPTestSupport", "ZPCore", "ZPAPI", "ZPInstaller", "ZPManagerTestKit", "KubeAPIDouble",
                "ZPKube", "ZPShim",
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: strict
        ),
    ],
    swiftLanguageModes: [.v6]
)
