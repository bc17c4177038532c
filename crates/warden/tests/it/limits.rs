//! Every command that takes a file, through the binary, on hostile input: the language
//! corpus and generated deep, wide, huge and invalid-UTF-8 files. Each run exits 0 or 1
//! (never a signal, never 2), within a time limit, with bounded output and memory.

use super::{repo, warden};
use std::io::Read as _;
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// Diagnostics are capped whatever the input: stderr stays under this (plus the few
/// lines a command prints around them).
const MAX_STDERR: usize = 64 * 1024 + 4 * 1024;
const MAX_RSS_KIB: i64 = 512 * 1024;
const MAX_TIME: Duration = Duration::from_secs(60);

struct Outcome {
    /// `Err(signal)` when the process was killed by one.
    code: Result<i32, i32>,
    stdout: Vec<u8>,
    stderr: String,
    max_rss_kib: i64,
    elapsed: Duration,
}

/// The commands that read a file, each as it can run here without changing anything
/// outside `scratch`: `run` and `approve` ask for a sandbox and an approval that do not
/// exist, so a valid file ends in exit 1 after it was read, compiled and checked; `apply`
/// runs on the files `check` refuses.
fn commands(scratch: &Path) -> Vec<Vec<String>> {
    let out = scratch.join("out").display().to_string();
    let s = |v: &[&str]| v.iter().map(|a| a.to_string()).collect::<Vec<_>>();
    vec![
        s(&["check"]),
        s(&["check", "--json"]),
        s(&["fmt", "--check"]),
        s(&["explain"]),
        s(&["test"]),
        s(&["build", "--spec-only", "--out", &out]),
        s(&["plan"]),
        s(&["run", "--sandbox", "no-such-sandbox"]),
        s(&["approve", "000000000000"]),
        // Only on files `check` refuses (see `every_command`): a valid one would start
        // sandboxes.
        s(&["apply", "--yes"]),
    ]
}

/// Run `warden ARGS FILE` and read its exit, output and peak memory (wait4's rusage of
/// this child alone).
fn drive(args: &[String], file: &Path, scratch: &Path) -> Outcome {
    let start = Instant::now();
    // Reaped by wait4 below, which also reads its resource usage.
    #[allow(clippy::zombie_processes)]
    let mut child = warden()
        .args(args)
        .arg(file)
        .env("WARDEN_STATE_DIR", scratch.join("state"))
        .env("WARDEN_RUN_DIR", scratch.join("run"))
        .env("WARDEN_CACHE_DIR", scratch.join("cache"))
        .env("HOME", scratch)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start warden");
    let pid = child.id() as libc::pid_t;
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let err_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    // A run past the limit is killed (and fails below as a signal).
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if done_rx.recv_timeout(MAX_TIME).is_err() {
            // SAFETY: `pid` is our child, not yet reaped (wait4 below reaps it).
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    });
    let mut status = 0;
    // SAFETY: plain syscall on our own child with valid out-pointers.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(r, pid, "wait4: {}", std::io::Error::last_os_error());
    let _ = done_tx.send(());
    let _ = watchdog.join();
    let elapsed = start.elapsed();
    let stdout = reader.join().expect("stdout reader");
    let stderr = String::from_utf8_lossy(&err_reader.join().expect("stderr reader")).into_owned();
    let st = std::process::ExitStatus::from_raw(status);
    Outcome {
        code: st.code().ok_or_else(|| st.signal().unwrap_or(-1)),
        stdout,
        stderr,
        max_rss_kib: usage.ru_maxrss,
        elapsed,
    }
}

/// Every command on `file`: the bounds that hold for any input. Returns each command's
/// outcome for the exact checks of the caller.
fn every_command(file: &Path, scratch: &Path) -> Vec<(String, Outcome)> {
    let size = std::fs::metadata(file).expect("input").len() as usize;
    let mut all: Vec<(String, Outcome)> = Vec::new();
    for args in commands(scratch) {
        let valid = all.first().is_some_and(|(_, o)| o.code == Ok(0));
        if args[0] == "apply" && valid {
            continue;
        }
        let o = drive(&args, file, scratch);
        let what = format!("warden {} {}", args.join(" "), file.display());
        assert!(
            matches!(o.code, Ok(0 | 1)),
            "{what}: exit {:?} (Err: killed by that signal)\n{}",
            o.code,
            tail(&o.stderr)
        );
        assert!(o.elapsed < MAX_TIME, "{what}: took {:?}", o.elapsed);
        assert!(
            o.stderr.len() < MAX_STDERR,
            "{what}: {} bytes on stderr\n{}",
            o.stderr.len(),
            tail(&o.stderr)
        );
        // Data on stdout may grow with the file (explain, plan), never beyond a multiple.
        assert!(
            o.stdout.len() < 8 * size + 64 * 1024,
            "{what}: {} bytes on stdout for {size} bytes of input",
            o.stdout.len()
        );
        assert!(
            o.max_rss_kib < MAX_RSS_KIB,
            "{what}: {} KiB resident at most",
            o.max_rss_kib
        );
        all.push((what, o));
    }
    all
}

