use crate::Exit;
use crate::project;
use crate::ui::Out;
use std::path::Path;

pub fn run(out: &Out, path: &Path) -> anyhow::Result<Exit> {
    let p = match project::load(out, path) {
        Ok(p) => p,
        Err(e) => return Ok(e),
    };
    let compiled = match project::compile(&p) {
        Ok(c) => c,
        Err(e) => return Ok(e),
    };
    let ex = warden_compile::explain(&p.model, &compiled);
    if out.json {
        out.json(&ex);
    } else {
        print!("{}", ex.render());
    }
    Ok(Exit::Ok)
}
