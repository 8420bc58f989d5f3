// AutoencoderKLConfig: the fields of diffusers' `vae/config.json` for `AutoencoderKL` (v0.42.1)
// that shape the model, with diffusers' defaults, parsed as tolerantly as `from_config` does.
import Foundation

/// A VAE configuration that diffusers would reject or that Kinema cannot run: a `ConfigError` whose
/// problem names the key and what was expected.
public typealias AutoencoderKLConfigError = ConfigError

/// The configuration of diffusers' `AutoencoderKL`. Defaults are diffusers' constructor defaults,
/// which is what `from_config` uses for keys a `config.json` leaves out.
public struct AutoencoderKLConfig: Sendable, Equatable {
    /// `in_channels`: channels of the images the encoder reads.
    public var inChannels: Int
    /// `out_channels`: channels of the images the decoder writes.
    public var outChannels: Int
    /// `latent_channels`: channels of the latents (the encoder's moments have twice as many).
    public var latentChannels: Int
    /// `block_out_channels`: channels of each encoder block (the decoder's in reverse order).
    public var blockOutChannels: [Int]
    /// `layers_per_block`: resnets per encoder block; decoder blocks have one more.
    public var layersPerBlock: Int
    /// `norm_num_groups`: GroupNorm groups everywhere in the model.
    public var normNumGroups: Int
    /// `act_fn`: the activation; only SiLU (`"silu"`, or its alias `"swish"`) is supported.
    public var actFn: String
    /// `scaling_factor`: latents are multiplied by it after encoding and divided by it before decoding
    /// (by the pipeline, not by this model). I2VGen-XL's checkpoint has 0.18125, not SD's 0.18215.
    public var scalingFactor: Double
    /// `shift_factor`: unused by I2VGen-XL (its pipeline never reads it); kept for completeness.
    public var shiftFactor: Double?
    /// `use_quant_conv`: whether the 1×1 `quant_conv` follows the encoder.
    public var useQuantConv: Bool
    /// `use_post_quant_conv`: whether the 1×1 `post_quant_conv` precedes the decoder.
    public var usePostQuantConv: Bool
    /// `mid_block_add_attention`: whether the encoder's and decoder's mid blocks have attention.
    public var midBlockAddAttention: Bool
    /// `sample_size`: only used by diffusers' tiling, which Kinema does not implement (a list gives its first entry).
    public var sampleSize: Int
    /// `force_upcast`: ignored; the I2VGen-XL pipeline runs the VAE in the VAE's own dtype.
    public var forceUpcast: Bool

    /// A configuration with diffusers' defaults for every field not given.
    public init(inChannels: Int = 3, outChannels: Int = 3, latentChannels: Int = 4, blockOutChannels: [Int] = [64],
                layersPerBlock: Int = 1, normNumGroups: Int = 32, actFn: String = "silu", scalingFactor: Double = 0.18215,
                shiftFactor: Double? = nil, useQuantConv: Bool = true, usePostQuantConv: Bool = true,
                midBlockAddAttention: Bool = true, sampleSize: Int = 32, forceUpcast: Bool = true) {
        self.inChannels = inChannels
        self.outChannels = outChannels
        self.latentChannels = latentChannels
        self.blockOutChannels = blockOutChannels
        self.layersPerBlock = layersPerBlock
        self.normNumGroups = normNumGroups
        self.actFn = actFn
        self.scalingFactor = scalingFactor
        self.shiftFactor = shiftFactor
        self.useQuantConv = useQuantConv
        self.usePostQuantConv = usePostQuantConv
        self.midBlockAddAttention = midBlockAddAttention
        self.sampleSize = sampleSize
        self.forceUpcast = forceUpcast
    }

    /// How many times the encoder halves the image size: 2^(number of blocks − 1).
    public var downscaleFactor: Int { 1 << (blockOutChannels.count - 1) }

