import Foundation

/// The fields of an I2VGenXLUNet `config.json` that shape the model. Unknown keys are ignored and
/// missing or null ones take diffusers' defaults; `num_attention_heads` is read but, as in
/// diffusers, ignored (`attention_head_dim` decides the heads).
public struct I2VGenXLUNetConfig: Sendable, Equatable {
    public var inChannels = 4
    public var outChannels = 4
    public var downBlockTypes = ["CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "DownBlock3D"]
    public var upBlockTypes = ["UpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D"]
    public var blockOutChannels = [320, 640, 1280, 1280]
    public var layersPerBlock = 2
    public var normNumGroups = 32
    public var crossAttentionDim = 1024
    public var attentionHeadDim = 64
    public var sampleSize: Int?

    public init() {}

    /// 4 × the first block's channels, as diffusers.
    public var timeEmbeddingDim: Int { blockOutChannels[0] * 4 }
    /// How many times the UNet halves the latent (one per downsampling block).
    public var downsamplings: Int { blockOutChannels.count - 1 }

    public init(contentsOf path: String) throws {
        let object = try ConfigFile.object(at: path)
        var c = I2VGenXLUNetConfig()
        let r = ConfigFile.Reader(path: path, object: object)
        c.inChannels = try r.int("in_channels") ?? c.inChannels
        c.outChannels = try r.int("out_channels") ?? c.outChannels
        c.downBlockTypes = try r.strings("down_block_types") ?? c.downBlockTypes
        c.upBlockTypes = try r.strings("up_block_types") ?? c.upBlockTypes
        c.blockOutChannels = try r.ints("block_out_channels") ?? c.blockOutChannels
        c.layersPerBlock = try r.int("layers_per_block") ?? c.layersPerBlock
        c.normNumGroups = try r.int("norm_num_groups") ?? c.normNumGroups
        c.crossAttentionDim = try r.int("cross_attention_dim") ?? c.crossAttentionDim
        c.attentionHeadDim = try r.int("attention_head_dim") ?? c.attentionHeadDim
        c.sampleSize = try r.int("sample_size")
        try c.validate(path: path)
        self = c
    }

    func validate(path: String) throws {
        func fail(_ message: String) -> ConfigError { ConfigError(path: path, problem: message) }
        guard !blockOutChannels.isEmpty, blockOutChannels.allSatisfy({ $0 > 0 }) else { throw fail("block_out_channels must be positive") }
        guard downBlockTypes.count == blockOutChannels.count, upBlockTypes.count == blockOutChannels.count else {
            throw fail("down_block_types, up_block_types and block_out_channels must have the same length")
        }
        for type in downBlockTypes where !["CrossAttnDownBlock3D", "DownBlock3D"].contains(type) {
            throw fail("unsupported down block type \(type) (expected CrossAttnDownBlock3D or DownBlock3D)")
        }
        for type in upBlockTypes where !["CrossAttnUpBlock3D", "UpBlock3D"].contains(type) {
            throw fail("unsupported up block type \(type) (expected CrossAttnUpBlock3D or UpBlock3D)")
        }
        guard inChannels == 4 else { throw fail("in_channels must be 4 (the image-latent branch is built for 4), got \(inChannels)") }
        guard layersPerBlock > 0, normNumGroups > 0, crossAttentionDim > 0, attentionHeadDim > 0 else {
            throw fail("layers_per_block, norm_num_groups, cross_attention_dim and attention_head_dim must be positive")
        }
        for channels in blockOutChannels + [timeEmbeddingDim] where channels % normNumGroups != 0 {
            throw fail("\(channels) channels are not divisible into norm_num_groups = \(normNumGroups) groups")
        }
    }
}
