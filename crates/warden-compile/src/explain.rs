//! `warden explain`: what each sandbox may do, in plain words.

use crate::Compiled;
use serde::Serialize;
use warden_lang::Model;
use warden_lang::model::{Action, Agent, LandlockMode, Restart, Target};
use warden_lang::values::format_size;
use warden_wire::inference::PrivacyAction;
use warden_wire::sandbox::ROUTER_ADDR;

#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    pub sandboxes: Vec<SandboxExplanation>,
    pub orders: Vec<String>,
    /// What a tool call no order names needs, in words.
    pub unlisted: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct SandboxExplanation {
    pub name: String,
    pub tenant: Option<String>,
    /// One sentence each, grouped by topic.
    pub runs: Vec<String>,
    pub filesystem: Vec<String>,
    pub network: Vec<String>,
    pub inference: Vec<String>,
    pub limits: Vec<String>,
    /// Every place the file relaxes a strict default.
    pub relaxations: Vec<String>,
}

pub fn explain(model: &Model, compiled: &Compiled) -> Explanation {
    let mut out = Vec::new();
    for (s, c) in model.sandboxes.iter().zip(&compiled.sandboxes) {
        let (uid_start, uid_count) = model.user_range(s);
        let mut e = SandboxExplanation {
            name: s.name.clone(),
            tenant: s.tenant.clone(),
            runs: vec![
                format!("runs `{}` from image `{}` as uid {} gid {} in `{}`", s.command.join(" "), s.image, s.user, s.group, s.workdir),
                format!("warden-init is PID 1: it reaps zombies, forwards signals and kills the command {} ms after SIGTERM", s.grace_ms),
                format!("its own user namespace maps uids 0..{} to host uids {}..{}", uid_count, uid_start, uid_start as u64 + uid_count as u64),
                "no capabilities, no new privileges; its own pid, mount, ipc, uts, network and cgroup namespaces".to_string(),
                {
                    let whole = c.init.seccomp.iter().filter(|r| r.arg.is_none()).count();
                    let narrow = c.init.seccomp.len() - whole;
                    format!("seccomp denies {whole} syscalls (ptrace, bpf, mount, unshare, keyctl, kexec, module loading, io_uring, ...) and {narrow} narrower uses (clone into a new user namespace, the TIOCSTI and TIOCLINUX terminal ioctls)")
                },
            ],
            filesystem: Vec::new(),
            network: Vec::new(),
            inference: Vec::new(),
            limits: vec![format!(
                "at most {} of memory (no swap), {} processes, {:.2} CPUs, {} open files",
                format_size(s.limits.memory),
                s.limits.pids,
                s.limits.cpu_millis as f64 / 1000.0,
                s.limits.open_files
            )],
            relaxations: Vec::new(),
        };
        e.runs.push(match s.restart {
            Restart::Never => "is not restarted when it exits".to_string(),
            Restart::OnFailure { max, backoff_ms } => format!(
                "is restarted on failure up to {max} times, backing off from {backoff_ms} ms"
            ),
            Restart::Always { backoff_ms } => {
                format!("is always restarted, backing off from {backoff_ms} ms")
            }
        });
        let fs = &s.filesystem;
        e.filesystem
            .push("the root filesystem is read-only".to_string());
        for p in &fs.read_write {
            e.filesystem.push(format!(
                "`{p}` is a private writable tmpfs of at most {}",
                format_size(fs.tmpfs_size)
            ));
        }
        for b in &fs.binds {
            e.filesystem.push(format!(
                "host `{}` appears at `{}`, {}",
                b.source,
                b.at,
                if b.writable { "writable" } else { "read-only" }
            ));
        }
        for v in &fs.volumes {
            e.filesystem.push(format!(
                "tenant volume `{}` appears at `{}`, {}",
                v.volume,
                v.at,
                if v.writable { "writable" } else { "read-only" }
            ));
        }
        e.filesystem
            .push(match fs.landlock.unwrap_or(LandlockMode::Required) {
            LandlockMode::Required => {
                "Landlock enforces the same writable paths; the sandbox refuses to start without it"
                    .to_string()
            }
            LandlockMode::BestEffort => {
                "Landlock enforces the writable paths where the kernel supports it".to_string()
            }
            LandlockMode::Off => "Landlock is off".to_string(),
        });
        match &s.egress {
            None => e
                .network
                .push("no network at all: only a loopback interface".to_string()),
            Some(eg) => {
                e.network.push("the only way out is warden's egress proxy at 127.0.0.1:3128; names resolve once and private, loopback and metadata addresses are refused".to_string());
                for r in &eg.rules {
                    let target = match &r.target {
                        Target::Host(h) => h.clone(),
                        Target::Cidr(c) => c.to_string(),
                    };
                    let ports = if r.ports.is_empty() {
                        "any port".to_string()
                    } else {
                        format!(
                            "port {}",
                            r.ports
                                .iter()
                                .map(u16::to_string)
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    };
                    let mut line = match (&r.action, &r.http) {
                        (Action::Deny, _) => format!("may never reach {target} on {ports}"),
                        (Action::Allow, None) => format!("may reach {target} on {ports}"),
                        (Action::Allow, Some(h)) => {
                            let paths = if h.paths.is_empty() {
                                "any path".to_string()
                            } else {
                                h.paths.join(" ")
                            };
                            format!(
                                "may send plain HTTP {} to {target} on {ports}, paths {paths}",
                                h.methods.names().join("/")
                            )
                        }
                    };
                    if let Some(o) = &r.order {
                        let a = compiled.orders.autonomy(o);
                        line.push_str(&format!(" under standing order `{o}` ({})", a.as_str()));
                    }
                    if let Some(why) = &r.reason {
                        line.push_str(&format!(": {why}"));
                    }
                    e.network.push(line);
                }
                e.network.push(format!("everything else is refused and recorded for approval; idle tunnels close after {} s", eg.idle_timeout_secs));
            }
        }
        if let Some(inf) = &s.inference {
            e.inference.push(format!(
                "model calls go to warden's inference router at {ROUTER_ADDR} (`ANTHROPIC_BASE_URL`, `OPENAI_BASE_URL`); the sandbox holds a placeholder key and the router adds the provider's on the way out"
            ));
            for r in &inf.routes {
                e.inference.push(format!(
                    "models matching `{}` go to provider `{}`",
                    r.model, r.provider
                ));
            }
            for p in &inf.privacy {
                let dets: Vec<&str> = p.detect.iter().map(|d| d.as_str()).collect();
                let act = match &p.action {
                    PrivacyAction::Block => "are blocked".to_string(),
                    PrivacyAction::Redact => "are sent with the findings redacted".to_string(),
                    PrivacyAction::Reroute { to } => format!("go to `{to}` instead"),
                };
                e.inference
                    .push(format!("prompts containing {} {act}", dets.join(", ")));
            }
            e.inference.push(format!(
                "one audit event per call (never the prompt or the answer) goes to `<state>/sandboxes/{}/inference.jsonl`; an edit of routes, providers or privacy rules applies to the next call without a restart",
                s.name
            ));
        }
        let home = crate::agents::home(model, s).unwrap_or("/");
        for a in &s.agents {
            e.inference.push(match a {
                Agent::ClaudeCode => format!(
                    "Claude Code finds `{}/.claude.json` prepared (onboarding done, the placeholder key approved, `{}` trusted) and sends no non-essential traffic; a PreToolUse hook in its read-only managed settings asks the standing orders about every tool call",
                    home.trim_end_matches('/'),
                    s.workdir
                ),
                Agent::Codex => format!(
                    "Codex reads a read-only `{}/.codex/config.toml` that points it at the router over HTTP",
                    home.trim_end_matches('/')
                ),
            });
        }
        if s.user == 0 {
            e.relaxations
                .push("runs as root inside its user namespace (`user 0`)".to_string());
        }
        for cap in &s.capabilities {
            e.relaxations.push(format!("keeps capability {cap}"));
        }
        for sc in &s.allow_syscalls {
            e.relaxations.push(format!(
                "may call `{sc}` ({})",
                warden_wire::seccomp::why(sc).unwrap_or("")
            ));
        }
        match fs.landlock {
            Some(LandlockMode::Off) => e.relaxations.push("Landlock is off".to_string()),
            Some(LandlockMode::BestEffort) => {
                e.relaxations.push("Landlock is best-effort".to_string())
            }
            _ => {}
        }
        if let Some(eg) = &s.egress {
            for r in eg
                .rules
                .iter()
                .filter(|r| r.action == Action::Allow && r.ports.is_empty())
            {
                e.relaxations
                    .push(format!("the rule on line {} allows any port", r.loc.line));
            }
        }
        out.push(e);
    }
    let orders = compiled
        .orders
        .orders
        .iter()
        .map(|o| {
            format!(
                "`{}` ({}): {}{}{}",
                o.name,
                o.autonomy.as_str(),
                o.bounds,
                o.override_
                    .as_deref()
                    .map(|x| format!(" Override: {x}"))
                    .unwrap_or_default(),
                if o.tools.is_empty() {
                    String::new()
                } else {
                    format!(" Tool calls: {}", o.tools.join(", "))
                }
            )
        })
        .collect();
    Explanation {
        sandboxes: out,
        orders,
        unlisted: compiled.orders.unlisted.in_words().to_string(),
    }
}

impl Explanation {
    pub fn render(&self) -> String {
        let mut s = String::new();
        for e in &self.sandboxes {
            s.push_str(&format!("sandbox `{}`", e.name));
            if let Some(t) = &e.tenant {
                s.push_str(&format!(" (tenant `{t}`)"));
            }
            s.push('\n');
            for (title, lines) in [
                ("runs", &e.runs),
                ("files", &e.filesystem),
                ("network", &e.network),
                ("inference", &e.inference),
                ("limits", &e.limits),
                ("relaxed", &e.relaxations),
            ] {
                for (i, l) in lines.iter().enumerate() {
                    let head = if i == 0 {
                        format!("{title}:")
                    } else {
                        String::new()
                    };
                    s.push_str(&format!("  {head:<11}{l}\n"));
                }
            }
            s.push('\n');
        }
        if !self.orders.is_empty() {
            s.push_str(&format!(
                "standing orders (a tool call or action none names: {})\n",
                self.unlisted
            ));
            for o in &self.orders {
                s.push_str(&format!("  {o}\n"));
            }
        }
        s
    }
}
