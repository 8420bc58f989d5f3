import ArgumentParser
import KinemaCore

@main
struct Kinema: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kinema",
        abstract: "Image-to-video generation (I2VGen-XL architecture) that plans its memory before it runs.",
        discussion: """
            Kinema turns one picture and a prompt into a short video. It reads diffusers-format \
            checkpoints (a folder with model_index.json) and runs them on the CPU (OpenBLAS) today.

            Start here:
              kinema selftest                 check every op of the CPU backend against its reference
              kinema inspect MODEL_DIR        list a checkpoint's components, tensors and sizes
              kinema bench ops                time the core ops (optionally beside torch)

            Every subcommand has its own --help.
            """,
        version: kinemaVersion,
        subcommands: [Inspect.self, SelfTestCommand.self, Bench.self]
    )
}

/// An error the CLI reports as `Error: <message>` with a non-zero exit status.
struct CLIError: Error, CustomStringConvertible {
    let description: String
    init(_ message: String) { description = message }
}
