//! Language tests: every invalid file in `tests/invalid/` renders diagnostics that name
//! file, line and column, pinned by snapshots; inline snippets check specific outcomes.

mod docs;
mod fastparse;
mod fmt;

use std::path::Path;
use warden_lang::{SourceFile, load, render};

/// Loads a file relative to the repository's `tests/invalid` directory.
fn check_invalid(path: &Path) -> String {
    let text = std::fs::read_to_string(path).expect("read corpus file");
    let name = format!("invalid/{}", path.file_name().unwrap().to_string_lossy());
    let loaded = load(&SourceFile::new(name.clone(), text), &warden_lang::NoFiles);
    assert!(loaded.model.is_none(), "{name} should be invalid");
    assert!(!loaded.diagnostics.is_empty());
    for d in &loaded.diagnostics {
        // Every diagnostic names the file, line and column.
        let header = format!("[{}:{}:{}]", d.loc.file, d.loc.line, d.loc.column);
        let rendered = render(std::slice::from_ref(d));
        assert!(
            rendered.contains(&header),
            "{name}: `{header}` missing in:\n{rendered}"
        );
        assert!(d.code.starts_with("warden::"), "{name}: code {}", d.code);
    }
    render(&loaded.diagnostics)
}

#[test]
fn invalid_corpus() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/invalid");
    let count = std::fs::read_dir(&dir).unwrap().count();
    assert!(count >= 40, "the corpus has {count} files");
    insta::glob!("../invalid", "*.kdl", |path| {
        insta::assert_snapshot!(check_invalid(path));
    });
}

fn ok(text: &str) -> warden_lang::Model {
    let loaded = load(&SourceFile::new("t.kdl", text), &warden_lang::NoFiles);
    match loaded.model {
        Some(m) => m,
        None => panic!("{}", render(&loaded.diagnostics)),
    }
}

fn errors(text: &str) -> Vec<(&'static str, u32)> {
    let loaded = load(&SourceFile::new("t.kdl", text), &warden_lang::NoFiles);
    loaded
        .diagnostics
        .iter()
        .map(|d| (d.code, d.loc.line))
        .collect()
}

const MINIMAL: &str = "image \"i\" {\n    from-host \"/bin/sh\"\n}\nsandbox \"s\" {\n    image \"i\"\n    command \"/bin/sh\"\n}\n";

#[test]
fn nearly_empty_sandbox_is_the_strictest() {
    let m = ok(MINIMAL);
    let s = &m.sandboxes[0];
    assert_eq!((s.user, s.group), (1000, 1000));
    assert!(s.egress.is_none(), "no egress block means no network");
    assert!(s.filesystem.read_write.is_empty(), "nothing writable");
    assert_eq!(
        s.filesystem.landlock, None,
        "None means the default, required"
    );
    assert!(s.capabilities.is_empty() && s.allow_syscalls.is_empty());
    assert_eq!(s.limits.memory, 1 << 30);
    assert_eq!(s.limits.pids, 256);
}

#[test]
fn all_errors_reported_at_once() {
    let e = errors(
        "image \"i\" {\n    from-host \"/bin/sh\"\n}\nsandbox \"s\" {\n    image \"j\"\n    command \"sh\"\n    limits memory=\"2Gb\"\n    egress {\n        allow \"*.com\"\n    }\n}\n",
    );
    assert_eq!(
        e,
        vec![
            ("warden::reference", 5),
            ("warden::sandbox::command", 6),
            ("warden::size", 7),
            ("warden::egress::host", 9),
        ]
    );
}

/// Codes, lines and columns of every diagnostic.
fn located(text: &str) -> Vec<(&'static str, u32, u32)> {
    let loaded = load(&SourceFile::new("t.kdl", text), &warden_lang::NoFiles);
    loaded
        .diagnostics
        .iter()
        .map(|d| (d.code, d.loc.line, d.loc.column))
        .collect()
}

