//! The composition root: runs each command by wiring library parts together, and decides exit
//! codes. Only this module (and `main`) uses `anyhow`.

pub mod convert;
pub mod dataset;
pub mod decode_args;
pub mod infer;
pub mod inspect;
pub mod model;
pub mod synth;

use crate::cli::Command;

/// Marks an error as the user's input being wrong (exit code 2) rather than a runtime failure.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct BadInput(#[from] pub anyhow::Error);

/// Wraps any error as bad input.
pub fn bad_input(err: impl Into<anyhow::Error>) -> anyhow::Error {
    anyhow::Error::new(BadInput(err.into()))
}

/// Runs one command.
pub fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Inspect(args) => inspect::run(args),
        Command::Convert(args) => convert::run(args),
        Command::Dataset(cmd) => dataset::run(cmd),
        Command::Synth(args) => synth::run(args),
        Command::Model(cmd) => model::run(cmd),
        Command::Infer(args) => infer::run(args),
    }
}

/// Exit code for a failed command: 2 when the input, configuration or usage was wrong.
pub fn exit_code(err: &anyhow::Error) -> u8 {
    let bad = err.chain().any(|cause| {
        cause.is::<BadInput>()
            || cause.is::<inflor::format::ReadError>()
            || cause.is::<inflor::format::DecodeError>()
    });
    if bad { 2 } else { 1 }
}

/// Whether the failure is only a closed stdout (`inflor inspect ... | head`), which is not an error.
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Logs go to stderr; `INFLOR_LOG` (an env-filter directive) overrides `-v`.
pub fn init_logging(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = EnvFilter::try_from_env("INFLOR_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
