import Foundation

/// A config file that could not be used: which file, what is wrong.
public struct ConfigError: Error, CustomStringConvertible, Equatable {
    public let path: String
    public let problem: String
    public init(path: String, problem: String) { self.path = path; self.problem = problem }
    public var description: String { "\(path): \(problem)" }
}

/// Tolerant reading of diffusers/transformers JSON configs: absent and null fields are nil
/// (the caller's default applies), integers written as floats (4.0) are accepted, a field of the
/// wrong kind is an error naming it.
enum ConfigFile {
    static func object(at path: String) throws -> [String: Any] {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ConfigError(path: path, problem: "cannot read the file (missing or unreadable)")
        }
        guard let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw ConfigError(path: path, problem: "not a JSON object")
        }
        return object
    }

    struct Reader {
        let path: String
        let object: [String: Any]

        func value(_ key: String) -> Any? {
            guard let v = object[key], !(v is NSNull) else { return nil }
            return v
        }

        func wrong(_ key: String, _ expected: String) -> ConfigError {
            ConfigError(path: path, problem: "\(key) must be \(expected), found \(object[key].map { "\($0)" } ?? "nothing")")
        }

        /// JSON booleans arrive as NSNumbers of ObjC type "c".
        static func isBoolean(_ n: NSNumber) -> Bool { String(cString: n.objCType) == "c" }

        func number(_ v: Any) -> NSNumber? {
            guard let n = v as? NSNumber, !Self.isBoolean(n) else { return nil }
            return n
        }

        func int(_ key: String) throws -> Int? {
            guard let v = value(key) else { return nil }
            guard let n = number(v), n.doubleValue.rounded() == n.doubleValue else { throw wrong(key, "an integer") }
            return n.intValue
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
            guard let array = v as? [Any], let values = Optional(array.compactMap { number($0) }), values.count == array.count,
                  values.allSatisfy({ $0.doubleValue.rounded() == $0.doubleValue }) else { throw wrong(key, "a list of integers") }
            return values.map(\.intValue)
        }

        func strings(_ key: String) throws -> [String]? {
            guard let v = value(key) else { return nil }
            guard let array = v as? [String] else { throw wrong(key, "a list of strings") }
            return array
        }
    }
}
