// AutoencoderKLConfig: the fields of diffusers' `vae/config.json` for `AutoencoderKL` (v0.42.1)
// that shape the model, with diffusers' defaults, parsed as tolerantly as `from_config` does.
import Foundation

/// A VAE configuration that diffusers would reject or that Kinema cannot run; the message names the
/// key and what was expected.
public struct AutoencoderKLConfigError: Error, CustomStringConvertible, Sendable {
    /// What went wrong, naming the offending key or file.
    public let description: String

    init(_ description: String) { self.description = description }
}

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

    /// Parses a `config.json` document and checks that Kinema can build the model it describes.
    ///
    /// Tolerant like diffusers' `from_config`: unknown keys (`_class_name`, `latents_mean`, keys of
    /// other diffusers versions) are ignored, `null` means the default, integral floats are accepted
    /// as integers and integers as floats. A value of the wrong type is an error naming the key.
    public init(json: Data) throws {
        let document: ConfigDocument
        do {
            document = try JSONDecoder().decode(ConfigDocument.self, from: json)
        } catch let error as AutoencoderKLConfigError {
            throw error
        } catch {
            throw AutoencoderKLConfigError("VAE config is not a valid JSON object: \(error)")
        }
        self = document.config
        try validate(downBlockTypes: document.downBlockTypes, upBlockTypes: document.upBlockTypes)
    }

    /// Reads and parses the `config.json` at `path`.
    public init(contentsOf path: String) throws {
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw AutoencoderKLConfigError("cannot read VAE config \(path): \(error.localizedDescription)")
        }
        do {
            try self.init(json: data)
        } catch let error as AutoencoderKLConfigError {
            throw AutoencoderKLConfigError("\(path): \(error.description)")
        }
    }

    /// Checks what diffusers' constructor (or torch's GroupNorm inside it) would reject and what
    /// Kinema does not implement; `init(json:)` has already done so for a parsed config.
    public func validate() throws {
        guard !blockOutChannels.isEmpty, blockOutChannels.allSatisfy({ $0 > 0 }) else {
            throw AutoencoderKLConfigError("block_out_channels must be a non-empty list of positive integers, got \(blockOutChannels)")
        }
        guard actFn == "silu" || actFn == "swish" else {
            throw AutoencoderKLConfigError("act_fn is \"\(actFn)\"; only \"silu\" (or its alias \"swish\") is supported")
        }
        for (name, value) in [("in_channels", inChannels), ("out_channels", outChannels), ("latent_channels", latentChannels),
                              ("layers_per_block", layersPerBlock), ("norm_num_groups", normNumGroups)] where value < 1 {
            throw AutoencoderKLConfigError("\(name) must be at least 1, got \(value)")
        }
        if let channels = blockOutChannels.first(where: { $0 % normNumGroups != 0 }) {
            throw AutoencoderKLConfigError("block_out_channels entry \(channels) is not divisible into norm_num_groups = \(normNumGroups) groups")
        }
    }

    /// Checks the block types of a config file, which this struct does not store because only one
    /// kind of each exists in the VAE Kinema runs.
    private func validate(downBlockTypes: [String]?, upBlockTypes: [String]?) throws {
        try validate()
        // diffusers' defaults are one block of each; it builds one block per entry of *_block_types
        // but indexes block_out_channels with it.
        let down = downBlockTypes ?? ["DownEncoderBlock2D"]
        let up = upBlockTypes ?? ["UpDecoderBlock2D"]
        guard down.count == blockOutChannels.count, up.count == blockOutChannels.count else {
            throw AutoencoderKLConfigError("down_block_types (\(down.count)) and up_block_types (\(up.count)) must have one "
                                           + "entry per block_out_channels entry (\(blockOutChannels.count))")
        }
        if let other = down.first(where: { $0 != "DownEncoderBlock2D" }) {
            throw AutoencoderKLConfigError("down_block_types has \"\(other)\"; only \"DownEncoderBlock2D\" is supported")
        }
        if let other = up.first(where: { $0 != "UpDecoderBlock2D" }) {
            throw AutoencoderKLConfigError("up_block_types has \"\(other)\"; only \"UpDecoderBlock2D\" is supported")
        }
    }
}

