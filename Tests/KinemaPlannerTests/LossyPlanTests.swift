import Foundation
import KinemaCore
import KinemaCPU
import KinemaModels
import KinemaPipeline
import KinemaPlanner
import XCTest

/// The lossy plans: VAE tiling stays close to whole-frame decoding, lossy plans are predicted as
/// exactly as lossless ones, and the planner degrades in the order users are told to.
final class LossyPlanTests: XCTestCase {
    static let pipelines = PlannerTests.pipelines
    let folder = LossyPlanTests.pipelines.appendingPathComponent("released_layout").path
    static let tiny = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Models/kinema-tiny").path
    let policy = CPUWorkspacePolicy(threads: CPUBackend().threads)

    func request(width: Int = 64, height: Int = 48, frames: Int = 3) -> GenerationRequest {
        var request = GenerationRequest(prompt: "the camera pans to the right", negativePrompt: "static", seed: UInt64.random(in: 0...1000))
        (request.width, request.height, request.frames, request.steps, request.guidanceScale) = (width, height, frames, 2, 6)
        return request
    }

    func image(width: Int = 53, height: Int = 31) throws -> RGBImage {
        var generator = SystemRandomNumberGenerator()
        return try RGBImage(width: width, height: height, pixels: (0..<(width * height * 3)).map { _ in UInt8.random(in: 0...255, using: &generator) })
    }

    /// A smooth random picture (a few random sinusoids per channel): what a VAE is trained on.
    func smoothImage(width: Int, height: Int) throws -> RGBImage {
        let waves = (0..<9).map { _ in (Double.random(in: 0.5...4), Double.random(in: 0.5...4), Double.random(in: 0...6.3)) }
        var pixels: [UInt8] = []
        for y in 0..<height {
            for x in 0..<width {
                for c in 0..<3 {
                    var value = 0.0
                    for k in 0..<3 {
                        let (fx, fy, phase) = waves[c * 3 + k]
                        value += sin(Double(x) / Double(width) * fx * 6.28 + Double(y) / Double(height) * fy * 6.28 + phase)
                    }
                    pixels.append(UInt8(max(0, min(255, 128 + value * 40))))
                }
            }
        }
        return try RGBImage(width: width, height: height, pixels: pixels)
    }

    func testTiledDecodeIsCloseToWholeFrameDecoding() throws {
        // kinema-tiny's trained VAE (factor 4, default tile 32 latent px = 128 px) on the latents of
        // a smooth random 256×192 picture: 2×3 tiles with blended overlaps.
        let cpu = CPUBackend()
        let vae = try ModelFolder(folder: Self.tiny, backend: cpu, weights: .files(variant: nil)).vae()
        let picture = try smoothImage(width: 256, height: 192)
        let pixels = cpu.tensor(ImagePreprocessing.vaePixels(picture, width: 256, height: 192), shape: [1, 3, 192, 256])
        let latents = vae.encodeMoments(pixels, cpu).mean
        XCTAssertEqual(latents.shape, [1, 4, 48, 64])
        let whole = vae.decode(latents, cpu).floats()
        for tile in [32, 16] {
            let tiled = vae.decode(latents, tile: tile, cpu)
            XCTAssertEqual(tiled.shape, [1, 3, 192, 256])
            let differences = zip(tiled.floats(), whole).map { abs($0 - $1) }
            let maximum = differences.max()!, mean = differences.reduce(0, +) / Float(differences.count)
            // Pixels in [-1, 1]; measured on 2026-12-01 over random pictures: mean 0.009–0.035, max 0.14–0.2
            // (a tile decoded without its blend, or misplaced, is off by tenths on average).
            print("VAE tile \(tile): max |tiled − whole| = \(maximum), mean = \(mean) (pixels in [-1, 1])")
            XCTAssertLessThan(mean, 0.08, "tile \(tile)")
            XCTAssertLessThan(maximum, 0.5, "tile \(tile)")
            XCTAssertGreaterThan(maximum, 0, "tiling is lossy: some pixel must differ")
        }
        // A tile as large as the latents is no tiling at all.
        XCTAssertEqual(vae.decode(latents, tile: 64, cpu).floats(), whole)
    }

