import Foundation
import KinemaCore
import KinemaModels

/// What to generate. Defaults are diffusers' `I2VGenXLPipeline.__call__` defaults.
public struct GenerationRequest: Sendable, Equatable {
    public var prompt: String
    /// nil encodes "" for the unconditional half, as diffusers does.
    public var negativePrompt: String?
    public var width = 1280
    public var height = 704
    public var frames = 16
    public var fps = 16
    public var steps = 50
    /// Classifier-free guidance is on when this is above 1.
    public var guidanceScale: Float = 9
    public var seed: UInt64
    /// Frames decoded per VAE call (diffusers' `decode_chunk_size`, default 1); any value gives the same frames.
    public var decodeChunk = 1

    public init(prompt: String, negativePrompt: String? = nil, seed: UInt64) {
        self.prompt = prompt
        self.negativePrompt = negativePrompt
        self.seed = seed
    }

    public var usesGuidance: Bool { guidanceScale > 1 }

    /// Throws a `GenerationError` naming the first parameter that diffusers would reject or that makes no sense.
    public func validate() throws {
        guard width > 0, height > 0, width % 8 == 0, height % 8 == 0 else {
            throw GenerationError("width and height must be positive multiples of 8, got \(width)x\(height)")
        }
        guard frames >= 1 else { throw GenerationError("frames must be at least 1, got \(frames)") }
        guard steps >= 1 else { throw GenerationError("steps must be at least 1, got \(steps)") }
        guard fps >= 1 else { throw GenerationError("fps must be at least 1, got \(fps)") }
        guard guidanceScale >= 0, guidanceScale.isFinite else { throw GenerationError("guidance must be 0 or more, got \(guidanceScale)") }
        guard decodeChunk >= 1 else { throw GenerationError("decode chunk must be at least 1, got \(decodeChunk)") }
    }
}

/// A request the pipeline cannot run, or a run that was cancelled.
public struct GenerationError: Error, CustomStringConvertible, Equatable {
    public let description: String
    public init(_ description: String) { self.description = description }
    public static let cancelled = GenerationError("cancelled")
}

/// The phases of a generation, as progress reports them.
public enum GenerationPhase: String, Sendable {
    case encode, denoise, decode
    case encodeVideo = "encode_video"
}

/// One progress report: `step` of `totalSteps` done in `phase`.
public struct GenerationProgress: Sendable, Equatable {
    public let phase: GenerationPhase
    public let step: Int
    public let totalSteps: Int

    public init(phase: GenerationPhase, step: Int, totalSteps: Int) {
        self.phase = phase
        self.step = step
        self.totalSteps = totalSteps
    }
}

/// Frames in [0, 1], `[frames][height][width][3]` as one flat array: diffusers' `output_type="np"`.
public struct GeneratedVideo: Sendable {
    public let frames: [Float]
    public let count: Int
    public let width: Int
    public let height: Int
}

/// How a generation is run: lossless choices that change memory and time, never the frames
/// beyond float rounding, and two lossy ones the planner takes only when no lossless plan fits
/// (`vaeTile`, `tokenMerge`).
public struct ExecutionPlan: Sendable, Equatable, Codable {
    /// Classifier-free guidance as one UNet call on a batch of two, or two calls of one
    /// (unconditional, then conditional): half the UNet's activations, a little slower.
    public enum Guidance: String, Sendable, Codable, CaseIterable { case batched, serial }
    /// Which weights are resident: all of them for the whole run; only the models of the running
    /// phase (encoders, then UNet, then VAE), each loaded when its phase starts; or that, with the
    /// UNet's blocks (`down_blocks.i`, `mid_block`, `up_blocks.i`) streamed — each read onto the
    /// device when a UNet call reaches it and dropped after (the weights are read again at every
    /// call: slower, and the device holds one block's weights at a time).
    public enum Residency: String, Sendable, Codable, CaseIterable {
        case all
        case perPhase = "per_phase"
        case streamed
    }

    /// How weight matrices are kept: in the compute type, or in f16 and widened one op at a time
    /// (half their memory; lossless for an f16 checkpoint, whose values f16 holds exactly).
    public enum Weights: String, Sendable, Codable, CaseIterable { case compute, f16 }

    public var guidance: Guidance
    public var residency: Residency
    public var weights: Weights
    /// Parts the UNet's transformer and resnet activations are computed in, one after another:
    /// frame chunks of B·F / splits for the spatial layers, token chunks of B·h·w / splits pixel
    /// sequences for the temporal transformers. Their intermediates shrink about `splits` times;
    /// the products get smaller, so somewhat slower. 1 = whole.
    public var splits: Int
    /// Lossy: decode in tiles of this many latent pixels a side, overlapping by a quarter and
    /// blended (diffusers' VAE tiling); nil decodes whole frames.
    public var vaeTile: Int?
    /// Lossy: the share of each frame's tokens merged in the UNet's full-resolution spatial
    /// self-attentions (frame-aware ToMe); nil merges none.
    public var tokenMerge: Double?

