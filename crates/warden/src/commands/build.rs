use crate::project;
use crate::ui::Out;
use crate::Exit;
use serde::Serialize;
use std::path::Path;

#[derive(Serialize)]
struct SpecOut {
    sandbox: String,
    config: String,
    plan: String,
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
    if !spec_only {
        eprintln!("error: image builds are not available in this build; use `--spec-only`");
        return Ok(Exit::Internal);
    }
    let mut written = Vec::new();
    for s in &compiled.sandboxes {
        let sdir = dir.join(&s.name);
        if let Err(e) = std::fs::create_dir_all(&sdir) {
            eprintln!("error: cannot create `{}`: {}", sdir.display(), project::io_msg(&e));
            return Ok(Exit::User);
        }
        let config = sdir.join("config.json");
        let plan = sdir.join(warden_wire::sandbox::SANDBOX_FILE);
        for (f, body) in [(&config, s.config_json()), (&plan, s.plan_json())] {
            if let Err(e) = project::write_atomic(f, body.as_bytes()) {
                eprintln!("error: cannot write `{}`: {}", f.display(), project::io_msg(&e));
                return Ok(Exit::User);
            }
        }
        written.push(SpecOut { sandbox: s.name.clone(), config: config.display().to_string(), plan: plan.display().to_string() });
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
