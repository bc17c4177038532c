use crate::Exit;
use crate::project::{self, Project};
use crate::ui::Out;
use serde::Serialize;
use std::path::{Path, PathBuf};
use warden_compile::Compiled;
use warden_image::{BuildContext, BuiltImage, Progress};

#[derive(Serialize)]
struct SpecOut {
    sandbox: String,
    config: String,
    plan: String,
}

#[derive(Serialize)]
struct ImageOut {
    image: String,
    digest: String,
    reused: bool,
    size_bytes: u64,
    layout: String,
}

#[derive(Serialize)]
struct BundleOut {
    sandbox: String,
    image: String,
    bundle: String,
}

/// Where built images are cached: `WARDEN_CACHE_DIR`, else `/var/cache/warden` for root,
/// else `~/.cache/warden`.
pub fn cache_dir() -> PathBuf {
    if let Ok(d) = std::env::var("WARDEN_CACHE_DIR") {
        return PathBuf::from(d);
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc_geteuid() } == 0;
    if root {
        return PathBuf::from("/var/cache/warden");
    }
    std::env::var("HOME")
        .map(|h| PathBuf::from(h).join(".cache/warden"))
        .unwrap_or_else(|_| PathBuf::from("/tmp/warden-cache"))
}

unsafe extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

fn epoch() -> u64 {
    std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// The file copied into images as `/.warden/init`: the small `warden-init` installed
/// beside warden when there is one (it starts in a fraction of the time, and carries no
/// libraries it does not use), else warden itself, which runs as the init when invoked
/// under that name.
pub fn init_binary(warden: &Path) -> PathBuf {
    let sibling = warden.with_file_name("warden-init");
    if sibling.is_file() {
        sibling
    } else {
        warden.to_path_buf()
    }
}

/// Build every image of the file (reusing cached ones), with a progress bar on a terminal.
pub fn build_images(p: &Project, compiled: &Compiled) -> Result<Vec<BuiltImage>, String> {
    let exe = std::env::current_exe()
        .map_err(|e| format!("cannot find the warden binary: {}", project::io_msg(&e)))?;
    let init = init_binary(&exe);
    let ctx = BuildContext {
        base_dir: PathBuf::from(&p.options.base_dir),
        init_binary: init,
        cache_dir: cache_dir(),
        source_date_epoch: epoch(),
        nix_store: None,
    };
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} building {msg} [{bar:30}] {pos}/{len} files",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut out = Vec::new();
    for plan in &compiled.images {
        let progress = |ev: Progress| match ev {
            Progress::Started { image } => {
                bar.set_message(image);
                bar.set_position(0);
            }
            Progress::Files { done, total, .. } => {
                bar.set_length(total);
                bar.set_position(done);
            }
            Progress::Done { .. } => {}
        };
        let built = warden_image::build_image(plan, &ctx, &progress)
            .map_err(|e| format!("image `{}`: {e}", plan.name))?;
        out.push(built);
    }
    bar.finish_and_clear();
    Ok(out)
}

pub fn run(out: &Out, path: &Path, dir: &Path, spec_only: bool) -> anyhow::Result<Exit> {
    let p = match project::load(out, path) {
        Ok(p) => p,
        Err(e) => return Ok(e),
    };
    let compiled = match project::compile(&p) {
        Ok(c) => c,
        Err(e) => return Ok(e),
    };
    if spec_only {
        return write_specs(out, &compiled, dir);
    }
    let images = match build_images(&p, &compiled) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(Exit::User);
        }
    };
    let mut image_out = Vec::new();
    for img in &images {
        let dest = dir.join("images").join(&img.name);
        if let Err(e) = warden_image::export_layout(&img.layout_dir, &img.tag, &dest) {
            eprintln!("error: cannot write `{}`: {e}", dest.display());
            return Ok(Exit::Internal);
        }
        image_out.push(ImageOut {
            image: img.name.clone(),
            digest: img.manifest_digest.clone(),
            reused: img.reused,
            size_bytes: img.size_bytes,
            layout: dest.display().to_string(),
        });
    }
    let mut bundles = Vec::new();
    for s in &compiled.sandboxes {
        let Some(img) = images.iter().find(|i| i.name == s.plan.image) else {
            eprintln!(
                "error: sandbox `{}` names image `{}`, which was not built",
                s.name, s.plan.image
            );
            return Ok(Exit::Internal);
        };
        let bdir = dir.join("bundles").join(&s.name);
        if let Err(e) = warden_image::unpack_bundle(
            &img.layout_dir,
            &img.tag,
            &s.config_json(),
            &s.plan.files,
            &bdir,
        ) {
            eprintln!("error: cannot write bundle `{}`: {e}", bdir.display());
            return Ok(Exit::Internal);
        }
        let plan = bdir.join(warden_wire::sandbox::SANDBOX_FILE);
        if let Err(e) = project::write_atomic(&plan, s.plan_json().as_bytes()) {
            eprintln!(
                "error: cannot write `{}`: {}",
                plan.display(),
                project::io_msg(&e)
            );
            return Ok(Exit::Internal);
        }
        bundles.push(BundleOut {
            sandbox: s.name.clone(),
            image: img.name.clone(),
            bundle: bdir.display().to_string(),
        });
    }
    if out.json {
        out.json(&serde_json::json!({"images": image_out, "bundles": bundles}));
    } else {
        for i in &image_out {
            println!(
                "image  {:<16} {}  {:>7}  {}",
                i.image,
                i.digest,
                if i.reused { "reused" } else { "built" },
                warden_lang::values::format_size(i.size_bytes.max(1))
            );
        }
        for b in &bundles {
            println!("bundle {:<16} {}", b.sandbox, b.bundle);
        }
    }
    Ok(Exit::Ok)
}

fn write_specs(out: &Out, compiled: &Compiled, dir: &Path) -> anyhow::Result<Exit> {
    let mut written = Vec::new();
    for s in &compiled.sandboxes {
        let sdir = dir.join(&s.name);
        if let Err(e) = std::fs::create_dir_all(&sdir) {
            eprintln!(
                "error: cannot create `{}`: {}",
                sdir.display(),
                project::io_msg(&e)
            );
            return Ok(Exit::User);
        }
        let config = sdir.join("config.json");
        let plan = sdir.join(warden_wire::sandbox::SANDBOX_FILE);
        for (f, body) in [(&config, s.config_json()), (&plan, s.plan_json())] {
            if let Err(e) = project::write_atomic(f, body.as_bytes()) {
                eprintln!(
                    "error: cannot write `{}`: {}",
                    f.display(),
                    project::io_msg(&e)
                );
                return Ok(Exit::User);
            }
        }
        written.push(SpecOut {
            sandbox: s.name.clone(),
            config: config.display().to_string(),
            plan: plan.display().to_string(),
        });
    }
    if out.json {
        out.json(&written);
    } else {
        for w in &written {
            println!("{}\t{}", w.sandbox, w.config);
        }
    }
    Ok(Exit::Ok)
}
