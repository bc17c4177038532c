//! `warden secret` and `env NAME secret=...`: the CLI's messages and exit codes, and the
//! value reaching the sandbox's command without reaching any file.

use super::egress::Env;
use super::run;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const VALUE: &str = "ghp_Zq81secretvalue4Kx";

pub fn kek(dir: &Path, name: &str, byte: u8) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, [byte; 32]).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

pub fn with_stdin(mut c: Command, input: &str) -> (i32, String, String) {
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A command that refuses its arguments exits without reading: its closed stdin is
    // not the test's failure.
    if let Err(e) = child.stdin.take().unwrap().write_all(input.as_bytes()) {
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{e}");
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Every file under `dir` holding `needle`.
fn files_holding(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let mut hits = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return hits;
    };
    for e in rd.flatten() {
        let p = e.path();
        let Ok(meta) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if meta.is_dir() {
            hits.extend(files_holding(&p, needle));
        } else if meta.is_file()
            && let Ok(bytes) = std::fs::read(&p)
            && bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
        {
            hits.push(p);
        }
    }
    hits
}

#[test]
fn set_ls_rm_rotate_and_their_errors() {
    let env = Env::new();
    let key = kek(env.dir.path(), "kek", 1);
    let cmd = |args: &[&str]| {
        let mut c = env.cmd();
        c.env("WARDEN_KEK_FILE", &key).arg("secret").args(args);
        c
    };
    let (code, out, err) = with_stdin(cmd(&["set", "acme", "API_KEY"]), &format!("{VALUE}\n"));
    assert_eq!((code, out.as_str()), (0, ""), "{err}");
    assert_eq!(
        err,
        "stored secret `API_KEY` of tenant `acme` (data key 1)\n"
    );
    let (code, out, _) = run(&mut cmd(&["ls", "acme"]));
    assert_eq!(code, 0);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(lines[1].starts_with("API_KEY "), "{out}");
    assert!(lines[1].contains("  1  "), "{out}");
    let (code, out, _) = run(cmd(&["ls", "acme"]).arg("--json"));
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v[0]["name"], "API_KEY");
    assert_eq!(v[0]["key_version"], 1);

    let (code, _, err) = run(&mut cmd(&["rotate", "acme"]));
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("data key 2"), "{err}");
    let (code, _, err) = with_stdin(cmd(&["set", "acme", "OTHER"]), "x");
    assert_eq!(
        (code, err.as_str()),
        (0, "stored secret `OTHER` of tenant `acme` (data key 2)\n")
    );

    // The value is in no file under the state directory, in the clear or as hex.
    let state = env.dir.path().join("state");
    assert!(files_holding(&state, VALUE).is_empty());
    let hex: String = VALUE.bytes().map(|b| format!("{b:02x}")).collect();
    assert!(files_holding(&state, &hex).is_empty());

    // Errors: no KEK, a wrong KEK, a bad name, a missing secret.
    let mut no_kek = env.cmd();
    no_kek
        .env_remove("WARDEN_KEK_FILE")
        .env_remove("CREDENTIALS_DIRECTORY")
        .args(["secret", "set", "acme", "X"]);
    let (code, _, err) = with_stdin(no_kek, "v");
    assert_eq!(code, 1);
    assert!(
        err.starts_with("error: no key-encryption key: set `WARDEN_KEK_FILE`"),
        "{err}"
    );
    let wrong = kek(env.dir.path(), "wrong", 2);
    let mut c = env.cmd();
    c.env("WARDEN_KEK_FILE", &wrong)
        .args(["secret", "set", "acme", "X"]);
    let (code, _, err) = with_stdin(c, "v");
    assert_eq!(code, 1);
    assert!(
        err.contains("is not the one tenant `acme`'s secrets were sealed with"),
        "{err}"
    );
    let (code, _, err) = with_stdin(cmd(&["set", "../acme", "X"]), "v");
    assert_eq!(
        (code, err.as_str()),
        (
            1,
            "error: invalid tenant name `../acme`: lower-case letters, digits, `-` and `_`\n"
        )
    );
    let (code, _, err) = run(&mut cmd(&["rm", "acme", "NOPE"]));
    assert_eq!(
        (code, err.as_str()),
        (1, "error: tenant `acme` has no secret `NOPE`\n")
    );
    let (code, _, err) = run(&mut cmd(&["rm", "acme", "API_KEY"]));
    assert_eq!(
        (code, err.as_str()),
        (0, "removed secret `API_KEY` of tenant `acme`\n")
    );
    // A KEK kept in the state directory is refused.
    let inside = kek(&state, "kek", 3);
    let mut c = env.cmd();
    c.env("WARDEN_KEK_FILE", &inside)
        .args(["secret", "rotate", "acme"]);
    let (code, _, err) = run(&mut c);
    assert_eq!(code, 1);
    assert!(err.contains("inside the state directory"), "{err}");
}