fn tail(s: &str) -> &str {
    let mut at = s.len().saturating_sub(2000);
    while !s.is_char_boundary(at) {
        at += 1;
    }
    &s[at..]
}

/// An input, what is wrong with it, and what every command says about it: the message
/// and where (line, column) the first diagnostic points.
struct Case {
    name: &'static str,
    bytes: Vec<u8>,
    problem: Problem,
    message: &'static str,
    at: (u32, u32),
}

impl Case {
    fn new(
        name: &'static str,
        bytes: impl Into<Vec<u8>>,
        problem: Problem,
        message: &'static str,
        at: (u32, u32),
    ) -> Case {
        Case {
            name,
            bytes: bytes.into(),
            problem,
            message,
            at,
        }
    }

    fn refused_everywhere(&self) {
        refused_everywhere(
            self.name,
            &self.bytes,
            self.problem,
            self.message,
            Some(self.at),
        );
    }
}

/// What is wrong with an input, and so which commands refuse it.
#[derive(Clone, Copy, PartialEq)]
enum Problem {
    /// Its bytes or its syntax: every command refuses it.
    Syntax,
    /// Its meaning: `fmt`, which only lays out the syntax, may accept it.
    Meaning,
}

/// Every command refuses `bytes` with exit 1 and says `expect` (and `at`, a
/// `[file:line:column]` header) in its output.
fn refused_everywhere(
    name: &str,
    bytes: &[u8],
    problem: Problem,
    expect: &str,
    at: Option<(u32, u32)>,
) {
    let d = tempfile::tempdir().unwrap();
    let file = d.path().join(name);
    std::fs::write(&file, bytes).unwrap();
    for (what, o) in every_command(&file, d.path()) {
        if problem == Problem::Meaning && what.contains(" fmt ") {
            continue;
        }
        assert_eq!(o.code, Ok(1), "{what}\n{}", tail(&o.stderr));
        if what.contains("--json") {
            let v: serde_json::Value = serde_json::from_slice(&o.stdout)
                .unwrap_or_else(|e| panic!("{what}: not JSON ({e})"));
            assert_eq!(v["valid"], false, "{what}");
            let first = &v["diagnostics"][0];
            if !expect.starts_with("error: ") {
                let m = first["message"].as_str().unwrap_or("");
                assert!(m.contains(expect), "{what}: `{expect}` missing in {m}");
            }
            if let Some((line, column)) = at {
                assert_eq!(
                    (&first["line"], &first["column"]),
                    (&line.into(), &column.into()),
                    "{what}"
                );
            }
        } else {
            assert!(
                o.stderr.contains(expect),
                "{what}: `{expect}` missing\n{}",
                tail(&o.stderr)
            );
            if let Some((line, column)) = at {
                let header = format!("[{}:{line}:{column}]", file.display());
                assert!(
                    o.stderr.contains(&header),
                    "{what}: `{header}` missing\n{}",
                    tail(&o.stderr)
                );
            }
        }
        assert!(
            !o.stderr.contains('\0'),
            "{what}: a NUL byte reached stderr"
        );
        if what.contains("run ") || what.contains("approve ") {
            // Refused before anything: no sandbox state was made.
            assert!(!d.path().join("state").exists(), "{what}: state written");
        }
    }
}

#[test]
fn corpus_through_every_command() {
    let mut files: Vec<PathBuf> = Vec::new();
    for dir in ["crates/warden-lang/tests/invalid", "examples", "layouts"] {
        for e in std::fs::read_dir(repo().join(dir)).unwrap() {
            files.push(e.unwrap().path());
        }
    }
    files.sort();
    assert!(files.len() > 60, "{} corpus files", files.len());
    let scratch = tempfile::tempdir().unwrap();
    for f in &files {
        let invalid = f.starts_with(repo().join("crates/warden-lang/tests/invalid"));
        for (what, o) in every_command(f, scratch.path()) {
            if invalid && !what.contains("fmt ") {
                assert_eq!(o.code, Ok(1), "{what} on an invalid file");
            }
        }
    }
}

fn nested(open: &str, close: &str, levels: usize) -> Vec<u8> {
    let mut v = open.repeat(levels).into_bytes();
    v.extend(close.repeat(levels).into_bytes());
    v
}

