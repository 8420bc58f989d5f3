/// A small, strict JSON parser for headers that must be read exactly (safetensors).
///
/// Foundation's `JSONSerialization` keeps one of two equal keys silently and turns integers into
/// `NSNumber`s; here a duplicate key is an error, object members keep their order, and integers
/// that fit an `Int` stay integers. The whole RFC 8259 grammar is accepted so that fields a reader
/// ignores may hold any JSON value; nesting is limited so hostile input cannot exhaust the stack.
enum StrictJSON {
    /// A parsed JSON value.
    indirect enum Value {
        /// Members in document order; keys are unique (under Swift `String` equality).
        case object([(key: String, value: Value)])
        case array([Value])
        case string(String)
        /// A number written without fraction or exponent that fits an `Int`.
        case integer(Int)
        /// Any other number, as written.
        case number(String)
        case bool(Bool)
        case null

        /// The kind of value, for error messages ("expected an array, found a string").
        var kindName: String {
            switch self {
            case .object: return "an object"
            case .array: return "an array"
            case .string: return "a string"
            case .integer, .number: return "a number"
            case .bool: return "a boolean"
            case .null: return "null"
            }
        }
    }

    /// Why a document was rejected, and at which byte.
    struct SyntaxError: Error {
        let message: String
        /// Byte offset in the document.
        let offset: Int
        /// The key that appeared twice in one object, when that is the problem: the document is
        /// well-formed JSON, but not one this parser accepts.
        var duplicateKey: String? = nil
    }

    /// Deepest nesting of arrays and objects accepted.
    static let maximumDepth = 128

    /// Parses one JSON value filling `bytes` (surrounding whitespace allowed).
    static func parse(_ bytes: UnsafeRawBufferPointer) throws(SyntaxError) -> Value {
        var parser = Parser(bytes: bytes)
        parser.skipWhitespace()
        let value = try parser.parseValue(depth: 0)
        parser.skipWhitespace()
        if parser.position < bytes.count {
            throw parser.error("unexpected \(parser.describeCurrent()) after the end of the JSON value")
        }
        return value
    }

    private struct Parser {
        let bytes: UnsafeRawBufferPointer
        var position = 0

