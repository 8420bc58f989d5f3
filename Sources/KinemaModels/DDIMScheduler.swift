// DDIMScheduler: diffusers' `schedulers/scheduling_ddim.py` (v0.42.1) on flat float32 arrays, with
// the same float32 values as torch on the CPU: every constant is computed with the same operations in
// the same order and precision as diffusers and torch compute it (the quirks are noted where they occur).
import Foundation

/// A scheduler configuration or call that diffusers' DDIMScheduler would reject or that cannot be
/// computed; the message names the key or parameter and what was expected.
public struct SchedulerError: Error, CustomStringConvertible, Sendable {
    /// What went wrong, naming the offending key, parameter or file.
    public let description: String

    init(_ description: String) { self.description = description }
}

/// Every field of diffusers' `scheduler_config.json` for `DDIMScheduler`, with diffusers' defaults.
///
/// Floating-point fields are `Double` because diffusers holds them as Python floats; each is rounded
/// to float32 at the point where torch rounds it.
public struct DDIMSchedulerConfig: Sendable, Equatable {
    /// How betas are spaced over the training timesteps (`beta_schedule`).
    public enum BetaSchedule: String, Sendable, CaseIterable {
        /// `torch.linspace(beta_start, beta_end)` in float32.
        case linear
        /// `torch.linspace(sqrt(beta_start), sqrt(beta_end)) ** 2` in float32 (Stable Diffusion's schedule).
        case scaledLinear = "scaled_linear"
        /// The Glide cosine schedule, capped at 0.999; ignores `beta_start` and `beta_end`.
        case squaredcosCapV2 = "squaredcos_cap_v2"
    }

    /// What the model predicts (`prediction_type`).
    public enum PredictionType: String, Sendable, CaseIterable {
        /// The noise.
        case epsilon
        /// The denoised sample x0.
        case sample
        /// The velocity v = sqrt(ᾱ)·ε − sqrt(1−ᾱ)·x0 (Imagen Video §2.4); I2VGen-XL's choice.
        case vPrediction = "v_prediction"
    }

    /// How inference timesteps are chosen among the training ones (`timestep_spacing`).
    public enum TimestepSpacing: String, Sendable, CaseIterable {
        /// `i * (T // N) + steps_offset`, descending.
        case leading
        /// `round(T - i * T/N) - 1`, descending.
        case trailing
        /// `round(linspace(0, T-1, N))`, descending.
        case linspace
    }

    /// `num_train_timesteps`: the number of training timesteps T.
    public var numTrainTimesteps: Int
    /// `beta_start`: the first beta of the linear schedules.
    public var betaStart: Double
    /// `beta_end`: the last beta of the linear schedules.
    public var betaEnd: Double
    /// `beta_schedule`.
    public var betaSchedule: BetaSchedule
    /// `trained_betas`: explicit betas, one per training timestep; overrides `betaSchedule`.
    public var trainedBetas: [Double]?
    /// `clip_sample`: clamp the predicted x0 to ±`clipSampleRange` (ignored when `thresholding` is on).
    public var clipSample: Bool
    /// `set_alpha_to_one`: the ᾱ before the first training timestep is 1 (else ᾱ[0]).
    public var setAlphaToOne: Bool
    /// `steps_offset`: added to every "leading" timestep.
    public var stepsOffset: Int
    /// `prediction_type`.
    public var predictionType: PredictionType
    /// `thresholding`: Imagen's dynamic thresholding of the predicted x0.
    public var thresholding: Bool
    /// `dynamic_thresholding_ratio`: the quantile of |x0| that sets the threshold.
    public var dynamicThresholdingRatio: Double
    /// `clip_sample_range`: the bound used by `clipSample`.
    public var clipSampleRange: Double
    /// `sample_max_value`: the largest threshold dynamic thresholding may choose.
    public var sampleMaxValue: Double
    /// `timestep_spacing`.
    public var timestepSpacing: TimestepSpacing
    /// `rescale_betas_zero_snr`: rescale betas so the last timestep has zero SNR (arXiv 2305.08891).
    public var rescaleBetasZeroSnr: Bool

