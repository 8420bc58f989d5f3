import ArgumentParser
import Foundation
import KinemaCore
import KinemaCPU

@main
struct Kinema: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kinema",
        abstract: "Image-to-video generation (I2VGen-XL architecture) that plans its memory before it runs.",
        discussion: """
            Kinema turns one picture and a prompt into a short video. It reads diffusers-format \
            checkpoints (a folder with model_index.json) and runs them on the CPU (OpenBLAS); the \
            same seed gives the same video as diffusers.

            Start here:
              kinema generate --image IN.png --prompt "camera zooms in" --output OUT.mp4
              kinema serve                    the WebUI and HTTP API on http://127.0.0.1:7860/
              kinema worker --store URL       run jobs from a shared PostgreSQL queue (with serve --store URL)
              kinema plan --model-config DIR --width 768 --height 768 --frames 24
              kinema selftest                 check every op of the CPU backend against its reference
              kinema inspect MODEL_DIR        list a checkpoint's components, tensors and sizes
              kinema bench ops                time the core ops (optionally beside torch)

            Every subcommand has its own --help.
            """,
        version: kinemaVersion,
        subcommands: [Generate.self, Serve.self, Worker.self, Plan.self, Inspect.self, SelfTestCommand.self, Bench.self]
    )

    static func main() {
        selectBLASKernels()
        main(nil)
    }

    /// OpenBLAS picks its kernels when it is loaded, from OPENBLAS_CORETYPE or its own CPU
    /// detection. Where detection fell back to generic kernels, start this process again with the
    /// variable set (once: the restarted process finds it set).
    static func selectBLASKernels() {
        guard let coreType = BLAS.suggestedCoreType else { return }
        setenv("OPENBLAS_CORETYPE", coreType, 1)
        let arguments = CommandLine.arguments.map { strdup($0) } + [nil]
        execv("/proc/self/exe", arguments)
        // execv returns only on failure: carry on with the generic kernels.
    }
}

/// An error the CLI reports as `Error: <message>` with a non-zero exit status.
struct CLIError: Error, CustomStringConvertible {
    let description: String
    init(_ message: String) { description = message }
}
