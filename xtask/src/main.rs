//! `cargo xtask <task>`: project automation (benchmarks, fuzzing).

mod bench_apply;
mod bench_egress;
mod bench_image;
mod bench_inference;
mod bench_lang;
mod bench_run;
mod bench_serve;
mod postgres;
mod test;
mod third_party;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (task, rest) = match args.split_first() {
        Some((t, r)) => (t.as_str(), r),
        None => ("help", &[][..]),
    };
    match task {
        "bench" => {
            let which = rest.first().map(String::as_str).unwrap_or("all");
            if matches!(which, "all" | "lang") {
                bench_lang::run(rest)?;
            }
            if matches!(which, "all" | "image") {
                bench_image::run(rest)?;
            }
            if matches!(which, "all" | "run") {
                bench_run::run(rest)?;
            }
            if matches!(which, "all" | "egress") {
                bench_egress::run(rest)?;
            }
            if matches!(which, "all" | "apply") {
                bench_apply::run(rest)?;
            }
            if matches!(which, "all" | "inference") {
                bench_inference::run(rest)?;
            }
            if matches!(which, "all" | "serve") {
                bench_serve::run(rest)?;
            }
            Ok(())
        }
        "test" => test::run(rest),
        "postgres" => postgres::run(rest),
        "third-party" => third_party::verify(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".."),
            &std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()),
        ),
        _ => {
            println!(
                "usage: cargo xtask test | cargo xtask third-party | cargo xtask postgres start|stop | cargo xtask bench [all|lang|image|run|egress|apply|inference|serve]"
            );
            Ok(())
        }
    }
}
