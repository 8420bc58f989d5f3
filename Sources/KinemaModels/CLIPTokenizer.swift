import Foundation

/// CLIP's text tokenizer, giving the same ids as transformers 5's `CLIPTokenizer.from_pretrained`
/// (backed by the `tokenizers` library) called the way `I2VGenXLPipeline.encode_prompt` calls it:
/// `padding="max_length", max_length=77, truncation=True`.
///
/// A prompt goes through these steps, each matching the reference:
/// 1. The special tokens (`<|startoftext|>`, `<|endoftext|>`) are found in the raw text and become
///    their ids; the text between them is processed on its own.
/// 2. Normalization: NFC (as with the reference's Unicode 9.0 tables), then lower-casing one code
///    point at a time (so a final `Σ` becomes `σ`, not `ς`). The reference also collapses whitespace
///    runs to one space, which step 3 makes moot.
/// 3. Pre-tokenization with CLIP's pattern
///    `<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+`,
///    dropping whitespace: letter runs, single digits, runs of anything else.
/// 4. Byte-level BPE of each piece's UTF-8 bytes with the `</w>` end-of-word suffix.
///
/// transformers 4's slow `CLIPTokenizer`, which older diffusers setups loaded, gives other ids for
/// some prompts: with ftfy installed it first ran `ftfy.fix_text` (unescaping `&amp;`, straightening
/// `’`), without it BERT's `BasicTokenizer` (dropping control and format characters such as U+200D,
/// making each CJK ideograph its own word), and it lower-cased with Python's `str.lower` (a final `Σ`
/// becomes `ς`). transformers 5 has no slow class, so these are not reproduced.
public struct CLIPTokenizer: Sendable {
    /// The id of `<|startoftext|>` in CLIP's released 49,408-token vocabulary. A loaded tokenizer
    /// takes its ids from its own vocabulary (``startOfTextID``).
    public static let startOfText = 49406
    /// The id of `<|endoftext|>` in CLIP's released vocabulary, also its padding token.
    public static let endOfText = 49407
    /// CLIP's text context length: `model_max_length` when a folder does not give one.
    public static let defaultMaxLength = 77

    /// The length of every ``encode(_:)`` result: start, at most `maxLength - 2` content tokens, end, padding.
    public let maxLength: Int
    /// The id that starts every encoded prompt.
    public let startOfTextID: Int
    /// The id that ends the content of every encoded prompt.
    public let endOfTextID: Int
    /// The id that fills an encoded prompt up to ``maxLength``.
    public let paddingID: Int

    private let bytePairEncoding: BytePairEncoding
    /// Tokens matched verbatim in the raw text, before normalization.
    private let specialTokens: [SpecialToken]

    private struct SpecialToken: Sendable {
        let scalars: [Unicode.Scalar]
        let id: Int
    }

