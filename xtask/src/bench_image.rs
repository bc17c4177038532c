//! Benchmark: building the quickstart image (`/bin/sh` and coreutils from this machine).
//!
//! Measures, interleaved in one run:
//! - cold build: a fresh cache, so the ELF closure is resolved and the layer written;
//! - warm build: same plan and cache, nothing changed (the cache check only);
//! - the floor: GNU tar writing the same tree reproducibly and `sha256sum` hashing it
//!   (`tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner --hard-dereference`).
//!
//! Usage: `cargo xtask bench image [--runs N] [--init PATH]`. The init binary defaults to
//! `target/release/warden-init` when it exists, else `/usr/bin/true` (any ELF will do).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use crate::bench_lang::{arg_value, median, ms};
use anyhow::{Context, bail};
use warden_image::{BuildContext, build_image, unpack_bundle};
use warden_wire::image::{ImagePlan, Source};

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let runs: usize = arg_value(args, "--runs")
        .map(|r| r.parse())
        .transpose()
        .context("--runs takes a number")?
        .unwrap_or(7)
        .max(1);
    let init = arg_value(args, "--init")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let built = PathBuf::from("target/release/warden-init");
            if built.is_file() {
                built
            } else {
                PathBuf::from("/usr/bin/true")
            }
        });
    let work = std::env::temp_dir().join(format!("warden-bench-image-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let result = bench(&work, &init, runs);
    let _ = std::fs::remove_dir_all(&work);
    result
}

fn bench(work: &Path, init: &Path, runs: usize) -> anyhow::Result<()> {
    let plan = ImagePlan {
        version: 1,
        name: "quickstart".into(),
        sources: vec![Source::FromHost {
            paths: ["/bin/sh", "/bin/ls", "/bin/cat", "/bin/echo"]
                .map(String::from)
                .to_vec(),
            with_libs: vec![],
        }],
        env: vec![("PATH".into(), "/usr/bin:/bin".into())],
        workdir: None,
    };
    let ctx = |cache: &str| BuildContext {
        base_dir: work.to_path_buf(),
        init_binary: init.to_path_buf(),
        cache_dir: work.join(cache),
        source_date_epoch: 0,
        nix_store: None,
    };

    // The tree GNU tar packs: the image's own rootfs, unpacked once.
    let first = build_image(&plan, &ctx("cache-warm"), &|_| {})?;
    let bundle = work.join("bundle");
    unpack_bundle(&first.layout_dir, &first.tag, "{}", &[], &bundle)?;
    let rootfs = bundle.join("rootfs");
    let tar_script = format!(
        "tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner --hard-dereference \
         -cf - -C '{}' . | sha256sum",
        rootfs.display()
    );

    let (mut cold, mut warm, mut tar) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..runs {
        let c = ctx(&format!("cache-cold-{i}"));
        let t = Instant::now();
        let built = build_image(&plan, &c, &|_| {})?;
        cold.push(t.elapsed());
        if built.reused || built.manifest_digest != first.manifest_digest {
            bail!("cold build {i} was not a fresh, identical build");
        }
        std::fs::remove_dir_all(&c.cache_dir)?;

        let t = Instant::now();
        let again = build_image(&plan, &ctx("cache-warm"), &|_| {})?;
        warm.push(t.elapsed());
        if !again.reused {
            bail!("warm build {i} was rebuilt");
        }

        let t = Instant::now();
        let out = Command::new("sh").args(["-c", &tar_script]).output()?;
        tar.push(t.elapsed());
        if !out.status.success() {
            bail!("gnu tar failed: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
    let (cold, warm, tar) = (median(cold), median(warm), median(tar));
    println!(
        "image: quickstart (/bin/sh /bin/ls /bin/cat /bin/echo + closure), {runs} runs, medians"
    );
    println!("  digest              {}", first.manifest_digest);
    println!(
        "  image size          {} bytes ({:.1} MiB)",
        first.size_bytes,
        first.size_bytes as f64 / 1048576.0
    );
    println!("  cold build          {}", ms(cold));
    println!("  warm build (cached) {}", ms(warm));
    println!("  gnu tar + sha256sum {}", ms(tar));
    println!(
        "  ratio cold / tar    {:.2}x",
        cold.as_secs_f64() / tar.as_secs_f64()
    );
    println!(
        "  ratio warm / tar    {:.3}x",
        warm.as_secs_f64() / tar.as_secs_f64()
    );
    python(work, init, runs)
}

/// A bigger image: python3 with its standard library (thousands of inputs to re-stat).
fn python(work: &Path, init: &Path, runs: usize) -> anyhow::Result<()> {
    if !Path::new("/usr/lib/python3.11").is_dir() {
        println!("image: python (skipped: /usr/lib/python3.11 not found)");
        return Ok(());
    }
    let plan = ImagePlan {
        version: 1,
        name: "python".into(),
        sources: vec![Source::FromHost {
            paths: vec!["/usr/bin/python3".into()],
            with_libs: vec!["/usr/lib/python3.11".into()],
        }],
        env: vec![],
        workdir: None,
    };
    let ctx = |cache: &str| BuildContext {
        base_dir: work.to_path_buf(),
        init_binary: init.to_path_buf(),
        cache_dir: work.join(cache),
        source_date_epoch: 0,
        nix_store: None,
    };
    let (mut cold, mut warm) = (Vec::new(), Vec::new());
    let mut size = 0;
    for i in 0..runs.min(3) {
        let c = ctx(&format!("py-cold-{i}"));
        let t = Instant::now();
        let built = build_image(&plan, &c, &|_| {})?;
        cold.push(t.elapsed());
        size = built.size_bytes;
        let t = Instant::now();
        let again = build_image(&plan, &c, &|_| {})?;
        warm.push(t.elapsed());
        if !again.reused {
            bail!("warm python build {i} was rebuilt");
        }
        std::fs::remove_dir_all(&c.cache_dir)?;
    }
    println!("image: python (/usr/bin/python3 + /usr/lib/python3.11), medians");
    println!(
        "  image size          {} bytes ({:.1} MiB)",
        size,
        size as f64 / 1048576.0
    );
    println!("  cold build          {}", ms(median(cold)));
    println!("  warm build (cached) {}", ms(median(warm)));
    Ok(())
}