        init(bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

        func error(_ message: String) -> SyntaxError { SyntaxError(message: message, offset: position) }

        func describeCurrent() -> String {
            guard position < bytes.count else { return "end of input" }
            let byte = bytes[position]
            if byte >= 0x21 && byte < 0x7F { return "'\(Character(Unicode.Scalar(byte)))'" }
            return "byte 0x" + String(byte, radix: 16, uppercase: true)
        }

        mutating func skipWhitespace() {
            while position < bytes.count {
                switch bytes[position] {
                case 0x20, 0x09, 0x0A, 0x0D: position += 1
                default: return
                }
            }
        }

        /// Consumes `byte` (after whitespace) or fails naming what was expected.
        mutating func expect(_ byte: UInt8, _ what: String) throws(SyntaxError) {
            skipWhitespace()
            guard position < bytes.count, bytes[position] == byte else {
                throw error("expected \(what), found \(describeCurrent())")
            }
            position += 1
        }

        mutating func parseValue(depth: Int) throws(SyntaxError) -> Value {
            skipWhitespace()
            guard position < bytes.count else { throw error("expected a value, found end of input") }
            switch bytes[position] {
            case UInt8(ascii: "{"): return try parseObject(depth: depth + 1)
            case UInt8(ascii: "["): return try parseArray(depth: depth + 1)
            case UInt8(ascii: "\""): return .string(try parseString())
            case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return try parseNumber()
            case UInt8(ascii: "t"): try parseLiteral("true"); return .bool(true)
            case UInt8(ascii: "f"): try parseLiteral("false"); return .bool(false)
            case UInt8(ascii: "n"): try parseLiteral("null"); return .null
            default: throw error("expected a value, found \(describeCurrent())")
            }
        }

        mutating func parseLiteral(_ literal: StaticString) throws(SyntaxError) {
            let matches = literal.withUTF8Buffer { expected in
                bytes.count - position >= expected.count
                    && expected.indices.allSatisfy { bytes[position + $0] == expected[$0] }
            }
            guard matches else { throw error("invalid literal, expected '\(literal)'") }
            position += literal.utf8CodeUnitCount
        }

        mutating func parseObject(depth: Int) throws(SyntaxError) -> Value {
            guard depth <= StrictJSON.maximumDepth else {
                throw error("nesting deeper than \(StrictJSON.maximumDepth) levels")
            }
            position += 1  // '{'
            var members: [(key: String, value: Value)] = []
            var seen = Set<String>()
            skipWhitespace()
            if position < bytes.count, bytes[position] == UInt8(ascii: "}") {
                position += 1
                return .object(members)
            }
            while true {
                skipWhitespace()
                guard position < bytes.count, bytes[position] == UInt8(ascii: "\"") else {
                    throw error("expected a string key, found \(describeCurrent())")
                }
                let keyStart = position
                let key = try parseString()
                guard seen.insert(key).inserted else {
                    throw SyntaxError(message: "duplicate key \"\(key)\"", offset: keyStart, duplicateKey: key)
                }
                try expect(UInt8(ascii: ":"), "':' after key \"\(key)\"")
                let value = try parseValue(depth: depth)
                members.append((key, value))
                skipWhitespace()
                guard position < bytes.count else { throw error("expected ',' or '}', found end of input") }
                if bytes[position] == UInt8(ascii: ",") { position += 1; continue }
                if bytes[position] == UInt8(ascii: "}") { position += 1; return .object(members) }
                throw error("expected ',' or '}', found \(describeCurrent())")
            }
        }

        mutating func parseArray(depth: Int) throws(SyntaxError) -> Value {
            guard depth <= StrictJSON.maximumDepth else {
                throw error("nesting deeper than \(StrictJSON.maximumDepth) levels")
            }
            position += 1  // '['
            var elements: [Value] = []
            skipWhitespace()
            if position < bytes.count, bytes[position] == UInt8(ascii: "]") {
                position += 1
                return .array(elements)
            }
            while true {
                elements.append(try parseValue(depth: depth))
                skipWhitespace()
                guard position < bytes.count else { throw error("expected ',' or ']', found end of input") }
                if bytes[position] == UInt8(ascii: ",") { position += 1; continue }
                if bytes[position] == UInt8(ascii: "]") { position += 1; return .array(elements) }
                throw error("expected ',' or ']', found \(describeCurrent())")
            }
        }

        /// number = [ "-" ] ( "0" / 1-9 *DIGIT ) [ "." 1*DIGIT ] [ ( "e" / "E" ) [ "+" / "-" ] 1*DIGIT ]
        mutating func parseNumber() throws(SyntaxError) -> Value {
            let start = position
            var negative = false
            if bytes[position] == UInt8(ascii: "-") { negative = true; position += 1 }
            guard position < bytes.count, isDigit(bytes[position]) else {
                throw error("expected a digit after '-', found \(describeCurrent())")
            }
            // Accumulate negatively so Int.min is representable.
            var magnitude = 0
            var fitsInt = true
            if bytes[position] == UInt8(ascii: "0") {
                position += 1
                if position < bytes.count, isDigit(bytes[position]) {
                    throw error("numbers must not have leading zeros")
                }
            } else {
                while position < bytes.count, isDigit(bytes[position]) {
                    let digit = Int(bytes[position] &- UInt8(ascii: "0"))
                    let (times10, o1) = magnitude.multipliedReportingOverflow(by: 10)
                    let (next, o2) = times10.subtractingReportingOverflow(digit)
                    if o1 || o2 { fitsInt = false } else { magnitude = next }
                    position += 1
                }
            }
            var isInteger = true
            if position < bytes.count, bytes[position] == UInt8(ascii: ".") {
                isInteger = false
                position += 1
                guard position < bytes.count, isDigit(bytes[position]) else {
                    throw error("expected a digit after '.', found \(describeCurrent())")
                }
                while position < bytes.count, isDigit(bytes[position]) { position += 1 }
            }
            if position < bytes.count, bytes[position] == UInt8(ascii: "e") || bytes[position] == UInt8(ascii: "E") {
                isInteger = false
                position += 1
                if position < bytes.count, bytes[position] == UInt8(ascii: "+") || bytes[position] == UInt8(ascii: "-") {
                    position += 1
                }
                guard position < bytes.count, isDigit(bytes[position]) else {
                    throw error("expected a digit in the exponent, found \(describeCurrent())")
                }
                while position < bytes.count, isDigit(bytes[position]) { position += 1 }
            }
            if isInteger && fitsInt {
                if negative { return .integer(magnitude) }
                if magnitude != Int.min { return .integer(-magnitude) }
            }
            let text = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[start..<position]), as: UTF8.self)
            return .number(text)
        }

