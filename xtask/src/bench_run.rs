//! Benchmark: bench_run.

pub fn run(_args: &[String]) -> anyhow::Result<()> {
    Ok(())
}
