import Foundation
import KinemaModels
import XCTest

/// CLIPTokenizer against transformers 5's `CLIPTokenizer` (fixtures from tools/make_tokenizer_fixtures.py).
///
/// The committed `Fixtures/tokenizer_json` folder is a reduced CLIP vocabulary saved by transformers that
/// reproduces the full vocabulary's ids on every fixture prompt; the full released vocabulary is checked
/// too when `/work/shared/data` holds it.
final class CLIPTokenizerTests: XCTestCase {
    private static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("Fixtures")
    private static let tokenizerJSONFolder = fixtures.appendingPathComponent("tokenizer_json").path
    private static let releasedFolders = [
        "/work/shared/data/clip-tokenizer", "/work/shared/data/i2vgen-xl-configs/tokenizer",
    ]

    private struct Case: Decodable {
        let text: String
        let ids: [Int]
    }

    private struct Reference: Decodable {
        let maxLength: Int
        let cases: [Case]
    }

    private var temporaryFolders: [URL] = []

    override func tearDown() {
        for folder in temporaryFolders { try? FileManager.default.removeItem(at: folder) }
        temporaryFolders = []
        super.tearDown()
    }

    // MARK: - Reference ids

    func testTokenizerJSONLayoutMatchesTransformersOnEveryFixturePrompt() throws {
        try assertMatchesReference(CLIPTokenizer(folder: Self.tokenizerJSONFolder))
    }

    func testVocabAndMergesLayoutMatchesTransformersOnEveryFixturePrompt() throws {
        try assertMatchesReference(CLIPTokenizer(folder: vocabAndMergesFolder().path))
    }

    func testTokenizerJSONWithStringMergesMatchesTransformersOnEveryFixturePrompt() throws {
        let folder = try temporaryFolder()
        var document = try jsonObject(Self.tokenizerJSONFolder + "/tokenizer.json")
        var model = try XCTUnwrap(document["model"] as? [String: Any])
        let pairs = try XCTUnwrap(model["merges"] as? [[String]])
        model["merges"] = pairs.map { $0.joined(separator: " ") }
        document["model"] = model
        try JSONSerialization.data(withJSONObject: document).write(to: folder.appendingPathComponent("tokenizer.json"))

        try assertMatchesReference(CLIPTokenizer(folder: folder.path))
    }

    func testReleasedVocabularyMatchesTransformersOnEveryFixturePrompt() throws {
        let folders = Self.releasedFolders.filter { FileManager.default.fileExists(atPath: $0 + "/vocab.json") }
        try XCTSkipIf(folders.isEmpty, "the released CLIP vocabulary is not on this machine")
        for folder in folders {
            let tokenizer = try CLIPTokenizer(folder: folder)
            XCTAssertEqual(tokenizer.startOfTextID, CLIPTokenizer.startOfText)
            XCTAssertEqual(tokenizer.endOfTextID, CLIPTokenizer.endOfText)
            XCTAssertEqual(tokenizer.paddingID, CLIPTokenizer.endOfText)
            try assertMatchesReference(tokenizer)
        }
    }

    // MARK: - Layouts

    func testBothLayoutsGiveIdenticalIDsOnRandomPrompts() throws {
        let fromTokenizerJSON = try CLIPTokenizer(folder: Self.tokenizerJSONFolder)
        let fromVocabAndMerges = try CLIPTokenizer(folder: vocabAndMergesFolder().path)
        var random = RandomText()
        for _ in 0..<200 {
            let prompt = random.prompt(words: random.int(in: 1...60))
            XCTAssertEqual(fromTokenizerJSON.encode(prompt), fromVocabAndMerges.encode(prompt),
                           "prompt \(prompt.debugDescription), seed \(random.seed)")
        }
    }

