//! Runs that join user and network namespaces made ahead (`PreparedNamespaces`), as
//! `warden run` does: the same isolation, in the namespaces that were prepared.

use super::*;
use libcontainer::oci_spec::runtime::Spec;

fn prepared(b: &Bundle) -> warden_runtime::PreparedNamespaces {
    let spec = Spec::load(b.path().join("config.json")).expect("config.json");
    warden_runtime::PreparedNamespaces::for_spec(&spec)
        .expect("prepare namespaces")
        .expect("the spec asks for new user and network namespaces")
}

#[test]
fn escape_attempts_are_blocked_in_prepared_namespaces() {
    escape_under_the_compiled_spec(|b, opts| opts.namespaces = Some(prepared(b)));
}

#[test]
fn a_run_joins_the_prepared_network_namespace_with_loopback_up() {
    let _g = serial();
    let b = sandbox(
        &["/bin/wget", "-q", "-O", "-", "http://127.0.0.1:8080/"],
        DEFAULT_LIMITS,
    );
    let ns = prepared(&b);
    // Bound before the container exists: only a sandbox in this namespace reaches it.
    let listener = ns.bind("127.0.0.1:8080".parse().unwrap()).expect("bind");
    let server = serve_one_http(listener, "prepared\n");
    let o = run(&b, None, |opts| opts.namespaces = Some(ns));
    assert_eq!(
        (o.code, o.stdout.as_str()),
        (0, "prepared\n"),
        "stderr: {}",
        o.stderr
    );
    server.join().unwrap();

    let b = sandbox(&["/usr/bin/warden-probe", "net"], DEFAULT_LIMITS);
    let ns = prepared(&b);
    let o = run(&b, None, |opts| opts.namespaces = Some(ns));
    assert_eq!(o.code, 0, "stderr: {}", o.stderr);
    let l = probe_lines(&o.stdout);
    assert_eq!(l["interfaces"]["detail"], "lo");
    assert_eq!(l["interface_lo"]["detail"], "up");
}

#[test]
fn namespaces_prepared_for_other_id_mappings_are_not_joined() {
    let _g = serial();
    let b = sandbox(&["/bin/cat", "/proc/self/uid_map"], DEFAULT_LIMITS);
    let ns = prepared(&b);
    // The spec now maps the sandbox elsewhere: joining `ns` would run it under other ids.
    let path = b.path().join("config.json");
    let mut v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).expect("read config")).expect("json");
    for key in ["uidMappings", "gidMappings"] {
        v["linux"][key][0]["hostID"] = 300_000.into();
    }
    std::fs::write(&path, serde_json::to_vec(&v).expect("json")).expect("write config");
    let o = run(&b, None, |opts| opts.namespaces = Some(ns));
    assert_eq!(
        (o.code, o.stdout.split_whitespace().collect::<Vec<_>>()),
        (0, vec!["0", "300000", "65536"]),
        "stderr: {}",
        o.stderr
    );
}
