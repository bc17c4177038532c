//! Decoding: merged KDL nodes into the model, with every default applied and every
//! problem reported as a diagnostic.

use crate::diag::{FileCx, WithHelp};
use crate::model::*;
use crate::read::*;
use crate::values::*;
use kdl::KdlDocument;
use miette::SourceSpan;
use std::collections::{BTreeMap, HashMap};
use warden_wire::egress::{Cidr, HttpRule, MethodSet, check_host_pattern, normalize_host};

const TOP: &[&str] = &[
    "layout",
    "defaults",
    "image",
    "provider",
    "sandbox",
    "tenant",
    "standing-orders",
    "auth",
    "audit",
];
const SANDBOX: &[&str] = &[
    "image",
    "command",
    "env",
    "user",
    "workdir",
    "hostname",
    "filesystem",
    "limits",
    "init",
    "restart",
    "capabilities",
    "seccomp",
    "egress",
    "inference",
    "agent",
];
const IMAGE: &[&str] = &[
    "from-host",
    "with-libs",
    "copy",
    "oci-layout",
    "nix",
    "nix-closure",
    "env",
    "workdir",
];
const FILESYSTEM: &[&str] = &[
    "read-write",
    "bind",
    "volume",
    "tmpfs-size",
    "shm",
    "landlock",
];
const EGRESS: &[&str] = &["allow", "deny", "http", "idle-timeout", "test"];
const INFERENCE: &[&str] = &["route", "privacy", "limits", "test"];
const TENANT: &[&str] = &["sandboxes", "users", "volume", "role"];
const ORDERS: &[&str] = &["order", "unlisted", "render", "test"];
const ROLES: &[&str] = &["admin", "operator", "viewer"];
const AUTH: &[&str] = &["issuer", "audience", "jwks", "hs256-key-file", "tls"];

/// Capabilities a file may keep, with `CAP_` prefix.
const CAPABILITIES: &[&str] = &[
    "CAP_AUDIT_WRITE",
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_MKNOD",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_RAW",
    "CAP_SETFCAP",
    "CAP_SETGID",
    "CAP_SETPCAP",
    "CAP_SETUID",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_ADMIN",
    "CAP_NET_ADMIN",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_IPC_LOCK",
];