    /// Parses a `config.json` document and checks that Kinema can build the model it describes;
    /// errors call the document `source`.
    ///
    /// Tolerant like diffusers' `from_config`: unknown keys (`_class_name`, `latents_mean`, keys of
    /// other diffusers versions) are ignored, `null` means the default, integral floats are accepted
    /// as integers and integers as floats. A value of the wrong type is an error naming the key.
    public init(json: Data, source: String = "VAE config") throws {
        let keys = try ConfigFile.Reader(json: json, source: source)
        self.init()
        if let value = try keys.int("in_channels") { inChannels = value }
        if let value = try keys.int("out_channels") { outChannels = value }
        if let value = try keys.int("latent_channels") { latentChannels = value }
        if let value = try keys.ints("block_out_channels") { blockOutChannels = value }
        if let value = try keys.int("layers_per_block") { layersPerBlock = value }
        if let value = try keys.int("norm_num_groups") { normNumGroups = value }
        if let value = try keys.string("act_fn") { actFn = value }
        if let value = try keys.double("scaling_factor") { scalingFactor = value }
        shiftFactor = try keys.double("shift_factor")
        if let value = try keys.bool("use_quant_conv") { useQuantConv = value }
        if let value = try keys.bool("use_post_quant_conv") { usePostQuantConv = value }
        if let value = try keys.bool("mid_block_add_attention") { midBlockAddAttention = value }
        if let value = try keys.sampleSize("sample_size") { sampleSize = value }
        if let value = try keys.bool("force_upcast") { forceUpcast = value }
        let downBlockTypes = try keys.strings("down_block_types"), upBlockTypes = try keys.strings("up_block_types")
        try validate(source: source)
        try validate(downBlockTypes: downBlockTypes, upBlockTypes: upBlockTypes, source: source)
    }

    /// Reads and parses the `config.json` at `path`.
    public init(contentsOf path: String) throws {
        try self.init(json: ConfigFile.data(at: path), source: path)
    }

    /// Checks what diffusers' constructor (or torch's GroupNorm inside it) would reject and what
    /// Kinema does not implement; `init(json:)` has already done so for a parsed config.
    public func validate() throws { try validate(source: "VAE config") }

    private func validate(source: String) throws {
        func fail(_ problem: String) -> ConfigError { ConfigError(path: source, problem: problem) }
        guard !blockOutChannels.isEmpty, blockOutChannels.allSatisfy({ $0 > 0 }) else {
            throw fail("block_out_channels must be a non-empty list of positive integers, got \(blockOutChannels)")
        }
        guard actFn == "silu" || actFn == "swish" else {
            throw fail("act_fn is \"\(actFn)\"; only \"silu\" (or its alias \"swish\") is supported")
        }
        for (name, value) in [("in_channels", inChannels), ("out_channels", outChannels), ("latent_channels", latentChannels),
                              ("layers_per_block", layersPerBlock), ("norm_num_groups", normNumGroups)] where value < 1 {
            throw fail("\(name) must be at least 1, got \(value)")
        }
        if let channels = blockOutChannels.first(where: { $0 % normNumGroups != 0 }) {
            throw fail("block_out_channels entry \(channels) is not divisible into norm_num_groups = \(normNumGroups) groups")
        }
    }

    /// Checks the block types of a config file, which this struct does not store because only one
    /// kind of each exists in the VAE Kinema runs.
    private func validate(downBlockTypes: [String]?, upBlockTypes: [String]?, source: String) throws {
        func fail(_ problem: String) -> ConfigError { ConfigError(path: source, problem: problem) }
        // diffusers' defaults are one block of each; it builds one block per entry of *_block_types
        // but indexes block_out_channels with it.
        let down = downBlockTypes ?? ["DownEncoderBlock2D"]
        let up = upBlockTypes ?? ["UpDecoderBlock2D"]
        guard down.count == blockOutChannels.count, up.count == blockOutChannels.count else {
            throw fail("down_block_types (\(down.count)) and up_block_types (\(up.count)) must have one "
                       + "entry per block_out_channels entry (\(blockOutChannels.count))")
        }
        if let other = down.first(where: { $0 != "DownEncoderBlock2D" }) {
            throw fail("down_block_types has \"\(other)\"; only \"DownEncoderBlock2D\" is supported")
        }
        if let other = up.first(where: { $0 != "UpDecoderBlock2D" }) {
            throw fail("up_block_types has \"\(other)\"; only \"UpDecoderBlock2D\" is supported")
        }
    }
}

private extension ConfigFile.Reader {
    /// `sample_size`: an integer, or a list of them (diffusers allows `[height, width]`) whose first entry is taken.
    func sampleSize(_ key: String) throws -> Int? {
        guard value(key) is [Any] else { return try int(key) }
        guard let first = try ints(key)?.first else { throw wrong(key, "an integer or a non-empty list of integers") }
        return first
    }
}