    /// A configuration with diffusers' defaults for every field not given.
    public init(
        numTrainTimesteps: Int = 1000, betaStart: Double = 0.0001, betaEnd: Double = 0.02,
        betaSchedule: BetaSchedule = .linear, trainedBetas: [Double]? = nil, clipSample: Bool = true,
        setAlphaToOne: Bool = true, stepsOffset: Int = 0, predictionType: PredictionType = .epsilon,
        thresholding: Bool = false, dynamicThresholdingRatio: Double = 0.995, clipSampleRange: Double = 1.0,
        sampleMaxValue: Double = 1.0, timestepSpacing: TimestepSpacing = .leading, rescaleBetasZeroSnr: Bool = false
    ) {
        self.numTrainTimesteps = numTrainTimesteps
        self.betaStart = betaStart
        self.betaEnd = betaEnd
        self.betaSchedule = betaSchedule
        self.trainedBetas = trainedBetas
        self.clipSample = clipSample
        self.setAlphaToOne = setAlphaToOne
        self.stepsOffset = stepsOffset
        self.predictionType = predictionType
        self.thresholding = thresholding
        self.dynamicThresholdingRatio = dynamicThresholdingRatio
        self.clipSampleRange = clipSampleRange
        self.sampleMaxValue = sampleMaxValue
        self.timestepSpacing = timestepSpacing
        self.rescaleBetasZeroSnr = rescaleBetasZeroSnr
    }

    /// Parses a `scheduler_config.json` document.
    ///
    /// Tolerant like diffusers' `from_config`: unknown keys (`_class_name`, `_diffusers_version`, keys of
    /// other diffusers versions or schedulers) are ignored, `null` means the default, and integers are
    /// accepted where floats are expected (and integral floats where integers are). A value of the
    /// wrong type or an unknown choice for an enumerated key is an error naming the key.
    public init(json: Data) throws {
        do {
            self = try JSONDecoder().decode(ConfigDocument.self, from: json).config
        } catch let error as SchedulerError {
            throw error
        } catch {
            throw SchedulerError("scheduler config is not a valid JSON object: \(error)")
        }
    }

    /// Reads and parses the `scheduler_config.json` at `path`.
    public init(contentsOf path: String) throws {
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw SchedulerError("cannot read scheduler config \(path): \(error.localizedDescription)")
        }
        do {
            try self.init(json: data)
        } catch let error as SchedulerError {
            throw SchedulerError("\(path): \(error.description)")
        }
    }
}

/// diffusers' DDIMScheduler: the noise schedule, the inference timesteps and one denoising step.
public struct DDIMScheduler: Sendable {
    /// The configuration this scheduler was built from.
    public let config: DDIMSchedulerConfig
    /// β per training timestep, float32 as diffusers stores them (after any zero-SNR rescale).
    public let betas: [Float]
    /// ᾱ per training timestep: the cumulative product of 1 − β, float32 as torch computes it.
    public let alphasCumprod: [Float]
    /// The ᾱ used when the previous timestep is before the first one (1, or ᾱ[0]).
    public let finalAlphaCumprod: Float

