import Foundation
import KinemaPipeline

/// A JSON value as a client sent it, kept apart by kind so that `"8"` is not 8 and `true` is not 1.
enum JSONValue: Decodable, Equatable {
    case null, bool(Bool), integer(Int64), number(Double), string(String), array([JSONValue]), object([String: JSONValue])

    init(from decoder: Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() { self = .null }
        else if let value = try? container.decode(Bool.self) { self = .bool(value) }
        else if let value = try? container.decode(Int64.self) { self = .integer(value) }
        else if let value = try? container.decode(Double.self) { self = .number(value) }
        else if let value = try? container.decode(String.self) { self = .string(value) }
        else if let value = try? container.decode([JSONValue].self) { self = .array(value) }
        else { self = .object(try container.decode([String: JSONValue].self)) }
    }

    /// One canonical text per value (object keys sorted, numbers as parsed), so that two bodies with the
    /// same content hash alike whatever their key order or spacing.
    var canonical: String {
        switch self {
        case .null: return "null"
        case .bool(let value): return value ? "true" : "false"
        case .integer(let value): return String(value)
        case .number(let value): return value == value.rounded() && abs(value) < 1e15 ? String(Int64(value)) : String(value)
        case .string(let value): return String(decoding: (try? JSONEncoder().encode(value)) ?? Data(), as: UTF8.self)
        case .array(let values): return "[" + values.map(\.canonical).joined(separator: ",") + "]"
        case .object(let fields):
            return "{" + fields.keys.sorted().map { JSONValue.string($0).canonical + ":" + fields[$0]!.canonical }.joined(separator: ",") + "}"
        }
    }

    /// A JSON object body, or a 400 naming what is wrong.
    static func object(from data: Data) throws -> [String: JSONValue] {
        guard !data.isEmpty else { throw APIError(.badRequest, "invalid_json", "the request body is empty; send a JSON object") }
        let value: JSONValue
        do { value = try JSONDecoder().decode(JSONValue.self, from: data) } catch {
            throw APIError(.badRequest, "invalid_json", "the request body is not valid JSON")
        }
        guard case .object(let object) = value else {
            throw APIError(.badRequest, "invalid_json", "the request body must be a JSON object")
        }
        return object
    }
}

/// The parameters of one generation job, resolved: every setting has its value and the seed is chosen.
/// Stored with the job (`params.json` beside its outputs) and enough to run it again.
struct JobParameters: Codable, Equatable, Sendable {
    var imageID: String?
    var prompt: String
    var negativePrompt: String?
    var model: String
    var width: Int
    var height: Int
    var frames: Int
    var fps: Int
    var steps: Int
    var guidance: Double
    var seed: UInt64
    var preset: String?
    var memoryBudget: String?
    var allowDegrade: Bool

    enum CodingKeys: String, CodingKey, CaseIterable {
        case imageID = "image_id", prompt, negativePrompt = "negative_prompt", model, width, height, frames, fps, steps,
             guidance, seed, preset, memoryBudget = "memory_budget", allowDegrade = "allow_degrade"
    }

    static let promptLimit = 1000

    /// The request the pipeline runs.
    var request: GenerationRequest {
        var request = GenerationRequest(prompt: prompt, negativePrompt: negativePrompt, seed: seed)
        request.width = width
        request.height = height
        request.frames = frames
        request.fps = fps
        request.steps = steps
        request.guidanceScale = Float(guidance)
        return request
    }

    var json: [String: Any] {
        ["image_id": imageID as Any? ?? NSNull(), "prompt": prompt, "negative_prompt": negativePrompt as Any? ?? NSNull(),
         "model": model, "width": width, "height": height, "frames": frames, "fps": fps, "steps": steps,
         "guidance": guidance, "seed": seed, "preset": preset as Any? ?? NSNull(),
         "memory_budget": memoryBudget as Any? ?? NSNull(), "allow_degrade": allowDegrade]
    }

