// swift-tools-version: 6.0
// libFuzzer targets for every hand-written decoder of zeropod-swift (scripts/fuzz.sh builds them with
// `swift build -c release -Xswiftc -sanitize=fuzzer,address` into .build-fuzz/ and runs them). A package of
// its own so that the sanitizer flags never reach the project's normal build; it depends on the
// project by path. Each target is one `LLVMFuzzerTestOneInput` (no `main`: libFuzzer provides it).
import Foundation
import PackageDescription

/// The project's package identity: the name of the folder it was cloned into, lower-cased.
let project = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().lastPathComponent
    .lowercased()

func zp(_ product: String) -> Target.Dependency { .product(name: product, package: project) }

/// A fuzz target: its one file is a library-style file (`-parse-as-library`; without it SwiftPM
/// compiles a single file as top-level code, whose empty `main` exits 0 without fuzzing). SwiftPM
/// still links the symbol `<Target>_main` as `main`: each target defines it with `@_cdecl` and hands
/// its `LLVMFuzzerTestOneInput` to libFuzzer's driver (FuzzSupport's `runLibFuzzer`).
func fuzzTarget(_ name: String, _ dependencies: [Target.Dependency]) -> Target {
    .executableTarget(
        name: name,
        dependencies: ["FuzzSupport"] + dependencies,
        swiftSettings: [.unsafeFlags(["-parse-as-library"])]
    )
}

let package = Package(
    name: "zeropod-swift-fuzz",
    dependencies: [
        .package(path: ".."),
        .package(url: "https://github.com/apple/swift-nio", from: "2.81.0"),
        .package(url: "https://github.com/apple/swift-nio-http2", from: "1.46.0"),
    ],
    targets: [
        .target(name: "CLibFuzzer"),
        .target(name: "FuzzSupport", dependencies: ["CLibFuzzer", zp("ZPCore")]),
        fuzzTarget("FuzzProtobuf", [zp("ZPCore")]),
        fuzzTarget("FuzzTTRPC", [zp("ZPCore")]),
        fuzzTarget("FuzzCRIU", [zp("ZPCore"), zp("ZPCheckpoint")]),
        fuzzTarget("FuzzAPI", [zp("ZPCore"), zp("ZPAPI")]),
        fuzzTarget("FuzzProbeHTTP", [zp("ZPActivator"), .product(name: "NIOCore", package: "swift-nio")]),
        fuzzTarget(
            "FuzzProbeGRPC",
            [
                zp("ZPActivator"), .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHPACK", package: "swift-nio-http2"),
            ]
        ),
        fuzzTarget("FuzzNodeSettings", [zp("ZPCore")]),
        fuzzTarget("FuzzAnnotations", [zp("ZPCore")]),
    ],
    swiftLanguageModes: [.v6]
)