#[test]
fn every_problem_of_an_egress_rule_at_once() {
    let rule = |r: &str| {
        format!(
            "image \"i\" {{\n    from-host \"/bin/sh\"\n}}\nsandbox \"s\" {{\n    image \"i\"\n    command \"/bin/sh\"\n    egress {{\n        {r}\n    }}\n}}\n"
        )
    };
    // A bad host does not hide a bad port, nor a bad order.
    assert_eq!(
        located(&rule("allow \"*.com\" port=99999 order=\"nope\"")),
        vec![
            ("warden::egress::host", 8, 15),
            ("warden::egress::port", 8, 23),
            ("warden::reference", 8, 34),
        ]
    );
    // Nor a bad method or path of an `http` rule.
    assert_eq!(
        located(&rule("http \"a b\" port=0 methods=\"FETCH\" paths=\"x\"")),
        vec![
            ("warden::egress::host", 8, 14),
            ("warden::egress::port", 8, 20),
            ("warden::egress::method", 8, 27),
            ("warden::egress::path", 8, 43),
        ]
    );
    // A valid host with a bad port is still reported (as before).
    assert_eq!(
        located(&rule("allow \"a.example\" port=99999")),
        vec![("warden::egress::port", 8, 27)]
    );
}

#[test]
fn a_missing_name_or_bad_first_value_hides_nothing_else() {
    // A provider without a name still has its API checked; an order without a name its
    // autonomy.
    assert_eq!(
        located(
            "provider api=\"grpc\" endpoint=\"https://x.example\"\nstanding-orders {\n    order autonomy=\"maybe\"\n}\n"
        ),
        vec![
            ("warden::syntax::missing-argument", 1, 1),
            ("warden::provider::api", 1, 10),
            ("warden::syntax::missing-argument", 3, 5),
            ("warden::syntax::missing-property", 3, 5),
            ("warden::orders::autonomy", 3, 11),
        ]
    );
    // An inline test with a bad URL still has its expectation checked; an order test
    // without an action its expectation too; an env with two non-strings both.
    let file = "image \"i\" {\n    from-host \"/bin/sh\"\n    env 1 2\n}\nsandbox \"s\" {\n    image \"i\"\n    command \"/bin/sh\"\n    egress {\n        test \"nope\" expect=\"maybe\"\n    }\n}\nstanding-orders {\n    test expect=\"sometimes\"\n}\n";
    assert_eq!(
        located(file),
        vec![
            ("warden::syntax::type", 3, 9),
            ("warden::syntax::type", 3, 11),
            ("warden::test::url", 9, 14),
            ("warden::test::expect", 9, 21),
            ("warden::syntax::missing-argument", 13, 5),
            ("warden::test::expect", 13, 10),
        ]
    );
}

#[test]
fn a_duplicate_order_is_reported_whatever_else_is_wrong() {
    let orders = "standing-orders {\n    order \"deploy\" autonomy=\"ask\"\n    order \"deploy\" bounds=\"x\"\n}\n";
    assert_eq!(
        located(orders),
        vec![
            ("warden::syntax::missing-property", 2, 5),
            ("warden::syntax::duplicate", 3, 5),
        ]
    );
    // A rule that names an order with a problem of its own is not a second problem.
    let file = format!(
        "{orders}image \"i\" {{\n    from-host \"/bin/sh\"\n}}\nsandbox \"s\" {{\n    image \"i\"\n    command \"/bin/sh\"\n    egress {{\n        allow \"a.example\" order=\"deploy\"\n    }}\n}}\n"
    );
    assert_eq!(
        located(&file),
        vec![
            ("warden::syntax::missing-property", 2, 5),
            ("warden::syntax::duplicate", 3, 5),
        ]
    );
}