    /// Loads a tokenizer folder in either layout transformers reads: `tokenizer.json` (what
    /// transformers 5 saves; preferred when present, as transformers does) or `vocab.json` +
    /// `merges.txt` (the released I2VGen-XL checkpoint).
    ///
    /// `tokenizer_config.json` and then `special_tokens_map.json`, when present, set
    /// `model_max_length` and the `bos_token`, `eos_token`, `pad_token` and `unk_token` strings.
    /// `do_lower_case` is not read: transformers 5's `CLIPTokenizer` lower-cases whatever it says.
    public init(folder: String) throws(TokenizerError) {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: folder, isDirectory: &isDirectory) else {
            throw TokenizerError("\(folder): no such tokenizer folder")
        }
        guard isDirectory.boolValue else {
            throw TokenizerError("\(folder): expected a tokenizer folder, found a file")
        }
        let settings = try TokenizerSettings(folder: folder)
        let files = try TokenizerFiles.read(folder: folder)
        try self.init(
            vocabulary: files.vocabulary, merges: files.merges, maxLength: settings.maxLength,
            startOfText: settings.startOfText, endOfText: settings.endOfText, padding: settings.padding,
            unknown: settings.unknown, vocabularySource: files.vocabularySource, mergesSource: files.mergesSource)
    }

    /// Builds a tokenizer from in-memory tables.
    ///
    /// - Parameters:
    ///   - vocabulary: token string to id, in vocab.json's byte-level spelling (`Ġ` for a space byte,
    ///     `</w>` ending a word).
    ///   - merges: BPE merge rules, highest priority first.
    ///   - maxLength: the length of every encoded prompt; at least 2.
    ///   - startOfText, endOfText, padding, unknown: special token strings; each must be in `vocabulary`.
    public init(
        vocabulary: [String: Int], merges: [(String, String)], maxLength: Int = CLIPTokenizer.defaultMaxLength,
        startOfText: String = "<|startoftext|>", endOfText: String = "<|endoftext|>",
        padding: String = "<|endoftext|>", unknown: String = "<|endoftext|>"
    ) throws(TokenizerError) {
        try self.init(
            vocabulary: vocabulary, merges: merges, maxLength: maxLength, startOfText: startOfText,
            endOfText: endOfText, padding: padding, unknown: unknown,
            vocabularySource: "the vocabulary", mergesSource: "the merges")
    }

    private init(
        vocabulary: [String: Int], merges: [(String, String)], maxLength: Int, startOfText: String,
        endOfText: String, padding: String, unknown: String, vocabularySource: String, mergesSource: String
    ) throws(TokenizerError) {
        guard maxLength >= 2 else {
            throw TokenizerError("maxLength is \(maxLength); it must be at least 2, room for the start and end tokens")
        }
        func id(of token: String, role: String) throws(TokenizerError) -> Int {
            guard let id = vocabulary[token] else {
                throw TokenizerError(
                    "\(vocabularySource): the \(role) token \(TokenizerError.quoted(token)) is not in the vocabulary")
            }
            return id
        }
        self.maxLength = maxLength
        startOfTextID = try id(of: startOfText, role: "start-of-text (bos)")
        endOfTextID = try id(of: endOfText, role: "end-of-text (eos)")
        paddingID = try id(of: padding, role: "padding")
        let unknownID = try id(of: unknown, role: "unknown")
        bytePairEncoding = try BytePairEncoding(
            vocabulary: vocabulary, merges: merges, unknownID: unknownID, endOfWordSuffix: "</w>",
            vocabularySource: vocabularySource, mergesSource: mergesSource)

        var specialTokens: [SpecialToken] = []
        let named = [(startOfText, startOfTextID), (endOfText, endOfTextID), (padding, paddingID), (unknown, unknownID)]
        for (token, id) in named where !token.isEmpty {
            let scalars = Array(token.unicodeScalars)
            if !specialTokens.contains(where: { $0.scalars == scalars }) {
                specialTokens.append(SpecialToken(scalars: scalars, id: id))
            }
        }
        // The reference matches the longest special token first where two start at the same place.
        self.specialTokens = specialTokens.sorted { $0.scalars.count > $1.scalars.count }
    }

    /// The content ids of `text`, without start, end or padding tokens and without truncation.
    public func tokenize(_ text: String) -> [Int] {
        let scalars = Array(text.unicodeScalars)
        var ids: [Int] = []
        var segmentStart = 0
        var index = 0
        while index < scalars.count {
            guard let special = specialTokens.first(where: { scalars.contains($0.scalars, at: index) }) else {
                index += 1
                continue
            }
            appendTextIDs(scalars[segmentStart..<index], to: &ids)
            ids.append(special.id)
            index += special.scalars.count
            segmentStart = index
        }
        appendTextIDs(scalars[segmentStart...], to: &ids)
        return ids
    }

    /// The ``maxLength`` ids the text encoder receives for `text`: the start token, the first
    /// `maxLength - 2` content ids, the end token, then padding.
    public func encode(_ text: String) -> [Int] {
        var ids = [startOfTextID]
        ids += tokenize(text).prefix(maxLength - 2)
        ids.append(endOfTextID)
        ids += repeatElement(paddingID, count: maxLength - ids.count)
        return ids
    }

    /// Normalizes and pre-tokenizes text holding no special token, and appends its BPE ids.
    private func appendTextIDs(_ segment: ArraySlice<Unicode.Scalar>, to ids: inout [Int]) {
        guard !segment.isEmpty else { return }
        var scalars: [Unicode.Scalar] = []
        scalars.reserveCapacity(segment.count)
        for scalar in Self.referenceNFC(segment) {
            if scalar.isASCII {
                scalars.append(Unicode.Scalar(UInt8(ascii: scalar).lowercasedASCII))
            } else {
                scalars.append(contentsOf: scalar.properties.lowercaseMapping.unicodeScalars)
            }
        }
        let classes = scalars.map(CharacterClass.init)

        var word: [UInt8] = []
        func appendWord(_ range: Range<Int>) {
            word.removeAll(keepingCapacity: true)
            for scalar in scalars[range] {
                UTF8.encode(scalar) { word.append($0) }
            }
            ids += bytePairEncoding.encode(word)
        }

        // CLIP's pattern, alternative by alternative, at each position not holding whitespace.
        var start = 0
        while start < scalars.count {
            if let literal = Self.literalSpecialTokens.first(where: { scalars.contains($0, at: start) }) {
                // The pattern keeps `<|endoftext|>` whole, but the byte-level pre-tokenizer after it
                // splits it again with GPT-2's pattern: `<|`, `endoftext`, `|>`.
                let end = start + literal.count
                appendWord(start..<(start + 2))
                appendWord((start + 2)..<(end - 2))
                appendWord((end - 2)..<end)
                start = end
                continue
            }
            if let contraction = Self.contractions.first(where: { scalars.contains($0, at: start) }) {
                appendWord(start..<(start + contraction.count))
                start += contraction.count
                continue
            }
            var end = start + 1
            switch classes[start] {
            case .whitespace:
                start = end
                continue
            case .letter:
                while end < scalars.count && classes[end] == .letter { end += 1 }
            case .number:
                break
            case .other:
                while end < scalars.count && classes[end] == .other { end += 1 }
            }
            appendWord(start..<end)
            start = end
        }
    }

    /// NFC as the reference computes it, on one segment between special tokens.
    ///
    /// The reference's normalizer (`unicode-normalization-alignments`, a fork of the Rust crate) has
    /// Unicode 9.0 tables: a code point assigned later is, for it, a starter that neither reorders,
    /// decomposes nor composes. Normalization data of older code points never changes (Unicode's
    /// stability policy), so normalizing the runs between such code points with current tables gives
    /// the reference's result.
    ///
    /// Each run is decomposed by Foundation, then composed by the standard library, because neither
    /// library is right alone: both misplace the marks a decomposition produces when marks of a
    /// higher combining class precede it (`o` U+030A U+0F75 keeps U+030A first), and Foundation's
    /// NFC also mangles an astral code point followed by a mark (U+1004B U+0327 becomes U+0136). The
    /// standard library's NFC of already decomposed text orders and composes correctly
    /// (`_nfcCodeUnits` is its public, if underscored, entry point).
    private static func referenceNFC(_ segment: ArraySlice<Unicode.Scalar>) -> [Unicode.Scalar] {
        if segment.allSatisfy(\.isASCII) { return Array(segment) }
        var normalized: [Unicode.Scalar] = []
        var run = String.UnicodeScalarView()
        func flushRun() {
            guard !run.isEmpty else { return }
            let decomposed = String(run).decomposedStringWithCanonicalMapping
            normalized.append(contentsOf: String(decoding: decomposed._nfcCodeUnits, as: UTF8.self).unicodeScalars)
            run = String.UnicodeScalarView()
        }
        for scalar in segment {
            if let age = scalar.properties.age, age.major <= 9 {
                run.append(scalar)
            } else {
                flushRun()
                normalized.append(scalar)
            }
        }
        flushRun()
        return normalized
    }

    /// The pattern's literal alternatives; they apply after lower-casing, so `<|ENDOFTEXT|>` matches
    /// here although it is not a special token in the raw text.
    private static let literalSpecialTokens: [[Unicode.Scalar]] =
        ["<|startoftext|>", "<|endoftext|>"].map { Array($0.unicodeScalars) }
    private static let contractions: [[Unicode.Scalar]] =
        ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d"].map { Array($0.unicodeScalars) }
}

