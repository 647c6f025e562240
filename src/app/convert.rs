//! `inflor convert`: placeholder until its owner lands it.

/// `inflor convert` arguments.
#[derive(Debug, clap::Args)]
pub struct ConvertArgs {}

/// Runs the command.
pub fn run(_args: ConvertArgs) -> anyhow::Result<()> {
    anyhow::bail!("inflor convert is not built yet")
}
