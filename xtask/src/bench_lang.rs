//! Benchmark: bench_lang.

pub fn run(_args: &[String]) -> anyhow::Result<()> {
    Ok(())
}