/// How CLIP's pre-tokenizer pattern sees one code point: `\s`, `\p{L}`, `\p{N}` or anything else.
private enum CharacterClass: Equatable {
    case whitespace, letter, number, other

    init(_ scalar: Unicode.Scalar) {
        if scalar.isASCII {
            switch UInt8(ascii: scalar) {
            case 0x09...0x0D, 0x20: self = .whitespace
            case 0x30...0x39: self = .number
            case 0x41...0x5A, 0x61...0x7A: self = .letter
            default: self = .other
            }
            return
        }
        let properties = scalar.properties
        if properties.isWhitespace {
            self = .whitespace
            return
        }
        // The reference's regex engine (Oniguruma in `tokenizers` 0.23) has Unicode 16 tables; code
        // points first assigned in Unicode 17 are unassigned (neither letter nor number) there.
        guard let age = properties.age, age.major <= 16 else {
            self = .other
            return
        }
        switch properties.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter:
            self = .letter
        case .decimalNumber, .letterNumber, .otherNumber:
            self = .number
        default:
            self = .other
        }
    }
}

private extension [Unicode.Scalar] {
    /// Whether `pattern` occurs here starting at `index`.
    func contains(_ pattern: [Unicode.Scalar], at index: Int) -> Bool {
        guard !pattern.isEmpty, index + pattern.count <= count, self[index] == pattern[0] else { return false }
        for offset in 1..<pattern.count where self[index + offset] != pattern[offset] { return false }
        return true
    }
}

