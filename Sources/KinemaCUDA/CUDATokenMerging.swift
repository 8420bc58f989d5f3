import KinemaCore
import KinemaCPU

/// Token merging on CUDA: the tensors are copied to the host, merged there by the CPU backend's
/// kernels and copied back. Merging is a lossy fallback for budgets nothing lossless fits, and
/// the copies cost far less than the attention it shortens; a device kernel can replace this.
extension CUDABackend {
    public func tokenMatchKernel(_ metric: Tensor, height: Int, width: Int, merged: Int, workspace: Tensor?, into slots: Tensor) {
        guard slots.hasData else { return }
        let host = CPUBackend(threads: 1)
        let hostSlots = host.empty(slots.shape, dtype: .f32, op: "token_match.staging")
        let scratch = host.empty([metric.shape[1] * 3], dtype: .f32, op: "token_match.staging")
        host.tokenMatchKernel(staged(metric, on: host), height: height, width: width, merged: merged, workspace: scratch, into: hostSlots)
        writeKernel(hostSlots.rawPointer, dtype: .f32, into: slots)
    }

    public func tokenMergeKernel(_ tokens: Tensor, slots: Tensor, into output: Tensor) {
        guard output.hasData else { return }
        let host = CPUBackend(threads: 1)
        let result = host.empty(output.shape, dtype: .f32, op: "token_merge.staging")
        host.tokenMergeKernel(staged(tokens, on: host), slots: staged(slots, on: host), into: result)
        writeKernel(result.rawPointer, dtype: .f32, into: output)
    }

    public func tokenUnmergeKernel(_ merged: Tensor, slots: Tensor, into output: Tensor) {
        guard output.hasData else { return }
        let host = CPUBackend(threads: 1)
        let result = host.empty(output.shape, dtype: .f32, op: "token_unmerge.staging")
        host.tokenUnmergeKernel(staged(merged, on: host), slots: staged(slots, on: host), into: result)
        writeKernel(result.rawPointer, dtype: .f32, into: output)
    }

    /// An f32 host copy of a device tensor.
    private func staged(_ tensor: Tensor, on host: CPUBackend) -> Tensor {
        let copy = host.empty(tensor.shape, dtype: .f32, op: "staging")
        readKernel(tensor, dtype: .f32, into: copy.rawPointer)
        return copy
    }
}
