/// Byte-level byte-pair encoding with an end-of-word suffix: turns one pre-tokenized word (its UTF-8
/// bytes) into vocabulary ids, merging in the same order as the `tokenizers` library's BPE model
/// (`models/bpe/word.rs`, `merge_all`), which transformers 5's `CLIPTokenizer` runs.
///
/// Merging works on ids, not strings: each byte starts as the id of its byte-level symbol (GPT-2's
/// `bytes_to_unicode` alphabet, the last byte with the suffix appended), and a merge rule maps an id
/// pair to its rank and the id of the merged token.
struct BytePairEncoding: Sendable {
    /// A merge rule's priority (lower merges first) and the id of the token it produces.
    struct Merge: Sendable {
        let rank: Int32
        let mergedID: Int32
    }

    /// The id of each byte's symbol inside a word.
    private let byteSymbols: [Int32]
    /// The id of each byte's symbol when it ends a word (the symbol followed by the suffix).
    private let finalByteSymbols: [Int32]
    /// Merge rules keyed by `left << 32 | right`.
    private let merges: [UInt64: Merge]

    /// Builds the merge table.
    ///
    /// - Parameters:
    ///   - vocabulary: token string to id; ids must lie in `0..<2^31`.
    ///   - merges: token pairs, highest priority first; a later copy of a pair replaces an earlier one,
    ///     as in `tokenizers`.
    ///   - unknownID: the id a byte gets when its symbol is missing from the vocabulary.
    ///   - endOfWordSuffix: appended to a word's last symbol (`</w>` for CLIP).
    ///   - vocabularySource, mergesSource: how error messages name where the tables came from.
    init(
        vocabulary: [String: Int], merges: [(String, String)], unknownID: Int, endOfWordSuffix: String,
        vocabularySource: String, mergesSource: String
    ) throws(TokenizerError) {
        for (token, id) in vocabulary where !(0...Int(Int32.max)).contains(id) {
            throw TokenizerError(
                "\(vocabularySource): token \(TokenizerError.quoted(token)) has id \(id); ids must lie in 0...\(Int32.max)")
        }
        let alphabet = Self.byteAlphabet
        byteSymbols = alphabet.map { Int32(vocabulary[String($0)] ?? unknownID) }
        finalByteSymbols = alphabet.map { Int32(vocabulary[String($0) + endOfWordSuffix] ?? unknownID) }

        var table = [UInt64: Merge](minimumCapacity: merges.count)
        for (rank, (left, right)) in merges.enumerated() {
            // Like `tokenizers`, a merge must name known tokens and produce a known token.
            guard let leftID = vocabulary[left], let rightID = vocabulary[right],
                  let mergedID = vocabulary[left + right] else {
                let missing = vocabulary[left] == nil ? left : vocabulary[right] == nil ? right : left + right
                let rule = TokenizerError.quoted(left) + " " + TokenizerError.quoted(right)
                throw TokenizerError(
                    "\(mergesSource): merge \(rank + 1) (\(rule)) needs \(TokenizerError.quoted(missing)), "
                        + "which is not in \(vocabularySource)")
            }
            table[Self.key(Int32(leftID), Int32(rightID))] = Merge(rank: Int32(rank), mergedID: Int32(mergedID))
        }
        self.merges = table
    }

    /// The ids of one word, given as UTF-8 bytes.
    func encode(_ word: [UInt8]) -> [Int] {
        let count = word.count
        guard count > 0 else { return [] }
        // A doubly linked list over the initial symbols; a merged-away symbol is marked not alive.
        var symbols = [Int32](repeating: 0, count: count)
        var previous = [Int](repeating: -1, count: count)
        var next = [Int](repeating: count, count: count)
        var alive = [Bool](repeating: true, count: count)
        for index in 0..<count {
            symbols[index] = index == count - 1 ? finalByteSymbols[Int(word[index])] : byteSymbols[Int(word[index])]
            previous[index] = index - 1
            next[index] = index + 1
        }

        var queue = MergeQueue()
        for index in 0..<(count - 1) {
            if let merge = merges[Self.key(symbols[index], symbols[index + 1])] {
                queue.push(MergeQueue.Entry(rank: merge.rank, position: index, mergedID: merge.mergedID))
            }
        }
        while let top = queue.pop() {
            let position = top.position
            guard alive[position], next[position] < count else { continue }
            let right = next[position]
            // An entry is stale when the pair at its position changed since it was queued. Like
            // `tokenizers`, only the merged id is compared, so a stale entry whose pair yields the same
            // token still merges (at the stale entry's rank).
            guard let current = merges[Self.key(symbols[position], symbols[right])],
                  current.mergedID == top.mergedID else { continue }
            symbols[position] = top.mergedID
            alive[right] = false
            next[position] = next[right]
            if next[right] < count { previous[next[right]] = position }

            let before = previous[position]
            if before >= 0, let merge = merges[Self.key(symbols[before], symbols[position])] {
                queue.push(MergeQueue.Entry(rank: merge.rank, position: before, mergedID: merge.mergedID))
            }
            let after = next[position]
            if after < count, let merge = merges[Self.key(symbols[position], symbols[after])] {
                queue.push(MergeQueue.Entry(rank: merge.rank, position: position, mergedID: merge.mergedID))
            }
        }

        var ids: [Int] = []
        var index = 0
        while index < count {
            ids.append(Int(symbols[index]))
            index = next[index]
        }
        return ids
    }

    private static func key(_ left: Int32, _ right: Int32) -> UInt64 {
        UInt64(UInt32(bitPattern: left)) << 32 | UInt64(UInt32(bitPattern: right))
    }

    /// GPT-2's `bytes_to_unicode`: printable Latin-1 bytes stand for themselves, the other 68 bytes
    /// map in order to U+0100 onwards, so every byte is a visible character in vocab.json.
    static let byteAlphabet: [Character] = {
        var alphabet = [Character](repeating: " ", count: 256)
        var shifted: UInt32 = 256
        for byte in 0..<256 {
            let printable = (33...126).contains(byte) || (161...172).contains(byte) || (174...255).contains(byte)
            let scalar = printable ? UInt32(byte) : shifted
            if !printable { shifted += 1 }
            alphabet[byte] = Character(Unicode.Scalar(scalar)!)
        }
        return alphabet
    }()
}

/// A binary min-heap of merge candidates ordered by rank, then by position (leftmost first): the
/// order in which `tokenizers` pops them.
private struct MergeQueue {
    struct Entry {
        let rank: Int32
        let position: Int
        let mergedID: Int32

        func precedes(_ other: Entry) -> Bool {
            rank != other.rank ? rank < other.rank : position < other.position
        }
    }

    private var heap: [Entry] = []

    mutating func push(_ entry: Entry) {
        heap.append(entry)
        var child = heap.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            guard heap[child].precedes(heap[parent]) else { break }
            heap.swapAt(child, parent)
            child = parent
        }
    }

    mutating func pop() -> Entry? {
        guard let last = heap.popLast() else { return nil }
        guard !heap.isEmpty else { return last }
        let top = heap[0]
        heap[0] = last
        var parent = 0
        while true {
            let left = 2 * parent + 1
            guard left < heap.count else { break }
            let right = left + 1
            let child = right < heap.count && heap[right].precedes(heap[left]) ? right : left
            guard heap[child].precedes(heap[parent]) else { break }
            heap.swapAt(child, parent)
            parent = child
        }
        return top
    }
}
