//! Turns the compiled bundle's config into the config of one run. Pure: no IO here, so the
//! rules are unit-tested without root.

use std::path::{Path, PathBuf};
use std::time::Duration;

use libcontainer::oci_spec::runtime::{LinuxNamespaceType, Mount, Spec};
use warden_wire::init::{INIT_CONFIG_ENV, INIT_PATH, InitConfig};

/// The cgroup parent used when the bundle names none.
pub(crate) const DEFAULT_CGROUP_PARENT: &str = "/warden";

/// What the runtime needs to know about a run besides the spec it hands to libcontainer.
#[derive(Debug)]
pub(crate) struct RunSpec {
    pub spec: Spec,
    /// Absolute cgroup path of this run (relative to each hierarchy's mount point).
    pub cgroup_path: PathBuf,
    /// The container gets a network namespace of its own (not one joined by path).
    pub new_netns: bool,
    /// warden-init's grace period, when the bundle runs warden-init.
    pub grace_period: Option<Duration>,
}

/// Applies the run's changes to a copy of the bundle's spec:
/// - `args_override` replaces the command (after `--` when the bundle runs warden-init);
/// - the cgroup path becomes `<parent of the bundle's cgroupsPath>/<id>`, so that two runs
///   of the same sandbox never share (or delete) each other's cgroups;
/// - the root path and relative bind-mount sources are made absolute against `bundle`,
///   because libcontainer reads the copy from another directory.
pub(crate) fn for_run(
    mut spec: Spec,
    bundle: &Path,
    id: &str,
    args_override: Option<&[String]>,
) -> Result<RunSpec, String> {
    if spec.hooks().is_some() {
        // warden's own hook is `RunOptions::before_start`; OCI hooks would also need
        // libcontainer's slower delete path to run their poststop part.
        return Err("OCI `hooks` are not supported by warden's runtime".into());
    }
    let mut process = spec.process().clone().ok_or("no `process` section")?;
    if let Some(cmd) = args_override {
        if cmd.is_empty() {
            return Err("the command override is empty".into());
        }
        let args = process.args().clone().unwrap_or_default();
        process.set_args(Some(override_command(&args, cmd)));
    }
    let grace_period = init_grace_period(process.env().as_deref().unwrap_or_default())?;
    spec.set_process(Some(process));

    let root = spec.root().clone().ok_or("no `root` section")?;
    let mut root = root;
    root.set_path(absolute(bundle, root.path()));
    spec.set_root(Some(root));

    if let Some(mounts) = spec.mounts().clone() {
        let mounts: Vec<Mount> = mounts
            .into_iter()
            .map(|mut m| {
                let is_bind = m.typ().as_deref() == Some("bind")
                    || m.options()
                        .as_ref()
                        .is_some_and(|o| o.iter().any(|o| o == "bind" || o == "rbind"));
                if let (true, Some(src)) = (is_bind, m.source().clone()) {
                    m.set_source(Some(absolute(bundle, &src)));
                }
                m
            })
            .collect();
        spec.set_mounts(Some(mounts));
    }

    let mut linux = spec.linux().clone().ok_or("no `linux` section")?;
    let parent = match linux.cgroups_path() {
        Some(p) if p.is_absolute() => p.parent().unwrap_or(Path::new("/")).to_path_buf(),
        Some(p) => return Err(format!("cgroupsPath `{}` is not absolute", p.display())),
        None => PathBuf::from(DEFAULT_CGROUP_PARENT),
    };
    let cgroup_path = parent.join(id);
    linux.set_cgroups_path(Some(cgroup_path.clone()));
    let new_netns = linux.namespaces().as_ref().is_some_and(|ns| {
        ns.iter()
            .any(|n| n.typ() == LinuxNamespaceType::Network && n.path().is_none())
    });
    spec.set_linux(Some(linux));

    Ok(RunSpec {
        spec,
        cgroup_path,
        new_netns,
        grace_period,
    })
}

