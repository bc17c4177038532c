//! Canonical formatting that keeps every comment.

use kdl::{FormatConfig, KdlDocument};

/// Format a file canonically: four-space indentation, one node per line, comments kept.
/// Returns the KDL parse error text when the file does not parse.
pub fn format(text: &str) -> Result<String, String> {
    let mut doc = KdlDocument::parse_v2(text).map_err(|e| {
        e.diagnostics
            .first()
            .and_then(|d| d.message.clone())
            .unwrap_or_else(|| "invalid KDL".into())
    })?;
    doc.autoformat_config(&FormatConfig::builder().indent("    ").build());
    let mut out = doc.to_string();
    while out.ends_with("\n\n") {
        out.pop();
    }
    if !out.ends_with('\n') {
        out.push('\n');
    }
    Ok(out)
}