    /// Builds the noise schedule of `config` exactly as diffusers' `DDIMScheduler.__init__` does.
    public init(config: DDIMSchedulerConfig) throws {
        let count = config.numTrainTimesteps
        guard count >= 1 else {
            throw SchedulerError("num_train_timesteps must be at least 1, got \(count)")
        }
        var betas: [Float]
        if let trained = config.trainedBetas {
            guard trained.count == count else {
                throw SchedulerError(
                    "trained_betas holds \(trained.count) values but num_train_timesteps is \(count); they must agree")
            }
            betas = trained.map { Float($0) }
        } else {
            switch config.betaSchedule {
            case .linear:
                betas = torchLinspace(from: Float(config.betaStart), to: Float(config.betaEnd), count: count)
            case .scaledLinear:
                // Python's `beta_start**0.5` is libm pow in double, then torch rounds to float32.
                betas = torchLinspace(from: Float(pow(config.betaStart, 0.5)), to: Float(pow(config.betaEnd, 0.5)),
                                      count: count).map { $0 * $0 }
            case .squaredcosCapV2:
                betas = cosineBetas(count: count)
            }
        }
        if let bad = betas.firstIndex(where: { !(0...1).contains($0) }) {
            throw SchedulerError(
                "the scheduler config gives beta \(betas[bad]) at timestep \(bad), outside [0, 1]; "
                    + "check beta_start, beta_end and trained_betas")
        }
        if config.rescaleBetasZeroSnr {
            betas = rescaledToZeroTerminalSNR(betas)
            guard betas.allSatisfy({ $0.isFinite }) else {
                throw SchedulerError(
                    "rescale_betas_zero_snr needs betas that are not all 0 and at least 2 timesteps (it divides by "
                        + "sqrt(alphas_cumprod[0]) - sqrt(alphas_cumprod[-1]))")
            }
        }
        let alphasCumprod = torchCumprod(betas.map { 1 - $0 })
        if config.thresholding && !(0...1).contains(config.dynamicThresholdingRatio) {
            throw SchedulerError(
                "dynamic_thresholding_ratio must be in [0, 1] (it is a quantile), got \(config.dynamicThresholdingRatio)")
        }
        self.config = config
        self.betas = betas
        self.alphasCumprod = alphasCumprod
        self.finalAlphaCumprod = config.setAlphaToOne ? 1 : alphasCumprod[0]
    }

    /// The descending training timesteps diffusers' `set_timesteps(steps)` selects.
    ///
    /// Where diffusers would produce a timestep outside `0..<num_train_timesteps` (its "trailing"
    /// spacing yields -1 for some step counts, e.g. 61 of 1000; "leading" with an offset can reach T)
    /// this throws instead of indexing out of range later.
    public func timesteps(steps: Int) throws -> [Int] {
        let count = config.numTrainTimesteps
        guard steps >= 1 else { throw SchedulerError("the number of inference steps must be at least 1, got \(steps)") }
        guard steps <= count else {
            throw SchedulerError(
                "the number of inference steps (\(steps)) cannot be larger than num_train_timesteps (\(count)): "
                    + "the model was trained on \(count) timesteps")
        }
        let timesteps: [Int]
        switch config.timestepSpacing {
        case .linspace:
            timesteps = numpyLinspace(from: 0, to: Double(count - 1), count: steps)
                .map { Int($0.rounded(.toNearestOrEven)) }.reversed()
        case .leading:
            let stepRatio = count / steps
            timesteps = (0..<steps).reversed().map { $0 * stepRatio + config.stepsOffset }
        case .trailing:
            let stepRatio = Double(count) / Double(steps)
            timesteps = numpyArange(from: Double(count), to: 0, step: -stepRatio)
                .map { Int($0.rounded(.toNearestOrEven)) - 1 }
        }
        if let bad = timesteps.first(where: { !(0..<count).contains($0) }) {
            throw SchedulerError(
                "\(config.timestepSpacing.rawValue) spacing with \(steps) steps and steps_offset \(config.stepsOffset) gives "
                    + "timestep \(bad), outside 0..<\(count) (diffusers would index out of range); choose another step count")
        }
        return timesteps
    }

    /// One DDIM step (`DDIMScheduler.step`) returning only the previous sample x_{t-1}; see
    /// `stepWithPrediction` for the parameters.
    public func step(
        modelOutput: [Float], timestep: Int, sample: [Float], steps: Int, eta: Float = 0, noise: [Float]? = nil,
        batch: Int = 1
    ) throws -> [Float] {
        try stepWithPrediction(modelOutput: modelOutput, timestep: timestep, sample: sample, steps: steps,
                               eta: eta, noise: noise, batch: batch).prevSample
    }