    func testTokenMergingRoundTripsMergedTokensToTheirDestination() throws {
        let cpu = CPUBackend()
        let (rows, height, width, channels) = (2, 6, 4, 5)
        let values = (0..<(rows * height * width * channels)).map { _ in Float.random(in: -1...1) }
        let tokens = cpu.tensor(values, shape: [rows, height * width, channels])
        let slots = cpu.matchTokens(tokens, height: height, width: width, ratio: 0.5)
        let merged = cpu.mergeTokens(tokens, slots: slots, height: height, width: width, ratio: 0.5)
        XCTAssertEqual(merged.shape, [rows, 12, channels])
        let back = cpu.unmergeTokens(merged, slots: slots).floats()
        let map = slots.floats(), mergedValues = merged.floats()
        for row in 0..<rows {
            var members: [Int: [Int]] = [:]
            for t in 0..<(height * width) { members[Int(map[row * 24 + t]), default: []].append(t) }
            XCTAssertEqual(members.count, 12, "every slot is used")
            for (slot, tokensOfSlot) in members {
                for c in 0..<channels {
                    let mean = tokensOfSlot.map { values[(row * 24 + $0) * channels + c] }.reduce(0, +) / Float(tokensOfSlot.count)
                    XCTAssertEqual(mergedValues[(row * 12 + slot) * channels + c], mean, accuracy: 1e-6)
                    for t in tokensOfSlot { XCTAssertEqual(back[(row * 24 + t) * channels + c], mean, accuracy: 1e-6) }
                }
            }
            // Destinations (top-left of each 2×2 cell) keep slots of their own.
            let destinations = [0, 2, 8, 10, 16, 18]
            XCTAssertEqual(Set(destinations.map { map[row * 24 + $0] }).count, 6)
        }
    }

    func testLossyPlansArePredictedExactly() throws {
        let picture = try image()
        let settings = request()
        var reference: [Float]?
        for plan in [ExecutionPlan(), ExecutionPlan(vaeTile: 8), ExecutionPlan(guidance: .serial, residency: .perPhase, splits: 2, tokenMerge: 0.5),
                     ExecutionPlan(residency: .perPhase, vaeTile: 12, tokenMerge: 0.75)] {
            let cpu = CPUBackend()
            let models = try ModelFolder(folder: folder, backend: cpu, weights: .files(variant: nil))
            let recorder = PhasePeakRecorder(meter: cpu.allocator.meter)
            let video = try ImageToVideoPipeline(folder: models).generate(image: picture, request: settings, plan: plan) { recorder.record($0) }
            recorder.close()
            let predicted = try MemoryPredictor.predict(folder: folder, request: settings, plan: plan, workspacePolicy: policy)
            XCTAssertEqual(predicted.phasePeakBytes, recorder.peaks, "\(plan)")
            XCTAssertTrue(video.frames.allSatisfy { $0.isFinite && $0 >= 0 && $0 <= 1 }, "\(plan)")
            if let reference {
                XCTAssertGreaterThan(zip(video.frames, reference).map { abs($0 - $1) }.max()!, 0, "\(plan) is lossy")
            } else {
                reference = video.frames
            }
        }
    }

    func testTilingShrinksTheDecodePeakAndMergingTheDenoisePeak() throws {
        let settings = request(width: 128, height: 128, frames: 4)
        let lean = ExecutionPlan(guidance: .serial, residency: .perPhase, splits: 16)
        func peaks(_ plan: ExecutionPlan) throws -> [String: Int] {
            try MemoryPredictor.predict(folder: folder, request: settings, plan: plan, workspacePolicy: policy).phasePeakBytes
        }
        let plain = try peaks(lean), tiled = try peaks(lean.with(vaeTile: 16, tokenMerge: nil)), merged = try peaks(lean.with(vaeTile: nil, tokenMerge: 0.75))
        XCTAssertLessThan(tiled["decode"]!, plain["decode"]!, "\(tiled) vs \(plain)")
        XCTAssertEqual(tiled["denoise"], plain["denoise"])
        XCTAssertLessThan(merged["denoise"]!, plain["denoise"]!, "\(merged) vs \(plain)")
        XCTAssertEqual(merged["decode"], plain["decode"])
    }