private extension UInt8 {
    var lowercasedASCII: UInt8 { (65...90).contains(self) ? self + 32 : self }
}

/// Why a tokenizer could not be loaded: which file, and what is wrong with it.
public struct TokenizerError: Error, CustomStringConvertible {
    /// The problem, starting with the file or folder it was found in.
    public let message: String

    init(_ message: String) { self.message = message }

    /// The message.
    public var description: String { message }

    /// A token as error messages show it: quoted, with invisible characters escaped.
    static func quoted(_ token: String) -> String {
        "\"" + token.unicodeScalars.map { $0.escaped(asASCII: false) }.joined() + "\""
    }
}

/// The settings a tokenizer folder's config files give, with transformers' CLIP defaults.
private struct TokenizerSettings {
    var maxLength = CLIPTokenizer.defaultMaxLength
    var startOfText = "<|startoftext|>"
    var endOfText = "<|endoftext|>"
    var padding = "<|endoftext|>"
    var unknown = "<|endoftext|>"

    init(folder: String) throws(TokenizerError) {
        let configPath = folder + "/tokenizer_config.json"
        var readsSpecialTokensMap = true
        if FileManager.default.fileExists(atPath: configPath) {
            let config = try readJSONObject(configPath)
            if let value = config["model_max_length"] {
                guard let length = value as? Int, length >= 2 else {
                    throw TokenizerError("\(configPath): model_max_length is \(value); expected an integer of at least 2")
                }
                maxLength = length
            }
            try readTokens(config, path: configPath)
            // Like transformers, special_tokens_map.json is a legacy file read only when the config
            // does not list its added tokens itself.
            readsSpecialTokensMap = config["added_tokens_decoder"] == nil
        }
        let mapPath = folder + "/special_tokens_map.json"
        if readsSpecialTokensMap && FileManager.default.fileExists(atPath: mapPath) {
            try readTokens(readJSONObject(mapPath), path: mapPath)
        }
    }

    private mutating func readTokens(_ object: [String: Any], path: String) throws(TokenizerError) {
        func token(_ key: String, into value: inout String) throws(TokenizerError) {
            guard let entry = object[key] else { return }
            // A token is saved either as its string or as an AddedToken object with a "content" string.
            if let string = entry as? String {
                value = string
            } else if let content = (entry as? [String: Any])?["content"] as? String {
                value = content
            } else {
                throw TokenizerError(
                    "\(path): \(key) is \(entry); expected a token string or an object with a \"content\" string")
            }
        }
        try token("bos_token", into: &startOfText)
        try token("eos_token", into: &endOfText)
        try token("pad_token", into: &padding)
        try token("unk_token", into: &unknown)
    }
}

/// The vocabulary and merge rules of a tokenizer folder, from whichever layout it has.
private struct TokenizerFiles {
    var vocabulary: [String: Int]
    var merges: [(String, String)]
    /// How error messages name where the vocabulary and the merges came from.
    var vocabularySource: String
    var mergesSource: String

    /// Reads `tokenizer.json` when the folder has one, as transformers does, else vocab.json + merges.txt.
    static func read(folder: String) throws(TokenizerError) -> TokenizerFiles {
        let fileManager = FileManager.default
        let tokenizerPath = folder + "/tokenizer.json"
        let vocabularyPath = folder + "/vocab.json"
        let mergesPath = folder + "/merges.txt"
        if fileManager.fileExists(atPath: tokenizerPath) {
            return try tokenizerJSON(tokenizerPath)
        }
        switch (fileManager.fileExists(atPath: vocabularyPath), fileManager.fileExists(atPath: mergesPath)) {
        case (true, true):
            return TokenizerFiles(
                vocabulary: try vocabulary(readJSONObject(vocabularyPath), source: vocabularyPath),
                merges: try merges(text: mergesPath), vocabularySource: vocabularyPath, mergesSource: mergesPath)
        case (true, false):
            throw TokenizerError("\(mergesPath): missing; vocab.json needs the merges.txt beside it")
        case (false, true):
            throw TokenizerError("\(vocabularyPath): missing; merges.txt needs the vocab.json beside it")
        case (false, false):
            throw TokenizerError(
                "\(folder): not a tokenizer folder; expected tokenizer.json, or vocab.json and merges.txt")
        }
    }

