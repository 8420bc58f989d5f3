// Reading the config.json files of diffusers and transformers checkpoints, as tolerantly as their
// `from_config` / `from_pretrained` read them, with errors that name the file and the key.
import Foundation

/// A config file that could not be used: which file, what is wrong.
public struct ConfigError: Error, CustomStringConvertible, Equatable, Sendable {
    /// The config file's path, or what the document is (such as "scheduler config") when it was not read from a file.
    public let path: String
    /// What is wrong, naming the key and what was expected.
    public let problem: String

    /// An error about the config at `path`.
    public init(path: String, problem: String) { self.path = path; self.problem = problem }

    /// `path: problem`.
    public var description: String { "\(path): \(problem)" }
}

/// Tolerant reading of diffusers/transformers JSON configs: absent and null fields are nil
/// (the caller's default applies), integers written as floats (4.0) are accepted, and so are integers
/// where floats are expected; unknown keys are ignored; a field of the wrong kind is an error naming it.
enum ConfigFile {
    /// The bytes of the file at `path`.
    static func data(at path: String) throws -> Data {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ConfigError(path: path, problem: "cannot read the file (missing or unreadable)")
        }
        return data
    }

    /// The top-level object of the JSON document `json`; `source` names the document in errors.
    static func object(json: Data, source: String) throws -> [String: Any] {
        let document: Any
        do {
            document = try JSONSerialization.jsonObject(with: json, options: .fragmentsAllowed)
        } catch {
            throw ConfigError(path: source, problem: "not valid JSON")
        }
        guard let object = document as? [String: Any] else {
            throw ConfigError(path: source, problem: "not a JSON object (found \(Reader.jsonText(document)))")
        }
        return object
    }

    /// The top-level object of the JSON file at `path`.
    static func object(at path: String) throws -> [String: Any] {
        try object(json: data(at: path), source: path)
    }

    /// Typed access to the keys of one config object; every error is a `ConfigError` naming `path` and the key.
    struct Reader {
        /// The file, or what the document is, as errors name it.
        let path: String
        let object: [String: Any]

        /// The value of `key`, or nil when it is absent or null.
        func value(_ key: String) -> Any? {
            guard let v = object[key], !(v is NSNull) else { return nil }
            return v
        }

        /// An error about this config, with `problem` saying what is wrong.
        func error(_ problem: String) -> ConfigError { ConfigError(path: path, problem: problem) }

        /// The error for a `key` whose value is not `expected`; it quotes the key and value as the file has them.
        func wrong(_ key: String, _ expected: String) -> ConfigError {
            error("\(key) must be \(expected), found \"\(key)\": \(Self.jsonText(object[key]))")
        }

        /// JSON booleans arrive as NSNumbers of ObjC type "c".
        static func isBoolean(_ n: NSNumber) -> Bool { String(cString: n.objCType) == "c" }

        /// A JSON value written back as JSON text (an object abbreviated), for error messages.
        static func jsonText(_ value: Any?) -> String {
            switch value {
            case nil, is NSNull: return "null"
            case let text as String: return "\"\(text)\""
            case let number as NSNumber:
                if isBoolean(number) { return number.boolValue ? "true" : "false" }
                return ["d", "f"].contains(String(cString: number.objCType)) ? "\(number.doubleValue)" : "\(number.int64Value)"
            case let array as [Any]: return "[" + array.map { jsonText($0) }.joined(separator: ", ") + "]"
            default: return "{…}"
            }
        }

        private func number(_ v: Any) -> NSNumber? {
            guard let n = v as? NSNumber, !Self.isBoolean(n) else { return nil }
            return n
        }

        /// An integral number (4 or 4.0) that fits an Int.
        private func integer(_ v: Any) -> Int? {
            number(v).flatMap { Int(exactly: $0.doubleValue) }
        }

        func int(_ key: String) throws -> Int? {
            guard let v = value(key) else { return nil }
            guard let integer = integer(v) else { throw wrong(key, "an integer") }
            return integer
        }

        func double(_ key: String) throws -> Double? {
            guard let v = value(key) else { return nil }
            guard let n = number(v) else { throw wrong(key, "a number") }
            return n.doubleValue
        }

        func bool(_ key: String) throws -> Bool? {
            guard let v = value(key) else { return nil }
            guard let n = v as? NSNumber, Self.isBoolean(n) else { throw wrong(key, "true or false") }
            return n.boolValue
        }

        func string(_ key: String) throws -> String? {
            guard let v = value(key) else { return nil }
            guard let s = v as? String else { throw wrong(key, "a string") }
            return s
        }

        func ints(_ key: String) throws -> [Int]? {
            guard let v = value(key) else { return nil }
            guard let array = v as? [Any] else { throw wrong(key, "a list of integers") }
            let values = array.compactMap { integer($0) }
            guard values.count == array.count else { throw wrong(key, "a list of integers") }
            return values
        }

        func doubles(_ key: String) throws -> [Double]? {
            guard let v = value(key) else { return nil }
            guard let array = v as? [Any] else { throw wrong(key, "a list of numbers") }
            let values = array.compactMap { number($0)?.doubleValue }
            guard values.count == array.count else { throw wrong(key, "a list of numbers") }
            return values
        }

        func strings(_ key: String) throws -> [String]? {
            guard let v = value(key) else { return nil }
            guard let array = v as? [String] else { throw wrong(key, "a list of strings") }
            return array
        }

        /// One of `Choice`'s raw values; any other string is an error naming `owner` (what does not
        /// support it) and the values allowed.
        func choice<Choice: RawRepresentable & CaseIterable>(_ key: String, supportedBy owner: String) throws -> Choice?
        where Choice.RawValue == String {
            let allowed = Choice.allCases.map { "\"\($0.rawValue)\"" }.joined(separator: ", ")
            guard let v = value(key) else { return nil }
            guard let text = v as? String else { throw wrong(key, "one of \(allowed)") }
            guard let choice = Choice(rawValue: text) else {
                throw error("\(key) \"\(text)\" is not supported by \(owner); expected one of \(allowed)")
            }
            return choice
        }
    }
}

extension ConfigFile.Reader {
    /// A reader of the JSON document `json`, which errors call `source`.
    init(json: Data, source: String) throws {
        self.init(path: source, object: try ConfigFile.object(json: json, source: source))
    }
}
