//! The `inflor` binary: parses the command line, sets up logging, runs one command and maps its
//! outcome to an exit code (0 ok, 1 runtime failure, 2 bad usage, config or input).

mod app;
mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    // The daemon sets up its own logging from its config (text or JSON).
    if !matches!(cli.command, cli::Command::Run(_)) {
        app::init_logging(cli.verbose);
    }
    match app::run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            if app::is_broken_pipe(&err) {
                return ExitCode::SUCCESS;
            }
            eprintln!("error: {err}");
            for cause in err.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::from(app::exit_code(&err))
        }
    }
}