#[test]
fn memory_limit_fits_the_oci_spec() {
    let file = |memory: &str| {
        format!(
            "image \"i\" {{\n    from-host \"/bin/sh\"\n}}\nsandbox \"s\" {{\n    image \"i\"\n    command \"/bin/sh\"\n    limits memory=\"{memory}\"\n}}\n"
        )
    };
    assert_eq!(
        errors(&file("18446744073709551615")),
        vec![("warden::limits::memory", 7)]
    );
    assert_eq!(
        ok(&file("9223372036854775807")).sandboxes[0].limits.memory,
        i64::MAX as u64
    );
}

#[test]
fn layout_defaults_apply_and_can_be_overridden() {
    let m = ok(&format!("layout \"strict\"\n{MINIMAL}"));
    let s = &m.sandboxes[0];
    assert_eq!(s.filesystem.read_write, vec!["/sandbox", "/tmp"]);
    assert_eq!(s.workdir, "/sandbox");
    assert!(m.order("read-code").is_some());
    let m = ok(
        "layout \"strict\"\nimage \"i\" {\n    from-host \"/bin/sh\"\n}\nsandbox \"s\" {\n    image \"i\"\n    command \"/bin/sh\"\n    limits memory=\"3GiB\"\n}\n",
    );
    assert_eq!(m.sandboxes[0].limits.memory, 3 << 30);
    // The whole `limits` node is replaced: pids falls back to the built-in default.
    assert_eq!(m.sandboxes[0].limits.pids, 256);
}

#[test]
fn layout_files_resolve_relative_to_the_including_file() {
    struct Map;
    impl warden_lang::Loader for Map {
        fn load(&self, base: &str, path: &str) -> Result<SourceFile, String> {
            let full = warden_lang::join(base, path);
            match full.as_str() {
                "shared/base.kdl" => Ok(SourceFile::new(
                    full,
                    "layout \"./more.kdl\"\ndefaults {\n    user 2000\n}\n",
                )),
                "shared/more.kdl" => {
                    Ok(SourceFile::new(full, "defaults {\n    workdir \"/w\"\n}\n"))
                }
                _ => Err(format!("no `{full}`")),
            }
        }
    }
    let loaded = load(
        &SourceFile::new("t.kdl", format!("layout \"shared/base.kdl\"\n{MINIMAL}")),
        &Map,
    );
    let m = loaded.model.expect("valid");
    assert_eq!(m.sandboxes[0].user, 2000);
    assert_eq!(m.sandboxes[0].workdir, "/w");
    assert_eq!(m.layouts, vec!["shared/base.kdl", "./more.kdl"]);
}

#[test]
fn layout_cycle_is_an_error() {
    struct Cyc;
    impl warden_lang::Loader for Cyc {
        fn load(&self, _b: &str, path: &str) -> Result<SourceFile, String> {
            Ok(SourceFile::new(
                path.to_string(),
                format!("layout \"{path}\"\n"),
            ))
        }
    }
    let loaded = load(&SourceFile::new("t.kdl", "layout \"./a.kdl\"\n"), &Cyc);
    let codes: Vec<_> = loaded.diagnostics.iter().map(|d| d.code).collect();
    assert_eq!(codes, vec!["warden::layout::cycle"]);
}

#[test]
fn did_you_mean() {
    let loaded = load(
        &SourceFile::new("t.kdl", "sandbx \"a\"\n"),
        &warden_lang::NoFiles,
    );
    assert_eq!(
        loaded.diagnostics[0].help.as_deref(),
        Some("did you mean `sandbox`?")
    );
}

#[test]
fn deeply_nested_input_is_refused_not_crashed() {
    let text = format!("{}{}", "a {".repeat(100_000), "}".repeat(100_000));
    let loaded = load(&SourceFile::new("t.kdl", text), &warden_lang::NoFiles);
    assert!(loaded.model.is_none());
    assert_eq!(loaded.diagnostics[0].code, "warden::syntax::depth");
}

