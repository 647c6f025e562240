//! `inflor model`: placeholder until its owner lands it.

/// `inflor model` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum ModelCommand {
    /// Placeholder.
    Placeholder,
}

/// Runs the command.
pub fn run(_cmd: ModelCommand) -> anyhow::Result<()> {
    anyhow::bail!("inflor model is not built yet")
}
