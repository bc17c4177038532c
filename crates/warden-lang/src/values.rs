//! Parsers for the value syntaxes of the language: sizes, durations, paths.

/// `2GiB`, `512MiB`, `1.5GiB`, `100MB`, `4096` (bytes). Binary units are powers of 1024,
/// decimal units powers of 1000.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    if num.is_empty() || num.starts_with('.') || num.ends_with('.') || num.matches('.').count() > 1
    {
        return Err(format!("`{s}` is not a size"));
    }
    let mult: u64 = match unit {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        _ => return Err(format!("unknown size unit `{unit}`")),
    };
    let value = if let Some((i, f)) = num.split_once('.') {
        let i: u64 = i.parse().map_err(|_| format!("`{s}` is not a size"))?;
        let scale = 10u64
            .checked_pow(f.len() as u32)
            .ok_or("too many decimals")?;
        let f: u64 = f.parse().map_err(|_| format!("`{s}` is not a size"))?;
        i.checked_mul(mult)
            .and_then(|a| a.checked_add(mult.checked_mul(f)? / scale))
    } else {
        let i: u64 = num.parse().map_err(|_| format!("`{s}` is too large"))?;
        i.checked_mul(mult)
    };
    match value {
        Some(0) => Err("a size must be more than 0".into()),
        Some(v) => Ok(v),
        None => Err(format!("`{s}` is too large")),
    }
}

/// `500ms`, `10s`, `5m`, `1h` to milliseconds.
pub fn parse_duration(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration"))?;
    let mult = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "" => return Err(format!("`{s}` has no unit")),
        u => return Err(format!("unknown duration unit `{u}`")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("`{s}` is too long"))
}

pub fn format_size(b: u64) -> String {
    const UNITS: [(u64, &str); 4] = [
        (1 << 40, "TiB"),
        (1 << 30, "GiB"),
        (1 << 20, "MiB"),
        (1 << 10, "KiB"),
    ];
    for (m, u) in UNITS {
        if b >= m && b.is_multiple_of(m) {
            return format!("{}{u}", b / m);
        }
    }
    for (m, u) in UNITS {
        if b >= m {
            return format!("{:.1}{u}", b as f64 / m as f64);
        }
    }
    format!("{b}B")
}

/// Check an absolute path inside the sandbox: starts with `/`, no `.`, `..`, empty
/// components or trailing slash.
pub fn check_abs_path(p: &str) -> Result<(), String> {
    if !p.starts_with('/') {
        return Err(format!("`{p}` is not an absolute path"));
    }
    if p == "/" {
        return Ok(());
    }
    if p.contains('\0') {
        return Err("a path cannot contain NUL".into());
    }
    for comp in p[1..].split('/') {
        match comp {
            "" => return Err(format!("`{p}` has an empty component or a trailing `/`")),
            "." | ".." => return Err(format!("`{p}` is not normalized (`{comp}`)")),
            _ => {}
        }
    }
    Ok(())
}

/// A host path, absolute or relative to the declaring file: normalized, `..` only leading.
pub fn check_host_path(p: &str) -> Result<(), String> {
    if p.is_empty() {
        return Err("empty path".into());
    }
    if p.starts_with('/') {
        return check_abs_path(p);
    }
    if p.contains('\0') {
        return Err("a path cannot contain NUL".into());
    }
    let rest = p.strip_prefix("./").unwrap_or(p);
    let mut leading = true;
    for comp in rest.split('/') {
        match comp {
            "" => return Err(format!("`{p}` has an empty component or a trailing `/`")),
            "." => return Err(format!("`{p}` is not normalized (`.`)")),
            ".." if leading => {}
            ".." => return Err(format!("`{p}` is not normalized (`..` after a name)")),
            _ => leading = false,
        }
    }
    Ok(())
}

/// Directories that are never writable: the system itself and the kernel interfaces.
/// Each entry says why.
pub const SYSTEM_DIRS: &[(&str, &str)] = &[
    ("/", "the root filesystem stays read-only"),
    ("/bin", "system binaries"),
    ("/sbin", "system binaries"),
    ("/usr", "system binaries and libraries"),
    ("/lib", "system libraries"),
    ("/lib64", "system libraries"),
    ("/etc", "system configuration"),
    ("/boot", "kernel images"),
    ("/proc", "kernel interface"),
    ("/sys", "kernel interface"),
    ("/dev", "device nodes"),
    ("/.warden", "warden's own init and configuration"),
];

/// Why a path may not be made writable, if it may not.
pub fn forbidden_writable(p: &str) -> Option<&'static str> {
    SYSTEM_DIRS.iter().find_map(|(dir, why)| {
        let inside = if *dir == "/" {
            p == "/"
        } else {
            at_or_under(p, dir)
        };
        inside.then_some(*why)
    })
}

/// Paths that are never mounted over, even read-only.
pub fn forbidden_mount_point(p: &str) -> bool {
    ["/", "/proc", "/sys", "/dev", "/.warden"]
        .iter()
        .any(|d| p == *d || (*d != "/" && at_or_under(p, d)))
}

/// `p` is `dir` or a path beneath it.
fn at_or_under(p: &str, dir: &str) -> bool {
    p.strip_prefix(dir)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("1.5GiB"), Ok(3 << 29));
        assert_eq!(parse_size("100MB"), Ok(100_000_000));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("2GB ").is_ok());
        assert_eq!(parse_size("2Gib"), Err("unknown size unit `Gib`".into()));
        assert!(parse_size("GiB").is_err());
        assert!(parse_size("0").is_err());
        assert!(parse_size("99999999999999TiB").is_err());
        assert!(parse_size("18446744073709551.999KB").is_err());
        assert!(parse_size("1..5GiB").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(10_000));
        assert_eq!(parse_duration("250ms"), Ok(250));
        assert_eq!(parse_duration("5m"), Ok(300_000));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("1d").is_err());
    }

    #[test]
    fn paths() {
        assert!(check_abs_path("/sandbox/work").is_ok());
        assert!(check_abs_path("sandbox").is_err());
        assert!(check_abs_path("/a/../b").is_err());
        assert!(check_abs_path("/a/").is_err());
        assert!(check_abs_path("/a//b").is_err());
        assert!(check_host_path("./workspace").is_ok());
        assert!(check_host_path("../shared/x").is_ok());
        assert!(check_host_path("a/../b").is_err());
        assert_eq!(
            forbidden_writable("/usr/local"),
            Some("system binaries and libraries")
        );
        assert_eq!(forbidden_writable("/usrx"), None);
        assert_eq!(
            forbidden_writable("/"),
            Some("the root filesystem stays read-only")
        );
        assert_eq!(forbidden_writable("/tmp"), None);
        assert_eq!(format_size(2 << 30), "2GiB");
    }
}
