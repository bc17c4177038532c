//! The `warden` command line: argument parsing, printing and exit codes. Everything else
//! lives in the library crates.
#![allow(clippy::print_stdout, clippy::print_stderr)]

#[global_allocator]
static GLOBAL: alloc::Allocator = alloc::Allocator;

mod alloc;
mod commands;
mod deploy;
mod multicall;
mod project;
mod services;
mod ui;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// Kernel-enforced sandboxes for AI coding agents, declared in one KDL file.
#[derive(Parser)]
#[command(name = "warden", version, about, max_term_width = 100)]
struct Cli {
    /// Print data as JSON (for scripts).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a file; diagnostics go to stderr; exit 1 if invalid.
    Check { file: Option<PathBuf> },
    /// Format a file canonically, keeping comments.
    Fmt {
        /// Only check; exit 1 if the file is not formatted.
        #[arg(long)]
        check: bool,
        file: Option<PathBuf>,
    },
    /// Say what each sandbox may do, in plain words.
    Explain { file: Option<PathBuf> },
    /// Run the inline policy tests (`test` nodes).
    Test { file: Option<PathBuf> },
    /// Build images and bundles.
    Build {
        file: Option<PathBuf>,
        /// Output directory.
        #[arg(long, default_value = "build")]
        out: PathBuf,
        /// Write only `<out>/<sandbox>/config.json` and `warden.json`, no images.
        #[arg(long)]
        spec_only: bool,
    },
    /// List the destinations sandboxes were refused, waiting for a human.
    Approvals { file: Option<PathBuf> },
    /// Allow a pending destination: adds the rule to the sandbox's `egress` block in the
    /// file (comments and layout kept); a running sandbox reloads it within a second.
    Approve {
        id: String,
        file: Option<PathBuf>,
        /// When a standing order held it: also grant the order (it acts on its own
        /// from now on; `warden orders revoke` takes that back).
        #[arg(long)]
        always: bool,
    },
    /// The standing orders, each with its history; `grant` / `revoke` change one line.
    #[command(args_conflicts_with_subcommands = true)]
    Orders {
        #[command(subcommand)]
        action: Option<OrdersAction>,
        file: Option<PathBuf>,
    },
    /// Refuse a pending destination for good: it stops being listed.
    Deny { id: String, file: Option<PathBuf> },
    /// Build if needed and run one sandbox in the foreground; exits with its code.
    Run {
        file: Option<PathBuf>,
        /// Which sandbox (needed when the file declares more than one).
        #[arg(long)]
        sandbox: Option<String>,
        /// Run this instead of the sandbox's command.
        #[arg(last = true)]
        command: Vec<String>,
    },
    /// Show what `apply` would change: `+ create`, `-/+ replace`, `~ reload`, `- destroy`.
    Plan {
        file: Option<PathBuf>,
        /// Save the plan; `warden apply PLAN` then applies exactly it.
        #[arg(long = "out", value_name = "PLAN")]
        save: Option<PathBuf>,
    },
    /// Converge the machine to the file (or to a plan saved by `plan --out`).
    Apply {
        /// A warden file, or a plan saved by `warden plan --out`.
        target: Option<PathBuf>,
        /// Do not ask for confirmation.
        #[arg(long, short = 'y')]
        yes: bool,
    },
    /// Stop and remove every sandbox the file declared (and only those).
    Destroy {
        file: Option<PathBuf>,
        #[arg(long, short = 'y')]
        yes: bool,
    },
    /// List applied sandboxes: state, pid, uptime, restarts, image, memory.
    Ps,
    /// Print a sandbox's output (stdout to stdout, stderr to stderr).
    Logs {
        name: String,
        /// Keep printing new output until the sandbox is destroyed.
        #[arg(long, short = 'f')]
        follow: bool,
        /// Only the last N lines of each stream.
        #[arg(long, value_name = "N")]
        tail: Option<usize>,
    },
    /// Run a command inside an applied, running sandbox, with its isolation.
    Exec {
        name: String,
        /// Give the command a terminal of its own (raw mode, window size and Ctrl-C relayed).
        #[arg(short = 't', long)]
        tty: bool,
        /// The command and its arguments.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// A tenant's secrets, sealed under the state directory (`WARDEN_KEK_FILE` names the
    /// key-encryption key).
    Secret {
        #[command(subcommand)]
        action: SecretAction,
    },
    /// The control API over HTTP(S): tenants' sandboxes, approvals, orders, secrets and
    /// audit, for bearer tokens checked against the file's `auth` node.
    Serve {
        file: Option<PathBuf>,
        /// Address and port to listen on.
        #[arg(long, default_value = "127.0.0.1:8700", value_name = "ADDR")]
        listen: String,
        /// Disconnect a client that has not sent a request's head in this time.
        #[arg(long, value_name = "DURATION")]
        header_timeout: Option<String>,
    },
    /// The audit store: approvals, denials, orders, secrets, refused logins, egress.
    Audit {
        /// The file whose `audit` node says where the store is (default `warden.kdl` when
        /// present, else SQLite under the state directory).
        file: Option<PathBuf>,
        /// Only this tenant's events.
        #[arg(long)]
        tenant: Option<String>,
        /// Only this sandbox's events.
        #[arg(long)]
        sandbox: Option<String>,
        /// Only events of this kind (e.g. `approval-approved`, `login-refused`, `egress`).
        #[arg(long)]
        kind: Option<String>,
        /// Only events at or after this time (unix seconds).
        #[arg(long, value_name = "UNIX_SECONDS")]
        since: Option<u64>,
    },
    /// The supervisor of one applied sandbox (started by `apply`).
    #[command(hide = true)]
    Supervise { launch: PathBuf },
}

#[derive(Subcommand)]
enum OrdersAction {
    /// Let the order act on its own (`autonomy="auto"`).
    Grant { name: String, file: Option<PathBuf> },
    /// A human first again (`autonomy="ask"`).
    Revoke { name: String, file: Option<PathBuf> },
}

#[derive(Subcommand)]
enum SecretAction {
    /// Store a secret; the value is read from stdin (one trailing newline dropped).
    Set { tenant: String, name: String },
    /// The tenant's secrets: names and data key versions, never values.
    Ls { tenant: String },
    /// Remove a secret.
    Rm { tenant: String, name: String },
    /// A new data key for the tenant: new secrets use it, old ones keep opening.
    Rotate { tenant: String },
}

pub enum Exit {
    Ok,
    /// Bad file, denied, failed test.
    User,
    /// warden itself failed.
    Internal,
    /// The exit code of the sandboxed command.
    Code(i32),
}

fn main() -> ExitCode {
    // One binary: installed in every image as `/.warden/init`, it is the sandbox's PID 1.
    if multicall::is_init() {
        return multicall::init_main();
    }
    // The supervisor is long-lived: it skips argument parsing so the pages of the parser
    // are never touched (they would stay resident for the sandbox's lifetime).
    let args: Vec<std::ffi::OsString> = std::env::args_os().take(4).collect();
    if args.len() == 3 && args[1] == deploy::supervisor::SUBCOMMAND {
        let code = deploy::supervisor::main(std::path::Path::new(&args[2]));
        return ExitCode::from(u8::try_from(code).unwrap_or(2));
    }
    // `warden run`: what needs no file starts before the command line is even parsed.
    let early = (args.get(1).is_some_and(|a| a == "run")).then(commands::run::Early::start);
    let cli = Cli::parse();
    let out = ui::Out {
        json: cli.json,
        diagnostics_as_json: matches!(cli.command, Command::Check { .. }),
    };
    let result = match cli.command {
        Command::Check { file } => commands::check::run(&out, &project::file(file)),
        Command::Fmt { check, file } => commands::fmt::run(&out, &project::file(file), check),
        Command::Explain { file } => commands::explain::run(&out, &project::file(file)),
        Command::Test { file } => commands::test::run(&out, &project::file(file)),
        Command::Build {
            file,
            out: dir,
            spec_only,
        } => commands::build::run(&out, &project::file(file), &dir, spec_only),
        Command::Approvals { file } => commands::approvals::list(&out, &project::file(file)),
        Command::Approve { id, file, always } => {
            commands::approvals::approve(&out, &project::file(file), &id, always)
        }
        Command::Orders { action, file } => match action {
            None => commands::orders::list(&out, &project::file(file)),
            Some(OrdersAction::Grant { name, file }) => commands::orders::set(
                &out,
                &project::file(file),
                &name,
                warden_wire::orders::Autonomy::Auto,
            ),
            Some(OrdersAction::Revoke { name, file }) => commands::orders::set(
                &out,
                &project::file(file),
                &name,
                warden_wire::orders::Autonomy::Ask,
            ),
        },
        Command::Deny { id, file } => commands::approvals::deny(&out, &project::file(file), &id),
        Command::Run {
            file,
            sandbox,
            command,
        } => commands::run::run(
            &out,
            &project::file(file),
            sandbox.as_deref(),
            command,
            early,
        ),
        Command::Plan { file, save } => {
            commands::deploy::plan_cmd(&out, &project::file(file), save.as_deref())
        }
        Command::Apply { target, yes } => {
            commands::deploy::apply_cmd(&out, &project::file(target), yes)
        }
        Command::Destroy { file, yes } => {
            commands::deploy::destroy_cmd(&out, &project::file(file), yes)
        }
        Command::Ps => commands::ps::ps(&out),
        Command::Logs { name, follow, tail } => commands::ps::logs(&name, follow, tail),
        Command::Exec { name, tty, command } => commands::ps::exec(&name, tty, command),
        Command::Secret { action } => match action {
            SecretAction::Set { tenant, name } => commands::secret::set(&out, &tenant, &name),
            SecretAction::Ls { tenant } => commands::secret::ls(&out, &tenant),
            SecretAction::Rm { tenant, name } => commands::secret::rm(&out, &tenant, &name),
            SecretAction::Rotate { tenant } => commands::secret::rotate(&out, &tenant),
        },
        Command::Serve {
            file,
            listen,
            header_timeout,
        } => commands::serve::serve(
            &out,
            &project::file(file),
            commands::serve::Options {
                listen,
                header_timeout,
            },
        ),
        Command::Audit {
            file,
            tenant,
            sandbox,
            kind,
            since,
        } => commands::audit::query(
            &out,
            commands::audit::Query {
                file,
                tenant,
                sandbox,
                kind,
                since,
            },
        ),
        Command::Supervise { launch } => Ok(Exit::Code(deploy::supervisor::main(&launch))),
    };
    match result {
        Ok(Exit::Ok) => ExitCode::SUCCESS,
        Ok(Exit::User) => ExitCode::from(1),
        Ok(Exit::Internal) => ExitCode::from(2),
        Ok(Exit::Code(c)) => ExitCode::from(u8::try_from(c).unwrap_or(255)),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