#[test]
fn deep_files_are_refused_with_their_depth() {
    // `a {` 65 times: the 65th brace is at column 195.
    let at = Some((1, 195));
    let msg = "blocks nest more than 64 deep";
    refused_everywhere(
        "deep.kdl",
        &nested("a {", "}", 1_500),
        Problem::Syntax,
        msg,
        at,
    );
    refused_everywhere(
        "deeper.kdl",
        &nested("a {", "}", 100_000),
        Problem::Syntax,
        msg,
        at,
    );
    refused_everywhere(
        "comments.kdl",
        &nested("/*", "*/", 100_000),
        Problem::Syntax,
        msg,
        Some((1, 129)),
    );
}

/// Shapes that drove kdl's parser one stack frame per piece (errors, chained `/-`,
/// pieces of a comment) or to collect millions of errors: each ends in exit 1, bounded.
#[test]
fn syntax_bombs_are_bounded() {
    let syntax = Problem::Syntax;
    let cases = [
        Case::new(
            "closers.kdl",
            "}\n".repeat(100_000),
            syntax,
            "Expected end of document",
            (1, 1),
        ),
        Case::new(
            "errors.kdl",
            "}".repeat(4_000_000),
            syntax,
            "Expected end of document",
            (1, 1),
        ),
        Case::new(
            "inner-errors.kdl",
            format!("a {{\n{}}}\n", "b =\n".repeat(100_000)),
            syntax,
            "No closing '}' for child block",
            (1, 3),
        ),
        Case::new(
            "slashdashes.kdl",
            format!("{}a", "/- ".repeat(100_000)),
            syntax,
            "Found invalid node name",
            (1, 4),
        ),
        Case::new(
            "comment.kdl",
            format!("/*{} */\nsandbx", " * /".repeat(100_000)),
            Problem::Meaning,
            "unknown top-level node `sandbx`",
            (2, 1),
        ),
        // Names and values cost about a kilobyte each once parsed: too many are refused.
        Case::new(
            "entries.kdl",
            format!("a{}", " 1".repeat(2_000_000)),
            syntax,
            "file has more than 250000 words",
            (1, 500_001),
        ),
        Case::new(
            "raw-strings.kdl",
            "a #\"x\"#\n".repeat(500_000),
            syntax,
            "file has more than 250000 words",
            (125_001, 1),
        ),
        Case::new(
            "braces-after-strings.kdl",
            "a \"}\" {\n".repeat(100_000),
            syntax,
            "blocks nest more than 64 deep",
            (65, 7),
        ),
    ];
    for case in cases {
        case.refused_everywhere();
    }
    // The slashdash chain meets the parser's own nesting bound.
    let d = tempfile::tempdir().unwrap();
    let file = d.path().join("slashdashes.kdl");
    std::fs::write(&file, format!("{}a", "/- ".repeat(100_000))).unwrap();
    let o = drive(&["check".to_string()], &file, d.path());
    assert!(
        o.stderr.contains("Nesting deeper than 256 levels"),
        "{}",
        tail(&o.stderr)
    );
}

#[test]
fn wide_files_are_bounded() {
    // 100,000 sibling rules in one sandbox: valid, so every command goes all the way.
    let mut wide = String::from(
        "image \"i\" {\n    from-host \"/bin/sh\"\n}\n\nsandbox \"s\" {\n    image \"i\"\n    command \"/bin/sh\"\n    egress {\n",
    );
    for i in 0..100_000 {
        wide.push_str(&format!("        allow \"h{i}.example\"\n"));
    }
    wide.push_str("    }\n}\n");
    let d = tempfile::tempdir().unwrap();
    let file = d.path().join("wide.kdl");
    std::fs::write(&file, &wide).unwrap();
    for (what, o) in every_command(&file, d.path()) {
        let expect = if what.contains("run ") || what.contains("approve ") {
            1
        } else {
            0
        };
        assert_eq!(o.code, Ok(expect), "{what}\n{}", tail(&o.stderr));
    }

    // Mistakes on long lines, eight a line: 50 shown with their snippets stay bounded.
    let props: Vec<String> = (0..5)
        .map(|i| format!("k{i}=\"{}\"", "v".repeat(10)))
        .collect();
    let lines: String = (0..10_000)
        .map(|i| format!("sandbox \"{}{i:06}\" {}\n", "X".repeat(56), props.join(" ")))
        .collect();
    refused_everywhere(
        "long-lines.kdl",
        lines.as_bytes(),
        Problem::Meaning,
        "error: 80000 errors found (the first 50 shown)",
        Some((1, 9)),
    );

    // Just under the word limit, in the shape that costs the parser most (nodes of raw
    // strings, outside the fast parser's subset): memory stays under the cap.
    refused_everywhere(
        "raw-strings.kdl",
        "a #\"x\"#\n".repeat(124_999).as_bytes(),
        Problem::Meaning,
        "unknown top-level node `a`",
        Some((1, 1)),
    );

    // 100,000 sibling mistakes: the first 50 are shown, the rest counted.
    let bad = "sandbx \"s\"\n".repeat(100_000);
    refused_everywhere(
        "mistakes.kdl",
        bad.as_bytes(),
        Problem::Meaning,
        "error: 100000 errors found (the first 50 shown)",
        Some((1, 1)),
    );
}

