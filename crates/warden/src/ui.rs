//! Output conventions: data on stdout (text or `--json`), messages on stderr, lower-case,
//! no colour needed to make sense.

pub struct Out {
    pub json: bool,
    /// `check --json` prints diagnostics as data on stdout instead of text on stderr.
    pub diagnostics_as_json: bool,
}

impl Out {
    pub fn json<T: serde::Serialize>(&self, value: &T) {
        match serde_json::to_string_pretty(value) {
            Ok(s) => println!("{s}"),
            Err(e) => eprintln!("error: cannot encode output as JSON: {e}"),
        }
    }
}
