/// Token merging (ToMe for Stable Diffusion, Bolya & Hoffman 2023) made frame-aware: every row
/// of (N, T, C) tokens is one frame of an `height`×`width` grid and is matched on its own; the
/// destination tokens are the top-left token of every 2×2 cell, the same positions in every frame
/// (tomesd draws them at random per call, which flickers across a video, and reads I2VGen-XL's
/// 5-D latents as 4-D and crashes). Each other token is a source paired with its most similar
/// destination (cosine similarity); the `merged` best-paired sources are averaged into their
/// destinations. Lossy: attention then sees fewer, averaged tokens.
///
/// The kernels below work on host memory (the CPU backend); they do nothing on a tensor without
/// data (the meta device). A backend whose tensors live elsewhere must implement them itself.
extension Backend {
    /// The tokens removed from a row of `tokens` tokens at `ratio` (tomesd: `int(T · ratio)`,
    /// at most the number of sources).
    public static func mergedTokenCount(height: Int, width: Int, ratio: Double) -> Int {
        let tokens = height * width, destinations = (height / 2) * (width / 2)
        return max(0, min(Int(Double(tokens) * ratio), tokens - destinations))
    }

    /// Matches `metric` (N, T, C), T = height·width, and returns each token's slot in the merged
    /// sequence: (N, T) f32 holding integers in 0..<T − merged. Unmerged sources come first (in
    /// token order), then the destinations (in token order), as in tomesd's `cat([unm, dst])`.
    public func matchTokens(_ metric: Tensor, height: Int, width: Int, ratio: Double) -> Tensor {
        precondition(metric.rank == 3 && metric.shape[1] == height * width, "matchTokens: \(metric.shape) is not \(height)x\(width) tokens")
        let merged = Self.mergedTokenCount(height: height, width: width, ratio: ratio)
        let slots = empty([metric.shape[0], metric.shape[1]], dtype: .f32, op: "token_match")
        // Per row: each token's inverse norm, each source's best score and best destination.
        let workspace = self.workspace(bytes: metric.shape[1] * 3 * 4, op: "token_match.workspace")
        OpProfile.shared.time("token_match") {
            tokenMatchKernel(metric, height: height, width: width, merged: merged, workspace: workspace, into: slots)
        }
        return slots
    }

    /// `tokens` (N, T, C) merged by `slots` (from `matchTokens`): (N, T − merged, C), each slot the
    /// mean of the tokens mapped to it (tomesd's `scatter_reduce(mode="mean", include_self=True)`).
    public func mergeTokens(_ tokens: Tensor, slots: Tensor, height: Int, width: Int, ratio: Double) -> Tensor {
        precondition(tokens.rank == 3 && slots.shape == [tokens.shape[0], tokens.shape[1]], "mergeTokens: \(tokens.shape) with slots \(slots.shape)")
        let kept = tokens.shape[1] - Self.mergedTokenCount(height: height, width: width, ratio: ratio)
        let output = empty([tokens.shape[0], kept, tokens.shape[2]], dtype: tokens.dtype, op: "token_merge")
        OpProfile.shared.time("token_merge") {
            tokenMergeKernel(tokens, slots: slots, into: output)
        }
        return output
    }

    /// The inverse of `mergeTokens`: every token takes its slot's value, (N, T − merged, C) → (N, T, C).
    public func unmergeTokens(_ merged: Tensor, slots: Tensor) -> Tensor {
        precondition(merged.rank == 3 && slots.rank == 2 && slots.shape[0] == merged.shape[0], "unmergeTokens: \(merged.shape) with slots \(slots.shape)")
        let output = empty([merged.shape[0], slots.shape[1], merged.shape[2]], dtype: merged.dtype, op: "token_unmerge")
        OpProfile.shared.time("token_unmerge") {
            tokenUnmergeKernel(merged, slots: slots, into: output)
        }
        return output
    }

    public func tokenMatchKernel(_ metric: Tensor, height: Int, width: Int, merged: Int, workspace: Tensor?, into slots: Tensor) {
        guard slots.hasData, let workspace else { return }
        HostTokenMerging.match(metric, height: height, width: width, merged: merged, workspace: workspace, into: slots)
    }

    public func tokenMergeKernel(_ tokens: Tensor, slots: Tensor, into output: Tensor) {
        guard output.hasData else { return }
        HostTokenMerging.merge(tokens, slots: slots, into: output)
    }

    public func tokenUnmergeKernel(_ merged: Tensor, slots: Tensor, into output: Tensor) {
        guard output.hasData else { return }
        HostTokenMerging.unmerge(merged, slots: slots, into: output)
    }
}

