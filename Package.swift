// swift-tools-version:6.0
import PackageDescription

// Engine targets are compiled for Haswell-class CPUs (AVX2 + FMA + F16C) on x86 hosts: the CPU kernels are
// written with SIMD types and are several times slower on the baseline SSE2 target.
let engineFlags: [SwiftSetting] = [
    .unsafeFlags(["-Ounchecked", "-wmo"], .when(configuration: .release)),
    .unsafeFlags(["-target-cpu", "haswell"]),
    .swiftLanguageMode(.v5),
]

let package = Package(
    name: "Kinema",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "kinema", targets: ["kinema"]),
        .library(name: "KinemaCore", targets: ["KinemaCore"]),
        .library(name: "KinemaCPU", targets: ["KinemaCPU"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/vapor/sqlite-nio", from: "1.13.2"),
    ],
    targets: [
        .target(name: "KinemaCore", swiftSettings: engineFlags),
        .systemLibrary(
            name: "CBLAS",
            pkgConfig: "openblas",
            providers: [.apt(["libopenblas-dev"])]
        ),
        .target(name: "KinemaCPU", dependencies: ["KinemaCore", "CBLAS"], swiftSettings: engineFlags),
        .target(name: "KinemaModels", dependencies: ["KinemaCore"], swiftSettings: engineFlags),
        .target(name: "KinemaPipeline", dependencies: ["KinemaModels", "KinemaCore"], swiftSettings: engineFlags),
        .target(name: "KinemaPlanner", dependencies: ["KinemaPipeline", "KinemaCore"], swiftSettings: [.swiftLanguageMode(.v5)]),
        .executableTarget(
            name: "kinema",
            dependencies: [
                "KinemaCore", "KinemaCPU", "KinemaModels", "KinemaPipeline", "KinemaPlanner",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: [.swiftLanguageMode(.v5)]
        ),
        .testTarget(name: "KinemaModelsTests", dependencies: ["KinemaModels", "KinemaCore", "KinemaCPU"],
                    exclude: ["Fixtures"], swiftSettings: [.swiftLanguageMode(.v5)]),
        .testTarget(name: "KinemaPipelineTests", dependencies: ["KinemaPipeline", "KinemaModels", "KinemaCore", "KinemaCPU"],
                    exclude: ["Fixtures"], swiftSettings: [.swiftLanguageMode(.v5)]),
        .testTarget(name: "KinemaPlannerTests", dependencies: ["KinemaPlanner", "KinemaPipeline", "KinemaCore", "KinemaCPU"],
                    swiftSettings: [.swiftLanguageMode(.v5)]),
        .testTarget(name: "KinemaCLITests", dependencies: ["kinema", "KinemaCore"], swiftSettings: [.swiftLanguageMode(.v5)]),
        .testTarget(name: "KinemaCoreTests", dependencies: ["KinemaCore"], swiftSettings: [.swiftLanguageMode(.v5)]),
        .target(name: "KinemaJobs", dependencies: [.product(name: "SQLiteNIO", package: "sqlite-nio")]),
        .testTarget(name: "KinemaJobsTests", dependencies: ["KinemaJobs"], swiftSettings: [.swiftLanguageMode(.v5)]),
        .testTarget(
            name: "KinemaCPUTests", dependencies: ["KinemaCore", "KinemaCPU"],
            exclude: ["Fixtures"],
            swiftSettings: [.swiftLanguageMode(.v5)]
        ),
    ]
)