    /// One DDIM step (`DDIMScheduler.step` with `use_clipped_model_output=False`), elementwise on flat arrays.
    ///
    /// - Parameters:
    ///   - modelOutput: the model's prediction (ε, x0 or v per `prediction_type`), same count as `sample`.
    ///   - timestep: the current training timestep, one of `timesteps(steps:)`.
    ///   - sample: the current noisy sample x_t.
    ///   - steps: the number of inference steps the timesteps were made for; the previous timestep is
    ///     `timestep − T / steps` for every spacing, as in diffusers.
    ///   - eta: the DDIM η; 0 is deterministic.
    ///   - noise: standard-normal noise of `sample`'s count, required when `eta > 0` (diffusers'
    ///     `variance_noise`; the caller draws it from its generator).
    ///   - batch: how many independent samples the arrays hold (diffusers' leading dimension: batch × frames
    ///     in I2VGen-XL's loop); only dynamic thresholding, which is per sample, depends on it.
    public func stepWithPrediction(
        modelOutput: [Float], timestep: Int, sample: [Float], steps: Int, eta: Float = 0, noise: [Float]? = nil,
        batch: Int = 1
    ) throws -> DDIMStepOutput {
        let count = config.numTrainTimesteps
        guard modelOutput.count == sample.count else {
            throw SchedulerError("modelOutput holds \(modelOutput.count) values but sample holds \(sample.count)")
        }
        guard (0..<count).contains(timestep) else {
            throw SchedulerError("timestep \(timestep) is outside 0..<\(count) (num_train_timesteps)")
        }
        guard (1...count).contains(steps) else {
            throw SchedulerError("steps must be in 1...\(count) (num_train_timesteps), got \(steps)")
        }
        if eta > 0 {
            guard let noise else { throw SchedulerError("eta \(eta) > 0 needs noise of \(sample.count) values") }
            guard noise.count == sample.count else {
                throw SchedulerError("noise holds \(noise.count) values but sample holds \(sample.count)")
            }
        }
        if config.thresholding {
            guard !sample.isEmpty, batch >= 1, sample.count % batch == 0 else {
                throw SchedulerError("dynamic thresholding works per sample: batch \(batch) must be at least 1 and "
                                     + "divide the \(sample.count) values (which must not be empty)")
            }
        }

        // Each scalar is a 0-d float32 tensor in diffusers, so every operation rounds to float32; `x ** 0.5`
        // is torch's sqrt (see `torchSqrt`) and `x ** 2` its x*x.
        let prevTimestep = timestep - count / steps
        let alphaProdT = alphasCumprod[timestep]
        let alphaProdTPrev = prevTimestep >= 0 ? alphasCumprod[prevTimestep] : finalAlphaCumprod
        let betaProdT = 1 - alphaProdT
        let sqrtAlphaProdT = torchSqrt(alphaProdT)
        let sqrtBetaProdT = torchSqrt(betaProdT)

        var predOriginal: [Float], predEpsilon: [Float]
        switch config.predictionType {
        case .epsilon:
            predOriginal = zip(sample, modelOutput).map { x, epsilon in (x - sqrtBetaProdT * epsilon) / sqrtAlphaProdT }
            predEpsilon = modelOutput
        case .sample:
            predOriginal = modelOutput
            predEpsilon = zip(sample, modelOutput).map { x, x0 in (x - sqrtAlphaProdT * x0) / sqrtBetaProdT }
        case .vPrediction:
            predOriginal = zip(sample, modelOutput).map { x, v in sqrtAlphaProdT * x - sqrtBetaProdT * v }
            predEpsilon = zip(sample, modelOutput).map { x, v in sqrtAlphaProdT * v + sqrtBetaProdT * x }
        }
        if config.thresholding {
            applyDynamicThresholding(&predOriginal, batch: batch)
        } else if config.clipSample {
            let bound = Float(config.clipSampleRange)
            for i in predOriginal.indices { predOriginal[i] = torchClamp(predOriginal[i], -bound, bound) }
        }

        let betaProdTPrev = 1 - alphaProdTPrev
        let variance = (betaProdTPrev / betaProdT) * (1 - alphaProdT / alphaProdTPrev)
        let stdDevT = eta * torchSqrt(variance)
        let directionScale = torchSqrt(1 - alphaProdTPrev - stdDevT * stdDevT)
        let sqrtAlphaProdTPrev = torchSqrt(alphaProdTPrev)
        var prevSample = zip(predOriginal, predEpsilon).map { x0, epsilon in
            sqrtAlphaProdTPrev * x0 + directionScale * epsilon
        }
        if eta > 0, let noise {
            for i in prevSample.indices { prevSample[i] += stdDevT * noise[i] }
        }
        return DDIMStepOutput(prevSample: prevSample, predOriginalSample: predOriginal)
    }