    func testTokenizerJSONIsPreferredOverVocabAndMerges() throws {
        let folder = try vocabAndMergesFolder()
        // A tokenizer.json whose vocabulary spells every id differently shows which layout was read.
        var document = try jsonObject(Self.tokenizerJSONFolder + "/tokenizer.json")
        var model = try XCTUnwrap(document["model"] as? [String: Any])
        let vocabulary = try XCTUnwrap(model["vocab"] as? [String: Int])
        model["vocab"] = vocabulary.mapValues { $0 + 1 }
        document["model"] = model
        try JSONSerialization.data(withJSONObject: document).write(to: folder.appendingPathComponent("tokenizer.json"))

        let tokenizer = try CLIPTokenizer(folder: folder.path)
        XCTAssertEqual(tokenizer.startOfTextID, CLIPTokenizer.startOfText + 1)
    }

    // MARK: - Encoding

    func testEmptyPromptIsStartThenSeventySixEndTokens() throws {
        let tokenizer = try CLIPTokenizer(folder: Self.tokenizerJSONFolder)
        XCTAssertEqual(tokenizer.encode(""), [49406] + Array(repeating: 49407, count: 76))
        XCTAssertEqual(tokenizer.tokenize(""), [])
    }

    func testEncodeIsStartContentEndThenPaddingToMaxLength() throws {
        let tokenizer = try CLIPTokenizer(folder: Self.tokenizerJSONFolder)
        var random = RandomText()
        for _ in 0..<100 {
            let prompt = random.prompt(words: random.int(in: 0...120))
            let content = tokenizer.tokenize(prompt)
            let kept = Array(content.prefix(75))
            let expected = [49406] + kept + [49407] + Array(repeating: 49407, count: 75 - kept.count)
            XCTAssertEqual(tokenizer.encode(prompt), expected, "prompt \(prompt.debugDescription), seed \(random.seed)")
        }
    }

    func testWhitespaceSeparatedWordsTokenizeIndependently() throws {
        let tokenizer = try CLIPTokenizer(folder: Self.tokenizerJSONFolder)
        var random = RandomText()
        for _ in 0..<100 {
            let words = (0..<random.int(in: 1...12)).map { _ in random.word() }
            let separators = words.map { _ in random.whitespace() }
            let prompt = zip(separators, words).map { $0 + $1 }.joined()
            XCTAssertEqual(tokenizer.tokenize(prompt), words.flatMap(tokenizer.tokenize),
                           "prompt \(prompt.debugDescription), seed \(random.seed)")
        }
    }

    func testLiteralSpecialTokensInThePromptBecomeTheirIDs() throws {
        let tokenizer = try CLIPTokenizer(folder: Self.tokenizerJSONFolder)
        let a = tokenizer.tokenize("a"), b = tokenizer.tokenize("b")
        XCTAssertEqual(tokenizer.tokenize("a<|endoftext|>b"), a + [49407] + b)
        XCTAssertEqual(tokenizer.tokenize("a<|startoftext|>b"), a + [49406] + b)
    }

    func testFolderConfigSetsMaxLengthAndSpecialTokens() throws {
        let folder = try vocabAndMergesFolder()
        let config = ["model_max_length": 16, "bos_token": ["content": "<|endoftext|>"], "do_lower_case": false] as [String: Any]
        try JSONSerialization.data(withJSONObject: config)
            .write(to: folder.appendingPathComponent("tokenizer_config.json"))

        let tokenizer = try CLIPTokenizer(folder: folder.path)
        XCTAssertEqual(tokenizer.maxLength, 16)
        XCTAssertEqual(tokenizer.startOfTextID, 49407)
        XCTAssertEqual(tokenizer.encode("a").count, 16)
        // transformers 5's CLIPTokenizer lower-cases whatever do_lower_case says.
        XCTAssertEqual(tokenizer.tokenize("A"), tokenizer.tokenize("a"))
    }

    func testSeventyFiveWordPromptTokenizesWellUnderTenMilliseconds() throws {
        let tokenizer = try CLIPTokenizer(folder: Self.tokenizerJSONFolder)
        var random = RandomText()
        let prompt = random.prompt(words: 75)
        var fastest = Double.infinity
        for _ in 0..<5 {
            let start = DispatchTime.now().uptimeNanoseconds
            _ = tokenizer.encode(prompt)
            fastest = min(fastest, Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6)
        }
        XCTAssertLessThan(fastest, 5, "milliseconds for a 75-word prompt, seed \(random.seed)")
    }

