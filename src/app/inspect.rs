//! `inflor inspect`: placeholder until its owner lands it.

/// `inflor inspect` arguments.
#[derive(Debug, clap::Args)]
pub struct InspectArgs {}

/// Runs the command.
pub fn run(_args: InspectArgs) -> anyhow::Result<()> {
    anyhow::bail!("inflor inspect is not built yet")
}