    /// diffusers' `_threshold_sample`: per sample, s = clamp(quantile(|x0|, ratio), 1, sample_max_value),
    /// then x0 = clamp(x0, −s, s) / s.
    private func applyDynamicThresholding(_ values: inout [Float], batch: Int) {
        let rowLength = values.count / batch
        let maximum = Float(config.sampleMaxValue)
        for row in 0..<batch {
            let rowRange = row * rowLength..<(row + 1) * rowLength
            let threshold = torchClamp(torchQuantile(values[rowRange].map { abs($0) }, config.dynamicThresholdingRatio),
                                       1, maximum)
            for i in rowRange { values[i] = torchClamp(values[i], -threshold, threshold) / threshold }
        }
    }
}

/// The result of one DDIM step (diffusers' `DDIMSchedulerOutput`).
public struct DDIMStepOutput: Sendable {
    /// x_{t−1}, the sample for the next step.
    public let prevSample: [Float]
    /// The predicted x0, after clipping or thresholding.
    public let predOriginalSample: [Float]
}

/// `torch.linspace(start, end, count, dtype=float32)` on the CPU: the first half counts up from `start`,
/// the second down from `end`. torch's x86 builds (AVX2/AVX-512) contract `start + step * i` into one
/// fused multiply-add, so the fused form is what diffusers gets there.
private func torchLinspace(from start: Float, to end: Float, count: Int) -> [Float] {
    if count == 1 { return [start] }
    let step = (end - start) / Float(count - 1)
    let halfway = count / 2
    return (0..<count).map { i in
        i < halfway ? start.addingProduct(step, Float(i)) : end.addingProduct(-step, Float(count - i - 1))
    }
}

/// diffusers' `betas_for_alpha_bar(count)` with the cosine transform: computed in double with libm's
/// cos and pow (as Python's math module does), capped at 0.999, then rounded to float32.
private func cosineBetas(count: Int) -> [Float] {
    func alphaBar(_ t: Double) -> Double { pow(cos((t + 0.008) / 1.008 * Double.pi / 2), 2) }
    return (0..<count).map { i in
        let beta = 1 - alphaBar(Double(i + 1) / Double(count)) / alphaBar(Double(i) / Double(count))
        return Float(0.999 < beta ? 0.999 : beta)  // Python's min(beta, 0.999)
    }
}

/// diffusers' `rescale_zero_terminal_snr` (arXiv 2305.08891, Algorithm 1) in float32 torch ops:
/// shift sqrt(ᾱ) so the last is 0, scale so the first is unchanged, and turn ᾱ back into betas.
private func rescaledToZeroTerminalSNR(_ betas: [Float]) -> [Float] {
    var alphasBarSqrt = torchCumprod(betas.map { 1 - $0 }).map(torchSqrt)
    let first = alphasBarSqrt[0], last = alphasBarSqrt[alphasBarSqrt.count - 1]
    let scale = first / (first - last)
    for i in alphasBarSqrt.indices { alphasBarSqrt[i] = (alphasBarSqrt[i] - last) * scale }
    let alphasBar = alphasBarSqrt.map { $0 * $0 }
    return alphasBar.indices.map { i in 1 - (i == 0 ? alphasBar[0] : alphasBar[i] / alphasBar[i - 1]) }
}

/// `torch.cumprod` of a float32 vector on the CPU, which accumulates in double (ATen's CPU accumulate
/// type for float) and rounds each running product to float32.
private func torchCumprod(_ values: [Float]) -> [Float] {
    var product = 1.0
    return values.map { value in
        product *= Double(value)
        return Float(product)
    }
}