    public init(guidance: Guidance = .batched, residency: Residency = .all, splits: Int = 1, weights: Weights = .compute,
                vaeTile: Int? = nil, tokenMerge: Double? = nil) {
        self.guidance = guidance
        self.residency = residency
        self.splits = splits
        self.weights = weights
        self.vaeTile = vaeTile
        self.tokenMerge = tokenMerge
    }

    /// Whether this plan changes the frames beyond float rounding.
    public var isLossy: Bool { vaeTile != nil || (tokenMerge ?? 0) > 0 }

    /// The same knobs with the lossy ones set.
    public func with(vaeTile: Int?, tokenMerge: Double?) -> ExecutionPlan {
        var copy = self
        copy.vaeTile = vaeTile
        copy.tokenMerge = tokenMerge
        return copy
    }

    enum CodingKeys: String, CodingKey {
        case guidance, residency, splits, weights
        case vaeTile = "vae_tile"
        case tokenMerge = "token_merge"
    }
}

/// Image-to-video exactly as diffusers' `I2VGenXLPipeline.__call__` (one image, one video per
/// prompt), on any backend.
public struct ImageToVideoPipeline {
    /// Where the models come from: already loaded, or a folder to load them from per plan.
    enum Source {
        case loaded(I2VGenXLModel)
        case folder(ModelFolder)
    }

    let source: Source
    public let backend: Backend

    /// A pipeline over models already loaded (all resident).
    public init(model: I2VGenXLModel, backend: Backend) {
        self.source = .loaded(model)
        self.backend = backend
    }

    /// A pipeline that loads its models from `folder` as the plan asks.
    public init(folder: ModelFolder) {
        self.source = .folder(folder)
        self.backend = folder.backend
    }

    /// The models of one run: loaded ones are shared; with a folder, per the plan's residency.
    final class Models {
        let source: Source
        let plan: ExecutionPlan
        private var resident: I2VGenXLModel?

        init(source: Source, plan: ExecutionPlan) throws {
            self.plan = plan
            switch source {
            case .loaded(let model):
                self.source = source
                resident = model
            case .folder(let original):
                let folder = original.storingMatrices(as: plan.weights == .f16 ? .f16 : nil)
                self.source = .folder(folder)
                if plan.residency == .all {
                    resident = I2VGenXLModel(folder: folder.folder, tokenizer: folder.tokenizer, textEncoder: try folder.textEncoder(),
                                             imageEncoder: try folder.imageEncoder(), featureExtractor: folder.featureExtractor,
                                             vae: try folder.vae(), unet: try folder.unet(), scheduler: folder.scheduler)
                }
            }
        }

        var tokenizer: CLIPTokenizer { resident?.tokenizer ?? folder.tokenizer }
        var scheduler: DDIMScheduler { resident?.scheduler ?? folder.scheduler }
        var featureExtractor: FeatureExtractorConfig { resident?.featureExtractor ?? folder.featureExtractor }
        private var folder: ModelFolder {
            guard case .folder(let folder) = source else { preconditionFailure("loaded models are always resident") }
            return folder
        }
        func textEncoder() throws -> CLIPTextModel { try resident?.textEncoder ?? folder.textEncoder() }
        func imageEncoder() throws -> CLIPVisionModelWithProjection { try resident?.imageEncoder ?? folder.imageEncoder() }
        func vae() throws -> AutoencoderKL { try resident?.vae ?? folder.vae() }
        func unet() throws -> I2VGenXLUNet {
            if let resident { return resident.unet }
            return plan.residency == .streamed ? try folder.unetStreamingBlocks() : try folder.unet()
        }
        /// Configs without weights, for sizes.
        func vaeConfig() throws -> AutoencoderKLConfig {
            try resident?.vae.config ?? AutoencoderKLConfig(contentsOf: ModelFolder.path(folder.folder, "vae", "config.json"))
        }
        func unetConfig() throws -> I2VGenXLUNetConfig {
            try resident?.unet.config ?? I2VGenXLUNetConfig(contentsOf: ModelFolder.path(folder.folder, "unet", "config.json"))
        }
    }