    func testDegradingTilesFirstThenMergesThenLowersResolutionThenFrames() throws {
        // All four frames decoded at once: decoding, not denoising, makes the leanest plan's peak.
        var settings = request(width: 128, height: 128, frames: 4)
        settings.decodeChunk = 4
        let leanest = Planner.losslessPlans.last!
        func peak(_ plan: ExecutionPlan, _ request: GenerationRequest) throws -> Int {
            try MemoryPredictor.predict(folder: folder, request: request, plan: plan, workspacePolicy: policy).peakBytes
        }
        let tiles = Planner.vaeTiles(folder: folder, request: settings)
        XCTAssertEqual(tiles, [16, 12, 8], "the fixture VAE's sample size is 32 px, factor 2")
        let lossless = try peak(leanest, settings)
        let mildestTile = try peak(leanest.with(vaeTile: tiles[0], tokenMerge: nil), settings)
        let allTiling = try peak(leanest.with(vaeTile: tiles.last, tokenMerge: nil), settings)
        let allMerging = try peak(leanest.with(vaeTile: tiles.last, tokenMerge: 0.75), settings)
        print("phases \(try MemoryPredictor.predict(folder: folder, request: settings, plan: leanest, workspacePolicy: policy).phasePeakBytes)")
        print("leanest lossless \(lossless), tile \(tiles[0]) \(mildestTile), tile \(tiles.last!) \(allTiling), + merge 0.75 \(allMerging)")
        XCTAssertLessThan(mildestTile, lossless)
        XCTAssertLessThan(allMerging, allTiling)

        // Just under the leanest lossless plan: tiling alone, no merging, same size.
        let first = try Planner.choose(folder: folder, request: settings, budget: lossless - 1, allowDegrade: true, workspacePolicy: policy)
        XCTAssertNotNil(first.plan.vaeTile)
        XCTAssertNil(first.plan.tokenMerge)
        XCTAssertEqual(first.request, settings)
        XCTAssertEqual(first.degradations.count, 1)
        XCTAssertTrue(first.degradations[0].hasPrefix("VAE tiling"), "\(first.degradations)")
        XCTAssertLessThanOrEqual(first.prediction.peakBytes, lossless - 1)

        // Under every tiling: merging joins, still the requested size.
        let second = try Planner.choose(folder: folder, request: settings, budget: allTiling - 1, allowDegrade: true, workspacePolicy: policy)
        XCTAssertNotNil(second.plan.tokenMerge)
        XCTAssertEqual(second.request, settings)
        XCTAssertTrue(second.degradations.contains { $0.hasPrefix("token merging") }, "\(second.degradations)")
        XCTAssertLessThanOrEqual(second.prediction.peakBytes, allTiling - 1)

        // Under every tiling and merging: a lower resolution, the frame count kept.
        let third = try Planner.choose(folder: folder, request: settings, budget: allMerging - 1, allowDegrade: true, workspacePolicy: policy)
        XCTAssertLessThan(third.request.width, settings.width)
        XCTAssertEqual(third.request.frames, settings.frames)
        XCTAssertTrue(third.degradations.contains { $0.hasPrefix("lower resolution") }, "\(third.degradations)")
        XCTAssertLessThanOrEqual(third.prediction.peakBytes, allMerging - 1)

        // Under every resolution's leanest plan: fewer frames.
        var smallest = settings
        (smallest.width, smallest.height) = (32, 32)
        let smallestSize = try peak(leanest.with(vaeTile: Planner.vaeTiles(folder: folder, request: smallest).last, tokenMerge: 0.75), smallest)
        let fourth = try Planner.choose(folder: folder, request: settings, budget: smallestSize - 1, allowDegrade: true, workspacePolicy: policy)
        XCTAssertLessThan(fourth.request.frames, settings.frames)
        XCTAssertTrue(fourth.degradations.contains { $0.hasPrefix("fewer frames") }, "\(fourth.degradations)")

        // Without --allow-degrade the same budget is refused, naming what would fit.
        XCTAssertThrowsError(try Planner.choose(folder: folder, request: settings, budget: lossless - 1, workspacePolicy: policy)) { error in
            XCTAssertTrue("\(error)".contains("The nearest settings that fit: VAE tiling"), "\(error)")
        }
    }

    func testABudgetBelowTheLargestBlockIsAnError() throws {
        let blocks = try ModelFolder(folder: folder, backend: MetaBackend(emulating: policy), weights: .shapesOnly).unetBlockWeightBytes()
        let largest = blocks.max { $0.value < $1.value }!
        XCTAssertTrue(largest.key.hasPrefix("up_blocks") || largest.key.hasPrefix("down_blocks") || largest.key == "mid_block", "\(blocks)")
        XCTAssertThrowsError(try Planner.choose(folder: folder, request: request(), budget: largest.value - 1, allowDegrade: true,
                                                workspacePolicy: policy)) { error in
            XCTAssertTrue("\(error)".contains("largest block, \(largest.key)"), "\(error)")
        }
    }
}