#[test]
fn approve_edits_keep_everything_else() {
    let text = "// top comment\nsandbox \"s\" {\n    image \"i\" // why this image\n    egress {\n        allow \"a.example\" // first\n        /* block */\n        test \"https://a.example/\" expect=\"allow\"\n    }\n}\n\nsandbox \"t\" {\n    image \"i\"\n}\n";
    let out = warden_lang::edit::add_egress_rule(
        text,
        "s",
        "allow \"b.example\" port=443 reason=\"approved 2026-11-22\"",
    )
    .unwrap();
    assert_eq!(
        out,
        "// top comment\nsandbox \"s\" {\n    image \"i\" // why this image\n    egress {\n        allow \"a.example\" // first\n        allow \"b.example\" port=443 reason=\"approved 2026-11-22\"\n        /* block */\n        test \"https://a.example/\" expect=\"allow\"\n    }\n}\n\nsandbox \"t\" {\n    image \"i\"\n}\n"
    );
    let out = warden_lang::edit::add_egress_rule(text, "t", "allow \"c.example\"").unwrap();
    assert_eq!(
        out,
        "// top comment\nsandbox \"s\" {\n    image \"i\" // why this image\n    egress {\n        allow \"a.example\" // first\n        /* block */\n        test \"https://a.example/\" expect=\"allow\"\n    }\n}\n\nsandbox \"t\" {\n    image \"i\"\n    egress {\n        allow \"c.example\"\n    }\n}\n"
    );
    assert!(
        warden_lang::edit::add_egress_rule(text, "nope", "allow \"c\"")
            .unwrap_err()
            .contains("`nope` is not declared")
    );
}

const TENANT_AGENT: &str = "image \"i\" {\n    from-host \"/bin/sh\"\n}\nsandbox \"s\" {\n    image \"i\"\n    command \"/bin/sh\"\n    env \"PLAIN\" \"1\"\n    env \"TOKEN\" \"placeholder\"\n    env \"TOKEN\" secret=\"github-token\"\n}\ntenant \"acme\" {\n    sandboxes \"s\"\n    users uid=200000 count=65536\n}\n";

#[test]
fn secret_env_needs_a_tenant_and_replaces_a_plain_value() {
    let m = ok(TENANT_AGENT);
    let s = &m.sandboxes[0];
    assert_eq!(s.env, [("PLAIN".to_string(), "1".to_string())]);
    assert_eq!(
        s.secret_env,
        [warden_lang::model::SecretEnv {
            name: "TOKEN".into(),
            secret: "github-token".into()
        }]
    );
    // Without the tenant, the file is refused where `secret=` is written.
    let alone = TENANT_AGENT.split("tenant").next().unwrap();
    assert_eq!(errors(alone), [("warden::secret::tenant", 9)]);
    assert_eq!(
        errors(&TENANT_AGENT.replace("secret=\"github-token\"", "secret=\"../x\"")),
        [("warden::secret::name", 9)]
    );
    assert_eq!(
        errors(&TENANT_AGENT.replace("secret=\"github-token\"", "\"v\" secret=\"x\"")),
        [("warden::syntax::extra-argument", 9)]
    );
}

#[test]
fn provider_key_secret_is_one_key_source_and_needs_a_tenant_where_routed() {
    let provider = "provider \"p\" api=\"openai\" endpoint=\"https://llm.example/v1\" key-secret=\"OPENAI_KEY\"\n";
    let routed = TENANT_AGENT.replace(
        "    env \"PLAIN\" \"1\"\n",
        "    inference {\n        route \"*\" to=\"p\"\n    }\n",
    );
    let m = ok(&format!("{provider}{routed}"));
    assert_eq!(m.providers[0].key_secret.as_deref(), Some("OPENAI_KEY"));
    let no_tenant = routed.split("tenant").next().unwrap().replace(
        "    env \"TOKEN\" \"placeholder\"\n    env \"TOKEN\" secret=\"github-token\"\n",
        "",
    );
    assert_eq!(
        errors(&format!("{provider}{no_tenant}")),
        [("warden::secret::tenant", 9)]
    );
    // A fallback provider counts too.
    let fallback = no_tenant.replace(
        "route \"*\" to=\"p\"",
        "route \"*\" to=\"q\" fallback=\"p\"",
    );
    let q = "provider \"q\" api=\"openai\" endpoint=\"https://other.example/v1\"\n";
    assert_eq!(
        errors(&format!("{provider}{q}{fallback}")),
        [("warden::secret::tenant", 10)]
    );
    let both = provider.replace("key-secret", "key-env=\"K\" key-secret");
    // The provider is broken; the route that names it is not reported again.
    assert_eq!(
        errors(&format!("{both}{routed}")),
        [("warden::provider::key", 1)]
    );
}