/// Top-level items after merging layouts and the main file.
#[derive(Default)]
struct Merged<'a> {
    images: Vec<(N<'a>, String)>,
    providers: Vec<N<'a>>,
    sandboxes: Vec<(N<'a>, String)>,
    tenants: Vec<N<'a>>,
    defaults: BTreeMap<String, Vec<(N<'a>, String)>>,
    orders: Vec<N<'a>>,
    order_tests: Vec<N<'a>>,
    /// The last file's `unlisted` node.
    orders_unlisted: Option<N<'a>>,
    orders_render: Vec<N<'a>>,
    /// The last file's `auth` node, with that file's directory.
    auth: Option<(N<'a>, String)>,
    /// The last file's `audit` node.
    audit: Option<N<'a>>,
}

pub(crate) fn decode(
    files: &[(FileCx, KdlDocument, String)],
    layouts: Vec<String>,
    cx: &mut Cx,
) -> Model {
    let merged = merge(files, cx);
    let mut model = Model {
        layouts,
        ..Model::default()
    };
    for (n, base) in &merged.images {
        if let Some(i) = image(cx, n, base) {
            model.images.push(i);
        }
    }
    for n in &merged.providers {
        if let Some(p) = provider(cx, n) {
            model.providers.push(p);
        }
    }
    // Names seen so far with where: a duplicate is reported whatever else is wrong
    // with either declaration.
    let mut order_names: Vec<(String, crate::diag::Loc)> = Vec::new();
    for n in &merged.orders {
        let o = order(cx, n);
        if let Some(name) = first_str(n) {
            if let Some((_, prev)) = order_names.iter().find(|(p, _)| *p == name) {
                cx.push(
                    n.diag(
                        "warden::syntax::duplicate",
                        n.name_span(),
                        format!("order `{name}` is declared twice"),
                        "declared again here",
                    )
                    .help(format!("the first declaration is at {prev}")),
                );
                continue;
            }
            order_names.push((name, n.loc()));
        }
        if let Some(o) = o {
            model.orders.push(o);
        }
    }
    for n in &merged.order_tests {
        if let Some(t) = order_test(cx, n) {
            model.order_tests.push(t);
        }
    }
    if let Some(n) = &merged.orders_unlisted {
        n.check_props(cx, &[]);
        n.no_children(cx);
        if let Some((a, sp)) = name_arg(cx, n, "an autonomy: \"auto\", \"ask\" or \"never\"") {
            model.orders_unlisted = autonomy_value(cx, n, &a, sp);
        }
    }
    for n in &merged.orders_render {
        n.check_props(cx, &[]);
        n.no_children(cx);
        for (path, sp) in str_args(cx, n, "a path inside the sandbox") {
            if !path.starts_with('/') || path.split('/').any(|s| s == "..") || path.ends_with('/') {
                cx.push(
                    n.diag(
                        "warden::orders::render",
                        sp,
                        format!("`{path}` is not an absolute file path"),
                        "not an absolute file path",
                    )
                    .help("e.g. render \"/sandbox/ORDERS.md\": the table is bound there read-only"),
                );
            } else if !model.orders_render.contains(&path) {
                model.orders_render.push(path);
            }
        }
    }
    if let Some((n, base)) = &merged.auth {
        model.auth = auth(cx, n, base);
    }
    if let Some(n) = &merged.audit {
        model.audit = audit(cx, n);
    }
    for n in &merged.tenants {
        if let Some(t) = tenant(cx, n) {
            model.tenants.push(t);
        }
    }
    let sandbox_names: Vec<String> = merged
        .sandboxes
        .iter()
        .filter_map(|(n, _)| first_str(n))
        .collect();
    let tenant_of = crate::validate::tenants(cx, &model.tenants, &merged.tenants, &sandbox_names);
    // Every declared name, valid declaration or not: a reference to a declaration with
    // problems of its own is not a problem of the reference.
    let names = Names {
        images: merged
            .images
            .iter()
            .filter_map(|(n, _)| first_str(n))
            .collect(),
        image_env: model
            .images
            .iter()
            .map(|i| (i.name.clone(), i.env.clone()))
            .collect(),
        providers: merged.providers.iter().filter_map(first_str).collect(),
        orders: order_names.into_iter().map(|(n, _)| n).collect(),
        secret_keys: model
            .providers
            .iter()
            .filter_map(|p| Some((p.name.clone(), p.key_secret.clone()?)))
            .collect(),
        tenant_of,
        tenants: model.tenants.clone(),
    };
    for (n, base) in &merged.sandboxes {
        if let Some(s) = sandbox(cx, n, base, &merged.defaults, &names) {
            model.sandboxes.push(s);
        }
    }
    model
}

/// What references may name, collected before sandboxes are decoded.
pub(crate) struct Names {
    images: Vec<String>,
    /// Each image's environment (a sandbox's `HOME` may come from it).
    image_env: HashMap<String, Vec<(String, String)>>,
    providers: Vec<String>,
    /// Providers whose key is a tenant secret, with the secret's name.
    secret_keys: HashMap<String, String>,
    orders: Vec<String>,
    tenant_of: HashMap<String, String>,
    tenants: Vec<Tenant>,
}

fn unknown_ref(cx: &mut Cx, n: &N<'_>, span: SourceSpan, kind: &str, name: &str, known: &[String]) {
    let known: Vec<&str> = known.iter().map(String::as_str).collect();
    let mut d = n.diag(
        "warden::reference",
        span,
        format!("no {kind} named `{name}`"),
        format!("undeclared {kind}"),
    );
    d = match crate::diag::did_you_mean(name, &known) {
        Some(m) => d.help(format!("did you mean `{m}`?")),
        None if known.is_empty() => d.help(format!("declare it with `{kind} \"{name}\" ...`")),
        None => d.help(format!("declared: {}", list(&known))),
    };
    cx.push(d);
}

pub(crate) fn first_str(n: &N<'_>) -> Option<String> {
    n.args()
        .next()
        .and_then(|e| e.value().as_string())
        .map(str::to_string)
}

fn merge<'a>(files: &'a [(FileCx, KdlDocument, String)], cx: &mut Cx) -> Merged<'a> {
    let mut m = Merged::default();
    // Names declared by earlier files: only those need replacing (keeps merging linear).
    let mut declared: std::collections::HashSet<(&str, String)> = std::collections::HashSet::new();
    for (fcx, doc, base) in files {
        // Within one file a name may appear once; across files the later one wins.
        let mut seen: HashMap<(&str, String), SourceSpan> = HashMap::new();
        let mut defaults_here: BTreeMap<String, Vec<(N<'a>, String)>> = BTreeMap::new();
        for node in doc.nodes() {
            let n = N { node, file: fcx };
            let kind = n.name();
            match kind {
                "layout" => {}
                "image" | "provider" | "sandbox" | "tenant" => {
                    let Some(name) = first_str(&n) else {
                        // Decoding reports the missing or mistyped name.
                        push_named(&mut m, kind, n, base.clone());
                        continue;
                    };
                    let span = n.args().next().map_or(n.name_span(), |e| e.span());
                    if let Some(prev) = seen.insert((kind, name.clone()), span) {
                        let (line, _) = fcx.file.line_col(prev.offset());
                        cx.push(
                            n.diag(
                                "warden::syntax::duplicate",
                                span,
                                format!("{kind} `{name}` is declared twice"),
                                "declared again here",
                            )
                            .help(format!(
                                "the first declaration is on line {line}; names must be unique"
                            )),
                        );
                        continue;
                    }
                    if !declared.insert((kind, name.clone())) {
                        remove_named(&mut m, kind, &name);
                    }
                    push_named(&mut m, kind, n, base.clone());
                }
                "defaults" => {
                    n.check_props(cx, &[]);
                    if n.args().next().is_some() {
                        n.check_args(cx, 0, 0, "no arguments");
                    }
                    for c in n.children() {
                        if !SANDBOX.contains(&c.name()) {
                            n.unknown_child(cx, &c, SANDBOX);
                            continue;
                        }
                        defaults_here
                            .entry(c.name().to_string())
                            .or_default()
                            .push((c, base.clone()));
                    }
                }
                "auth" => {
                    if let Some((prev, _)) = &m.auth
                        && std::ptr::eq(prev.file, n.file)
                    {
                        let (line, _) = fcx.file.line_col(prev.name_span().offset());
                        cx.push(
                            n.diag(
                                "warden::syntax::duplicate",
                                n.name_span(),
                                "`auth` is declared twice",
                                "declared again here",
                            )
                            .help(format!("the first declaration is on line {line}")),
                        );
                        continue;
                    }
                    m.auth = Some((n, base.clone()));
                }
                "audit" => {
                    if let Some(prev) = &m.audit
                        && std::ptr::eq(prev.file, n.file)
                    {
                        let (line, _) = fcx.file.line_col(prev.name_span().offset());
                        cx.push(
                            n.diag(
                                "warden::syntax::duplicate",
                                n.name_span(),
                                "`audit` is declared twice",
                                "declared again here",
                            )
                            .help(format!("the first declaration is on line {line}")),
                        );
                        continue;
                    }
                    m.audit = Some(n);
                }
                "standing-orders" => {
                    n.check_props(cx, &[]);
                    n.check_args(cx, 0, 0, "no arguments");
                    for c in n.children() {
                        match c.name() {
                            "order" => {
                                if let Some(name) = first_str(&c) {
                                    m.orders.retain(|o| {
                                        first_str(o).as_deref() != Some(&name)
                                            || std::ptr::eq(o.file, c.file)
                                    });
                                }
                                m.orders.push(c);
                            }
                            "test" => m.order_tests.push(c),
                            "unlisted" => m.orders_unlisted = Some(c),
                            "render" => m.orders_render.push(c),
                            _ => n.unknown_child(cx, &c, ORDERS),
                        }
                    }
                }
                _ => {
                    let mut d = n.diag(
                        "warden::syntax::unknown-node",
                        n.name_span(),
                        format!("unknown top-level node `{kind}`"),
                        "not known here",
                    );
                    d = match crate::diag::did_you_mean(kind, TOP) {
                        Some(s) => d.help(format!("did you mean `{s}`?")),
                        None => d.help(format!("a warden file contains: {}", list(TOP))),
                    };
                    cx.push(d);
                }
            }
        }
        // A later file's group of defaults replaces the earlier group of the same node.
        for (k, v) in defaults_here {
            m.defaults.insert(k, v);
        }
    }
    m
}

fn push_named<'a>(m: &mut Merged<'a>, kind: &str, n: N<'a>, base: String) {
    match kind {
        "image" => m.images.push((n, base)),
        "provider" => m.providers.push(n),
        "sandbox" => m.sandboxes.push((n, base)),
        _ => m.tenants.push(n),
    }
}

fn remove_named(m: &mut Merged<'_>, kind: &str, name: &str) {
    let is = |n: &N<'_>| first_str(n).as_deref() == Some(name);
    match kind {
        "image" => m.images.retain(|(n, _)| !is(n)),
        "provider" => m.providers.retain(|n| !is(n)),
        "sandbox" => m.sandboxes.retain(|(n, _)| !is(n)),
        _ => m.tenants.retain(|n| !is(n)),
    }
}

fn check_name(cx: &mut Cx, n: &N<'_>, name: &str, span: SourceSpan) -> bool {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && name.as_bytes()[0].is_ascii_alphanumeric();
    if !ok {
        cx.push(
            n.diag("warden::syntax::name", span, format!("invalid name `{name}`"), "not a valid name")
                .help("names use lower-case letters, digits, `-` and `_`, start with a letter or digit, at most 63 characters"),
        );
    }
    ok
}

fn image(cx: &mut Cx, n: &N<'_>, base: &str) -> Option<Image> {
    n.check_props(cx, &[]);
    let (name, span) = name_arg(cx, n, "an image name")?;
    check_name(cx, n, &name, span);
    let mut img = Image {
        name,
        loc: n.loc(),
        sources: Vec::new(),
        env: Vec::new(),
        workdir: None,
        base: base.to_string(),
    };
    let mut with_libs: Vec<String> = Vec::new();
    let mut with_libs_node: Option<N<'_>> = None;
    for c in n.children() {
        match c.name() {
            "from-host" => {
                c.check_props(cx, &[]);
                c.no_children(cx);
                c.check_args(
                    cx,
                    1,
                    usize::MAX,
                    "one or more absolute paths of host binaries",
                );
                let paths = abs_paths(cx, &c, "a host binary");
                if !paths.is_empty() {
                    img.sources.push(ImageSource::FromHost {
                        paths,
                        with_libs: Vec::new(),
                    });
                }
            }
            "with-libs" => {
                c.check_props(cx, &[]);
                c.no_children(cx);
                c.check_args(
                    cx,
                    1,
                    usize::MAX,
                    "one or more absolute paths of libraries or directories",
                );
                with_libs.extend(abs_paths(cx, &c, "a library"));
                with_libs_node = Some(c);
            }
            "copy" => {
                c.check_props(cx, &["to", "uid", "gid", "mode"]);
                c.no_children(cx);
                let src = name_arg(cx, &c, "a source path");
                if let Some((s, sp)) = &src
                    && let Err(e) = check_host_path(s)
                {
                    cx.push(c.diag("warden::image::path", *sp, e, "invalid path"));
                }
                let to = req_str(
                    cx,
                    &c,
                    "to",
                    "where the files go in the image, e.g. to=\"/opt/tools\"",
                );
                if let Some((t, sp)) = &to
                    && let Err(e) = check_abs_path(t)
                {
                    cx.push(c.diag("warden::image::path", *sp, e, "invalid path"));
                }
                let uid = c
                    .prop("uid")
                    .and_then(|e| want_int(cx, &c, e, "`uid`", 0, u32::MAX as i128))
                    .unwrap_or(0) as u32;
                let gid = c
                    .prop("gid")
                    .and_then(|e| want_int(cx, &c, e, "`gid`", 0, u32::MAX as i128))
                    .unwrap_or(0) as u32;
                let mode = c
                    .prop("mode")
                    .and_then(|e| want_int(cx, &c, e, "`mode`", 0, 0o7777))
                    .map(|m| m as u32);
                if let (Some((src, _)), Some((to, _))) = (src, to) {
                    img.sources.push(ImageSource::Copy {
                        src,
                        to,
                        uid,
                        gid,
                        mode,
                    });
                }
            }
            "oci-layout" => {
                c.check_props(cx, &["tag"]);
                c.no_children(cx);
                let dir = name_arg(cx, &c, "the directory of an OCI image layout");
                if let Some((d, sp)) = &dir
                    && let Err(e) = check_host_path(d)
                {
                    cx.push(c.diag("warden::image::path", *sp, e, "invalid path"));
                }
                let tag = str_prop(cx, &c, "tag")
                    .map(|t| t.0)
                    .unwrap_or_else(|| "latest".into());
                if !img.sources.is_empty() {
                    cx.push(
                        c.diag("warden::image::base", c.name_span(), "`oci-layout` must come first", "a base image after other sources")
                            .help("the OCI layout is the base the other sources are added onto: move it to the top of the image"),
                    );
                }
                if let Some((dir, _)) = dir {
                    img.sources.push(ImageSource::OciLayout { dir, tag });
                }
            }
            "nix" => {
                c.check_props(cx, &[]);
                c.no_children(cx);
                c.check_args(cx, 1, usize::MAX, "one or more Nix store paths");
                let paths = abs_paths(cx, &c, "a store path");
                for (p, e) in paths.iter().zip(c.args()) {
                    if !p.starts_with("/nix/store/") {
                        cx.push(
                            c.diag(
                                "warden::image::nix",
                                e.span(),
                                format!("`{p}` is not in the Nix store"),
                                "not under /nix/store",
                            )
                            .help("give a store path such as /nix/store/<hash>-nodejs-22"),
                        );
                    }
                }
                img.sources.push(ImageSource::Nix { paths });
            }
            "nix-closure" => {
                c.check_props(cx, &[]);
                c.no_children(cx);
                if let Some((f, sp)) =
                    name_arg(cx, &c, "the path of a closure file (exportReferencesGraph)")
                {
                    if let Err(e) = check_host_path(&f) {
                        cx.push(c.diag("warden::image::path", sp, e, "invalid path"));
                    }
                    img.sources.push(ImageSource::NixClosure { file: f });
                }
            }
            "env" => {
                if let Some(kv) = env(cx, &c) {
                    img.env.push(kv);
                }
            }
            "workdir" => {
                c.check_props(cx, &[]);
                c.no_children(cx);
                if let Some((w, sp)) = name_arg(cx, &c, "an absolute path") {
                    match check_abs_path(&w) {
                        Ok(()) => img.workdir = Some(w),
                        Err(e) => cx.push(c.diag("warden::image::path", sp, e, "invalid path")),
                    }
                }
            }
            _ => n.unknown_child(cx, &c, IMAGE),
        }
    }
    if !with_libs.is_empty() {
        match img
            .sources
            .iter_mut()
            .rev()
            .find(|s| matches!(s, ImageSource::FromHost { .. }))
        {
            Some(ImageSource::FromHost { with_libs: w, .. }) => w.extend(with_libs),
            _ => {
                if let Some(c) = with_libs_node {
                    cx.push(
                        c.diag(
                            "warden::image::with-libs",
                            c.name_span(),
                            "`with-libs` without `from-host`",
                            "nothing to add these libraries to",
                        )
                        .help(
                            "`with-libs` adds libraries that `from-host` binaries load at run time",
                        ),
                    );
                }
            }
        }
    }
    if img.sources.is_empty() {
        cx.push(
            n.diag(
                "warden::image::empty",
                n.name_span(),
                format!("image `{}` has no contents", img.name),
                "empty image",
            )
            .help("add `from-host \"/bin/sh\"`, `copy`, `oci-layout` or `nix`"),
        );
    }
    Some(img)
}

fn abs_paths(cx: &mut Cx, n: &N<'_>, what: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (p, sp) in str_args(cx, n, what) {
        match check_abs_path(&p) {
            Ok(()) => out.push(p),
            Err(e) => cx.push(n.diag(
                "warden::path::absolute",
                sp,
                e,
                "must be absolute and normalized",
            )),
        }
    }
    out
}

fn env(cx: &mut Cx, n: &N<'_>) -> Option<(String, String)> {
    n.check_props(cx, &[]);
    n.no_children(cx);
    if !n.check_args(cx, 2, 2, "a name and a value: `env \"NAME\" \"value\"`") {
        return None;
    }
    let mut args = n.args();
    let (Some(key), Some(value)) = (args.next(), args.next()) else {
        return None;
    };
    let k = want_str(cx, n, key, "an environment variable name");
    let v = want_str(cx, n, value, "an environment variable value");
    let (Some(k), Some(v)) = (k, v) else {
        return None;
    };
    check_env_name(cx, n, key, &k)?;
    Some((k, v))
}

fn check_env_name(cx: &mut Cx, n: &N<'_>, key: &kdl::KdlEntry, k: &str) -> Option<()> {
    let valid = !k.is_empty()
        && !k.as_bytes()[0].is_ascii_digit()
        && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !valid {
        cx.push(n.diag(
            "warden::env::name",
            key.span(),
            format!("invalid environment variable name `{k}`"),
            "letters, digits and `_`, not starting with a digit",
        ));
        return None;
    }
    if k.starts_with("WARDEN_INIT") {
        cx.push(n.diag(
            "warden::env::reserved",
            key.span(),
            format!("`{k}` is reserved for warden-init"),
            "reserved name",
        ));
        return None;
    }
    Some(())
}