    // MARK: - Errors

    func testMissingFolderIsAnErrorNamingIt() {
        let path = "/nonexistent/kinema-tokenizer-\(UUID().uuidString)"
        assertError(containing: [path, "no such"]) { try CLIPTokenizer(folder: path) }
    }

    func testFolderWithNeitherLayoutIsAnErrorNamingBoth() throws {
        let folder = try temporaryFolder()
        assertError(containing: [folder.path, "tokenizer.json", "vocab.json", "merges.txt"]) {
            try CLIPTokenizer(folder: folder.path)
        }
    }

    func testVocabularyWithoutMergesIsAnErrorNamingMergesFile() throws {
        let folder = try vocabAndMergesFolder()
        try FileManager.default.removeItem(at: folder.appendingPathComponent("merges.txt"))
        assertError(containing: [folder.path + "/merges.txt", "missing"]) { try CLIPTokenizer(folder: folder.path) }
    }

    func testMalformedVocabularyIsAnErrorNamingTheFile() throws {
        let folder = try vocabAndMergesFolder()
        try Data("{\"a</w>\": 1,".utf8).write(to: folder.appendingPathComponent("vocab.json"))
        assertError(containing: [folder.path + "/vocab.json", "not valid JSON"]) { try CLIPTokenizer(folder: folder.path) }
    }

    func testNonIntegerVocabularyIdIsAnErrorNamingTheToken() throws {
        let folder = try vocabAndMergesFolder()
        try Data("{\"a</w>\": \"one\"}".utf8).write(to: folder.appendingPathComponent("vocab.json"))
        assertError(containing: [folder.path + "/vocab.json", "\"a</w>\"", "expected an integer"]) {
            try CLIPTokenizer(folder: folder.path)
        }
    }

    func testMalformedMergeLineIsAnErrorNamingTheLine() throws {
        let folder = try vocabAndMergesFolder()
        try Data("#version: 0.2\ni n\nt h e\n".utf8).write(to: folder.appendingPathComponent("merges.txt"))
        assertError(containing: [folder.path + "/merges.txt", "line 3"]) { try CLIPTokenizer(folder: folder.path) }
    }

    func testMergeOfUnknownTokenIsAnErrorNamingIt() throws {
        let folder = try vocabAndMergesFolder()
        try Data("#version: 0.2\ni n\nzz q\n".utf8).write(to: folder.appendingPathComponent("merges.txt"))
        assertError(containing: [folder.path + "/merges.txt", "merge 2", "\"zz\"", "vocab.json"]) {
            try CLIPTokenizer(folder: folder.path)
        }
    }

    func testSpecialTokenMissingFromVocabularyIsAnError() {
        assertError(containing: ["start-of-text", "\"<|startoftext|>\""]) {
            try CLIPTokenizer(vocabulary: ["<|endoftext|>": 0], merges: [])
        }
    }

    func testInvalidModelMaxLengthIsAnErrorNamingTheConfig() throws {
        let folder = try vocabAndMergesFolder()
        try Data("{\"model_max_length\": 1e30}".utf8).write(to: folder.appendingPathComponent("tokenizer_config.json"))
        assertError(containing: [folder.path + "/tokenizer_config.json", "model_max_length"]) {
            try CLIPTokenizer(folder: folder.path)
        }
    }

    // MARK: - Helpers