/// The token-merging kernels on f32 host tensors: the default kernels of host-memory backends,
/// and what a device backend runs on host copies.
public enum HostTokenMerging {
    /// `Backend.matchTokens` on host tensors; `workspace` holds 3·T floats.
    public static func match(_ metric: Tensor, height: Int, width: Int, merged: Int, workspace: Tensor, into slots: Tensor) {
        let (rows, tokens, channels) = (metric.shape[0], metric.shape[1], metric.shape[2])
        let x = metric.pointer(Float.self), out = slots.pointer(Float.self), scratch = workspace.pointer(Float.self)
        // Destinations: the top-left token of each whole 2×2 cell; every other token is a source.
        var isDestination = [Bool](repeating: false, count: tokens)
        var destinations: [Int] = [], sources: [Int] = []
        for y in stride(from: 0, to: height / 2 * 2, by: 2) {
            for x in stride(from: 0, to: width / 2 * 2, by: 2) { isDestination[y * width + x] = true }
        }
        for t in 0..<tokens { if isDestination[t] { destinations.append(t) } else { sources.append(t) } }
        let inverseNorm = scratch, bestScore = scratch + tokens, bestDestination = scratch + 2 * tokens
        for row in 0..<rows {
            let base = x + row * tokens * channels
            for t in 0..<tokens {
                var sum: Float = 0
                for c in 0..<channels { sum += base[t * channels + c] * base[t * channels + c] }
                inverseNorm[t] = sum > 0 ? 1 / sum.squareRoot() : 0
            }
            for (i, s) in sources.enumerated() {
                var best = -Float.infinity, bestIndex = 0
                let a = base + s * channels
                for (j, d) in destinations.enumerated() {
                    let b = base + d * channels
                    var dot: Float = 0
                    for c in 0..<channels { dot += a[c] * b[c] }
                    let score = dot * inverseNorm[s] * inverseNorm[d]
                    if score > best { best = score; bestIndex = j }
                }
                bestScore[i] = best
                bestDestination[i] = Float(bestIndex)
            }
            // The `merged` sources with the highest scores merge (ties: the earlier token first).
            let order = sources.indices.sorted { bestScore[$0] != bestScore[$1] ? bestScore[$0] > bestScore[$1] : $0 < $1 }
            var merges = [Bool](repeating: false, count: sources.count)
            for i in order.prefix(merged) { merges[i] = true }
            let slotsOut = out + row * tokens
            let unmerged = sources.count - merged
            var next = 0
            for (i, s) in sources.enumerated() where !merges[i] {
                slotsOut[s] = Float(next)
                next += 1
            }
            for (j, d) in destinations.enumerated() { slotsOut[d] = Float(unmerged + j) }
            for (i, s) in sources.enumerated() where merges[i] { slotsOut[s] = Float(unmerged + Int(bestDestination[i])) }
        }
    }

    /// `Backend.mergeTokens` on host tensors.
    public static func merge(_ tokens: Tensor, slots: Tensor, into output: Tensor) {
        let (rows, count, channels, kept) = (tokens.shape[0], tokens.shape[1], tokens.shape[2], output.shape[1])
        let x = tokens.pointer(Float.self), map = slots.pointer(Float.self), out = output.pointer(Float.self)
        var members = [Float](repeating: 0, count: kept)
        for row in 0..<rows {
            let target = out + row * kept * channels
            target.initialize(repeating: 0, count: kept * channels)
            for i in 0..<kept { members[i] = 0 }
            for t in 0..<count {
                let slot = Int(map[row * count + t])
                members[slot] += 1
                let source = x + (row * count + t) * channels, sum = target + slot * channels
                for c in 0..<channels { sum[c] += source[c] }
            }
            for slot in 0..<kept {
                let sum = target + slot * channels
                for c in 0..<channels { sum[c] /= members[slot] }
            }
        }
    }

    /// `Backend.unmergeTokens` on host tensors.
    public static func unmerge(_ merged: Tensor, slots: Tensor, into output: Tensor) {
        let (rows, kept, channels, count) = (merged.shape[0], merged.shape[1], merged.shape[2], output.shape[1])
        let x = merged.pointer(Float.self), map = slots.pointer(Float.self), out = output.pointer(Float.self)
        for row in 0..<rows {
            for t in 0..<count {
                let slot = Int(map[row * count + t])
                (out + (row * count + t) * channels).update(from: x + (row * kept + slot) * channels, count: channels)
            }
        }
    }
}
