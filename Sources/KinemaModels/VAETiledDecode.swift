import KinemaCore

/// diffusers `AutoencoderKL.tiled_decode`: the latents decoded in square tiles that overlap by a
/// quarter, each tile's top and left edges blended linearly into its neighbours'. The decoder's
/// peak then scales with the tile, not the frame. Lossy: a tile's GroupNorm statistics and
/// mid-block attention see only the tile, and the seams are blends.
extension AutoencoderKL {
    /// The share of a tile that overlaps its neighbour (diffusers' `tile_overlap_factor`).
    public static let tileOverlap = 0.25

    /// Whether `tile` (latent pixels) is a tile size `decode(_:tile:_:)` accepts: a multiple of 4 of
    /// at least 8, so that a quarter overlap is whole in latent and in image pixels.
    public static func isValidTile(_ tile: Int) -> Bool { tile >= 8 && tile % 4 == 0 }

    /// `post_quant_conv` + decoder on `tile`×`tile` latent tiles when the latents are larger than
    /// one tile (diffusers' `use_tiling` with `tile_latent_min_size = tile`), else `decode(_:_:)`.
    /// latents (N, latent, h, w) → images (N, out, h·f, w·f).
    public func decode(_ latents: Tensor, tile: Int, _ b: Backend) -> Tensor {
        precondition(Self.isValidTile(tile), "VAE tile \(tile) is not a multiple of 4 of at least 8")
        let (h, w) = (latents.shape[2], latents.shape[3])
        guard h > tile || w > tile else { return decode(latents, b) }
        let factor = config.downscaleFactor
        let sampleTile = tile * factor
        let step = Int(Double(tile) * (1 - Self.tileOverlap))            // overlap_size
        let blendExtent = Int(Double(sampleTile) * Self.tileOverlap)     // blend_extent
        let rowLimit = sampleTile - blendExtent                          // row_limit
        // Only the previous row of blended tiles is needed to blend the next: diffusers keeps all of
        // them, which changes no value.
        var previousRow: [Tensor] = []
        var rows: [Tensor] = []
        for top in stride(from: 0, to: h, by: step) {
            var row: [Tensor] = []
            var pieces: [Tensor] = []
            for left in stride(from: 0, to: w, by: step) {
                let latentTile = b.crop(latents, rows: top..<min(h, top + tile), columns: left..<min(w, left + tile))
                var decoded = decode(latentTile, b)
                if !previousRow.isEmpty { decoded = b.blendVertically(previousRow[row.count], decoded, extent: blendExtent) }
                if let leftTile = row.last { decoded = b.blendHorizontally(leftTile, decoded, extent: blendExtent) }
                row.append(decoded)
                pieces.append(b.crop(decoded, rows: 0..<min(rowLimit, decoded.shape[2]), columns: 0..<min(rowLimit, decoded.shape[3])))
            }
            rows.append(pieces.count == 1 ? pieces[0] : b.concat(pieces, axis: 3))
            previousRow = row
        }
        return rows.count == 1 ? rows[0] : b.concat(rows, axis: 2)
    }
}

extension Backend {
    /// Rows `rows` and columns `columns` of (N, C, H, W): a copy (tensors are contiguous), made
    /// by moving each cropped axis first, slicing it and moving it back.
    public func crop(_ x: Tensor, rows: Range<Int>, columns: Range<Int>) -> Tensor {
        precondition(x.rank == 4 && rows.lowerBound >= 0 && rows.upperBound <= x.shape[2]
                     && columns.lowerBound >= 0 && columns.upperBound <= x.shape[3], "crop \(rows), \(columns) outside \(x.shape)")
        var y = x
        if rows.count != x.shape[2] {
            // (N, C, H, W) -> (H, N, C, W), rows, -> (N, C, rows, W)
            y = permute(permute(y, [2, 0, 1, 3]).slice(rows), [1, 2, 0, 3])
        }
        if columns.count != x.shape[3] {
            // (N, C, H, W) -> (W, N, C, H), columns, -> (N, C, H, columns)
            y = permute(permute(y, [3, 0, 1, 2]).slice(columns), [1, 2, 3, 0])
        }
        return y
    }

    /// diffusers `blend_v`: the first `extent` rows of `below` become
    /// `above[-extent + y] · (1 − y/extent) + below[y] · (y/extent)`.
    func blendVertically(_ above: Tensor, _ below: Tensor, extent: Int) -> Tensor {
        let e = min(above.shape[2], below.shape[2], extent)
        guard e > 0 else { return below }
        let (weightAbove, weightBelow) = blendRamps(e, shape: [1, 1, e, 1])
        let top = add(mul(crop(above, rows: (above.shape[2] - e)..<above.shape[2], columns: 0..<above.shape[3]), weightAbove),
                      mul(crop(below, rows: 0..<e, columns: 0..<below.shape[3]), weightBelow))
        guard e < below.shape[2] else { return top }
        return concat([top, crop(below, rows: e..<below.shape[2], columns: 0..<below.shape[3])], axis: 2)
    }

    /// diffusers `blend_h`: the first `extent` columns of `right` blended with the last of `left`.
    func blendHorizontally(_ left: Tensor, _ right: Tensor, extent: Int) -> Tensor {
        let e = min(left.shape[3], right.shape[3], extent)
        guard e > 0 else { return right }
        let (weightLeft, weightRight) = blendRamps(e, shape: [1, 1, 1, e])
        let start = add(mul(crop(left, rows: 0..<left.shape[2], columns: (left.shape[3] - e)..<left.shape[3]), weightLeft),
                        mul(crop(right, rows: 0..<right.shape[2], columns: 0..<e), weightRight))
        guard e < right.shape[3] else { return start }
        return concat([start, crop(right, rows: 0..<right.shape[2], columns: e..<right.shape[3])], axis: 3)
    }

    /// The weights (1 − y/e) and y/e for y in 0..<e, computed in double and rounded to f32 as torch
    /// does with a Python float scalar.
    private func blendRamps(_ e: Int, shape: [Int]) -> (Tensor, Tensor) {
        let fade = (0..<e).map { Float(1 - Double($0) / Double(e)) }
        let rise = (0..<e).map { Float(Double($0) / Double(e)) }
        return (tensor(fade, shape: shape), tensor(rise, shape: shape))
    }
}