    private func assertMatchesReference(_ tokenizer: CLIPTokenizer, file: StaticString = #filePath, line: UInt = #line) throws {
        let data = try Data(contentsOf: Self.fixtures.appendingPathComponent("clip_tokenizer_ids.json"))
        let reference = try JSONDecoder().decode(Reference.self, from: data)
        XCTAssertGreaterThan(reference.cases.count, 100, file: file, line: line)
        XCTAssertEqual(tokenizer.maxLength, reference.maxLength, file: file, line: line)
        var mismatches = 0
        for item in reference.cases {
            let ids = tokenizer.encode(item.text)
            if ids != item.ids {
                mismatches += 1
                XCTFail("\(item.text.debugDescription):\n  kinema       \(ids)\n  transformers \(item.ids)", file: file, line: line)
            }
        }
        XCTAssertEqual(mismatches, 0, file: file, line: line)
    }

    private func assertError(containing parts: [String], file: StaticString = #filePath, line: UInt = #line,
                             _ body: () throws -> CLIPTokenizer) {
        do {
            _ = try body()
            XCTFail("expected a TokenizerError", file: file, line: line)
        } catch let error as TokenizerError {
            for part in parts {
                XCTAssertTrue(error.description.contains(part), "\(error) does not mention \(part)", file: file, line: line)
            }
        } catch {
            XCTFail("expected a TokenizerError, got \(error)", file: file, line: line)
        }
    }

    private func temporaryFolder() throws -> URL {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("kinema-tokenizer-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        temporaryFolders.append(folder)
        return folder
    }

    /// The fixture tokenizer rewritten in the released checkpoint's layout: vocab.json, merges.txt
    /// (with its `#version` header) and tokenizer_config.json.
    private func vocabAndMergesFolder() throws -> URL {
        let folder = try temporaryFolder()
        let model = try XCTUnwrap(jsonObject(Self.tokenizerJSONFolder + "/tokenizer.json")["model"] as? [String: Any])
        let vocabulary = try XCTUnwrap(model["vocab"] as? [String: Int])
        let merges = try XCTUnwrap(model["merges"] as? [[String]])
        try JSONSerialization.data(withJSONObject: vocabulary).write(to: folder.appendingPathComponent("vocab.json"))
        let lines = ["#version: 0.2"] + merges.map { $0.joined(separator: " ") }
        try Data((lines.joined(separator: "\n") + "\n").utf8).write(to: folder.appendingPathComponent("merges.txt"))
        try FileManager.default.copyItem(
            atPath: Self.tokenizerJSONFolder + "/tokenizer_config.json",
            toPath: folder.appendingPathComponent("tokenizer_config.json").path)
        return folder
    }

    private func jsonObject(_ path: String) throws -> [String: Any] {
        try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path))) as? [String: Any])
    }
}

/// Random prompts from a fresh seed (printed in every failure) over all the character classes the
/// tokenizer treats differently.
private struct RandomText {
    let seed = UInt64.random(in: 1...UInt64.max)
    private var state: UInt64

    init() { state = seed }

    /// Single code points, so combining marks and joiners also start words.
    private static let characters = (
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"
            + "éèßÅœαβΣΩжЖ日本風景한🚀🔥👍🏽½Ⅻ١ﬁ\u{0301}\u{0308}\u{200B}\u{200D}\u{FEFF}"
    ).unicodeScalars.map(String.init)
    private static let fragments = ["'s", "'ll", "<|endoftext|>", "<|startoftext|>", "&amp;", "e\u{0301}", "don't"]
    private static let whitespace = [" ", "  ", "\t", "\n", "\r\n", "\u{A0}", "\u{3000}", "\u{2003}"]

    /// SplitMix64.
    private mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    mutating func int(in range: ClosedRange<Int>) -> Int {
        range.lowerBound + Int(next() % UInt64(range.count))
    }

    /// One run of non-whitespace characters and fragments.
    mutating func word() -> String {
        (0..<int(in: 1...8)).map { _ in
            int(in: 0...9) == 0
                ? Self.fragments[int(in: 0...(Self.fragments.count - 1))]
                : Self.characters[int(in: 0...(Self.characters.count - 1))]
        }.joined()
    }

    mutating func whitespace() -> String { Self.whitespace[int(in: 0...(Self.whitespace.count - 1))] }

    mutating func prompt(words: Int) -> String {
        (0..<words).map { _ in whitespace() + word() }.joined()
    }
}
