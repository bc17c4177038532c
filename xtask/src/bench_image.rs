//! Benchmark: bench_image.

pub fn run(_args: &[String]) -> anyhow::Result<()> {
    Ok(())
}