#[test]
fn huge_files_are_refused_without_echoing_them() {
    // 5 MiB on one line.
    let mut huge = b"sandbox \"".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 5 << 20));
    huge.extend(b"\"\n");
    refused_everywhere(
        "huge.kdl",
        &huge,
        Problem::Syntax,
        "file is larger than 4 MiB",
        Some((1, 1)),
    );

    // A 200 KB name: one diagnostic per problem, the name shortened in each.
    let name = "n".repeat(200_000);
    let text = format!(
        "image \"i\" {{\n    from-host \"/bin/sh\"\n}}\nsandbox \"{name}\" {{\n    image \"i\"\n    command \"/bin/sh\"\n}}\n"
    );
    refused_everywhere(
        "name.kdl",
        text.as_bytes(),
        Problem::Meaning,
        "(200000 bytes)",
        Some((4, 9)),
    );
    // The same name on a sandbox with no image and no command: three problems, each
    // reported once, the name's own first (it explains the messages that repeat it).
    let d = tempfile::tempdir().unwrap();
    let file = d.path().join("name.kdl");
    std::fs::write(&file, format!("sandbox \"{name}\" {{\n}}\n")).unwrap();
    let o = drive(&["check".to_string()], &file, d.path());
    assert_eq!(o.code, Ok(1));
    let problems: Vec<&str> = o.stderr.lines().filter(|l| l.contains('×')).collect();
    assert_eq!(problems.len(), 3, "{}", o.stderr);
    assert!(problems[0].contains("invalid name `nnnn"), "{}", o.stderr);
    assert!(
        o.stderr.ends_with("error: 3 errors found\n"),
        "{}",
        o.stderr
    );
    assert!(
        o.stderr.len() < 4 * 1024,
        "{} bytes:\n{}",
        o.stderr.len(),
        o.stderr
    );
}

#[test]
fn invalid_utf8_is_refused_with_line_and_column() {
    let cases = [
        Case::new(
            "continuation.kdl",
            b"image \"i\" {\n    from-host \"/bin/\x80sh\"\n}\n",
            Problem::Syntax,
            "byte `0x80` is not valid here",
            (2, 21),
        ),
        Case::new(
            "overlong.kdl",
            b"// caf\xc3\xa9\nimage \"\xc0\xaf\"\n",
            Problem::Syntax,
            "byte `0xC0` is not valid here",
            (2, 8),
        ),
        Case::new(
            "surrogate.kdl",
            b"image \"i\"\n\n   \xed\xa0\x80\n",
            Problem::Syntax,
            "byte `0xED` is not valid here",
            (3, 4),
        ),
        Case::new(
            "nul.kdl",
            b"image \"i\" {\n    from-host \"/bin/sh\0\"\n}\n",
            Problem::Syntax,
            "file contains a NUL byte",
            (2, 23),
        ),
        Case::new(
            "random.kdl",
            [0x6a, 0x0a, 0x7b, 0xff, 0x01, 0x9c, 0x00, 0xfe],
            Problem::Syntax,
            "byte `0xFF` is not valid here",
            (2, 2),
        ),
    ];
    for case in cases {
        case.refused_everywhere();
    }
}

#[test]
fn a_layout_passes_the_same_limits() {
    let d = tempfile::tempdir().unwrap();
    let main = d.path().join("warden.kdl");
    std::fs::write(&main, "layout \"./base.kdl\"\n").unwrap();
    let base = d.path().join("base.kdl");
    // Not UTF-8: the include names the layout's line and column.
    std::fs::write(&base, b"defaults {\n  \xff\n}\n").unwrap();
    for (what, o) in every_command(&main, d.path()) {
        // `fmt` lays out the main file alone.
        if what.contains(" fmt ") {
            continue;
        }
        assert_eq!(o.code, Ok(1), "{what}");
        if !what.contains("--json") {
            assert!(
                o.stderr.contains(
                    "base.kdl` line 2, column 3: file is not UTF-8: byte `0xFF` is not valid here"
                ),
                "{what}\n{}",
                o.stderr
            );
        }
    }
    // Too deep: the layout's own location.
    std::fs::write(&base, "a {".repeat(1_500)).unwrap();
    let o = drive(&["check".to_string()], &main, d.path());
    assert_eq!(o.code, Ok(1));
    assert!(
        o.stderr.contains("blocks nest more than 64 deep"),
        "{}",
        o.stderr
    );
    assert!(o.stderr.contains("[./base.kdl:1:195]"), "{}", o.stderr);
}
