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
        .package(url: "https://github.com/vapor/postgres-nio", from: "1.33.2"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-http-types", from: "1.8.0"),
    ],
    targets: [
        .target(name: "KinemaCore", swiftSettings: engineFlags),
        .systemLibrary(
            name: "CBLAS",
            pkgConfig: "openblas",
            providers: [.apt(["libopenblas-dev"])]
        ),
        .target(name: "KinemaCPU", dependencies: ["KinemaCore", "CBLAS"], swiftSettings: engineFlags),
        // Not -Ounchecked: its fatal errors name the failing CUDA call, and none of its loops is hot.
        .target(name: "KinemaCUDA", dependencies: ["KinemaCore"], swiftSettings: [.swiftLanguageMode(.v5)]),
        .target(name: "KinemaModels", dependencies: ["KinemaCore"], swiftSettings: engineFlags),
        .target(name: "KinemaPipeline", dependencies: ["KinemaModels", "KinemaCore"], swiftSettings: engineFlags),
        .target(name: "KinemaPlanner", dependencies: ["KinemaPipeline", "KinemaModels", "KinemaCore"], swiftSettings: [.swiftLanguageMode(.v5)]),
        .target(
            name: "KinemaServer",
            dependencies: [
                "KinemaCore", "KinemaCPU", "KinemaPipeline", "KinemaPlanner", "KinemaJobs",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
            ],
            resources: [.copy("Resources/webui"), .copy("Resources/openapi.yaml")],
            swiftSettings: [.swiftLanguageMode(.v5)]
        ),
        .executableTarget(
            name: "kinema",
            dependencies: [
                "KinemaCore", "KinemaCPU", "KinemaCUDA", "KinemaModels", "KinemaPipeline", "KinemaPlanner", "KinemaServer",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: [.swiftLanguageMode(.v5)]
        ),
        .testTarget(name: "KinemaModelsTests", dependencies: ["KinemaModels", "KinemaCore", "KinemaCPU"],
                    exclude: ["Fixtures"], swiftSettings: [.swiftLanguageMode(.v5)]),
        .testTarget(name: "KinemaPipelineTests", dependencies: ["KinemaPipeline", "KinemaModels", "KinemaCore", "KinemaCPU"],
                    exclude: ["Fixtures"], swiftSettings: [.swiftLanguageMode(.v5)]),
        .testTarget(name: "KinemaPlannerTests", dependencies: ["KinemaPlanner", "KinemaPipeline", "KinemaModels", "KinemaCore", "KinemaCPU"],
                    swiftSettings: [.swiftLanguageMode(.v5)]),
        .testTarget(name: "KinemaCLITests", dependencies: ["kinema", "KinemaCore"], swiftSettings: [.swiftLanguageMode(.v5)]),
        .testTarget(name: "KinemaServerTests", dependencies: ["KinemaServer"], swiftSettings: [.swiftLanguageMode(.v5)]),
        .testTarget(name: "KinemaCoreTests", dependencies: ["KinemaCore"], swiftSettings: [.swiftLanguageMode(.v5)]),
        .target(name: "KinemaJobs", dependencies: [
            .product(name: "SQLiteNIO", package: "sqlite-nio"),
            .product(name: "PostgresNIO", package: "postgres-nio"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        .testTarget(name: "KinemaJobsTests", dependencies: ["KinemaJobs", .product(name: "PostgresNIO", package: "postgres-nio")], swiftSettings: [.swiftLanguageMode(.v5)]),
        .testTarget(name: "KinemaCUDATests", dependencies: ["KinemaCUDA", "KinemaCPU", "KinemaCore"],
                    swiftSettings: [.swiftLanguageMode(.v5)]),
        .testTarget(
            name: "KinemaCPUTests", dependencies: ["KinemaCore", "KinemaCPU"],
            exclude: ["Fixtures"],
            swiftSettings: [.swiftLanguageMode(.v5)]
        ),
    ]
)
