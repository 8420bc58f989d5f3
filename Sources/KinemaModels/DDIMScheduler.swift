// DDIMScheduler: diffusers' `schedulers/scheduling_ddim.py` (v0.42.1) on flat float32 arrays, with
// the same float32 values as torch on the CPU: every constant is computed with the same operations in
// the same order and precision as diffusers and torch compute it (the quirks are noted where they occur).
import Foundation

/// A scheduler configuration or call that diffusers' DDIMScheduler would reject or that cannot be
/// computed; the message names the key or parameter and what was expected. (A `scheduler_config.json`
/// that cannot be read is a `ConfigError`.)
public struct SchedulerError: Error, CustomStringConvertible, Sendable {
    /// What went wrong, naming the offending key or parameter.
    public let description: String

    init(_ description: String) { self.description = description }
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
