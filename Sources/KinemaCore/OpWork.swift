/// The work of the ops a run issues, by the kind of limit each runs into: floating-point
/// operations of matrix products, convolutions and attention, bytes read and written by every
/// other op, and the number of op calls. The meta backend adds up every op it is given, so a dry
/// run knows the work of a plan before it runs; a cost model turns it into seconds.
public struct OpWork: Sendable, Equatable, Codable {
    public var matmulFlops: Double = 0
    public var convolutionFlops: Double = 0
    public var attentionFlops: Double = 0
    /// Bytes read and written by the memory-bound ops (norms, elementwise, layout, conversions).
    public var memoryBytes: Double = 0
    public var calls: Double = 0

    public init() {}

    public static func + (a: OpWork, b: OpWork) -> OpWork {
        var sum = a
        sum.matmulFlops += b.matmulFlops
        sum.convolutionFlops += b.convolutionFlops
        sum.attentionFlops += b.attentionFlops
        sum.memoryBytes += b.memoryBytes
        sum.calls += b.calls
        return sum
    }

    /// This work done `times` times.
    public func repeated(_ times: Double) -> OpWork {
        var copy = self
        copy.matmulFlops *= times
        copy.convolutionFlops *= times
        copy.attentionFlops *= times
        copy.memoryBytes *= times
        copy.calls *= times
        return copy
    }

    public static func - (a: OpWork, b: OpWork) -> OpWork {
        var difference = a
        difference.matmulFlops -= b.matmulFlops
        difference.convolutionFlops -= b.convolutionFlops
        difference.attentionFlops -= b.attentionFlops
        difference.memoryBytes -= b.memoryBytes
        difference.calls -= b.calls
        return difference
    }

    enum CodingKeys: String, CodingKey {
        case matmulFlops = "matmul_flops", convolutionFlops = "convolution_flops", attentionFlops = "attention_flops"
        case memoryBytes = "memory_bytes", calls
    }
}

extension MetaBackend {
    func countMatmul(_ flops: Double) { work.matmulFlops += flops; work.calls += 1 }
    func countConvolution(_ flops: Double) { work.convolutionFlops += flops; work.calls += 1 }
    func countAttention(_ flops: Double) { work.attentionFlops += flops; work.calls += 1 }
    /// A memory-bound op that reads `inputs` and writes `output`.
    func countMemory(_ inputs: [Tensor], _ output: Tensor) {
        work.memoryBytes += Double(inputs.reduce(output.byteCount) { $0 + $1.byteCount })
        work.calls += 1
    }
}
