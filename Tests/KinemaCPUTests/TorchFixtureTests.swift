import Foundation
import KinemaCore
import KinemaCPU
import XCTest

/// The CPU ops against values computed by torch (`tools/make_op_fixtures.py` writes
/// `Fixtures/torch_ops.safetensors`; each case's parameters are in the file's metadata).
final class TorchFixtureTests: XCTestCase {
    static let fixturePath = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("Fixtures/torch_ops.safetensors").path
    let cpu = CPUBackend()
    var file: SafeTensorsFile!

    override func setUpWithError() throws { file = try SafeTensorsFile(path: Self.fixturePath) }

    func t(_ name: String) throws -> Tensor { try file.tensor(name) }

    func parameters(_ caseName: String) throws -> [String: Any] {
        let json = try XCTUnwrap(file.metadata[caseName], "no metadata for \(caseName)")
        return try XCTUnwrap(JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any])
    }

    func check(_ caseName: String, _ actual: Tensor, atol: Float = 1e-5, rtol: Float = 1e-4,
               file: StaticString = #filePath, line: UInt = #line) throws {
        let expected = try t("\(caseName).out")
        XCTAssertEqual(actual.shape, expected.shape, caseName, file: file, line: line)
        assertClose(actual.floats(), expected.floats(), atol: atol, rtol: rtol, caseName, file: file, line: line)
    }

    func testConvolutionsMatchTorch() throws {
        for name in ["conv2d_3x3_s1", "conv2d_3x3_s2", "conv2d_vae_down", "conv2d_1x1", "conv2d_patch"] {
            let p = try parameters(name)
            let stride = p["stride"] as! Int, pad = p["padding"] as! [Int]
            let bias = (p["bias"] as! Bool) ? try t("\(name).bias") : nil
            let out = cpu.conv2d(try t("\(name).x"), weight: try t("\(name).weight"), bias: bias,
                                 parameters: .init(strideY: stride, strideX: stride, padTop: pad[0], padLeft: pad[1], padBottom: pad[2], padRight: pad[3]))
            try check(name, out)
        }
    }

    func testTemporalConvolutionMatchesTorchConv3d() throws {
        let frames = try parameters("conv3d_temporal")["frames"] as! Int
        let out = cpu.temporalConv(try t("conv3d_temporal.x"), weight: try t("conv3d_temporal.weight"),
                                   bias: try t("conv3d_temporal.bias"), frames: frames)
        try check("conv3d_temporal", out)
    }

    func testGroupNormsMatchTorch() throws {
        for name in ["group_norm", "group_norm_silu", "group_norm_temporal", "group_norm_tokens"] {
            let p = try parameters(name)
            let out = cpu.groupNorm(try t("\(name).x"), groups: p["groups"] as! Int, weight: try t("\(name).weight"),
                                    bias: try t("\(name).bias"), epsilon: Float(p["eps"] as! Double),
                                    frames: p["frames"] as? Int ?? 1, fusedSiLU: p["silu"] as! Bool)
            try check(name, out)
        }
    }

    func testAttentionMatchesTorchSDPA() throws {
        for name in ["attention", "attention_causal", "attention_temporal", "attention_long"] {
            let p = try parameters(name)
            let out = cpu.attention(query: try t("\(name).q"), key: try t("\(name).k"), value: try t("\(name).v"),
                                    heads: p["heads"] as! Int, causal: p["is_causal"] as! Bool, queryChunk: 64)
            try check(name, out)
        }
    }

    func testNormsActivationsAndLayoutMatchTorch() throws {
        try check("layer_norm", cpu.layerNorm(try t("layer_norm.x"), weight: try t("layer_norm.weight"), bias: try t("layer_norm.bias"), epsilon: 1e-5))
        try check("softmax", cpu.softmax(try t("softmax.x")), atol: 1e-6)
        try check("gelu", cpu.gelu(try t("gelu.x")), atol: 1e-6)
        try check("quick_gelu", cpu.quickGelu(try t("quick_gelu.x")), atol: 1e-6)
        try check("silu", cpu.silu(try t("silu.x")), atol: 1e-6)
        try check("geglu", cpu.geglu(try t("geglu.x")), atol: 1e-6)
        try check("upsample_nearest", cpu.upsampleNearest(try t("upsample_nearest.x")), atol: 0, rtol: 0)
        try check("adaptive_avg_pool", cpu.adaptiveAveragePool(try t("adaptive_avg_pool.x"), height: 4, width: 8), atol: 1e-6)
        try check("exp", cpu.unary(.exp, try t("exp.x")), atol: 1e-6, rtol: 2e-6)
        try check("clamp", cpu.clamp(try t("clamp.x"), lower: -30, upper: 20), atol: 0, rtol: 0)
        let timesteps = try t("timestep_embedding.timesteps").floats()
        try check("timestep_embedding", cpu.timestepEmbedding(timesteps, parameters: .init(dimension: 320, flipSinToCos: true, downscaleFreqShift: 0)),
                  atol: 2e-6)
    }
}
