import Foundation
import KinemaPipeline
import KinemaPlanner

/// One generation preset of the WebUI.
struct Preset: Sendable, Equatable {
    var name: String
    var label: String
    var width: Int, height: Int, frames: Int, fps: Int, steps: Int
    var guidance: Float

    var json: [String: Any] {
        ["name": name, "label": label, "width": width, "height": height, "frames": frames, "fps": fps, "steps": steps,
         "guidance": Double(guidance)]
    }

    /// The presets of the community I2VGen-XL WebUI, plus the released model's native size.
    static let standard: [Preset] = [
        Preset(name: "quick", label: "Quick (256×256, 8 frames)", width: 256, height: 256, frames: 8, fps: 8, steps: 50, guidance: 9),
        Preset(name: "standard", label: "Standard (512×512, 16 frames)", width: 512, height: 512, frames: 16, fps: 8, steps: 50, guidance: 9),
        Preset(name: "high", label: "High (768×768, 24 frames)", width: 768, height: 768, frames: 24, fps: 8, steps: 50, guidance: 9),
        Preset(name: "native", label: "Native (1280×704, 16 frames)", width: 1280, height: 704, frames: 16, fps: 16, steps: 50, guidance: 9),
    ]
}

/// The parameter ranges offered for one model.
struct ParameterRanges: Sendable, Equatable {
    var ranges: [String: ParameterRange]

    static let names = ["width", "height", "frames", "fps", "steps", "guidance"]

    /// API.md's defaults, where a model's `kinema.json` gives none.
    static let defaults: [String: ParameterRange] = [
        "width": ParameterRange(min: 256, max: 1280, step: 8), "height": ParameterRange(min: 256, max: 1280, step: 8),
        "frames": ParameterRange(min: 8, max: 32, step: 1), "fps": ParameterRange(min: 4, max: 24, step: 1),
        "steps": ParameterRange(min: 10, max: 100, step: 1), "guidance": ParameterRange(min: 1, max: 20, step: 0.5),
    ]

    init(model settings: ModelSettings) {
        ranges = Self.defaults.merging(settings.ranges ?? [:]) { _, own in own }
    }

    /// A 422 naming the field when `value` is outside its range (guidance: any value within; the rest: on the grid too).
    func check(_ name: String, _ value: Double) throws {
        guard let range = ranges[name] else { return }
        let onGrid = name == "guidance" ? (range.min...range.max).contains(value) : range.contains(value)
        guard onGrid else {
            let grid = name == "guidance" || range.step == 1 ? "" : " in steps of \(Self.format(range.step))"
            throw APIError(.unprocessableContent, "out_of_range",
                           "\(name) must be between \(Self.format(range.min)) and \(Self.format(range.max))\(grid), got \(Self.format(value))",
                           field: name)
        }
    }

    func contains(_ preset: Preset) -> Bool {
        let values: [(String, Double)] = [("width", Double(preset.width)), ("height", Double(preset.height)),
                                          ("frames", Double(preset.frames)), ("fps", Double(preset.fps)),
                                          ("steps", Double(preset.steps)), ("guidance", Double(preset.guidance))]
        return values.allSatisfy { (try? check($0.0, $0.1)) != nil }
    }

    var json: [String: Any] {
        ranges.mapValues { ["min": $0.min, "max": $0.max, "step": $0.step] as [String: Any] }
    }

    static func format(_ value: Double) -> String {
        value == value.rounded() && abs(value) < 1e15 ? String(Int(value)) : String(value)
    }
}

/// A served model with its settings file read.
struct CatalogModel: Sendable {
    var name: String
    var folder: String
    /// Its recommended settings, every field filled (diffusers' defaults where `kinema.json` is silent).
    var recommended: Preset
    var ranges: ParameterRanges
}

/// The models a server offers, read once at start.
struct ModelCatalog: Sendable {
    let models: [CatalogModel]

    init(_ served: [ServedModel]) throws {
        models = try served.map { model in
            let settings: ModelSettings
            do { settings = try ModelSettings.load(modelFolder: model.folder) } catch { throw ServerError("\(error)") }
            guard FileManager.default.fileExists(atPath: (model.folder as NSString).appendingPathComponent("model_index.json")) else {
                throw ServerError("\(model.folder) is not a diffusers model folder: it has no model_index.json")
            }
            var request = GenerationRequest(prompt: "", seed: 0)
            settings.apply(to: &request)
            let recommended = Preset(name: "recommended", label: "Recommended for \(model.name) (\(request.width)×\(request.height), \(request.frames) frames)",
                                     width: request.width, height: request.height, frames: request.frames, fps: request.fps,
                                     steps: request.steps, guidance: request.guidanceScale)
            return CatalogModel(name: model.name, folder: model.folder, recommended: recommended, ranges: ParameterRanges(model: settings))
        }
    }

    var defaultModel: CatalogModel? { models.first }

    func model(named name: String) -> CatalogModel? { models.first { $0.name == name } }

    /// The standard presets that fit the model's ranges, then its own recommendation.
    func presets(for model: CatalogModel) -> [Preset] {
        Preset.standard.filter { model.ranges.contains($0) } + [model.recommended]
    }
}

/// Checks a memory budget's text the way the planner reads it.
enum MemoryBudgetText {
    static func check(_ text: String) throws {
        do { _ = try MemoryBudget(parsing: text) } catch {
            throw APIError(.unprocessableContent, "invalid_value", "memory_budget: \(error)", field: "memory_budget")
        }
    }
}