/// `env NAME secret=SECRET` in a sandbox: the value comes from the secret store of the
/// sandbox's tenant when the sandbox starts.
fn secret_env(cx: &mut Cx, n: &N<'_>, sandbox: &str, tenant: Option<&str>) -> Option<SecretEnv> {
    n.check_props(cx, &["secret"]);
    n.no_children(cx);
    if !n.check_args(
        cx,
        1,
        1,
        "a name and a secret: `env \"NAME\" secret=\"SECRET\"`",
    ) {
        return None;
    }
    let key = n.args().next()?;
    let k = want_str(cx, n, key, "an environment variable name")?;
    check_env_name(cx, n, key, &k)?;
    let (secret, sp) = str_prop(cx, n, "secret")?;
    if !secret_name_ok(&secret) {
        cx.push(n.diag(
            "warden::secret::name",
            sp,
            format!("invalid secret name `{secret}`"),
            "letters, digits, `-` and `_`, not starting with `-`, at most 128",
        ));
        return None;
    }
    if tenant.is_none() {
        cx.push(
            n.diag(
                "warden::secret::tenant",
                sp,
                format!("sandbox `{sandbox}` belongs to no tenant, and secrets live in a tenant's store"),
                "no tenant to read it from",
            )
            .help(format!("claim the sandbox in a tenant: `tenant \"NAME\" {{ sandboxes \"{sandbox}\" }}`, and store the value with `warden secret set NAME {secret}`")),
        );
        return None;
    }
    Some(SecretEnv { name: k, secret })
}

/// Secret names as the store takes them (`warden-secrets`): letters, digits, `-` and
/// `_`, not starting with `-`, at most 128.
fn secret_name_ok(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn provider(cx: &mut Cx, n: &N<'_>) -> Option<Provider> {
    n.check_props(
        cx,
        &["api", "endpoint", "key-env", "key-file", "key-secret", "ca"],
    );
    n.no_children(cx);
    let name = name_arg(cx, n, "a provider name");
    if let Some((name, span)) = &name {
        check_name(cx, n, name, *span);
    }
    let api = req_str(
        cx,
        n,
        "api",
        "the provider's API: api=\"anthropic\" or api=\"openai\"",
    );
    let api = api.and_then(|(a, sp)| match a.as_str() {
        "anthropic" => Some(Api::Anthropic),
        "openai" => Some(Api::Openai),
        _ => {
            cx.push(
                n.diag(
                    "warden::provider::api",
                    sp,
                    format!("unknown API `{a}`"),
                    "not a known API",
                )
                .help("`anthropic` or `openai` (any OpenAI-compatible server)"),
            );
            None
        }
    });
    let endpoint = req_str(
        cx,
        n,
        "endpoint",
        "the base URL, e.g. endpoint=\"https://api.anthropic.com\"",
    );
    let endpoint = endpoint.and_then(|(e, sp)| match parse_url(&e) {
        Ok(u) if u.scheme == "http" || u.scheme == "https" => Some(e),
        Ok(_) => {
            cx.push(n.diag(
                "warden::provider::endpoint",
                sp,
                "an endpoint is an http or https URL",
                "wrong scheme",
            ));
            None
        }
        Err(m) => {
            cx.push(n.diag("warden::provider::endpoint", sp, m, "not a URL"));
            None
        }
    });
    let key_env = str_prop(cx, n, "key-env").map(|k| k.0);
    let mut absolute = |key: &str| {
        let (p, sp) = str_prop(cx, n, key)?;
        if !p.starts_with('/') {
            cx.push(
                n.diag(
                    "warden::provider::path",
                    sp,
                    format!("`{key}` is a path on the host and must be absolute"),
                    "relative path",
                )
                .help("keys and CAs live outside the project, e.g. key-file=\"/etc/warden/keys/anthropic\""),
            );
            return None;
        }
        Some((p, sp))
    };
    let key_file = absolute("key-file");
    let ca = absolute("ca");
    if let (Some(_), Some((_, sp))) = (&key_env, &key_file) {
        cx.push(n.diag(
            "warden::provider::key",
            *sp,
            "a provider takes its key from `key-env` or `key-file`, not both",
            "second key source",
        ));
        return None;
    }
    let key_secret = str_prop(cx, n, "key-secret");
    if let Some((secret, sp)) = &key_secret {
        if key_env.is_some() || key_file.is_some() {
            cx.push(n.diag(
                "warden::provider::key",
                *sp,
                "a provider takes its key from one of `key-env`, `key-file` or `key-secret`",
                "second key source",
            ));
            return None;
        }
        if !secret_name_ok(secret) {
            cx.push(n.diag(
                "warden::secret::name",
                *sp,
                format!("invalid secret name `{secret}`"),
                "letters, digits, `-` and `_`, not starting with `-`, at most 128",
            ));
            return None;
        }
    }
    Some(Provider {
        name: name?.0,
        loc: n.loc(),
        api: api?,
        endpoint: endpoint?,
        key_env,
        key_file: key_file.map(|k| k.0),
        ca: ca.map(|c| c.0),
        key_secret: key_secret.map(|k| k.0),
    })
}

fn order(cx: &mut Cx, n: &N<'_>) -> Option<Order> {
    n.check_props(
        cx,
        &["bounds", "override", "autonomy", "earn-after", "tool"],
    );
    let mut tools = Vec::new();
    let mut tool = |cx: &mut Cx, n: &N<'_>, t: String, sp: SourceSpan| {
        if warden_wire::orders::split_rule(&t).is_none() {
            cx.push(
                n.diag(
                    "warden::orders::tool",
                    sp,
                    format!("`{t}` is not a tool rule"),
                    "not a tool rule",
                )
                .help("a rule in Claude Code's syntax: `Bash(git push:*)`, `Edit(src/**)`, `WebFetch(domain:docs.rs)`, `Read`"),
            );
        } else if !tools.contains(&t) {
            tools.push(t);
        }
    };
    if let Some((t, sp)) = str_prop(cx, n, "tool") {
        tool(cx, n, t, sp);
    }
    for c in n.children() {
        if c.name() == "tool" {
            c.check_props(cx, &[]);
            c.no_children(cx);
            for (t, sp) in str_args(cx, &c, "a tool rule such as \"Bash(git push:*)\"") {
                tool(cx, &c, t, sp);
            }
        } else {
            n.unknown_child(cx, &c, &["tool"]);
        }
    }
    let name = name_arg(cx, n, "an order name");
    if let Some((name, span)) = &name {
        check_name(cx, n, name, *span);
    }
    let bounds = req_str(
        cx,
        n,
        "bounds",
        "what the agent may do on its own, e.g. bounds=\"Only packages already in the lockfile.\"",
    );
    let override_ = str_prop(cx, n, "override").map(|o| o.0);
    let autonomy = match str_prop(cx, n, "autonomy") {
        None => Autonomy::Auto,
        Some((a, sp)) => autonomy_value(cx, n, &a, sp).unwrap_or(Autonomy::Ask),
    };
    let earn_after = match n.prop("earn-after") {
        None => None,
        Some(e) => match e.value().as_integer() {
            Some(v) if (1..=1000).contains(&v) => Some(v as u32),
            _ => {
                cx.push(
                    n.diag(
                        "warden::orders::earn-after",
                        e.span(),
                        "`earn-after` must be a whole number from 1 to 1000",
                        "not a count",
                    )
                    .help("e.g. earn-after=3: propose `auto` after three approved asks in a row"),
                );
                None
            }
        },
    };
    Some(Order {
        name: name?.0,
        loc: n.loc(),
        bounds: bounds?.0,
        override_,
        autonomy,
        earn_after,
        tools,
    })
}

fn autonomy_value(cx: &mut Cx, n: &N<'_>, a: &str, sp: SourceSpan) -> Option<Autonomy> {
    let v = Autonomy::parse(a);
    if v.is_none() {
        cx.push(
            n.diag(
                "warden::orders::autonomy",
                sp,
                format!("unknown autonomy `{a}`"),
                "not an autonomy",
            )
            .help("`auto` (on its own), `ask` (a human first) or `never`"),
        );
    }
    v
}

fn order_test(cx: &mut Cx, n: &N<'_>) -> Option<OrderTest> {
    n.check_props(cx, &["expect", "tool"]);
    n.no_children(cx);
    let tool = str_prop(cx, n, "tool");
    if let Some((t, sp)) = &tool
        && warden_wire::orders::ToolCall::parse(t).is_none()
    {
        cx.push(
            n.diag(
                "warden::test::tool",
                *sp,
                format!("`{t}` is not a tool call"),
                "not a tool call",
            )
            .help("a call as the rules write it: tool=\"Bash(git push origin main)\", tool=\"Edit(src/main.rs)\""),
        );
        return None;
    }
    let order = match &tool {
        Some(t) => {
            n.check_args(
                cx,
                0,
                0,
                "no order name with `tool=` (the rules decide which order covers it)",
            );
            Some(t.clone())
        }
        None => name_arg(cx, n, "the order (action) to test, or tool=\"...\""),
    };
    let expect = req_str(cx, n, "expect", "expect=\"auto\", \"ask\" or \"never\"");
    let expect = expect.and_then(|(x, sp)| {
        let e = Autonomy::parse(&x);
        if e.is_none() {
            cx.push(
                n.diag(
                    "warden::test::expect",
                    sp,
                    format!("unknown expectation `{x}`"),
                    "not an autonomy",
                )
                .help("`auto`, `ask` or `never`"),
            );
        }
        e
    });
    let (Some((order, _)), Some(e)) = (order, expect) else {
        return None;
    };
    Some(OrderTest {
        order,
        tool: tool.is_some(),
        expect: e,
        loc: n.loc(),
    })
}

/// The defaults the sandbox does not replace, then its own children, each with the
/// directory of the file that declared it.
fn children_with_defaults<'a, 'b>(
    n: &N<'a>,
    base: &'b str,
    defaults: &'b BTreeMap<String, Vec<(N<'a>, String)>>,
) -> Vec<(N<'a>, &'b str)> {
    let own = n.children();
    let mut out: Vec<(N<'a>, &'b str)> = Vec::with_capacity(own.len() + defaults.len());
    for (k, group) in defaults {
        if !own.clone().any(|c| c.name() == k) {
            out.extend(group.iter().map(|(c, b)| (*c, b.as_str())));
        }
    }
    out.extend(own.map(|c| (c, base)));
    out
}

