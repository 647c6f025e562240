//! `inflor infer`: placeholder until its owner lands it.

/// `inflor infer` arguments.
#[derive(Debug, clap::Args)]
pub struct InferArgs {}

/// Runs the command.
pub fn run(_args: InferArgs) -> anyhow::Result<()> {
    anyhow::bail!("inflor infer is not built yet")
}
