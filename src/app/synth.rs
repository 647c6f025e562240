//! `inflor synth`: placeholder until its owner lands it.

/// `inflor synth` arguments.
#[derive(Debug, clap::Args)]
pub struct SynthArgs {}

/// Runs the command.
pub fn run(_args: SynthArgs) -> anyhow::Result<()> {
    anyhow::bail!("inflor synth is not built yet")
}
