//! The composition root: runs each command by wiring library parts together, and decides exit
//! codes. Only this module (and `main`) uses `anyhow`.

pub mod ablate;
pub mod cameras;
pub mod convert;
pub mod dataset;
pub mod decode_args;
pub mod eval;
pub mod infer;
pub mod inspect;
pub mod labelled;
pub mod model;
pub mod plot;
pub mod replay;
pub mod run;
pub mod serve_events;
pub mod synth;
pub mod train;

use anyhow::Context;

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
        Command::Run(args) => run::run(args),
        Command::Validate(args) => run::validate(args),
        Command::ServeEvents(args) => serve_events::run(args),
        Command::Train(args) => train::run(*args),
        Command::Eval(args) => eval::run(args),
        Command::Replay(args) => replay::run(*args),
        Command::Ablate(args) => ablate::run(args),
        Command::Plot(args) => plot::run(args),
        Command::Cameras(args) => cameras::run(args),
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

/// Checks an output path before any work is done: it must not exist unless `force`, and its
/// folder must exist. Failing here costs the user nothing; failing after an hour of work would.
pub fn check_output(path: &std::path::Path, force: bool) -> anyhow::Result<()> {
    if path.is_dir() {
        return Err(bad_input(anyhow::anyhow!(
            "output {} is a folder, not a file",
            path.display()
        )));
    }
    if path.exists() && !force {
        return Err(bad_input(anyhow::anyhow!(
            "output {} already exists (pass --force to overwrite it)",
            path.display()
        )));
    }
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => std::path::Path::new("."),
    };
    if !parent.is_dir() {
        return Err(bad_input(anyhow::anyhow!(
            "cannot write {}: the folder {} does not exist",
            path.display(),
            parent.display()
        )));
    }
    Ok(())
}

/// Loads a model file; a bad file is bad input (exit code 2).
pub fn load_model(path: &std::path::Path) -> anyhow::Result<inflor::model::Model> {
    inflor::model::Model::load(path).map_err(|e| {
        bad_input(anyhow::Error::new(e).context(format!("loading model {}", path.display())))
    })
}

/// The error and its causes on one line, each cause once.
pub fn chain(err: &anyhow::Error) -> String {
    err.chain()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(": ")
}

/// The process's one executor thread pool: none for one thread (work stays on the calling
/// thread), else a pool of `threads`.
pub fn pool(threads: u16) -> anyhow::Result<Option<inflor::exec::Pool>> {
    if threads <= 1 {
        return Ok(None);
    }
    Ok(Some(
        inflor::exec::Pool::new(usize::from(threads)).context("starting executor threads")?,
    ))
}

/// The trained model compiled into the binary: `tiny` SRIF + MPR on DVS-Digits
/// (`docs/training.md` gives the command that reproduces it).
const BUNDLED_MODEL: &[u8] = include_bytes!("../../assets/tiny-dvs-digits.safetensors");

/// The model compiled into the binary, used when a command is given no `--model`.
pub fn bundled_model() -> anyhow::Result<inflor::model::Model> {
    inflor::model::Model::from_bytes(BUNDLED_MODEL)
        .context("the bundled model assets/tiny-dvs-digits.safetensors does not load")
}

/// A DVS-Digits test recording compiled into the binary, for the embedded default of
/// `inflor run` (each is one stream, looped, with its true label).
#[derive(Debug, Clone, Copy)]
pub struct BundledRecording {
    /// Its file name under `assets/`.
    pub name: &'static str,
    /// The digit it shows.
    pub label: &'static str,
    /// Its bytes (AEDAT 2.0, DVS128).
    pub bytes: &'static [u8],
}

/// The bundled recordings: test recordings 0 of the digits 0, 3, 7 and 9 (`assets/README.md`).
pub const BUNDLED_RECORDINGS: &[BundledRecording] = &[
    BundledRecording {
        name: "dvs-digits-0.aedat",
        label: "0",
        bytes: inspect::BUNDLED,
    },
    BundledRecording {
        name: "dvs-digits-3.aedat",
        label: "3",
        bytes: include_bytes!("../../assets/dvs-digits-3.aedat"),
    },
    BundledRecording {
        name: "dvs-digits-7.aedat",
        label: "7",
        bytes: include_bytes!("../../assets/dvs-digits-7.aedat"),
    },
    BundledRecording {
        name: "dvs-digits-9.aedat",
        label: "9",
        bytes: include_bytes!("../../assets/dvs-digits-9.aedat"),
    },
];

/// A progress bar on stderr, drawn only when stderr is a terminal.
pub fn progress_bar(total: u64, what: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(total);
    let style = indicatif::ProgressStyle::with_template(
        "{prefix} [{bar:30}] {pos}/{len} {msg} ({elapsed}, ETA {eta})",
    )
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
    .progress_chars("=> ");
    bar.set_style(style);
    bar.set_prefix(what.to_owned());
    bar
}

/// Whether output on stderr may carry colour: a terminal, and `NO_COLOR` unset or empty.
pub fn colour_allowed() -> bool {
    use std::io::IsTerminal;
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && std::io::stderr().is_terminal()
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
        .with_ansi(colour_allowed())
        .try_init();
}