        func isDigit(_ byte: UInt8) -> Bool { byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") }

        /// Parses a string starting at its opening quote; the result must be valid UTF-8.
        mutating func parseString() throws(SyntaxError) -> String {
            let start = position
            position += 1  // '"'
            var utf8: [UInt8] = []
            while true {
                guard position < bytes.count else {
                    throw SyntaxError(message: "unterminated string", offset: start)
                }
                let byte = bytes[position]
                switch byte {
                case UInt8(ascii: "\""):
                    position += 1
                    guard let string = String(validating: utf8, as: UTF8.self) else {
                        throw SyntaxError(message: "string is not valid UTF-8", offset: start)
                    }
                    return string
                case UInt8(ascii: "\\"):
                    position += 1
                    try parseEscape(into: &utf8)
                case 0x00..<0x20:
                    throw error("control character 0x\(String(byte, radix: 16, uppercase: true)) must be escaped in a string")
                default:
                    utf8.append(byte)
                    position += 1
                }
            }
        }

        mutating func parseEscape(into utf8: inout [UInt8]) throws(SyntaxError) {
            guard position < bytes.count else { throw error("unterminated escape sequence") }
            let byte = bytes[position]
            position += 1
            switch byte {
            case UInt8(ascii: "\""): utf8.append(UInt8(ascii: "\""))
            case UInt8(ascii: "\\"): utf8.append(UInt8(ascii: "\\"))
            case UInt8(ascii: "/"): utf8.append(UInt8(ascii: "/"))
            case UInt8(ascii: "b"): utf8.append(0x08)
            case UInt8(ascii: "f"): utf8.append(0x0C)
            case UInt8(ascii: "n"): utf8.append(0x0A)
            case UInt8(ascii: "r"): utf8.append(0x0D)
            case UInt8(ascii: "t"): utf8.append(0x09)
            case UInt8(ascii: "u"):
                let first = try parseHex4()
                var scalarValue = UInt32(first)
                if (0xD800..<0xDC00).contains(first) {
                    // A high surrogate must be followed by an escaped low surrogate.
                    guard bytes.count - position >= 6,
                          bytes[position] == UInt8(ascii: "\\"), bytes[position + 1] == UInt8(ascii: "u")
                    else { throw error("unpaired surrogate \\u\(hex(first)) in a string") }
                    position += 2
                    let second = try parseHex4()
                    guard (0xDC00..<0xE000).contains(second) else {
                        throw error("high surrogate \\u\(hex(first)) is followed by \\u\(hex(second)), not a low surrogate")
                    }
                    scalarValue = 0x10000 + ((UInt32(first) - 0xD800) << 10) + (UInt32(second) - 0xDC00)
                } else if (0xDC00..<0xE000).contains(first) {
                    throw error("unpaired surrogate \\u\(hex(first)) in a string")
                }
                // Every value left is a valid scalar: surrogates were handled above.
                utf8.append(contentsOf: String(Character(Unicode.Scalar(scalarValue)!)).utf8)
            default:
                position -= 1
                throw error("invalid escape sequence in a string: backslash followed by \(describeCurrent())")
            }
        }

        mutating func parseHex4() throws(SyntaxError) -> UInt16 {
            guard bytes.count - position >= 4 else { throw error("\\u escape needs four hex digits") }
            var value: UInt16 = 0
            for _ in 0..<4 {
                let byte = bytes[position]
                let digit: UInt8
                switch byte {
                case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = byte - UInt8(ascii: "0")
                case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = byte - UInt8(ascii: "a") + 10
                case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = byte - UInt8(ascii: "A") + 10
                default: throw error("\\u escape needs four hex digits, found \(describeCurrent())")
                }
                value = value << 4 | UInt16(digit)
                position += 1
            }
            return value
        }

        func hex(_ value: UInt16) -> String {
            let digits = String(value, radix: 16, uppercase: true)
            return String(repeating: "0", count: 4 - digits.count) + digits
        }
    }
}