/// `np.linspace(start, stop, count)` in double: `i * step + start`, with the last value set to `stop`.
private func numpyLinspace(from start: Double, to stop: Double, count: Int) -> [Double] {
    if count == 1 { return [start] }
    let step = (stop - start) / Double(count - 1)
    return (0..<count).map { i in i == count - 1 ? stop : Double(i) * step + start }
}

/// `np.arange(start, stop, step)` in double. Its length ceil((stop − start) / step) is computed in double
/// and can exceed the exact count by one (arange(1000, 0, −1000/61) has 62 elements), and numpy fills
/// element i ≥ 2 as `start + i * ((start + step) − start)`, not `start + i * step`.
private func numpyArange(from start: Double, to stop: Double, step: Double) -> [Double] {
    let length = Int(((stop - start) / step).rounded(.up))
    guard length > 0 else { return [] }
    let delta = (start + step) - start
    return (0..<length).map { i in i == 0 ? start : (i == 1 ? start + step : start + Double(i) * delta) }
}

/// `torch.quantile(values, q)` with linear interpolation, on the CPU: q becomes a float32 tensor, the
/// rank q·(n−1) is computed in double and its fractional part rounded to float32, and the lerp is fused
/// as ATen's compiled kernel is (all found bit-exact against torch 2.15). A NaN makes the quantile NaN.
private func torchQuantile(_ values: [Float], _ q: Double) -> Float {
    if values.contains(where: { $0.isNaN }) { return .nan }
    let sorted = values.sorted()
    let rank = Double(Float(q)) * Double(sorted.count - 1)
    let below = Int(rank), above = Int(rank.rounded(.up))
    let weight = Float(rank - Double(below))
    let low = sorted[below], high = sorted[above]
    let difference = high - low
    // ATen's lerp: low + w·(high − low) for small weights, high − (high − low)·(1 − w) otherwise.
    return abs(weight) < 0.5 ? low.addingProduct(weight, difference) : high.addingProduct(-difference, 1 - weight)
}

/// `torch.sqrt` of a float32 as torch's x86 wheels compute it: through MKL's vector math library
/// (`vmsSqrt`, high-accuracy mode), which on AVX-512 CPUs is a 14-bit reciprocal-square-root estimate
/// (`vrsqrt14ps`) plus one fused Newton correction, and differs from IEEE sqrt by 1 ulp for ~0.6% of
/// inputs. Checked bit for bit against torch 2.15 on all floats in [1, 4) and 4 M random floats
/// (`tools/make_scheduler_fixtures.py` keeps a sample); builds without MKL (macOS, ARM) give IEEE sqrt.
func torchSqrt(_ x: Float) -> Float {
    if x.isNaN || x == 0 || x == .infinity { return x }
    if x < 0 { return .nan }
    // MKL keeps the residual below from going subnormal; scaling by a power of 4 is exact.
    if x < 0x1p-64 { return torchSqrt(x * 0x1p64) * 0x1p-32 }
    let estimate = reciprocalSquareRootEstimate(x)
    let root = x * estimate, halfEstimate = 0.5 * estimate
    let residual = x.addingProduct(-root, root)
    return root.addingProduct(residual, halfEstimate)
}

