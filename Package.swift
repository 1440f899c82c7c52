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

        // MARK: benchmarks (issue 7): `make bench` runs it through scripts/bench.sh
        .executableTarget(
            name: "zpbench",
            dependencies: ["ZPCore", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            path: "bench/Harness", swiftSettings: strict),
        .testTarget(name: "zpbenchTests", dependencies: ["zpbench"], swiftSettings: strict),
    ],
    swiftLanguageModes: [.v6]
)