/// Root: runs a sandbox. The command sees the secret in its environment while the
/// bundle, its run copy and the state directory hold it nowhere.
#[test]
fn env_secrets_reach_the_command_and_no_file() {
    let env = Env::new();
    let key = kek(env.dir.path(), "kek", 9);
    let mut set = env.cmd();
    set.env("WARDEN_KEK_FILE", &key)
        .args(["secret", "set", "acme", "github-token"]);
    assert_eq!(with_stdin(set, VALUE).0, 0);
    std::fs::write(
        env.file(),
        "image \"bb\" {\n    from-host \"/bin/busybox\"\n}\n\nsandbox \"agent\" {\n    image \"bb\"\n    command \"/bin/busybox\" \"sh\" \"-c\" \"echo token=$GITHUB_TOKEN; /bin/busybox sleep 3\"\n    env \"GITHUB_TOKEN\" secret=\"github-token\"\n}\n\ntenant \"acme\" {\n    sandboxes \"agent\"\n    users uid=300000 count=65536\n}\n",
    )
    .unwrap();
    let mut child = env
        .cmd()
        .env("WARDEN_KEK_FILE", &key)
        .arg("run")
        .arg(env.file())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, format!("token={VALUE}\n"));
    // The sandbox is running: its run copy of config.json exists now.
    let run_dir = env.dir.path().join("run");
    let copies: Vec<PathBuf> = std::fs::read_dir(run_dir.join("bundles"))
        .unwrap()
        .flatten()
        .map(|e| e.path().join("config.json"))
        .collect();
    assert_eq!(copies.len(), 1, "{copies:?}");
    let copy = std::fs::read_to_string(&copies[0]).unwrap();
    assert!(!copy.contains(VALUE));
    assert!(files_holding(&run_dir, VALUE).is_empty());
    assert!(files_holding(&env.dir.path().join("state"), VALUE).is_empty());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(files_holding(env.dir.path(), VALUE).is_empty());
    // The compiled bundle names the secret, never its value.
    let bundles = Path::new(env!("CARGO_TARGET_TMPDIR")).join("warden-cache/bundles");
    let mut checked = 0;
    for e in std::fs::read_dir(&bundles).unwrap().flatten() {
        if e.file_name().to_string_lossy().starts_with("agent-") {
            for f in ["config.json", "warden.json"] {
                let text = std::fs::read_to_string(e.path().join(f)).unwrap_or_default();
                assert!(!text.contains(VALUE), "{}", e.path().display());
                checked += text.contains("GITHUB_TOKEN") as usize;
            }
        }
    }
    assert!(checked >= 1, "no bundle of `agent` names the variable");

    // Without the KEK the run stops before anything starts, naming what is missing.
    let (code, _, err) = run(env
        .cmd()
        .env_remove("WARDEN_KEK_FILE")
        .env_remove("CREDENTIALS_DIRECTORY")
        .arg("run")
        .arg(env.file()));
    assert_eq!(code, 1);
    assert!(err.starts_with("error: no key-encryption key"), "{err}");
    // A secret the store does not hold: named with the sandbox and the variable.
    std::fs::write(
        env.file(),
        std::fs::read_to_string(env.file())
            .unwrap()
            .replace("github-token", "missing"),
    )
    .unwrap();
    let (code, _, err) = run(env
        .cmd()
        .env("WARDEN_KEK_FILE", &key)
        .arg("run")
        .arg(env.file()));
    assert_eq!(
        (code, err.as_str()),
        (
            1,
            "error: sandbox `agent`: env `GITHUB_TOKEN`: tenant `acme` has no secret `missing`\n"
        )
    );
}

/// Root: an applied sandbox's supervisor reads the secret at each start; its launch
/// file names the secret, never the value.
#[test]
fn an_applied_sandbox_gets_its_secret_from_the_supervisor() {
    let env = Env::new();
    let key = kek(env.dir.path(), "kek", 5);
    let mut set = env.cmd();
    set.env("WARDEN_KEK_FILE", &key)
        .args(["secret", "set", "acme", "github-token"]);
    assert_eq!(with_stdin(set, VALUE).0, 0);
    std::fs::write(
        env.file(),
        "image \"bb\" {\n    from-host \"/bin/busybox\"\n}\n\nsandbox \"applied\" {\n    image \"bb\"\n    command \"/bin/busybox\" \"sh\" \"-c\" \"echo token=$GITHUB_TOKEN; exec /bin/busybox sleep 1000\"\n    env \"GITHUB_TOKEN\" secret=\"github-token\"\n    init grace=\"1s\"\n}\n\ntenant \"acme\" {\n    sandboxes \"applied\"\n    users uid=300000 count=65536\n}\n",
    )
    .unwrap();
    let (code, _, err) = run(env
        .cmd()
        .env("WARDEN_KEK_FILE", &key)
        .args(["apply", "--yes"])
        .arg(env.file()));
    assert_eq!(code, 0, "{err}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let out = loop {
        let (_, out, _) = run(env.cmd().args(["logs", "applied"]));
        if !out.is_empty() || std::time::Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let (code, _, err) = run(env.cmd().args(["destroy", "--yes"]).arg(env.file()));
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, format!("token={VALUE}\n"));
    // The log holds what the sandbox printed (its own business); nothing warden wrote
    // does.
    let written: Vec<PathBuf> = files_holding(env.dir.path(), VALUE)
        .into_iter()
        .filter(|p| !p.ends_with("stdout.log"))
        .collect();
    assert!(written.is_empty(), "{written:?}");
}
