use crate::Exit;
use crate::project;
use crate::ui::Out;
use std::path::Path;

pub fn run(out: &Out, path: &Path, check: bool) -> anyhow::Result<Exit> {
    let src = match project::read(out, path) {
        Ok(s) => s,
        Err(e) => return Ok(e),
    };
    let formatted = match warden_lang::fmt::format_file(&src) {
        Ok(f) => f,
        Err(diagnostics) => {
            project::report(out, &diagnostics);
            eprintln!(
                "error: `{}` cannot be formatted; nothing was changed",
                path.display()
            );
            return Ok(Exit::User);
        }
    };
    let changed = formatted != *src.text;
    if out.json {
        out.json(&serde_json::json!({"file": path.display().to_string(), "formatted": !changed, "written": changed && !check}));
    }
    if check {
        if changed {
            eprintln!(
                "`{}` is not formatted; run `warden fmt {}`",
                path.display(),
                path.display()
            );
            return Ok(Exit::User);
        }
        return Ok(Exit::Ok);
    }
    if changed {
        if let Err(e) = project::write_atomic(path, formatted.as_bytes()) {
            eprintln!(
                "error: cannot write `{}`: {}",
                path.display(),
                project::io_msg(&e)
            );
            return Ok(Exit::Internal);
        }
        if !out.json {
            eprintln!("formatted `{}`", path.display());
        }
    }
    Ok(Exit::Ok)
}