/// `vrsqrt14ps` for a positive finite float, bit-exact, after Intel's published reference
/// implementation of the AVX-512 approximation instructions: with x = m·4^n and m in [1, 4), a
/// linear piece c − d·(m′ − y) on one of 32 intervals of [1, 2) or [2, 4) (m′ is m with its 8 lowest
/// bits cleared), truncated to 16 fraction bits, then scaled by 2^−n.
private func reciprocalSquareRootEstimate(_ x: Float) -> Float {
    var significand = x.bitPattern & 0x007F_FFFF
    var exponent = Int(x.bitPattern >> 23) - 127
    if x.bitPattern >> 23 == 0 {  // subnormal: normalize
        exponent = -126
        while significand & 0x0080_0000 == 0 {
            significand <<= 1
            exponent -= 1
        }
        significand &= 0x007F_FFFF
    }
    let oddExponent = exponent & 1 != 0
    let halfExponent = (oddExponent ? exponent - 1 : exponent) / 2
    let m = Float(bitPattern: (oddExponent ? 0x4000_0000 : 0x3F80_0000) | significand)  // x / 4^halfExponent
    var estimate: Float = 1
    if m != 1 {
        let interval = oddExponent ? Int((m - 2) * 16) : Int((m - 1) * 32)
        let center = oddExponent ? 2 + 1.0 / 32 + Float(interval) / 16 : 1 + 1.0 / 64 + Float(interval) / 32
        let row = interval * 4 + (oddExponent ? 2 : 0)
        let slope = Double(rsqrt14Coefficients[row]) * (oddExponent ? 128 : 256)
        let offset = Double(Float(bitPattern: m.bitPattern & 0xFFFF_FF00) - center)  // exact
        let linear = Double(rsqrt14Coefficients[row + 1]) - slope * offset  // exact in double
        // Keep 16 fraction bits and divide by 2^19 (the coefficients are scaled integers).
        estimate = Float(Double(bitPattern: (linear.bitPattern & 0xFFFF_FFF0_0000_0000) - 0x0130_0000_0000_0000))
    }
    return Float(bitPattern: UInt32(bitPattern: Int32(bitPattern: estimate.bitPattern) - Int32(halfExponent) << 23))
}

/// Per interval i of the estimate: (d, c) for m in [1, 2), then (d, c) for m in [2, 4); c is the value
/// at the interval's center times 2^19, d the slope's magnitude times 2^11 (2^12 for [2, 4)).
private let rsqrt14Coefficients: [UInt32] = [
    1001, 520261, 707, 367881, 955, 512437, 675, 362349, 915, 504953, 647, 357056, 877, 497790, 619, 351992,
    841, 490922, 595, 347136, 807, 484331, 571, 342475, 775, 478001, 549, 337997, 747, 471909, 527, 333693,
    719, 466046, 509, 329545, 693, 460397, 491, 325551, 669, 454947, 473, 321697, 647, 449688, 457, 317977,
    625, 444606, 441, 314385, 603, 439694, 427, 310910, 585, 434939, 413, 307549, 567, 430335, 401, 304295,
    549, 425875, 389, 301139, 533, 421551, 377, 298079, 517, 417355, 365, 295115, 501, 413284, 355, 292237,
    487, 409329, 345, 289439, 473, 405487, 335, 286722, 461, 401748, 325, 284080, 449, 398111, 317, 281508,
    437, 394571, 309, 279006, 425, 391127, 301, 276569, 415, 387770, 293, 274195, 403, 384498, 285, 271882,
    393, 381307, 279, 269625, 385, 378194, 271, 267425, 375, 375155, 265, 265276, 367, 372190, 259, 263178,
]

/// `torch.clamp(value, lower, upper)`: NaN stays NaN; when `lower > upper` the result is `upper`.
private func torchClamp(_ value: Float, _ lower: Float, _ upper: Float) -> Float {
    value.isNaN ? value : min(max(value, lower), upper)
}

/// Decodes the keys of a scheduler config one by one so that each error names its key.
private struct ConfigDocument: Decodable {
    let config: DDIMSchedulerConfig

    private struct Key: CodingKey {
        let stringValue: String
        var intValue: Int? { nil }
        init(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
    }