/// `["/.warden/init", "--", old...]` + `cmd` → `["/.warden/init", "--", cmd...]`; a bundle
/// that does not run warden-init gets `cmd` as its whole command line.
fn override_command(args: &[String], cmd: &[String]) -> Vec<String> {
    let runs_init = args.first().is_some_and(|a| a == INIT_PATH);
    match args.iter().position(|a| a == "--") {
        Some(sep) if runs_init => args[..=sep].iter().chain(cmd).cloned().collect(),
        _ => cmd.to_vec(),
    }
}

pub(crate) fn init_grace_period(env: &[String]) -> Result<Option<Duration>, String> {
    let prefix = format!("{INIT_CONFIG_ENV}=");
    let Some(json) = env.iter().find_map(|e| e.strip_prefix(&prefix)) else {
        return Ok(None);
    };
    let config: InitConfig = serde_json::from_str(json)
        .map_err(|e| format!("`{INIT_CONFIG_ENV}` is not a valid init config: {e}"))?;
    Ok(Some(Duration::from_millis(config.grace_period_ms)))
}

/// Makes libcontainer set the process's supplementary groups: it calls `setgroups` only
/// for a non-empty `additionalGids`, and otherwise leaves the process with the groups of
/// the warden process that created it (host groups, unmapped in the container but still
/// granting access to host files of those groups). An empty list becomes the process's
/// own gid. Only for a privileged (root) caller: libcontainer refuses supplementary groups
/// in a rootless user namespace.
pub(crate) fn pin_supplementary_groups(spec: &mut Spec) {
    let Some(mut process) = spec.process().clone() else {
        return;
    };
    let user = process.user_mut();
    if user.additional_gids().as_ref().is_none_or(|g| g.is_empty()) {
        let gid = user.gid();
        user.set_additional_gids(Some(vec![gid]));
    }
    spec.set_process(Some(process));
}

