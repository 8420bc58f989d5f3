// DDIMSchedulerConfig: every field of diffusers' `scheduler_config.json` for `DDIMScheduler` (v0.42.1),
// with diffusers' defaults, parsed as tolerantly as `from_config` does.
import Foundation

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

    /// Parses a `scheduler_config.json` document; errors call it `source`.
    ///
    /// Tolerant like diffusers' `from_config`: unknown keys (`_class_name`, `_diffusers_version`, keys of
    /// other diffusers versions or schedulers) are ignored, `null` means the default, and integers are
    /// accepted where floats are expected (and integral floats where integers are). A value of the
    /// wrong type or an unknown choice for an enumerated key is a `ConfigError` naming the key.
    public init(json: Data, source: String = "scheduler config") throws {
        let keys = try ConfigFile.Reader(json: json, source: source)
        self.init()
        if let value = try keys.int("num_train_timesteps") { numTrainTimesteps = value }
        if let value = try keys.double("beta_start") { betaStart = value }
        if let value = try keys.double("beta_end") { betaEnd = value }
        if let value: BetaSchedule = try keys.choice("beta_schedule", supportedBy: Self.owner) { betaSchedule = value }
        trainedBetas = try keys.doubles("trained_betas")
        if let value = try keys.bool("clip_sample") { clipSample = value }
        if let value = try keys.bool("set_alpha_to_one") { setAlphaToOne = value }
        if let value = try keys.int("steps_offset") { stepsOffset = value }
        if let value: PredictionType = try keys.choice("prediction_type", supportedBy: Self.owner) { predictionType = value }
        if let value = try keys.bool("thresholding") { thresholding = value }
        if let value = try keys.double("dynamic_thresholding_ratio") { dynamicThresholdingRatio = value }
        if let value = try keys.double("clip_sample_range") { clipSampleRange = value }
        if let value = try keys.double("sample_max_value") { sampleMaxValue = value }
        if let value: TimestepSpacing = try keys.choice("timestep_spacing", supportedBy: Self.owner) { timestepSpacing = value }
        if let value = try keys.bool("rescale_betas_zero_snr") { rescaleBetasZeroSnr = value }
    }

    /// Reads and parses the `scheduler_config.json` at `path`.
    public init(contentsOf path: String) throws {
        try self.init(json: ConfigFile.data(at: path), source: path)
    }

    /// What an unknown choice is not supported by, in errors.
    private static let owner = "DDIMScheduler"
}