    init(from decoder: Decoder) throws {
        let container: KeyedDecodingContainer<Key>
        do {
            container = try decoder.container(keyedBy: Key.self)
        } catch {
            throw SchedulerError("a scheduler config must be a JSON object")
        }
        let reader = KeyReader(container: container)
        var config = DDIMSchedulerConfig()
        if let value = try reader.integer("num_train_timesteps") { config.numTrainTimesteps = value }
        if let value = try reader.number("beta_start") { config.betaStart = value }
        if let value = try reader.number("beta_end") { config.betaEnd = value }
        if let value: DDIMSchedulerConfig.BetaSchedule = try reader.choice("beta_schedule") { config.betaSchedule = value }
        config.trainedBetas = try reader.numbers("trained_betas")
        if let value = try reader.boolean("clip_sample") { config.clipSample = value }
        if let value = try reader.boolean("set_alpha_to_one") { config.setAlphaToOne = value }
        if let value = try reader.integer("steps_offset") { config.stepsOffset = value }
        if let value: DDIMSchedulerConfig.PredictionType = try reader.choice("prediction_type") {
            config.predictionType = value
        }
        if let value = try reader.boolean("thresholding") { config.thresholding = value }
        if let value = try reader.number("dynamic_thresholding_ratio") { config.dynamicThresholdingRatio = value }
        if let value = try reader.number("clip_sample_range") { config.clipSampleRange = value }
        if let value = try reader.number("sample_max_value") { config.sampleMaxValue = value }
        if let value: DDIMSchedulerConfig.TimestepSpacing = try reader.choice("timestep_spacing") {
            config.timestepSpacing = value
        }
        if let value = try reader.boolean("rescale_betas_zero_snr") { config.rescaleBetasZeroSnr = value }
        self.config = config
    }

    /// Typed access to one key; `nil` when the key is absent or null.
    private struct KeyReader {
        let container: KeyedDecodingContainer<Key>

        private func present(_ name: String) throws -> Key? {
            let key = Key(stringValue: name)
            guard container.contains(key), try !container.decodeNil(forKey: key) else { return nil }
            return key
        }

        private func mismatch(_ name: String, _ expected: String) -> SchedulerError {
            let key = Key(stringValue: name)
            let found: String
            if (try? container.decode(Bool.self, forKey: key)) != nil { found = "a boolean" }
            else if (try? container.decode(Double.self, forKey: key)) != nil { found = "a number" }
            else if let text = try? container.decode(String.self, forKey: key) { found = "the string \"\(text)\"" }
            else if (try? container.decode([Double?].self, forKey: key)) != nil { found = "an array" }
            else { found = "an object or a mixed array" }
            return SchedulerError("scheduler config key \"\(name)\" must be \(expected), found \(found)")
        }

        func boolean(_ name: String) throws -> Bool? {
            guard let key = try present(name) else { return nil }
            guard let value = try? container.decode(Bool.self, forKey: key) else { throw mismatch(name, "true or false") }
            return value
        }

        func number(_ name: String) throws -> Double? {
            guard let key = try present(name) else { return nil }
            guard let value = try? container.decode(Double.self, forKey: key) else { throw mismatch(name, "a number") }
            return value
        }

        func integer(_ name: String) throws -> Int? {
            guard let key = try present(name) else { return nil }
            if let value = try? container.decode(Int.self, forKey: key) { return value }
            if let value = try? container.decode(Double.self, forKey: key) {
                guard value.rounded() == value, let integer = Int(exactly: value) else {
                    throw SchedulerError("scheduler config key \"\(name)\" must be an integer, found \(value)")
                }
                return integer
            }
            throw mismatch(name, "an integer")
        }

        func numbers(_ name: String) throws -> [Double]? {
            guard let key = try present(name) else { return nil }
            guard let values = try? container.decode([Double].self, forKey: key) else {
                throw mismatch(name, "null or an array of numbers")
            }
            return values
        }

        func choice<Choice: RawRepresentable & CaseIterable>(_ name: String) throws -> Choice?
        where Choice.RawValue == String {
            guard let key = try present(name) else { return nil }
            let allowed = Choice.allCases.map { "\"\($0.rawValue)\"" }.joined(separator: ", ")
            guard let text = try? container.decode(String.self, forKey: key) else {
                throw mismatch(name, "one of \(allowed)")
            }
            guard let value = Choice(rawValue: text) else {
                throw SchedulerError("scheduler config key \"\(name)\" is \"\(text)\", which DDIMScheduler does not support; "
                                     + "expected one of \(allowed)")
            }
            return value
        }
    }
}