    /// Reads and checks a client's fields: unknown fields, wrong types and values out of the model's ranges are
    /// 422s naming the field. Settings left out come from the preset, else from the model's recommendation.
    static func parse(_ fields: [String: JSONValue], catalog: ModelCatalog, requireImage: Bool) throws -> JobParameters {
        let known = Set(CodingKeys.allCases.map(\.rawValue))
        if let unknown = fields.keys.sorted().first(where: { !known.contains($0) }) {
            throw APIError(.unprocessableContent, "unknown_field", "unknown field '\(unknown)'; the fields are \(known.sorted().joined(separator: ", "))", field: unknown)
        }
        let reader = FieldReader(fields: fields)
        let modelName = try reader.string("model")
        guard let model = modelName.map({ catalog.model(named: $0) }) ?? catalog.defaultModel else {
            throw APIError(.unprocessableContent, "unknown_model", "no model named '\(modelName ?? "")'; see /api/v1/capabilities", field: "model")
        }
        let presetName = try reader.string("preset")
        var preset: Preset?
        if let presetName {
            guard let found = catalog.presets(for: model).first(where: { $0.name == presetName }) else {
                throw APIError(.unprocessableContent, "unknown_preset", "no preset named '\(presetName)'; see /api/v1/capabilities", field: "preset")
            }
            preset = found
        }
        let recommended = model.recommended
        guard let prompt = try reader.string("prompt"), !prompt.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty else {
            throw APIError(.unprocessableContent, "missing_field", "a prompt is required: say what should happen in the video", field: "prompt")
        }
        guard prompt.count <= promptLimit else { throw APIError.invalid("prompt", "the prompt is longer than \(promptLimit) characters") }
        let negative = try reader.string("negative_prompt")
        if let negative, negative.count > promptLimit {
            throw APIError.invalid("negative_prompt", "the negative prompt is longer than \(promptLimit) characters")
        }
        let imageID = try reader.string("image_id")
        if requireImage && imageID == nil {
            throw APIError(.unprocessableContent, "missing_field", "image_id is required: upload the picture to /api/v1/uploads first", field: "image_id")
        }
        if let imageID, !UploadStore.isValidID(imageID) {
            throw APIError.invalid("image_id", "image_id must be the 64 hex digits /api/v1/uploads answered")
        }
        let seed = try reader.integer("seed").map { value -> UInt64 in
            guard value >= 0 else { return UInt64.max }
            return UInt64(value)
        }
        if let seed, seed > UInt64(Int64.max) { throw APIError(.unprocessableContent, "out_of_range", "seed must be between 0 and 9223372036854775807", field: "seed") }
        let budget = try reader.string("memory_budget")
        if let budget { try MemoryBudgetText.check(budget) }

        let ranges = model.ranges
        func setting(_ name: String, _ fromPreset: Int?, _ fromModel: Int?) throws -> Int {
            let value = try reader.integer(name).map(Int.init) ?? fromPreset ?? fromModel ?? 0
            try ranges.check(name, Double(value))
            return value
        }
        let parameters = JobParameters(
            imageID: imageID, prompt: prompt, negativePrompt: negative, model: model.name,
            width: try setting("width", preset?.width, recommended.width),
            height: try setting("height", preset?.height, recommended.height),
            frames: try setting("frames", preset?.frames, recommended.frames),
            fps: try setting("fps", preset?.fps, recommended.fps),
            steps: try setting("steps", preset?.steps, recommended.steps),
            guidance: try {
                let value = try reader.number("guidance") ?? preset.map { Double($0.guidance) } ?? Double(recommended.guidance)
                try ranges.check("guidance", value)
                return value
            }(),
            seed: seed ?? UInt64.random(in: 0...UInt64(Int64.max)), preset: presetName, memoryBudget: budget,
            allowDegrade: try reader.bool("allow_degrade") ?? false)
        for (name, value) in [("width", parameters.width), ("height", parameters.height)] where value % 8 != 0 {
            throw APIError(.unprocessableContent, "out_of_range", "\(name) must be a multiple of 8, got \(value)", field: name)
        }
        return parameters
    }
}

/// Typed access to a client's fields; a wrong type is a 422 naming the field. Null counts as absent.
struct FieldReader {
    let fields: [String: JSONValue]

    func string(_ name: String) throws -> String? {
        switch fields[name] {
        case nil, .null?: return nil
        case .string(let value)?:
            guard !value.unicodeScalars.contains(where: { $0.value == 0 }) else {
                throw APIError(.unprocessableContent, "invalid_value", "\(name) must not contain NUL characters", field: name)
            }
            return value
        default: throw Self.wrongType(name, "a string")
        }
    }

    func integer(_ name: String) throws -> Int64? {
        switch fields[name] {
        case nil, .null?: return nil
        case .integer(let value)?: return value
        case .number(let value)? where value == value.rounded() && abs(value) < 9.2e18: return Int64(value)
        case .number?:
            throw APIError(.unprocessableContent, "out_of_range", "\(name) must be a whole number", field: name)
        default: throw Self.wrongType(name, "a whole number")
        }
    }

    func number(_ name: String) throws -> Double? {
        switch fields[name] {
        case nil, .null?: return nil
        case .integer(let value)?: return Double(value)
        case .number(let value)?: return value
        default: throw Self.wrongType(name, "a number")
        }
    }

    func bool(_ name: String) throws -> Bool? {
        switch fields[name] {
        case nil, .null?: return nil
        case .bool(let value)?: return value
        default: throw Self.wrongType(name, "true or false")
        }
    }

    static func wrongType(_ name: String, _ kind: String) -> APIError {
        APIError(.unprocessableContent, "invalid_type", "\(name) must be \(kind)", field: name)
    }
}