fn absolute(bundle: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        bundle.join(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libcontainer::oci_spec::runtime::{
        LinuxBuilder, LinuxNamespaceBuilder, MountBuilder, ProcessBuilder, RootBuilder, SpecBuilder,
    };

    fn strings(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    fn spec(args: &[&str], env: Vec<String>, cgroups: Option<&str>) -> Spec {
        let mut linux = LinuxBuilder::default()
            .namespaces(vec![
                LinuxNamespaceBuilder::default()
                    .typ(LinuxNamespaceType::Network)
                    .build()
                    .unwrap(),
            ])
            .build()
            .unwrap();
        linux.set_cgroups_path(cgroups.map(PathBuf::from));
        SpecBuilder::default()
            .process(
                ProcessBuilder::default()
                    .args(strings(args))
                    .env(env)
                    .build()
                    .unwrap(),
            )
            .root(
                RootBuilder::default()
                    .path("rootfs")
                    .readonly(true)
                    .build()
                    .unwrap(),
            )
            .mounts(vec![
                MountBuilder::default()
                    .destination("/w")
                    .typ("bind")
                    .source("work")
                    .options(strings(&["rbind", "rw"]))
                    .build()
                    .unwrap(),
                MountBuilder::default()
                    .destination("/proc")
                    .typ("proc")
                    .source("proc")
                    .build()
                    .unwrap(),
            ])
            .linux(linux)
            .build()
            .unwrap()
    }

    #[test]
    fn override_replaces_the_command_after_the_init_separator() {
        let s = spec(
            &["/.warden/init", "--", "/bin/agent", "-v"],
            vec![],
            Some("/warden/claude"),
        );
        let run = for_run(
            s,
            Path::new("/b"),
            "claude-1",
            Some(&strings(&["/bin/sh", "-c", "x"])),
        )
        .unwrap();
        assert_eq!(
            run.spec
                .process()
                .as_ref()
                .unwrap()
                .args()
                .as_ref()
                .unwrap(),
            &strings(&["/.warden/init", "--", "/bin/sh", "-c", "x"])
        );
    }

    #[test]
    fn override_without_init_replaces_everything() {
        let s = spec(&["/bin/agent"], vec![], None);
        let run = for_run(s, Path::new("/b"), "x", Some(&strings(&["/bin/true"]))).unwrap();
        assert_eq!(
            run.spec
                .process()
                .as_ref()
                .unwrap()
                .args()
                .as_ref()
                .unwrap(),
            &strings(&["/bin/true"])
        );
    }

    #[test]
    fn empty_override_is_refused() {
        let s = spec(&["/bin/agent"], vec![], None);
        let err = for_run(s, Path::new("/b"), "x", Some(&[])).unwrap_err();
        assert_eq!(err, "the command override is empty");
    }

    #[test]
    fn cgroup_path_is_unique_per_run_under_the_bundle_parent() {
        let s = spec(&["/bin/agent"], vec![], Some("/warden/claude"));
        let run = for_run(s, Path::new("/b"), "claude-7f3a", None).unwrap();
        assert_eq!(run.cgroup_path, PathBuf::from("/warden/claude-7f3a"));
        assert_eq!(
            run.spec.linux().as_ref().unwrap().cgroups_path().as_deref(),
            Some(Path::new("/warden/claude-7f3a"))
        );
        let s = spec(&["/bin/agent"], vec![], None);
        assert_eq!(
            for_run(s, Path::new("/b"), "r1", None).unwrap().cgroup_path,
            PathBuf::from("/warden/r1")
        );
    }

    #[test]
    fn relative_cgroup_path_is_refused() {
        let s = spec(&["/bin/agent"], vec![], Some("warden/claude"));
        let err = for_run(s, Path::new("/b"), "x", None).unwrap_err();
        assert_eq!(err, "cgroupsPath `warden/claude` is not absolute");
    }

    #[test]
    fn root_and_bind_sources_become_absolute() {
        let s = spec(&["/bin/agent"], vec![], None);
        let run = for_run(s, Path::new("/bundles/claude"), "x", None).unwrap();
        assert_eq!(
            run.spec.root().as_ref().unwrap().path(),
            Path::new("/bundles/claude/rootfs")
        );
        let mounts = run.spec.mounts().as_ref().unwrap();
        assert_eq!(
            mounts[0].source().as_deref(),
            Some(Path::new("/bundles/claude/work"))
        );
        assert_eq!(mounts[1].source().as_deref(), Some(Path::new("proc")));
        assert!(run.new_netns);
    }

    #[test]
    fn grace_period_comes_from_the_init_config() {
        let config = InitConfig {
            version: 1,
            landlock: warden_wire::init::Landlock {
                mode: warden_wire::init::LandlockMode::Off,
                read_exec: vec![],
                read_write: vec![],
            },
            seccomp: vec![],
            grace_period_ms: 2500,
            files: Vec::new(),
        };
        let env = vec![format!(
            "{INIT_CONFIG_ENV}={}",
            serde_json::to_string(&config).unwrap()
        )];
        let s = spec(&["/.warden/init", "--", "/bin/agent"], env, None);
        let run = for_run(s, Path::new("/b"), "x", None).unwrap();
        assert_eq!(run.grace_period, Some(Duration::from_millis(2500)));
    }

    #[test]
    fn supplementary_groups_default_to_the_process_gid() {
        let mut s = spec(&["/bin/agent"], vec![], None);
        let mut process = s.process().clone().unwrap();
        process.user_mut().set_gid(1000);
        s.set_process(Some(process));
        pin_supplementary_groups(&mut s);
        let gids = |s: &Spec| {
            s.process()
                .as_ref()
                .unwrap()
                .user()
                .additional_gids()
                .clone()
        };
        assert_eq!(gids(&s), Some(vec![1000]));

        let mut process = s.process().clone().unwrap();
        process.user_mut().set_additional_gids(Some(vec![5, 20]));
        s.set_process(Some(process));
        pin_supplementary_groups(&mut s);
        assert_eq!(gids(&s), Some(vec![5, 20]));
    }

    #[test]
    fn broken_init_config_is_refused() {
        let env = vec![format!("{INIT_CONFIG_ENV}={{")];
        let s = spec(&["/.warden/init", "--", "/bin/agent"], env, None);
        let err = for_run(s, Path::new("/b"), "x", None).unwrap_err();
        assert!(
            err.starts_with("`WARDEN_INIT_CONFIG` is not a valid init config"),
            "{err}"
        );
    }
}
