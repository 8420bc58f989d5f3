import KinemaCore

/// Token merging on CUDA: the tensors are copied to the host, merged there by `HostTokenMerging`
/// and the result copied back. Merging is a lossy fallback for budgets nothing lossless fits, and
/// the copies cost far less than the attention it shortens; a device kernel can replace this.
/// The host copies are not counted by the device's meter.
extension CUDABackend {
    public func tokenMatchKernel(_ metric: Tensor, height: Int, width: Int, merged: Int, workspace: Tensor?, into slots: Tensor) {
        guard slots.hasData else { return }
        let scratch = hostTensor([metric.shape[1] * 3])
        onHost(slots) { HostTokenMerging.match(hostCopy(metric), height: height, width: width, merged: merged, workspace: scratch, into: $0) }
    }

    public func tokenMergeKernel(_ tokens: Tensor, slots: Tensor, into output: Tensor) {
        guard output.hasData else { return }
        onHost(output) { HostTokenMerging.merge(hostCopy(tokens), slots: hostCopy(slots), into: $0) }
    }

    public func tokenUnmergeKernel(_ merged: Tensor, slots: Tensor, into output: Tensor) {
        guard output.hasData else { return }
        onHost(output) { HostTokenMerging.unmerge(hostCopy(merged), slots: hostCopy(slots), into: $0) }
    }

    /// Runs `body` on an f32 host tensor shaped like `output`, then copies it into `output`.
    private func onHost(_ output: Tensor, _ body: (Tensor) -> Void) {
        let result = hostTensor(output.shape)
        body(result)
        writeKernel(result.rawPointer, dtype: .f32, into: output)
    }

    /// An f32 host copy of a device tensor.
    private func hostCopy(_ tensor: Tensor) -> Tensor {
        let copy = hostTensor(tensor.shape)
        readKernel(tensor, dtype: .f32, into: copy.rawPointer)
        return copy
    }

    private func hostTensor(_ shape: [Int]) -> Tensor {
        Tensor(shape: shape, dtype: .f32, storage: Storage(byteCount: shape.reduce(1, *) * 4, allocator: Self.hostAllocator))
    }

    private static let hostAllocator = HostAllocator()
}
