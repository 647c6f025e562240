//! `inflor dataset`: placeholder until its owner lands it.

/// `inflor dataset` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum DatasetCommand {
    /// Placeholder.
    Placeholder,
}

/// Runs the command.
pub fn run(_cmd: DatasetCommand) -> anyhow::Result<()> {
    anyhow::bail!("inflor dataset is not built yet")
}
