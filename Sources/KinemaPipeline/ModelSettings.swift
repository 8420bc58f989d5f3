import Foundation

/// A model folder's own settings file, `kinema.json`: the generation settings it recommends and,
/// optionally, the parameter ranges a UI should offer for it. Every field is optional.
///
///     {"width": 256, "height": 256, "frames": 16, "fps": 8, "steps": 20, "guidance": 6,
///      "ranges": {"width": {"min": 128, "max": 512, "step": 8}}}
public struct ModelSettings: Codable, Sendable, Equatable {
    public var width: Int?
    public var height: Int?
    public var frames: Int?
    public var fps: Int?
    public var steps: Int?
    public var guidance: Float?
    /// Ranges by parameter name (width, height, frames, fps, steps, guidance).
    public var ranges: [String: ParameterRange]?

    public init(width: Int? = nil, height: Int? = nil, frames: Int? = nil, fps: Int? = nil, steps: Int? = nil,
                guidance: Float? = nil, ranges: [String: ParameterRange]? = nil) {
        self.width = width
        self.height = height
        self.frames = frames
        self.fps = fps
        self.steps = steps
        self.guidance = guidance
        self.ranges = ranges
    }

    /// The settings in `modelFolder/kinema.json`, or none when the file is absent.
    /// - Throws: `ModelLoadError` when the file exists but is not valid settings.
    public static func load(modelFolder: String) throws -> ModelSettings {
        let path = (modelFolder as NSString).appendingPathComponent("kinema.json")
        guard let data = FileManager.default.contents(atPath: path) else { return ModelSettings() }
        do { return try JSONDecoder().decode(ModelSettings.self, from: data) } catch {
            throw ModelLoadError("\(path): not valid settings (\(error.localizedDescription))")
        }
    }

    /// Fills `request`'s generation settings from these, where these give one.
    public func apply(to request: inout GenerationRequest) {
        request.width = width ?? request.width
        request.height = height ?? request.height
        request.frames = frames ?? request.frames
        request.fps = fps ?? request.fps
        request.steps = steps ?? request.steps
        request.guidanceScale = guidance ?? request.guidanceScale
    }
}

/// An inclusive range of a numeric parameter with its step.
public struct ParameterRange: Codable, Sendable, Equatable {
    public var min: Double
    public var max: Double
    public var step: Double

    public init(min: Double, max: Double, step: Double) {
        self.min = min
        self.max = max
        self.step = step
    }

    /// Whether `value` lies in the range and on its grid (counted from `min`).
    public func contains(_ value: Double) -> Bool {
        guard value >= min - 1e-9, value <= max + 1e-9 else { return false }
        guard step > 0 else { return true }
        let offset = (value - min) / step
        return abs(offset - offset.rounded()) < 1e-6
    }
}