#[test]
fn auth_names_issuer_audience_and_keys() {
    let m = ok(
        "auth {\n    issuer \"https://login.example\"\n    audience \"warden\"\n    jwks \"./jwks.json\"\n    tls cert=\"./c.pem\" key=\"/etc/k.pem\"\n}\n",
    );
    let a = m.auth.expect("auth");
    assert_eq!(
        (a.issuer.as_str(), a.audience.as_str(), a.jwks.as_deref()),
        ("https://login.example", "warden", Some("./jwks.json"))
    );
    let tls = a.tls.expect("tls");
    assert_eq!(
        (tls.cert.as_str(), tls.key.as_str()),
        ("./c.pem", "/etc/k.pem")
    );
    assert!(a.hs256_key_file.is_none());
    let hs = ok(
        "auth {\n    issuer \"i\"\n    audience \"a\"\n    hs256-key-file \"/etc/warden/hs\"\n}\n",
    );
    assert_eq!(
        hs.auth.unwrap().hs256_key_file.as_deref(),
        Some("/etc/warden/hs")
    );
    assert_eq!(
        errors("auth {\n    issuer \"i\"\n    audience \"a\"\n}\n"),
        [("warden::auth::keys", 1)]
    );
    assert_eq!(
        errors("auth {\n    audience \"a\"\n    jwks \"j\"\n}\n"),
        [("warden::auth::missing", 1)]
    );
    assert_eq!(
        errors("auth {\n    issuer \"i\"\n    audience \"a\"\n    jwks \"j\"\n    jwks \"k\"\n}\n"),
        [("warden::syntax::duplicate", 5)]
    );
    assert_eq!(
        errors(
            "auth {\n    issuer \"i\"\n    audience \"a\"\n    jwks \"j\"\n}\nauth {\n    issuer \"i\"\n    audience \"a\"\n    jwks \"j\"\n}\n"
        ),
        [("warden::syntax::duplicate", 6)]
    );
}

#[test]
fn audit_names_a_postgres_url_once() {
    assert!(ok(MINIMAL).audit.is_none());
    let m = ok(&format!(
        "{MINIMAL}audit \"postgres://warden@127.0.0.1:5432/audit\"\n"
    ));
    assert_eq!(
        m.audit.expect("audit").url,
        "postgres://warden@127.0.0.1:5432/audit"
    );
    assert!(
        ok(&format!(
            "{MINIMAL}audit \"postgresql://db/audit?host=/run/postgresql\"\n"
        ))
        .audit
        .is_some()
    );
    for bad in [
        "audit \"mysql://db/audit\"",
        "audit \"postgres://\"",
        "audit \"/var/lib/warden/audit.db\"",
    ] {
        assert_eq!(
            errors(&format!("{MINIMAL}{bad}\n")),
            [("warden::audit::url", 8)],
            "{bad}"
        );
    }
    assert_eq!(
        errors(&format!("{MINIMAL}audit\n")),
        [("warden::syntax::missing-argument", 8)]
    );
    assert_eq!(
        errors(&format!(
            "{MINIMAL}audit \"postgres://a/b\"\naudit \"postgres://c/d\"\n"
        )),
        [("warden::syntax::duplicate", 9)]
    );
    assert_eq!(
        errors(&format!(
            "{MINIMAL}audit \"postgres://a/b\" {{\n    x\n}}\n"
        ))
        .len(),
        1
    );
}
