//! `cargo xtask bench serve`: the control plane (planned).

pub fn run(_args: &[String]) -> anyhow::Result<()> {
    anyhow::bail!("`bench serve` is not written yet")
}