    /// The BPE model inside a tokenizer.json: `model.vocab` and `model.merges`, whose rules are saved
    /// as `"a b"` strings by older `tokenizers` versions and as `["a", "b"]` pairs by newer ones.
    private static func tokenizerJSON(_ path: String) throws(TokenizerError) -> TokenizerFiles {
        guard let model = try readJSONObject(path)["model"] as? [String: Any] else {
            throw TokenizerError("\(path): no \"model\" object")
        }
        if let type = model["type"], type as? String != "BPE" {
            throw TokenizerError("\(path): model.type is \(type); a CLIP tokenizer is a BPE model")
        }
        let vocabularySource = path + " model.vocab"
        let mergesSource = path + " model.merges"
        let vocabulary = try vocabulary(model["vocab"] as? [String: Any], source: vocabularySource)
        guard let rules = model["merges"] as? [Any] else {
            throw TokenizerError("\(mergesSource): missing or not an array")
        }
        var merges: [(String, String)] = []
        merges.reserveCapacity(rules.count)
        for (index, rule) in rules.enumerated() {
            if let string = rule as? String, let pair = pair(string) {
                merges.append(pair)
            } else if let parts = rule as? [Any], parts.count == 2, let left = parts[0] as? String,
                      let right = parts[1] as? String {
                merges.append((left, right))
            } else {
                throw TokenizerError("\(mergesSource): rule \(index + 1) is \(rule); expected \"a b\" or [\"a\", \"b\"]")
            }
        }
        return TokenizerFiles(
            vocabulary: vocabulary, merges: merges, vocabularySource: vocabularySource, mergesSource: mergesSource)
    }

    private static func vocabulary(_ object: [String: Any]?, source: String) throws(TokenizerError) -> [String: Int] {
        guard let object else { throw TokenizerError("\(source): missing or not an object of token ids") }
        var vocabulary = [String: Int](minimumCapacity: object.count)
        for (token, value) in object {
            guard let id = value as? Int else {
                throw TokenizerError(
                    "\(source): the id of \(TokenizerError.quoted(token)) is \(value); expected an integer")
            }
            vocabulary[token] = id
        }
        return vocabulary
    }

    /// merges.txt as `tokenizers` reads it: one `left right` rule per line, lines starting with
    /// `#version` skipped, `\n` or `\r\n` line ends.
    private static func merges(text path: String) throws(TokenizerError) -> [(String, String)] {
        let bytes = try readFile(path)
        var lines = bytes.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false)
        if lines.last?.isEmpty == true { lines.removeLast() }
        var merges: [(String, String)] = []
        merges.reserveCapacity(lines.count)
        for (index, var line) in lines.enumerated() {
            if line.last == UInt8(ascii: "\r") { line.removeLast() }
            guard let text = String(data: Data(line), encoding: .utf8) else {
                throw TokenizerError("\(path): line \(index + 1) is not valid UTF-8")
            }
            if text.hasPrefix("#version") { continue }
            guard let pair = pair(text) else {
                throw TokenizerError(
                    "\(path): line \(index + 1) is \(TokenizerError.quoted(text)); expected two tokens separated by one space")
            }
            merges.append(pair)
        }
        return merges
    }

    /// `"left right"` split at its one space; nil when it has no space or more than one.
    private static func pair(_ rule: String) -> (String, String)? {
        let parts = rule.unicodeScalars.split(separator: " ", omittingEmptySubsequences: false)
        guard parts.count == 2 else { return nil }
        return (String(String.UnicodeScalarView(parts[0])), String(String.UnicodeScalarView(parts[1])))
    }
}

private func readFile(_ path: String) throws(TokenizerError) -> Data {
    do {
        return try Data(contentsOf: URL(fileURLWithPath: path))
    } catch {
        throw TokenizerError("\(path): cannot be read (\(error.localizedDescription))")
    }
}

private func readJSONObject(_ path: String) throws(TokenizerError) -> [String: Any] {
    let data = try readFile(path)
    let value: Any
    do {
        value = try JSONSerialization.jsonObject(with: data)
    } catch {
        throw TokenizerError("\(path): not valid JSON (\(error.localizedDescription))")
    }
    guard let object = value as? [String: Any] else {
        throw TokenizerError("\(path): expected a JSON object at the top level")
    }
    return object
}