fn sandbox(
    cx: &mut Cx,
    n: &N<'_>,
    base: &str,
    defaults: &BTreeMap<String, Vec<(N<'_>, String)>>,
    names: &Names,
) -> Option<Sandbox> {
    n.check_props(cx, &[]);
    let (name, span) = name_arg(cx, n, "a sandbox name")?;
    check_name(cx, n, &name, span);
    let mut s = Sandbox {
        hostname: name.clone(),
        name,
        loc: n.loc(),
        image: String::new(),
        command: Vec::new(),
        env: Vec::new(),
        secret_env: Vec::new(),
        user: defaults::USER,
        group: defaults::GROUP,
        workdir: defaults::WORKDIR.into(),
        filesystem: Filesystem {
            tmpfs_size: defaults::TMPFS_SIZE,
            shm: None,
            ..Filesystem::default()
        },
        limits: Limits {
            memory: defaults::MEMORY,
            pids: defaults::PIDS,
            cpu_millis: defaults::CPU_MILLIS,
            open_files: defaults::OPEN_FILES,
        },
        grace_ms: defaults::GRACE_MS,
        restart: Restart::Never,
        capabilities: Vec::new(),
        allow_syscalls: Vec::new(),
        egress: None,
        inference: None,
        agents: Vec::new(),
        tenant: None,
    };
    s.tenant = names.tenant_of.get(&s.name).cloned();
    let mut seen: HashMap<&str, SourceSpan> = HashMap::with_capacity(SANDBOX.len());
    // For the checks that need the whole sandbox: the `agent` node, every `env` node.
    let mut agent_node = None;
    let mut env_nodes = Vec::new();
    for (c, cbase) in children_with_defaults(n, base, defaults) {
        let kind = c.name();
        if SANDBOX.contains(&kind)
            && kind != "env"
            && let Some(prev) = seen.insert(kind, c.name_span())
            && std::ptr::eq(c.file, n.file)
            && prev != c.name_span()
        {
            cx.push(
                c.diag(
                    "warden::syntax::duplicate",
                    c.name_span(),
                    format!("`{kind}` given twice in sandbox `{}`", s.name),
                    "again here",
                )
                .help("merge them into one node"),
            );
            continue;
        }
        match kind {
            "image" => {
                c.check_props(cx, &[]);
                c.no_children(cx);
                if let Some((i, sp)) = name_arg(cx, &c, "the name of an `image`") {
                    if !names.images.contains(&i) {
                        unknown_ref(cx, &c, sp, "image", &i, &names.images);
                    }
                    s.image = i;
                }
            }
            "command" => {
                c.check_props(cx, &[]);
                c.no_children(cx);
                if c.check_args(cx, 1, usize::MAX, "the program and its arguments") {
                    s.command = str_args(cx, &c, "a command argument")
                        .into_iter()
                        .map(|a| a.0)
                        .collect();
                    if let Some(first) = s.command.first()
                        && !first.starts_with('/')
                    {
                        cx.push(
                            c.diag(
                                "warden::sandbox::command",
                                c.args().next().map_or(c.name_span(), |e| e.span()),
                                format!("`{first}` is not an absolute path"),
                                "no PATH lookup happens before exec",
                            )
                            .help("write the full path, e.g. `/usr/bin/python3`"),
                        );
                    }
                }
            }
            "env" if c.prop("secret").is_some() => {
                if let Some(e) = secret_env(cx, &c, &s.name, s.tenant.as_deref()) {
                    s.env.retain(|(k, _)| *k != e.name);
                    s.secret_env.retain(|x| x.name != e.name);
                    s.secret_env.push(e);
                }
            }
            "env" => {
                if let Some(kv) = env(cx, &c) {
                    env_nodes.push((kv.0.clone(), c));
                    s.env.retain(|(k, _)| *k != kv.0);
                    s.secret_env.retain(|x| x.name != kv.0);
                    s.env.push(kv);
                }
            }
            "agent" => {
                c.check_props(cx, &[]);
                c.no_children(cx);
                let names: Vec<&str> = Agent::ALL.iter().map(|(n, _)| *n).collect();
                let what = format!("one or more of {}", quoted(&names));
                if c.check_args(cx, 1, usize::MAX, &what) {
                    for (a, sp) in str_args(cx, &c, "an agent name") {
                        match Agent::parse(&a) {
                            Some(agent) if s.agents.contains(&agent) => {}
                            Some(agent) => s.agents.push(agent),
                            None => {
                                let help = match crate::diag::did_you_mean(&a, &names) {
                                    Some(m) => format!("did you mean `{m}`?"),
                                    None => format!("warden prepares {}", quoted(&names)),
                                };
                                cx.push(
                                    c.diag(
                                        "warden::sandbox::agent",
                                        sp,
                                        format!("unknown agent `{a}`"),
                                        "not an agent warden prepares",
                                    )
                                    .help(help),
                                );
                            }
                        }
                    }
                    agent_node = Some(c);
                }
            }
            "user" => {
                c.check_props(cx, &["group"]);
                c.no_children(cx);
                if c.check_args(cx, 1, 1, "a numeric user id")
                    && let Some(e) = c.args().next()
                    && let Some(u) = want_int(cx, &c, e, "the user id", 0, 65_535)
                {
                    s.user = u as u32;
                    s.group = u as u32;
                }
                if let Some(g) = c
                    .prop("group")
                    .and_then(|e| want_int(cx, &c, e, "`group`", 0, 65_535))
                {
                    s.group = g as u32;
                }
            }
            "workdir" => {
                c.check_props(cx, &[]);
                c.no_children(cx);
                if let Some((w, sp)) = name_arg(cx, &c, "an absolute path") {
                    match check_abs_path(&w) {
                        Ok(()) => s.workdir = w,
                        Err(e) => cx.push(c.diag(
                            "warden::path::absolute",
                            sp,
                            e,
                            "must be absolute and normalized",
                        )),
                    }
                }
            }
            "hostname" => {
                c.check_props(cx, &[]);
                c.no_children(cx);
                if let Some((h, sp)) = name_arg(cx, &c, "a host name") {
                    let ok = !h.is_empty()
                        && h.len() <= 63
                        && h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                        && !h.starts_with('-');
                    if ok {
                        s.hostname = h;
                    } else {
                        cx.push(c.diag(
                            "warden::sandbox::hostname",
                            sp,
                            format!("invalid host name `{h}`"),
                            "letters, digits and `-`, at most 63",
                        ));
                    }
                }
            }
            "filesystem" => {
                let tenant = s
                    .tenant
                    .as_ref()
                    .and_then(|t| names.tenants.iter().find(|x| &x.name == t));
                filesystem(cx, &c, cbase, &mut s.filesystem, tenant);
            }
            "limits" => limits(cx, &c, &mut s.limits),
            "init" => {
                c.check_props(cx, &["grace"]);
                c.check_args(cx, 0, 0, "no arguments");
                c.no_children(cx);
                if let Some((g, sp)) = str_prop(cx, &c, "grace") {
                    match parse_duration(&g) {
                        Ok(ms) if ms <= 3_600_000 => s.grace_ms = ms,
                        Ok(_) => cx.push(c.diag(
                            "warden::init::grace",
                            sp,
                            "grace period longer than an hour",
                            "too long",
                        )),
                        Err(e) => cx.push(
                            c.diag("warden::init::grace", sp, e, "not a duration")
                                .help("write e.g. grace=\"10s\" or grace=\"500ms\""),
                        ),
                    }
                }
            }
            "restart" => {
                if let Some(r) = restart(cx, &c) {
                    s.restart = r;
                }
            }
            "capabilities" => {
                c.check_props(cx, &[]);
                c.no_children(cx);
                for (cap, sp) in str_args(cx, &c, "a capability") {
                    let up = cap.to_ascii_uppercase();
                    let up = if up.starts_with("CAP_") {
                        up
                    } else {
                        format!("CAP_{up}")
                    };
                    if CAPABILITIES.contains(&up.as_str()) {
                        if !s.capabilities.contains(&up) {
                            s.capabilities.push(up);
                        }
                    } else {
                        let mut d = c.diag(
                            "warden::sandbox::capability",
                            sp,
                            format!("unknown capability `{cap}`"),
                            "not a capability",
                        );
                        if let Some(m) = crate::diag::did_you_mean(&up, CAPABILITIES) {
                            d = d.help(format!("did you mean `{m}`?"));
                        }
                        cx.push(d);
                    }
                }
            }
            "seccomp" => {
                c.check_props(cx, &[]);
                c.check_args(cx, 0, 0, "no arguments");
                for a in c.children() {
                    if a.name() != "allow" {
                        c.unknown_child(cx, &a, &["allow"]);
                        continue;
                    }
                    a.check_props(cx, &["reason"]);
                    a.no_children(cx);
                    let reason = str_prop(cx, &a, "reason");
                    require(
                        cx,
                        &a,
                        "reason",
                        reason,
                        "say why the sandbox needs this syscall, e.g. reason=\"debugger\"",
                    );
                    for (sc, sp) in str_args(cx, &a, "a syscall name") {
                        if warden_wire::seccomp::why(&sc).is_none() {
                            cx.push(a.diag("warden::seccomp::syscall", sp, format!("`{sc}` is not on the deny list"), "nothing to allow").help("only syscalls denied by default can be allowed; `warden explain` lists them"));
                        } else if !s.allow_syscalls.contains(&sc) {
                            s.allow_syscalls.push(sc);
                        }
                    }
                }
            }
            "egress" => s.egress = Some(egress(cx, &c, names)),
            "inference" => {
                s.inference = Some(inference(cx, &c, names, &s.name, s.tenant.as_deref()))
            }
            _ => n.unknown_child(cx, &c, SANDBOX),
        }
    }
    agent_checks(cx, &s, agent_node, &env_nodes, names);
    if s.image.is_empty() {
        cx.push(
            n.diag(
                "warden::sandbox::image",
                n.name_span(),
                format!("sandbox `{}` has no image", s.name),
                "`image` missing",
            )
            .help("add `image \"<name>\"` naming an `image` declared in the file"),
        );
    }
    if s.command.is_empty() {
        cx.push(
            n.diag(
                "warden::sandbox::command",
                n.name_span(),
                format!("sandbox `{}` has no command", s.name),
                "`command` missing",
            )
            .help("add `command \"/bin/sh\" \"-c\" \"...\"`"),
        );
    }
    Some(s)
}

fn quoted(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Variables warden sets in a sandbox with `inference`: the file may not set them.
const INFERENCE_ENV: &[&str] = &[
    "ANTHROPIC_BASE_URL",
    "ANTHROPIC_API_KEY",
    "OPENAI_BASE_URL",
    "OPENAI_API_KEY",
];

/// What an `agent` needs from the rest of the sandbox: `inference` (its model calls go
/// through the router), a `HOME` on a `read-write` directory (the agent writes its state
/// there, and warden seeds or binds its configuration there); and what `inference`
/// reserves: the variables warden sets.
fn agent_checks(
    cx: &mut Cx,
    s: &Sandbox,
    agent: Option<N<'_>>,
    env_nodes: &[(String, N<'_>)],
    names: &Names,
) {
    if s.inference.is_some() {
        let codex = s.agents.contains(&Agent::Codex);
        for (k, c) in env_nodes {
            if INFERENCE_ENV.contains(&k.as_str()) || (codex && k == "CODEX_HOME") {
                cx.push(
                    c.diag(
                        "warden::env::reserved",
                        c.args().next().map_or(c.name_span(), |e| e.span()),
                        format!("`{k}` is set by warden in a sandbox with `inference`"),
                        "reserved name",
                    )
                    .help(format!(
                        "the sandbox's model calls go to its inference router (http://{}), which adds the provider's key; remove this `env`",
                        warden_wire::sandbox::ROUTER_ADDR
                    )),
                );
            }
        }
    }
    let Some(a) = agent else { return };
    if s.agents.is_empty() {
        return;
    }
    let list = quoted(&s.agents.iter().map(|a| a.as_str()).collect::<Vec<_>>());
    if s.inference.is_none() {
        cx.push(
            a.diag(
                "warden::sandbox::agent",
                a.name_span(),
                format!("sandbox `{}` has an agent but no `inference`", s.name),
                "its model calls need the inference router",
            )
            .help("add an `inference` block with a route for the agent's models, e.g. `inference { route \"claude-*\" to=\"anthropic\" }`"),
        );
    }
    let image_env = names.image_env.get(&s.image).map_or(&[][..], |e| &e[..]);
    let Some(home) = s.home(image_env) else {
        return;
    };
    let writable = check_abs_path(home).is_ok()
        && s.filesystem
            .read_write
            .iter()
            .any(|d| home == d || is_below(home, d));
    if !writable {
        cx.push(
            a.diag(
                "warden::sandbox::agent",
                a.name_span(),
                format!(
                    "the `HOME` of sandbox `{}` (`{home}`) is not on a `read-write` directory",
                    s.name
                ),
                if s.agents.len() == 1 {
                    format!("{list} writes its state under `HOME`")
                } else {
                    format!("{list} write their state under `HOME`")
                },
            )
            .help(format!(
                "add `read-write \"{home}\"` to `filesystem` (a private tmpfs), or set `env \"HOME\"` to a path on one"
            )),
        );
    }
}

/// Whether `path` lies strictly below `dir` (both absolute).
fn is_below(path: &str, dir: &str) -> bool {
    let dir = dir.trim_end_matches('/');
    path.len() > dir.len() + 1 && path.starts_with(dir) && path.as_bytes()[dir.len()] == b'/'
}

fn filesystem(cx: &mut Cx, n: &N<'_>, base: &str, fs: &mut Filesystem, tenant: Option<&Tenant>) {
    n.check_props(cx, &[]);
    n.check_args(cx, 0, 0, "no arguments");
    for c in n.children() {
        match c.name() {
            "read-write" => {
                c.check_props(cx, &[]);
                c.no_children(cx);
                c.check_args(cx, 1, usize::MAX, "one or more absolute paths");
                for (p, sp) in str_args(cx, &c, "a path") {
                    if let Err(e) = check_abs_path(&p) {
                        cx.push(c.diag(
                            "warden::path::absolute",
                            sp,
                            e,
                            "must be absolute and normalized",
                        ));
                    } else if let Some(why) = forbidden_writable(&p) {
                        cx.push(
                            c.diag(
                                "warden::filesystem::system",
                                sp,
                                format!("`{p}` cannot be writable"),
                                why,
                            )
                            .help(
                                "make a directory of your own writable, e.g. `/sandbox` or `/tmp`",
                            ),
                        );
                    } else if !fs.read_write.contains(&p) {
                        fs.read_write.push(p);
                    }
                }
            }
            "bind" => {
                c.check_props(cx, &["at", "writable"]);
                c.no_children(cx);
                let src = name_arg(cx, &c, "a host path");
                if let Some((s, sp)) = &src
                    && let Err(e) = check_host_path(s)
                {
                    cx.push(c.diag("warden::path::host", *sp, e, "invalid path"));
                }
                let at = req_str(
                    cx,
                    &c,
                    "at",
                    "where it appears in the sandbox, e.g. at=\"/sandbox/workspace\"",
                );
                let writable = c
                    .prop("writable")
                    .and_then(|e| want_bool(cx, &c, e, "`writable`"))
                    .unwrap_or(false);
                if let Some((a, sp)) = &at {
                    if let Err(e) = check_abs_path(a) {
                        cx.push(c.diag(
                            "warden::path::absolute",
                            *sp,
                            e,
                            "must be absolute and normalized",
                        ));
                        continue;
                    }
                    if forbidden_mount_point(a) {
                        cx.push(c.diag(
                            "warden::filesystem::mount-point",
                            *sp,
                            format!("cannot mount over `{a}`"),
                            "reserved path",
                        ));
                        continue;
                    }
                    if writable && let Some(why) = forbidden_writable(a) {
                        cx.push(c.diag(
                            "warden::filesystem::system",
                            *sp,
                            format!("`{a}` cannot be writable"),
                            why,
                        ));
                        continue;
                    }
                }
                if let (Some((source, _)), Some((at, _))) = (src, at) {
                    fs.binds.push(Bind {
                        source,
                        at,
                        writable,
                        base: base.to_string(),
                    });
                }
            }
            "volume" => {
                c.check_props(cx, &["at", "writable"]);
                c.no_children(cx);
                let vol = name_arg(cx, &c, "a tenant volume name");
                let at = req_str(
                    cx,
                    &c,
                    "at",
                    "where it appears in the sandbox, e.g. at=\"/data\"",
                );
                let writable = c
                    .prop("writable")
                    .and_then(|e| want_bool(cx, &c, e, "`writable`"))
                    .unwrap_or(false);
                if let Some((a, sp)) = &at {
                    if let Err(e) = check_abs_path(a) {
                        cx.push(c.diag(
                            "warden::path::absolute",
                            *sp,
                            e,
                            "must be absolute and normalized",
                        ));
                        continue;
                    }
                    if forbidden_mount_point(a) || (writable && forbidden_writable(a).is_some()) {
                        cx.push(c.diag(
                            "warden::filesystem::mount-point",
                            *sp,
                            format!("cannot mount a volume at `{a}`"),
                            "reserved path",
                        ));
                        continue;
                    }
                }
                if let Some((v, sp)) = &vol {
                    match tenant {
                        None => {
                            cx.push(c.diag("warden::filesystem::volume", *sp, format!("volume `{v}` needs a tenant"), "this sandbox belongs to no tenant").help("volumes belong to tenants: list the sandbox in a tenant's `sandboxes` and declare `volume` there"));
                            continue;
                        }
                        Some(t) if !t.volumes.iter().any(|x| &x.name == v) => {
                            let known: Vec<String> =
                                t.volumes.iter().map(|x| x.name.clone()).collect();
                            unknown_ref(cx, &c, *sp, "volume", v, &known);
                            continue;
                        }
                        Some(_) => {}
                    }
                }
                if let (Some((volume, _)), Some((at, _))) = (vol, at) {
                    fs.volumes.push(VolumeMount {
                        volume,
                        at,
                        writable,
                    });
                }
            }
            "tmpfs-size" => {
                c.check_props(cx, &[]);
                c.no_children(cx);
                if let Some((sz, sp)) = name_arg(cx, &c, "a size such as \"64MiB\"") {
                    match parse_size(&sz) {
                        Ok(b) => fs.tmpfs_size = b,
                        Err(e) => cx.push(c.diag("warden::size", sp, e, "not a size").help(
                            "write e.g. \"64MiB\" or \"1GiB\" (KiB, MiB, GiB, TiB; KB, MB, GB, TB)",
                        )),
                    }
                }
            }
            "shm" => {
                c.check_props(cx, &[]);
                c.no_children(cx);
                if let Some((sz, sp)) = name_arg(cx, &c, "a size such as \"64MiB\"") {
                    match parse_size(&sz) {
                        Ok(b) => fs.shm = Some(b),
                        Err(e) => cx.push(c.diag("warden::size", sp, e, "not a size").help(
                            "write e.g. \"64MiB\" or \"1GiB\" (KiB, MiB, GiB, TiB; KB, MB, GB, TB)",
                        )),
                    }
                }
            }
            "landlock" => {
                c.check_props(cx, &[]);
                c.no_children(cx);
                if let Some((m, sp)) = name_arg(cx, &c, "`required`, `best-effort` or `off`") {
                    fs.landlock = Some(match m.as_str() {
                        "required" => LandlockMode::Required,
                        "best-effort" => LandlockMode::BestEffort,
                        "off" => LandlockMode::Off,
                        _ => {
                            cx.push(
                                c.diag(
                                    "warden::filesystem::landlock",
                                    sp,
                                    format!("unknown Landlock mode `{m}`"),
                                    "not a mode",
                                )
                                .help("`required` (default: fail closed), `best-effort` or `off`"),
                            );
                            continue;
                        }
                    });
                }
            }
            _ => n.unknown_child(cx, &c, FILESYSTEM),
        }
    }
}

fn limits(cx: &mut Cx, n: &N<'_>, l: &mut Limits) {
    n.check_props(cx, &["memory", "pids", "cpus", "open-files"]);
    n.check_args(cx, 0, 0, "no arguments, only properties");
    n.no_children(cx);
    if let Some((m, sp)) = str_prop(cx, n, "memory") {
        match parse_size(&m) {
            Ok(b) if b > i64::MAX as u64 => cx.push(n.diag(
                "warden::limits::memory",
                sp,
                "memory limit above 8EiB",
                "more than the kernel can count",
            )),
            Ok(b) if b >= 4 << 20 => l.memory = b,
            Ok(_) => cx.push(n.diag(
                "warden::limits::memory",
                sp,
                "memory limit below 4MiB",
                "too small to start anything",
            )),
            Err(e) => cx.push(
                n.diag("warden::size", sp, e, "not a size")
                    .help("write e.g. memory=\"2GiB\" (KiB, MiB, GiB, TiB; KB, MB, GB, TB)"),
            ),
        }
    }
    if let Some(e) = n.prop("pids")
        && let Some(p) = want_int(cx, n, e, "`pids`", 1, 1_000_000)
    {
        l.pids = p as u32;
    }
    if let Some(e) = n.prop("cpus") {
        let v = match e.value() {
            kdl::KdlValue::Integer(i) => Some(*i as f64),
            kdl::KdlValue::Float(f) => Some(*f),
            v => {
                cx.push(n.diag(
                    "warden::syntax::type",
                    e.span(),
                    format!("`cpus` must be a number, found {}", kind(v)),
                    "expected a number such as 1.5",
                ));
                None
            }
        };
        if let Some(v) = v {
            if (0.01..=1024.0).contains(&v) {
                l.cpu_millis = (v * 1000.0).round() as u32;
            } else {
                cx.push(n.diag(
                    "warden::limits::cpus",
                    e.span(),
                    format!("`cpus` {v} is out of range"),
                    "between 0.01 and 1024",
                ));
            }
        }
    }
    if let Some(e) = n.prop("open-files")
        && let Some(p) = want_int(cx, n, e, "`open-files`", 16, 1_048_576)
    {
        l.open_files = p as u32;
    }
}

fn restart(cx: &mut Cx, n: &N<'_>) -> Option<Restart> {
    n.check_props(cx, &["max", "backoff"]);
    n.no_children(cx);
    let (policy, sp) = name_arg(cx, n, "`never`, `on-failure` or `always`")?;
    let backoff_ms = match str_prop(cx, n, "backoff") {
        None => defaults::BACKOFF_MS,
        Some((b, bsp)) => match parse_duration(&b) {
            Ok(ms) => ms,
            Err(e) => {
                cx.push(n.diag("warden::restart::backoff", bsp, e, "not a duration"));
                defaults::BACKOFF_MS
            }
        },
    };
    let max = n
        .prop("max")
        .and_then(|e| want_int(cx, n, e, "`max`", 1, 1000))
        .map(|m| m as u32);
    match policy.as_str() {
        "never" => Some(Restart::Never),
        "on-failure" => Some(Restart::OnFailure {
            max: max.unwrap_or(3),
            backoff_ms,
        }),
        "always" => {
            if n.prop("max").is_some() {
                cx.push(n.diag(
                    "warden::restart::max",
                    n.prop("max").map(|e| e.span()).unwrap_or(sp),
                    "`max` applies only to `on-failure`",
                    "not used by `always`",
                ));
            }
            Some(Restart::Always { backoff_ms })
        }
        _ => {
            cx.push(
                n.diag(
                    "warden::restart::policy",
                    sp,
                    format!("unknown restart policy `{policy}`"),
                    "not a policy",
                )
                .help("`never` (default), `on-failure` or `always`"),
            );
            None
        }
    }
}

/// The ports of a rule (empty: any port), and whether `port=` was valid.
fn ports(cx: &mut Cx, n: &N<'_>, default: Option<u16>) -> (Vec<u16>, bool) {
    let Some(e) = n.prop("port") else {
        return (default.into_iter().collect(), true);
    };
    let bad = |cx: &mut Cx, what: String| {
        cx.push(
            n.diag("warden::egress::port", e.span(), what, "not a port")
                .help("a port is 1 to 65535; several as port=\"80 443\"; any as port=\"*\""),
        );
        (Vec::new(), false)
    };
    match e.value() {
        kdl::KdlValue::Integer(p) if (1..=65535).contains(p) => (vec![*p as u16], true),
        kdl::KdlValue::Integer(p) => bad(cx, format!("port {p} is out of range")),
        kdl::KdlValue::String(s) if s.trim() == "*" => (Vec::new(), true),
        kdl::KdlValue::String(s) => {
            let mut out = Vec::new();
            for part in s.split_whitespace() {
                match part.parse::<u32>() {
                    Ok(p) if (1..=65535).contains(&p) => out.push(p as u16),
                    _ => return bad(cx, format!("`{part}` is not a port")),
                }
            }
            if out.is_empty() {
                return bad(cx, "empty port list".into());
            }
            out.sort_unstable();
            out.dedup();
            (out, true)
        }
        v => bad(
            cx,
            format!("`port` must be a number or a list, found {}", kind(v)),
        ),
    }
}

fn egress_target(cx: &mut Cx, n: &N<'_>) -> Option<(Target, SourceSpan)> {
    let (raw, sp) = name_arg(
        cx,
        n,
        "a host (`api.github.com`, `*.npmjs.org`) or an address (`10.0.0.5`, `10.0.0.0/24`)",
    )?;
    if let Some(c) = Cidr::parse(&raw) {
        return Some((Target::Cidr(c), sp));
    }
    if raw.contains('/')
        && !raw.contains("://")
        && let Some((a, _)) = raw.split_once('/')
        && a.parse::<std::net::IpAddr>().is_ok()
    {
        cx.push(
            n.diag(
                "warden::egress::cidr",
                sp,
                format!("`{raw}` is not a valid address range"),
                "bad prefix length",
            )
            .help("IPv4 prefixes are 0..32, IPv6 0..128"),
        );
        return None;
    }
    if let Ok(warden_wire::egress::Host::Ip(ip)) = normalize_host(&raw) {
        cx.push(
            n.diag(
                "warden::egress::host",
                sp,
                format!("`{raw}` is an address in an unusual notation"),
                "write addresses plainly",
            )
            .help(format!("write `{ip}`")),
        );
        return None;
    }
    match check_host_pattern(&raw) {
        Ok(()) => Some((
            Target::Host(raw.to_ascii_lowercase().trim_end_matches('.').to_string()),
            sp,
        )),
        Err(e) => {
            cx.push(n.diag("warden::egress::host", sp, format!("invalid host pattern `{raw}`"), e).help("write a host name (`api.github.com`) or a wildcard over a registered domain (`*.npmjs.org`)"));
            None
        }
    }
}

fn egress(cx: &mut Cx, n: &N<'_>, names: &Names) -> Egress {
    n.check_props(cx, &[]);
    n.check_args(cx, 0, 0, "no arguments");
    let mut eg = Egress {
        rules: Vec::new(),
        idle_timeout_secs: defaults::IDLE_TIMEOUT_SECS,
        tests: Vec::new(),
    };
    let mut spans: Vec<SourceSpan> = Vec::new();
    // Rules by target and the deny rules, so that checking each new rule against the
    // earlier ones stays linear in a file of thousands of rules.
    let mut by_target: HashMap<String, Vec<usize>> = HashMap::new();
    let mut denies: Vec<usize> = Vec::new();
    for c in n.children() {
        match c.name() {
            kind @ ("allow" | "deny" | "http") => {
                let props: &[&str] = match kind {
                    "http" => &["port", "methods", "paths", "reason", "order"],
                    "allow" => &["port", "reason", "order"],
                    _ => &["port", "reason"],
                };
                c.check_props(cx, props);
                c.no_children(cx);
                // Every part is checked before a bad one drops the rule, so that each
                // problem of the rule is reported at once.
                let target = egress_target(cx, &c);
                let default_port = match kind {
                    "allow" => Some(defaults::ALLOW_PORT),
                    "http" => Some(defaults::HTTP_PORT),
                    _ => None,
                };
                let (ports, ports_ok) = ports(cx, &c, default_port);
                let http = if kind == "http" {
                    let methods = match str_prop(cx, &c, "methods") {
                        None => MethodSet::from_names(["GET", "HEAD"]).ok(),
                        Some((m, msp)) => match MethodSet::from_names(m.split_whitespace()) {
                            Ok(set) if set.0 != 0 => Some(set),
                            Ok(_) => {
                                cx.push(c.diag(
                                    "warden::egress::method",
                                    msp,
                                    "no methods listed",
                                    "empty",
                                ));
                                None
                            }
                            Err(bad) => {
                                cx.push(
                                    c.diag(
                                        "warden::egress::method",
                                        msp,
                                        format!("unknown HTTP method `{bad}`"),
                                        "not a method",
                                    )
                                    .help(format!(
                                        "methods: {}",
                                        warden_wire::egress::METHODS.join(" ")
                                    )),
                                );
                                None
                            }
                        },
                    };
                    let mut paths = Vec::new();
                    if let Some((p, psp)) = str_prop(cx, &c, "paths") {
                        for g in p.split_whitespace() {
                            if !g.starts_with('/') {
                                cx.push(
                                    c.diag(
                                        "warden::egress::path",
                                        psp,
                                        format!("path glob `{g}` does not start with `/`"),
                                        "not a path",
                                    )
                                    .help("write e.g. paths=\"/simple/** /packages/*\""),
                                );
                            } else {
                                paths.push(g.to_string());
                            }
                        }
                    }
                    methods.map(|methods| Some(HttpRule { methods, paths }))
                } else {
                    Some(None)
                };
                let action = if kind == "deny" {
                    Action::Deny
                } else {
                    Action::Allow
                };
                let reason = str_prop(cx, &c, "reason").map(|r| r.0);
                let order = str_prop(cx, &c, "order");
                let order_known = match &order {
                    Some((o, osp)) if !names.orders.contains(o) => {
                        unknown_ref(cx, &c, *osp, "order", o, &names.orders);
                        false
                    }
                    _ => true,
                };
                let (Some((target, sp)), Some(http), true, true) =
                    (target, http, ports_ok, order_known)
                else {
                    continue;
                };
                let rule = EgressRule {
                    action,
                    target,
                    ports,
                    http,
                    reason,
                    order: order.map(|o| o.0),
                    loc: c.loc(),
                };
                // Duplicate and conflicting rules.
                // Rules of the same action for one destination that differ (other ports,
                // other methods or paths) all stay: the first that matches decides.
                let key = format!("{:?}", rule.target);
                let same = by_target.get(&key).map_or(&[][..], Vec::as_slice);
                let clash = same.iter().copied().find(|i| {
                    let r = &eg.rules[*i];
                    overlap(&r.ports, &rule.ports)
                        && r.http.is_none() == rule.http.is_none()
                        && (r.action != rule.action
                            || (r.ports == rule.ports && r.http == rule.http))
                });
                if let Some(i) = clash {
                    let other = &eg.rules[i];
                    let (line, _) = n.file.file.line_col(spans[i].offset());
                    if other.action != rule.action {
                        cx.push(
                            c.diag(
                                "warden::egress::conflict",
                                sp,
                                "this rule conflicts with another one",
                                "allowed and denied at once",
                            )
                            .help(format!(
                                "line {line} {} the same destination; keep one of them",
                                if other.action == Action::Allow {
                                    "allows"
                                } else {
                                    "denies"
                                }
                            )),
                        );
                    } else if other.ports == rule.ports && other.http == rule.http {
                        cx.push(
                            c.diag(
                                "warden::egress::duplicate",
                                sp,
                                "duplicate egress rule",
                                "same as an earlier rule",
                            )
                            .help(format!("the same rule is on line {line}")),
                        );
                    }
                    continue;
                }
                if rule.action == Action::Allow
                    && let Some(j) = denies.iter().copied().find(|j| {
                        let r = &eg.rules[*j];
                        deny_covers(&r.target, &rule.target) && overlap(&r.ports, &rule.ports)
                    })
                {
                    let (line, _) = n.file.file.line_col(spans[j].offset());
                    cx.push(
                        c.diag(
                            "warden::egress::conflict",
                            sp,
                            "this rule can never match",
                            "shadowed by a deny rule",
                        )
                        .help(format!(
                            "the deny rule on line {line} covers it; deny rules win"
                        )),
                    );
                    continue;
                }
                spans.push(sp);
                by_target.entry(key).or_default().push(eg.rules.len());
                if rule.action == Action::Deny {
                    denies.push(eg.rules.len());
                }
                eg.rules.push(rule);
            }
            "idle-timeout" => {
                c.check_props(cx, &[]);
                c.no_children(cx);
                if let Some((t, sp)) = name_arg(cx, &c, "a duration such as \"5m\"") {
                    match parse_duration(&t) {
                        Ok(ms) if ms >= 1000 => eg.idle_timeout_secs = ms / 1000,
                        Ok(_) => cx.push(c.diag(
                            "warden::egress::idle-timeout",
                            sp,
                            "idle timeout under one second",
                            "too short",
                        )),
                        Err(e) => {
                            cx.push(c.diag("warden::egress::idle-timeout", sp, e, "not a duration"))
                        }
                    }
                }
            }
            "test" => {
                c.check_props(cx, &["expect", "method"]);
                c.no_children(cx);
                let url = name_arg(cx, &c, "a URL such as \"https://api.github.com/repos\"");
                let url = match url {
                    Some((u, sp)) => match parse_url(&u) {
                        Ok(_) => Some((u, sp)),
                        Err(e) => {
                            cx.push(c.diag("warden::test::url", sp, e, "not a URL").help(
                                "write scheme://host[:port]/path with scheme http, https or tcp",
                            ));
                            None
                        }
                    },
                    None => None,
                };
                let expect = req_str(cx, &c, "expect", "expect=\"allow\", \"deny\" or \"ask\"");
                let expect = expect.and_then(|(e, sp)| match e.as_str() {
                    "allow" => Some(Expect::Allow),
                    "deny" => Some(Expect::Deny),
                    "ask" => Some(Expect::Ask),
                    _ => {
                        cx.push(
                            c.diag(
                                "warden::test::expect",
                                sp,
                                format!("unknown expectation `{e}`"),
                                "not an outcome",
                            )
                            .help("`allow`, `deny` or `ask`"),
                        );
                        None
                    }
                });
                let method = str_prop(cx, &c, "method").map(|m| m.0.to_ascii_uppercase());
                if let (Some((url, _)), Some(expect)) = (url, expect) {
                    eg.tests.push(EgressTest {
                        url,
                        method,
                        expect,
                        loc: c.loc(),
                    });
                }
            }
            _ => n.unknown_child(cx, &c, EGRESS),
        }
    }
    eg
}

fn overlap(a: &[u16], b: &[u16]) -> bool {
    a.is_empty() || b.is_empty() || a.iter().any(|p| b.contains(p))
}

fn deny_covers(deny: &Target, allow: &Target) -> bool {
    match (deny, allow) {
        (Target::Host(d), Target::Host(a)) => {
            d == a
                || (d.starts_with("*.")
                    && (warden_wire::egress::host_matches(d, a.trim_start_matches("*."))
                        && a.starts_with("*.")
                        || warden_wire::egress::host_matches(d, a)))
        }
        (Target::Cidr(d), Target::Cidr(a)) => d.prefix <= a.prefix && d.contains(a.addr),
        _ => false,
    }
}

/// A provider whose key is a secret reads it from the store of the sandbox's tenant: a
/// sandbox without a tenant cannot route to it.
fn secret_key_needs_tenant<'p>(
    cx: &mut Cx,
    c: &N<'_>,
    span: SourceSpan,
    names: &Names,
    providers: impl IntoIterator<Item = &'p String>,
    sandbox: &str,
    tenant: Option<&str>,
) {
    if tenant.is_some() {
        return;
    }
    let Some((provider, secret)) = providers
        .into_iter()
        .find_map(|p| Some((p, names.secret_keys.get(p)?)))
    else {
        return;
    };
    cx.push(
        c.diag(
            "warden::secret::tenant",
            span,
            format!(
                "sandbox `{sandbox}` belongs to no tenant, and the key of provider `{provider}` is the tenant secret `{secret}`"
            ),
            "no tenant to read the key from",
        )
        .help(format!(
            "claim the sandbox in a tenant: `tenant \"NAME\" {{ sandboxes \"{sandbox}\" }}`"
        )),
    );
}

fn inference(
    cx: &mut Cx,
    n: &N<'_>,
    names: &Names,
    sandbox: &str,
    tenant: Option<&str>,
) -> Inference {
    n.check_props(cx, &[]);
    n.check_args(cx, 0, 0, "no arguments");
    let mut inf = Inference {
        routes: Vec::new(),
        privacy: Vec::new(),
        tests: Vec::new(),
        limits: InferenceLimits::default(),
    };
    for c in n.children() {
        match c.name() {
            "limits" => inference_limits(cx, &c, &mut inf.limits),
            "route" => {
                c.check_props(cx, &["to", "model", "fallback"]);
                c.no_children(cx);
                let model = name_arg(cx, &c, "a model name or glob such as \"claude-*\"");
                let to = req_str(
                    cx,
                    &c,
                    "to",
                    "the provider that serves these models, e.g. to=\"anthropic\"",
                );
                if let Some((p, sp)) = &to
                    && !names.providers.contains(p)
                {
                    unknown_ref(cx, &c, *sp, "provider", p, &names.providers);
                    continue;
                }
                let model_rewrite = str_prop(cx, &c, "model").map(|m| m.0);
                let mut fallback = Vec::new();
                if let Some((f, sp)) = str_prop(cx, &c, "fallback") {
                    for p in f.split_whitespace() {
                        if names.providers.iter().any(|n| n == p) {
                            fallback.push(p.to_string());
                        } else {
                            unknown_ref(cx, &c, sp, "provider", p, &names.providers);
                        }
                    }
                }
                if let Some((p, sp)) = &to {
                    let all = std::iter::once(p).chain(fallback.iter());
                    secret_key_needs_tenant(cx, &c, *sp, names, all, sandbox, tenant);
                }
                if let (Some((model, _)), Some((provider, _))) = (model, to) {
                    inf.routes.push(Route {
                        model,
                        provider,
                        model_rewrite,
                        fallback,
                        loc: c.loc(),
                    });
                }
            }
            "privacy" => {
                c.check_props(cx, &["detect", "action", "to"]);
                c.no_children(cx);
                c.check_args(cx, 0, 0, "no arguments, only properties");
                let detect = req_str(
                    cx,
                    &c,
                    "detect",
                    "what to look for, e.g. detect=\"email credit-card api-key\"",
                );
                let mut dets = Vec::new();
                if let Some((d, sp)) = &detect {
                    for w in d.split_whitespace() {
                        match Detector::parse(w) {
                            Some(x) => dets.push(x),
                            None => {
                                let names: Vec<&str> =
                                    Detector::ALL.iter().map(|(n, _)| *n).collect();
                                let mut diag = c.diag(
                                    "warden::inference::detector",
                                    *sp,
                                    format!("unknown detector `{w}`"),
                                    "not a detector",
                                );
                                diag = match crate::diag::did_you_mean(w, &names) {
                                    Some(m) => diag.help(format!("did you mean `{m}`?")),
                                    None => diag.help(format!("detectors: {}", list(&names))),
                                };
                                cx.push(diag);
                            }
                        }
                    }
                    if d.split_whitespace().next().is_none() {
                        cx.push(c.diag(
                            "warden::inference::detector",
                            *sp,
                            "no detector listed",
                            "empty",
                        ));
                    }
                }
                let to = str_prop(cx, &c, "to");
                if let Some((p, sp)) = &to
                    && !names.providers.contains(p)
                {
                    unknown_ref(cx, &c, *sp, "provider", p, &names.providers);
                    continue;
                }
                if let Some((p, sp)) = &to {
                    secret_key_needs_tenant(cx, &c, *sp, names, [p], sandbox, tenant);
                }
                let action = match str_prop(cx, &c, "action") {
                    None => Some(PrivacyAction::Block),
                    Some((a, sp)) => match (a.as_str(), &to) {
                        ("block", None) => Some(PrivacyAction::Block),
                        ("redact", None) => Some(PrivacyAction::Redact),
                        ("reroute", Some((t, _))) => Some(PrivacyAction::Reroute { to: t.clone() }),
                        ("reroute", None) => {
                            cx.push(c.diag("warden::inference::privacy", sp, "`reroute` needs `to=`", "where to?").help("name the provider that may see such prompts, e.g. to=\"local\""));
                            None
                        }
                        ("block" | "redact", Some((_, tsp))) => {
                            cx.push(c.diag(
                                "warden::inference::privacy",
                                *tsp,
                                format!("`to` applies only to `reroute`, not `{a}`"),
                                "not used",
                            ));
                            None
                        }
                        _ => {
                            cx.push(
                                c.diag(
                                    "warden::inference::privacy",
                                    sp,
                                    format!("unknown privacy action `{a}`"),
                                    "not an action",
                                )
                                .help("`block` (default), `redact` or `reroute`"),
                            );
                            None
                        }
                    },
                };
                if let Some(action) = action
                    && !dets.is_empty()
                {
                    inf.privacy.push(PrivacyRule {
                        detect: dets,
                        action,
                        loc: c.loc(),
                    });
                }
            }
            "test" => {
                c.check_props(cx, &["model", "prompt", "expect", "api", "leaves"]);
                c.no_children(cx);
                c.check_args(cx, 0, 0, "no arguments, only properties");
                let model = req_str(cx, &c, "model", "the model the request asks for");
                let prompt = str_prop(cx, &c, "prompt").map(|p| p.0).unwrap_or_default();
                let expect = req_str(
                    cx,
                    &c,
                    "expect",
                    "the provider that should serve it, or `block`",
                );
                let (api, api_ok) = test_api(cx, &c, "api", "the API the caller speaks");
                let (leaves, leaves_ok) =
                    test_api(cx, &c, "leaves", "the API the request leaves in");
                if let (Some((e, _)), Some((_, sp))) = (&expect, &leaves)
                    && (e == "block" || e == "none")
                {
                    cx.push(
                        c.diag(
                            "warden::inference::test",
                            *sp,
                            format!("nothing leaves when the outcome is `{e}`"),
                            "no API to check",
                        )
                        .help("`leaves=` goes with `expect=` a provider name"),
                    );
                    continue;
                }
                if let Some((e, sp)) = &expect
                    && e != "block"
                    && e != "none"
                    && !names.providers.contains(e)
                {
                    let mut known = names.providers.clone();
                    known.push("block".into());
                    known.push("none".into());
                    unknown_ref(cx, &c, *sp, "provider", e, &known);
                    continue;
                }
                if let (Some((model, _)), Some((expect, _)), true, true) =
                    (model, expect, api_ok, leaves_ok)
                {
                    inf.tests.push(InferenceTest {
                        model,
                        prompt,
                        expect,
                        api: api.map(|a| a.0),
                        leaves: leaves.map(|l| l.0),
                        loc: c.loc(),
                    });
                }
            }
            _ => n.unknown_child(cx, &c, INFERENCE),
        }
    }
    inf
}

/// An optional API property of an inference `test` (`api=`, `leaves=`): the API if
/// written and known, and whether it was fine (absent or known).
fn test_api(cx: &mut Cx, n: &N<'_>, prop: &str, what: &str) -> (Option<(Api, SourceSpan)>, bool) {
    let Some((a, sp)) = str_prop(cx, n, prop) else {
        return (None, n.prop(prop).is_none());
    };
    match a.as_str() {
        "anthropic" => (Some((Api::Anthropic, sp)), true),
        "openai" => (Some((Api::Openai, sp)), true),
        _ => {
            cx.push(
                n.diag(
                    "warden::inference::test",
                    sp,
                    format!("unknown API `{a}` in `{prop}=`"),
                    "not a known API",
                )
                .help(format!("{what}: `anthropic` or `openai`")),
            );
            (None, false)
        }
    }
}

fn inference_limits(cx: &mut Cx, n: &N<'_>, l: &mut InferenceLimits) {
    n.check_props(
        cx,
        &["requests-per-minute", "tokens-per-minute", "idle-timeout"],
    );
    n.check_args(cx, 0, 0, "no arguments, only properties");
    n.no_children(cx);
    if let Some(e) = n.prop("requests-per-minute")
        && let Some(v) = want_int(cx, n, e, "`requests-per-minute`", 1, 1_000_000)
    {
        l.requests_per_minute = Some(v as u32);
    }
    if let Some(e) = n.prop("tokens-per-minute")
        && let Some(v) = want_int(cx, n, e, "`tokens-per-minute`", 1, 1_000_000_000_000)
    {
        l.tokens_per_minute = Some(v as u64);
    }
    if let Some((t, sp)) = str_prop(cx, n, "idle-timeout") {
        match parse_duration(&t) {
            Ok(ms) if ms >= 1000 => l.idle_timeout_secs = Some(ms / 1000),
            Ok(_) => cx.push(n.diag(
                "warden::inference::idle-timeout",
                sp,
                "idle timeout under one second",
                "too short",
            )),
            Err(e) => cx.push(n.diag("warden::inference::idle-timeout", sp, e, "not a duration")),
        }
    }
}

/// `auth { issuer ... audience ... jwks ... hs256-key-file ... tls ... }`.
/// `audit "postgres://..."`: the audit store in PostgreSQL instead of SQLite.
fn audit(cx: &mut Cx, n: &N<'_>) -> Option<AuditStore> {
    n.check_props(cx, &[]);
    n.no_children(cx);
    let (url, span) = name_arg(
        cx,
        n,
        "the PostgreSQL URL, e.g. \"postgres://warden@localhost/warden\"",
    )?;
    let scheme_ok = ["postgres://", "postgresql://"]
        .iter()
        .any(|p| url.starts_with(p) && url.len() > p.len());
    if !scheme_ok {
        cx.push(
            n.diag(
                "warden::audit::url",
                span,
                "`audit` takes a PostgreSQL URL",
                "not a `postgres://` URL",
            )
            .help(
                "write `audit \"postgres://USER@HOST/DB\"`; without an `audit` node events go to SQLite under the state directory",
            ),
        );
        return None;
    }
    Some(AuditStore { loc: n.loc(), url })
}

fn auth(cx: &mut Cx, n: &N<'_>, base: &str) -> Option<Auth> {
    n.check_props(cx, &[]);
    n.check_args(cx, 0, 0, "no arguments");
    let mut a = Auth {
        loc: n.loc(),
        issuer: String::new(),
        audience: String::new(),
        jwks: None,
        hs256_key_file: None,
        tls: None,
        base: base.to_string(),
    };
    let mut ok = true;
    let mut seen: HashMap<&str, SourceSpan> = HashMap::new();
    for c in n.children() {
        let kind = c.name();
        if !AUTH.contains(&kind) {
            n.unknown_child(cx, &c, AUTH);
            ok = false;
            continue;
        }
        if seen.insert(kind, c.name_span()).is_some() {
            cx.push(
                c.diag(
                    "warden::syntax::duplicate",
                    c.name_span(),
                    format!("`{kind}` given twice in `auth`"),
                    "again here",
                )
                .help("keep one"),
            );
            ok = false;
            continue;
        }
        if kind == "tls" {
            c.check_props(cx, &["cert", "key"]);
            c.check_args(cx, 0, 0, "no arguments, only `cert=` and `key=`");
            c.no_children(cx);
            let cert = req_str(
                cx,
                &c,
                "cert",
                "the PEM certificate chain, e.g. cert=\"/etc/warden/tls/cert.pem\"",
            );
            let key = req_str(
                cx,
                &c,
                "key",
                "the PEM private key, e.g. key=\"/etc/warden/tls/key.pem\"",
            );
            match (cert, key) {
                (Some((cert, _)), Some((key, _))) => a.tls = Some(Tls { cert, key }),
                _ => ok = false,
            }
            continue;
        }
        c.check_props(cx, &[]);
        c.no_children(cx);
        let what = match kind {
            "issuer" => "the `iss` tokens carry, e.g. \"https://login.example.com\"",
            "audience" => "the `aud` tokens carry, e.g. \"warden\"",
            "jwks" => "a JWKS file of public keys, e.g. \"./jwks.json\"",
            _ => "a file holding the HS256 secret",
        };
        let Some((v, sp)) = name_arg(cx, &c, what) else {
            ok = false;
            continue;
        };
        if v.is_empty() {
            cx.push(c.diag(
                "warden::auth::empty",
                sp,
                format!("`{kind}` is empty"),
                "empty",
            ));
            ok = false;
            continue;
        }
        match kind {
            "issuer" => a.issuer = v,
            "audience" => a.audience = v,
            "jwks" => a.jwks = Some(v),
            _ => a.hs256_key_file = Some(v),
        }
    }
    for (field, value, help) in [
        ("issuer", &a.issuer, "issuer \"https://login.example.com\""),
        ("audience", &a.audience, "audience \"warden\""),
    ] {
        if value.is_empty() && !seen.contains_key(field) {
            cx.push(
                n.diag(
                    "warden::auth::missing",
                    n.name_span(),
                    format!("`auth` needs `{field}`: tokens are checked against it"),
                    format!("no `{field}`"),
                )
                .help(format!("add `{help}`")),
            );
            ok = false;
        }
    }
    if a.jwks.is_none()
        && a.hs256_key_file.is_none()
        && !seen.contains_key("jwks")
        && !seen.contains_key("hs256-key-file")
    {
        cx.push(
            n.diag(
                "warden::auth::keys",
                n.name_span(),
                "`auth` names no keys to check tokens with",
                "no `jwks` or `hs256-key-file`",
            )
            .help("add `jwks \"./jwks.json\"` (EdDSA, ES256, RS256 public keys) or `hs256-key-file \"/etc/warden/hs256.key\"`"),
        );
        ok = false;
    }
    ok.then_some(a)
}

fn tenant(cx: &mut Cx, n: &N<'_>) -> Option<Tenant> {
    n.check_props(cx, &[]);
    let (name, span) = name_arg(cx, n, "a tenant name")?;
    check_name(cx, n, &name, span);
    let mut t = Tenant {
        name,
        loc: n.loc(),
        sandboxes: Vec::new(),
        uid_start: 0,
        uid_count: 0,
        volumes: Vec::new(),
        roles: Vec::new(),
    };
    let mut users_seen = false;
    for c in n.children() {
        match c.name() {
            "sandboxes" => {
                c.check_props(cx, &[]);
                c.no_children(cx);
                c.check_args(cx, 1, usize::MAX, "one or more sandbox names");
                t.sandboxes
                    .extend(str_args(cx, &c, "a sandbox name").into_iter().map(|s| s.0));
            }
            "users" => {
                c.check_props(cx, &["uid", "count"]);
                c.no_children(cx);
                c.check_args(cx, 0, 0, "no arguments, only `uid=` and `count=`");
                users_seen = true;
                let uid = c
                    .prop("uid")
                    .and_then(|e| want_int(cx, &c, e, "`uid`", 1, u32::MAX as i128));
                let uid = require(
                    cx,
                    &c,
                    "uid",
                    uid,
                    "the first host uid of the tenant's range, e.g. uid=200000",
                );
                let count = c
                    .prop("count")
                    .and_then(|e| want_int(cx, &c, e, "`count`", 1, u32::MAX as i128))
                    .unwrap_or(65_536);
                if let Some(uid) = uid {
                    if uid + count > u32::MAX as i128 {
                        cx.push(c.diag(
                            "warden::tenant::users",
                            c.name_span(),
                            "user range runs past the last uid",
                            "too large",
                        ));
                    } else if uid < 65_536 {
                        cx.push(
                            c.diag(
                                "warden::tenant::users",
                                c.prop("uid").map(|e| e.span()).unwrap_or(c.name_span()),
                                format!("uid {uid} overlaps the host's own users"),
                                "below 65536",
                            )
                            .help("tenant ranges start at 65536 or above, e.g. uid=200000"),
                        );
                    } else {
                        t.uid_start = uid as u32;
                        t.uid_count = count as u32;
                    }
                }
            }
            "volume" => {
                c.check_props(cx, &["size"]);
                c.no_children(cx);
                if let Some((v, sp)) = name_arg(cx, &c, "a volume name") {
                    check_name(cx, &c, &v, sp);
                    let size = str_prop(cx, &c, "size").and_then(|(s, ssp)| match parse_size(&s) {
                        Ok(b) => Some(b),
                        Err(e) => {
                            cx.push(c.diag("warden::size", ssp, e, "not a size"));
                            None
                        }
                    });
                    if t.volumes.iter().any(|x| x.name == v) {
                        cx.push(c.diag(
                            "warden::syntax::duplicate",
                            sp,
                            format!("volume `{v}` is declared twice"),
                            "again here",
                        ));
                    } else {
                        t.volumes.push(Volume { name: v, size });
                    }
                }
            }
            "role" => {
                c.check_props(cx, &["subject"]);
                c.no_children(cx);
                let role = name_arg(cx, &c, "a role: `admin`, `operator` or `viewer`");
                let subject = req_str(
                    cx,
                    &c,
                    "subject",
                    "who holds the role, e.g. subject=\"alice@acme.example\"",
                );
                if let Some((r, sp)) = &role
                    && !ROLES.contains(&r.as_str())
                {
                    let mut d = c.diag(
                        "warden::tenant::role",
                        *sp,
                        format!("unknown role `{r}`"),
                        "not a role",
                    );
                    d = match crate::diag::did_you_mean(r, ROLES) {
                        Some(m) => d.help(format!("did you mean `{m}`?")),
                        None => d.help(format!("roles: {}", list(ROLES))),
                    };
                    cx.push(d);
                    continue;
                }
                if let (Some((role, _)), Some((subject, _))) = (role, subject) {
                    t.roles.push(Role { role, subject });
                }
            }
            _ => n.unknown_child(cx, &c, TENANT),
        }
    }
    if !users_seen {
        cx.push(
            n.diag(
                "warden::tenant::users",
                n.name_span(),
                format!("tenant `{}` has no user range", t.name),
                "`users` missing",
            )
            .help("give each tenant its own host uid range: `users uid=200000 count=65536`"),
        );
    }
    Some(t)
}

/// The parts of a URL the policy needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    pub scheme: String,
    pub userinfo: bool,
    pub host: String,
    pub port: u16,
    pub path: String,
}

pub fn parse_url(s: &str) -> Result<Url, String> {
    let (scheme, rest) = s
        .split_once("://")
        .ok_or_else(|| format!("`{s}` has no scheme"))?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "http" => 80,
        "https" => 443,
        "tcp" => 0,
        _ => return Err(format!("unsupported scheme `{scheme}`")),
    };
    let (authority, path) = match rest.find(['/', '?', '#']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((_, hp)) => (true, hp),
        None => (false, authority),
    };
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (h, after) = v6.split_once(']').ok_or("unterminated `[`")?;
        (format!("[{h}]"), after.strip_prefix(':'))
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (hostport.to_string(), None),
        }
    };
    if host.is_empty() || host == "[]" {
        return Err(format!("`{s}` has no host"));
    }
    let port = match port {
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("`{p}` is not a port"))?,
        None if default_port == 0 => return Err("a tcp:// URL needs a port".into()),
        None => default_port,
    };
    let path = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    };
    Ok(Url {
        scheme,
        userinfo,
        host,
        port,
        path,
    })
}