/// Decodes the keys of a VAE config one by one so that each error names its key.
private struct ConfigDocument: Decodable {
    var config = AutoencoderKLConfig()
    var downBlockTypes: [String]?
    var upBlockTypes: [String]?

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
            throw AutoencoderKLConfigError("a VAE config must be a JSON object")
        }
        let keys = KeyReader(container: container)
        if let value = try keys.integer("in_channels") { config.inChannels = value }
        if let value = try keys.integer("out_channels") { config.outChannels = value }
        if let value = try keys.integer("latent_channels") { config.latentChannels = value }
        if let value = try keys.integers("block_out_channels") { config.blockOutChannels = value }
        if let value = try keys.integer("layers_per_block") { config.layersPerBlock = value }
        if let value = try keys.integer("norm_num_groups") { config.normNumGroups = value }
        if let value = try keys.string("act_fn") { config.actFn = value }
        if let value = try keys.number("scaling_factor") { config.scalingFactor = value }
        config.shiftFactor = try keys.number("shift_factor")
        if let value = try keys.boolean("use_quant_conv") { config.useQuantConv = value }
        if let value = try keys.boolean("use_post_quant_conv") { config.usePostQuantConv = value }
        if let value = try keys.boolean("mid_block_add_attention") { config.midBlockAddAttention = value }
        if let value = try keys.sampleSize("sample_size") { config.sampleSize = value }
        if let value = try keys.boolean("force_upcast") { config.forceUpcast = value }
        downBlockTypes = try keys.strings("down_block_types")
        upBlockTypes = try keys.strings("up_block_types")
    }

    /// Typed access to one key; `nil` when the key is absent or null.
    private struct KeyReader {
        let container: KeyedDecodingContainer<Key>

        private func present(_ name: String) throws -> Key? {
            let key = Key(stringValue: name)
            guard container.contains(key), try !container.decodeNil(forKey: key) else { return nil }
            return key
        }

        private func mismatch(_ name: String, _ expected: String) -> AutoencoderKLConfigError {
            let key = Key(stringValue: name)
            let found: String
            if (try? container.decode(Bool.self, forKey: key)) != nil { found = "a boolean" }
            else if (try? container.decode(Double.self, forKey: key)) != nil { found = "a number" }
            else if let text = try? container.decode(String.self, forKey: key) { found = "the string \"\(text)\"" }
            else if (try? container.decode([Double?].self, forKey: key)) != nil { found = "an array of numbers" }
            else { found = "an object or another kind of array" }
            return AutoencoderKLConfigError("VAE config key \"\(name)\" must be \(expected), found \(found)")
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

        func string(_ name: String) throws -> String? {
            guard let key = try present(name) else { return nil }
            guard let value = try? container.decode(String.self, forKey: key) else { throw mismatch(name, "a string") }
            return value
        }

        func strings(_ name: String) throws -> [String]? {
            guard let key = try present(name) else { return nil }
            guard let value = try? container.decode([String].self, forKey: key) else { throw mismatch(name, "a list of strings") }
            return value
        }

        func integer(_ name: String) throws -> Int? {
            guard let key = try present(name) else { return nil }
            guard let value = try? container.decode(Double.self, forKey: key) else { throw mismatch(name, "an integer") }
            return try Self.exactInteger(value, name)
        }

        func integers(_ name: String) throws -> [Int]? {
            guard let key = try present(name) else { return nil }
            guard let values = try? container.decode([Double].self, forKey: key) else {
                throw mismatch(name, "a list of integers")
            }
            return try values.map { try Self.exactInteger($0, name) }
        }

        /// An integer, or a list of them (diffusers allows `[height, width]`), whose first entry is taken.
        func sampleSize(_ name: String) throws -> Int? {
            guard let key = try present(name) else { return nil }
            if let value = try? container.decode(Double.self, forKey: key) { return try Self.exactInteger(value, name) }
            guard let values = try? container.decode([Double].self, forKey: key), let first = values.first else {
                throw mismatch(name, "an integer or a non-empty list of integers")
            }
            return try Self.exactInteger(first, name)
        }

        private static func exactInteger(_ value: Double, _ name: String) throws -> Int {
            guard value.rounded() == value, let integer = Int(exactly: value) else {
                throw AutoencoderKLConfigError("VAE config key \"\(name)\" must hold integers, found \(value)")
            }
            return integer
        }
    }
}