    /// Runs a generation. `progress` is called after each phase step; `isCancelled` is polled
    /// between steps and makes the run throw `GenerationError.cancelled`. `observe` sees the
    /// intermediates the parity tests compare: "prompt_embeds", "image_embeds" (the encoder's
    /// output), "image_latents" (the UNet's conditioning input), "unet_out" (first step, before
    /// guidance) and "first_decode" (the first VAE call's output).
    public func generate(image: RGBImage, request: GenerationRequest, plan: ExecutionPlan = ExecutionPlan(),
                         progress: (GenerationProgress) -> Void = { _ in },
                         isCancelled: () -> Bool = { false },
                         observe: (String, Tensor) -> Void = { _, _ in }) throws -> GeneratedVideo {
        try request.validate()
        if let tile = plan.vaeTile, !AutoencoderKL.isValidTile(tile) {
            throw GenerationError("VAE tile \(tile) must be a multiple of 4 of at least 8 latent pixels")
        }
        if let ratio = plan.tokenMerge, !(ratio >= 0 && ratio < 1) {
            throw GenerationError("token merge ratio \(ratio) must be in [0, 1)")
        }
        if case .loaded = source, plan.residency != .all {
            throw GenerationError("a pipeline over loaded models keeps them all resident; build it from a ModelFolder for per-phase residency")
        }
        if case .loaded = source, plan.weights != .compute {
            throw GenerationError("a pipeline over loaded models keeps their weights as loaded; build it from a ModelFolder for f16 weights")
        }
        let b = backend
        let models = try Models(source: source, plan: plan)
        let timesteps = try models.scheduler.timesteps(steps: request.steps)
        let vaeConfig = try models.vaeConfig()
        let vaeFactor = vaeConfig.downscaleFactor
        let (h, w, frames) = (request.height / vaeFactor, request.width / vaeFactor, request.frames)
        let latentShape = [1, try models.unetConfig().inChannels, frames, h, w]
        // Encoding and denoising in their own scope: the conditioning is gone before decoding.
        let latents = try denoisedLatents(models: models, image: image, request: request, plan: plan, timesteps: timesteps,
                                          vaeConfig: vaeConfig, latentShape: latentShape, progress: progress,
                                          isCancelled: isCancelled, observe: observe)

        // Decode: latents / scaling factor, frames through the VAE in chunks.
        if isCancelled() { throw GenerationError.cancelled }
        let vae = try models.vae()
        let scaled = b.affine(b.tensor(latents, shape: latentShape), scale: Float(1 / vaeConfig.scalingFactor))
        // (1, 4, F, h, w) -> (F, 4, h, w)
        let perFrame = b.permute(scaled, [0, 2, 1, 3, 4]).reshaped([frames, latentShape[1], h, w])
        var decoded: [Tensor] = []
        var start = 0
        progress(GenerationProgress(phase: .decode, step: 0, totalSteps: frames))
        while start < frames {
            let end = min(frames, start + request.decodeChunk)
            let chunk = perFrame.slice(start..<end)
            decoded.append(plan.vaeTile.map { vae.decode(chunk, tile: $0, b) } ?? vae.decode(chunk, b))
            if start == 0 { observe("first_decode", decoded[0]) }
            start = end
            progress(GenerationProgress(phase: .decode, step: end, totalSteps: frames))
        }
        let video = decoded.count == 1 ? decoded[0] : b.concat(decoded, axis: 0)
        // (x · 0.5 + 0.5).clamp(0, 1), then (F, 3, H, W) -> (F, H, W, 3).
        let unit = b.clamp(b.affine(video, scale: 0.5, shift: 0.5), lower: 0, upper: 1)
        let frameMajor = b.permute(unit, [0, 2, 3, 1])
        return GeneratedVideo(frames: frameMajor.hasData ? b.floats(frameMajor) : [], count: frames,
                              width: frameMajor.shape[2], height: frameMajor.shape[1])
    }

