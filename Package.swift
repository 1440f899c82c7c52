// swift-tools-version: 6.0
// Layers (docs/architecture.md): ZPCore is pure; mechanisms (ZPBPF, ZPCheckpoint, ZPActivator)
// import ZPCore and their system libraries; ZPShim/ZPManager compose; executables are thin.
import PackageDescription

let strict: [SwiftSetting] = [.enableUpcomingFeature("ExistentialAny")]

let package = Package(
    name: "zeropod-swift",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "ZPCore", targets: ["ZPCore"]),
        .library(name: "ZPTTRPC", targets: ["ZPTTRPC"]),
        .library(name: "ZPShim", targets: ["ZPShim"]),
        .executable(name: "containerd-shim-zeropod-v2", targets: ["containerd-shim-zeropod-v2"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio", from: "2.81.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-system", from: "1.4.0"),
    ],
    targets: [
        // MARK: core (standard library only)
        .target(name: "ZPCore", swiftSettings: strict),
        .testTarget(name: "ZPCoreTests", dependencies: ["ZPCore"], resources: [.copy("Fixtures")], swiftSettings: strict),

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
        .testTarget(name: "ZPTTRPCTests", dependencies: ["ZPTTRPC"], swiftSettings: strict),

        // MARK: containerd shim v2 (composition)
        .target(name: "CZPShim"),
        .target(
            name: "ZPShim",
            dependencies: [
                "ZPCore", "ZPTTRPC", "CZPShim",
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
        .testTarget(name: "ZPShimTests", dependencies: ["ZPShim", "ZPTTRPC", .product(name: "NIOPosix", package: "swift-nio")], exclude: ["Fixtures"], swiftSettings: strict),
    ],
    swiftLanguageModes: [.v6]
)
