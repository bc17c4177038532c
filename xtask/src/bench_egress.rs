//! Benchmark: bench_egress.

pub fn run(_args: &[String]) -> anyhow::Result<()> {
    Ok(())
}
