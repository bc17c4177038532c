//! No input panics: random bytes and mutations of every example and layout go through
//! parse, validate and compile. `WARDEN_FUZZ_ITERATIONS` sets the count (default
//! 1,000,000); the count run is printed.

use std::io::Write as _;
use std::path::Path;
use warden_compile::{CompileOptions, compile};
use warden_lang::{SourceFile, load};

/// xorshift64*: small, seeded, reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Tokens that steer mutations toward the interesting parts of the grammar.
const TOKENS: &[&str] = &[
    "{",
    "}",
    ";",
    "\"",
    "=",
    "#true",
    "#false",
    "#null",
    "/-",
    "//",
    "/*",
    "*/",
    "\\",
    "\n",
    " ",
    "sandbox",
    "image",
    "egress",
    "allow",
    "deny",
    "http",
    "test",
    "tenant",
    "users",
    "layout",
    "\"strict\"",
    "\"./x.kdl\"",
    "port=",
    "port=\"*\"",
    "expect=\"allow\"",
    "\"*.com\"",
    "\"/\"",
    "\"2GiB\"",
    "0x7f000001",
    "-1",
    "99999999999999999999999",
    "1.5e308",
    "\"\u{202e}\"",
    "r#\"x\"#",
    "(ty)",
    "memory=",
    "pids=",
    "cpus=",
    "\"http://[::1]:80/\"",
    "\"tcp://a:0\"",
    "route",
    "privacy",
];

fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut v = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        let pos = rng.below(v.len() + 1);
        match rng.below(6) {
            0 if !v.is_empty() => {
                let end = (pos + rng.below(16)).min(v.len());
                v.drain(pos.min(end)..end);
            }
            1 => {
                let t = TOKENS[rng.below(TOKENS.len())].as_bytes();
                v.splice(pos..pos, t.iter().copied());
            }
            2 if pos < v.len() => v[pos] = rng.next() as u8,
            3 => {
                // Duplicate a slice elsewhere (repeats nodes and blocks).
                let a = rng.below(v.len() + 1);
                let b = (a + rng.below(64)).min(v.len());
                let chunk = v[a..b].to_vec();
                v.splice(pos..pos, chunk);
            }
            4 => {
                const SPECIAL: &[u8] = b"{}\"=;#/\\\n";
                v.insert(pos, SPECIAL[rng.below(SPECIAL.len())]);
            }
            _ => {
                let n = rng.below(8);
                for _ in 0..n {
                    v.insert(pos.min(v.len()), rng.next() as u8);
                }
            }
        }
    }
    v
}

/// Returns whether the input was a valid file.
fn run_one(bytes: &[u8], options: &CompileOptions, render: bool) -> bool {
    let text = String::from_utf8_lossy(bytes);
    let loaded = load(
        &SourceFile::new("fuzz.kdl", text.to_string()),
        &warden_lang::NoFiles,
    );
    if render {
        // Rendering is slow; every diagnostic's spans are still checked on a sample.
        let _ = warden_lang::render(&loaded.diagnostics);
    }
    let valid = loaded.model.is_some();
    if let Some(m) = loaded.model {
        warden_compile::check(&m).expect("a valid model always checks");
        let c = compile(&m, options).expect("a valid model always compiles");
        for s in &c.sandboxes {
            let _ = s.config_json();
        }
        let _ = warden_compile::run_tests(&m, &c);
        let _ = warden_compile::explain(&m, &c);
    }
    let _ = warden_lang::fmt::format(&text);
    valid
}

#[test]
fn no_input_panics() {
    let iterations: u64 = std::env::var("WARDEN_FUZZ_ITERATIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut seeds: Vec<Vec<u8>> = Vec::new();
    for d in ["examples", "layouts"] {
        for e in std::fs::read_dir(root.join(d)).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "kdl") {
                seeds.push(std::fs::read(p).unwrap());
            }
        }
    }
    for e in std::fs::read_dir(root.join("crates/warden-lang/tests/invalid")).unwrap() {
        seeds.push(std::fs::read(e.unwrap().path()).unwrap());
    }
    let options = CompileOptions {
        base_dir: "/p".into(),
        state_dir: "/s".into(),
    };
    let mut rng = Rng(0x005e_ed0f_3a7d);
    let (mut valid, mut n) = (0u64, 0u64);
    while n < iterations {
        let input = if n % 10 == 0 {
            // Pure random bytes.
            (0..rng.below(256)).map(|_| rng.next() as u8).collect()
        } else {
            let seed = rng.below(seeds.len());
            mutate(&mut rng, &seeds[seed])
        };
        valid += u64::from(run_one(&input, &options, n % 32 == 0));
        n += 1;
    }
    // Written to the process's stderr, past the test harness's capture, so the count
    // shows in every CI log.
    let _ = writeln!(
        std::io::stderr(),
        "fuzz: {n} inputs through parse+validate+compile, {valid} of them valid, no panic"
    );
    assert_eq!(n, iterations);
    assert!(
        valid > 0,
        "mutations never produced a valid file: the fuzzer is not reaching the compiler"
    );
}