    /// Encode (prompt, image embeddings, image latents) and denoise: the final latents, on the host.
    private func denoisedLatents(models: Models, image: RGBImage, request: GenerationRequest, plan: ExecutionPlan,
                                 timesteps: [Int], vaeConfig: AutoencoderKLConfig, latentShape: [Int],
                                 progress: (GenerationProgress) -> Void, isCancelled: () -> Bool,
                                 observe: (String, Tensor) -> Void) throws -> [Float] {
        let b = backend
        let scheduler = models.scheduler
        let (frames, h, w) = (latentShape[2], latentShape[3], latentShape[4])
        let guidance = request.usesGuidance
        // diffusers draws the VAE's posterior noise from torch's global generator and the initial
        // latents from the pipeline's generator; `--seed S` seeds both with S (ANCHORS.md §4).
        var globalGenerator = TorchGenerator(seed: request.seed)
        var generator = TorchGenerator(seed: request.seed)

        // Encode: prompt, image embeddings, image latents.
        progress(GenerationProgress(phase: .encode, step: 0, totalSteps: 3))
        var textEmbeddings: Tensor
        do {
            let textEncoder = try models.textEncoder()
            textEmbeddings = textEncoder.promptEmbeddings(ids: [models.tokenizer.encode(request.prompt)], b)
            if guidance {
                let negative = textEncoder.promptEmbeddings(ids: [models.tokenizer.encode(request.negativePrompt ?? "")], b)
                textEmbeddings = b.concat([negative, textEmbeddings], axis: 0)  // unconditional first
            }
        }
        observe("prompt_embeds", textEmbeddings)
        progress(GenerationProgress(phase: .encode, step: 1, totalSteps: 3))
        var imageEmbeddings: Tensor
        do {
            let crop = models.featureExtractor.cropSize
            let clipPixels = ImagePreprocessing.clipPixels(image, width: request.width, cropSize: crop,
                                                           mean: models.featureExtractor.mean, std: models.featureExtractor.std)
            imageEmbeddings = try models.imageEncoder().imageEmbeddings(b.tensor(clipPixels, shape: [1, 3, crop, crop]), b)
        }
        observe("image_embeds", imageEmbeddings)
        if guidance {
            // The unconditional image embedding is zeros (before the UNet's context MLP).
            imageEmbeddings = b.concat([b.tensor([Float](repeating: 0, count: imageEmbeddings.count), shape: imageEmbeddings.shape), imageEmbeddings], axis: 0)
        }
        progress(GenerationProgress(phase: .encode, step: 2, totalSteps: 3))
        var imageLatents: Tensor
        do {
            let vae = try models.vae()
            let pixels = b.tensor(ImagePreprocessing.vaePixels(image, width: request.width, height: request.height),
                                  shape: [1, 3, request.height, request.width])
            let (mean, logVariance) = vae.encodeMoments(pixels, b)
            let noise = b.tensor(globalGenerator.randn(shape: mean.shape), shape: mean.shape)
            let latent = b.affine(vae.sample(mean: mean, logVariance: logVariance, noise: noise, b),
                                  scale: Float(vaeConfig.scalingFactor))
            // Frame 0 is the image latent; frame k of F is the constant k/(F−1) (the frame position mask).
            var parts = [latent.reshaped([1, latent.shape[1], 1, h, w])]
            for k in 1..<max(frames, 1) {
                let value = Float(Double(k) / Double(frames - 1))
                parts.append(b.tensor([Float](repeating: value, count: latent.shape[1] * h * w), shape: [1, latent.shape[1], 1, h, w]))
            }
            imageLatents = b.concat(parts, axis: 2)
            if guidance { imageLatents = b.concat([imageLatents, imageLatents], axis: 0) }
        }
        observe("image_latents", imageLatents)
        progress(GenerationProgress(phase: .encode, step: 3, totalSteps: 3))

        // Denoise.
        var latents: [Float]
        do {
            let unet = try models.unet()
            latents = generator.randn(shape: latentShape)  // init_noise_sigma is 1 for DDIM
            progress(GenerationProgress(phase: .denoise, step: 0, totalSteps: timesteps.count))
            for (index, t) in timesteps.enumerated() {
                if isCancelled() { throw GenerationError.cancelled }
                let current = b.tensor(latents, shape: latentShape)
                var prediction: Tensor
                if guidance && plan.guidance == .serial {
                    // Unconditional, then conditional: the same inputs as the batch's halves.
                    let halves = (0..<2).map { i in
                        unet(current, timestep: t, fps: request.fps, textEmbeddings: textEmbeddings.slice(i..<(i + 1)),
                             imageLatents: imageLatents.slice(i..<(i + 1)), imageEmbeddings: imageEmbeddings.slice(i..<(i + 1)),
                             splits: plan.splits, tokenMerge: plan.tokenMerge, b)
                    }
                    if index == 0 { observe("unet_out", b.concat(halves, axis: 0)) }
                    prediction = b.add(halves[0], b.affine(b.sub(halves[1], halves[0]), scale: request.guidanceScale))
                } else {
                    let input = guidance ? b.concat([current, current], axis: 0) : current
                    prediction = unet(input, timestep: t, fps: request.fps, textEmbeddings: textEmbeddings,
                                      imageLatents: imageLatents, imageEmbeddings: imageEmbeddings, splits: plan.splits,
                                      tokenMerge: plan.tokenMerge, b)
                    if index == 0 { observe("unet_out", prediction) }
                    if guidance {
                        // uncond + g · (cond − uncond), op by op as torch rounds it.
                        let uncond = prediction.slice(0..<1), cond = prediction.slice(1..<2)
                        prediction = b.add(uncond, b.affine(b.sub(cond, uncond), scale: request.guidanceScale))
                    }
                }
                latents = prediction.hasData
                    ? try scheduler.step(modelOutput: b.floats(prediction), timestep: t, sample: latents, steps: request.steps)
                    : latents
                progress(GenerationProgress(phase: .denoise, step: index + 1, totalSteps: timesteps.count))
            }
        }
        return latents
    }
}
