// swift-tools-version: 6.0
// libFuzzer targets for every hand-written decoder of zeropod-swift (scripts/fuzz.sh builds them with
// `swift build -c release -Xswiftc -sanitize=fuzzer,address` into .build-fuzz/ and runs them). A package of
// its own so that the sanitizer flags never reach the project's normal build; it depends on the
// project by path. Each target is one `LLVMFuzzerTestOneInput` (no `main`: libFuzzer provides it).
import Foundation
import PackageDescription

/// The project's package identity: the name of the folder it was cloned into, lower-cased.
let project = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().lastPathComponent.lowercased()

func zp(_ product: String) -> Target.Dependency { .product(name: product, package: project) }

let package = Package(
    name: "zeropod-swift-fuzz",
    dependencies: [
        .package(path: ".."),
        .package(url: "https://github.com/apple/swift-nio", from: "2.81.0"),
        .package(url: "https://github.com/apple/swift-nio-http2", from: "1.46.0"),
    ],
    targets: [
        .target(name: "FuzzSupport", dependencies: [zp("ZPCore")]),
        .executableTarget(name: "FuzzProtobuf", dependencies: ["FuzzSupport", zp("ZPCore")]),
        .executableTarget(name: "FuzzTTRPC", dependencies: [zp("ZPCore")]),
        .executableTarget(name: "FuzzCRIU", dependencies: ["FuzzSupport", zp("ZPCore"), zp("ZPCheckpoint")]),
        .executableTarget(name: "FuzzAPI", dependencies: ["FuzzSupport", zp("ZPCore"), zp("ZPAPI")]),
        .executableTarget(
            name: "FuzzProbeHTTP",
            dependencies: [zp("ZPActivator"), .product(name: "NIOCore", package: "swift-nio")]
        ),
        .executableTarget(
            name: "FuzzProbeGRPC",
            dependencies: [
                zp("ZPActivator"), .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHPACK", package: "swift-nio-http2"),
            ]
        ),
        .executableTarget(name: "FuzzNodeSettings", dependencies: [zp("ZPCore")]),
        .executableTarget(name: "FuzzAnnotations", dependencies: [zp("ZPCore")]),
    ],
    swiftLanguageModes: [.v6]
)
