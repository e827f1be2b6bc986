//! `palisade`: the operator's command line; parses arguments and calls the library.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use palisade_cli::containerd::ConfigVersion;
use palisade_cli::{check, events, gate, install, profile, status};

#[derive(Parser)]
#[command(name = "palisade", version, about = "Palisade's operator tool")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Policy files.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// The HTTP gate's learned profiles.
    #[command(subcommand)]
    Gate(GateCommand),
    /// Learned per-workload profiles: show, export, promote.
    #[command(subcommand)]
    Profile(ProfileCommand),
    /// This node: kernel features, enforcers, installation, pods served.
    Status(StatusArgs),
    /// Add palisade's runtimes to containerd and install the binaries.
    Install(InstallArgs),
    /// Remove what `install` added.
    Uninstall(UninstallArgs),
    /// Read (and follow) the shim's event log, filtered.
    Events(EventsArgs),
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Validate KubeArmor policy files and show how each rule is enforced on this node.
    Check {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum GateCommand {
    /// Write a service's merged profile as one JSON document.
    Export {
        #[arg(long, default_value = "/var/lib/palisade/gate")]
        state_dir: PathBuf,
        #[arg(long)]
        service: String,
        #[arg(short = 'o', long)]
        output: Option<PathBuf>,
    },
    /// Validate a profile document and make it the service's imported profile.
    Import {
        #[arg(long, default_value = "/var/lib/palisade/gate")]
        state_dir: PathBuf,
        #[arg(long)]
        service: String,
        file: PathBuf,
    },
}

#[derive(Subcommand)]
enum ProfileCommand {
    /// What a workload's profile holds, its stage, and whether it can be promoted.
    Show {
        #[command(flatten)]
        at: ProfileAt,
    },
    /// The profile as a KubeArmorPolicy, a seccomp profile or a NetworkPolicy.
    Export {
        #[command(flatten)]
        at: ProfileAt,
        #[arg(long, default_value = "kubearmor", value_parser = ["kubearmor", "seccomp", "networkpolicy"])]
        format: String,
        /// A label of the workload's pods (key=value, repeatable); `app=<name>` when none.
        #[arg(long = "selector", value_parser = profile::parse_selector)]
        selector: Vec<(String, String)>,
        /// The cluster's service range, noted in the NetworkPolicy export.
        #[arg(long, value_parser = profile::parse_cidr)]
        service_range: Option<palisade_profile::Cidr>,
        #[arg(short = 'o', long)]
        output: Option<PathBuf>,
    },
    /// To the next stage now (never with a lossy or overflowed recording).
    Promote {
        #[command(flatten)]
        at: ProfileAt,
    },
    /// To STAGE, and hold it there: no promotion and no rollback by the rule.
    Pin {
        #[command(flatten)]
        at: ProfileAt,
        #[arg(value_parser = profile::parse_stage)]
        stage: palisade_profile::Stage,
    },
    /// Hold the stage the workload is in.
    Hold {
        #[command(flatten)]
        at: ProfileAt,
    },
    /// Let the rule promote and roll back again.
    Unpin {
        #[command(flatten)]
        at: ProfileAt,
    },
    /// Add the pending departures to the profile.
    Accept {
        #[command(flatten)]
        at: ProfileAt,
    },
}

#[derive(Args)]
struct ProfileAt {
    /// NAMESPACE/NAME.
    #[arg(value_parser = profile::parse_workload)]
    workload: palisade_profile::WorkloadId,
    /// The shims' `[profile] state_dir`.
    #[arg(long, default_value = profile::DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
}

#[derive(Args)]
struct Paths {
    /// containerd's configuration (version 2 or 3); created when missing.
    #[arg(long, default_value = "/etc/containerd/config.toml")]
    containerd_config: PathBuf,
    /// Where the shim and palisade-init go (containerd's PATH).
    #[arg(long, default_value = "/usr/local/bin")]
    bin_dir: PathBuf,
    /// The shim configurations (`<name>.toml`) and `policies/`.
    #[arg(long, default_value = "/etc/palisade")]
    config_dir: PathBuf,
    /// Node state: the gate's learned profiles under gate/.
    #[arg(long, default_value = "/var/lib/palisade")]
    state_dir: PathBuf,
    #[arg(long, default_value = "/var/log/palisade")]
    log_dir: PathBuf,
    /// The node's root directory as mounted here (an installer in a container): every path
    /// above is the node's and is read and written under DIR.
    #[arg(long, value_name = "DIR")]
    host_root: Option<PathBuf>,
}

impl Paths {
    fn layout(&self) -> anyhow::Result<install::Layout> {
        let host_root = self.host_root.clone().map(absolute).transpose()?;
        let node_path = |p: &PathBuf| -> anyhow::Result<PathBuf> {
            if host_root.is_none() {
                return absolute(p.clone());
            }
            // This process's working directory means nothing on the node.
            anyhow::ensure!(
                p.is_absolute(),
                "path {}: with --host-root, paths are the node's and must be absolute",
                p.display()
            );
            Ok(p.clone())
        };
        Ok(install::Layout {
            containerd_config: node_path(&self.containerd_config)?,
            bin_dir: node_path(&self.bin_dir)?,
            config_dir: node_path(&self.config_dir)?,
            state_dir: node_path(&self.state_dir)?,
            log_dir: node_path(&self.log_dir)?,
            host_root,
        })
    }
}

#[derive(Args)]
struct StatusArgs {
    #[arg(long, default_value = "/etc/containerd/config.toml")]
    containerd_config: PathBuf,
    #[arg(long, default_value = "/usr/local/bin")]
    bin_dir: PathBuf,
    /// The node's root directory as mounted here: the paths are the node's, read under DIR.
    #[arg(long, value_name = "DIR")]
    host_root: Option<PathBuf>,
    /// The learned profiles (the shims' `[profile] state_dir`).
    #[arg(long, default_value = profile::DEFAULT_STATE_DIR)]
    profile_state_dir: PathBuf,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct InstallArgs {
    #[command(flatten)]
    paths: Paths,
    /// Print what would change (a unified diff) and change nothing.
    #[arg(long)]
    dry_run: bool,
    /// The shim binary to install (default: beside this program).
    #[arg(long)]
    shim: Option<PathBuf>,
    /// The palisade-init binary to install (default: beside this program).
    #[arg(long)]
    init: Option<PathBuf>,
    /// Version of a new containerd config (default: what the installed containerd reads).
    #[arg(long, value_parser = ["2", "3"])]
    config_version: Option<String>,
}

#[derive(Args)]
struct EventsArgs {
    /// The shim configuration whose `[events] log_dir` holds the log (defaults apply when
    /// the default file is absent).
    #[arg(long, default_value = palisade_config::DEFAULT_CONFIG_PATH)]
    config: PathBuf,
    /// Read the log here instead of the configuration's `[events] log_dir`.
    #[arg(long)]
    log_dir: Option<PathBuf>,
    /// Keep reading as events are appended, across rotations (like `tail -F`).
    #[arg(short = 'f', long)]
    follow: bool,
    /// The pod's namespace, exactly.
    #[arg(long)]
    namespace: Option<String>,
    /// The pod's name, exactly.
    #[arg(long)]
    pod: Option<String>,
    /// The container's name, exactly.
    #[arg(long)]
    container: Option<String>,
    /// The rule's name, exactly.
    #[arg(long)]
    rule: Option<String>,
    /// The lowest severity shown (1 to 10).
    #[arg(long, value_parser = events::parse_severity)]
    severity: Option<palisade_events::Severity>,
    /// audit, block, kill or restart.
    #[arg(long, value_parser = events::parse_action)]
    action: Option<palisade_events::Action>,
    /// Events from this time on: RFC 3339, or a duration back from now (90s, 15m, 2h, 7d).
    #[arg(long)]
    since: Option<String>,
    /// Print each event as the JSON line the shim wrote.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct UninstallArgs {
    #[command(flatten)]
    paths: Paths,
    #[arg(long)]
    dry_run: bool,
    /// Also remove the shim configurations, the state and the logs.
    #[arg(long)]
    purge: bool,
}

fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value).context("serializing the report")?;
    emit(&format!("{text}\n"))
}

fn print_report(report: &install::Report, dry_run: bool) -> anyhow::Result<()> {
    let mut text = String::new();
    if dry_run {
        text.push_str(&report.diff);
    }
    for a in &report.actions {
        text.push_str(a);
        text.push('\n');
    }
    emit(&text)
}

/// Writes to stdout; a reader that went away (`| head`) is not an error.
fn emit(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e).context("writing to stdout"),
        _ => Ok(()),
    }
}

/// The log directory: `--log-dir`, else the configuration's; a missing default
/// configuration means the shim's defaults.
fn events_log_dir(args: &EventsArgs) -> anyhow::Result<PathBuf> {
    if let Some(dir) = &args.log_dir {
        return Ok(dir.clone());
    }
    let default = std::path::Path::new(palisade_config::DEFAULT_CONFIG_PATH);
    if args.config == default && !default.exists() {
        return Ok(palisade_config::EventSettings::default().log_dir);
    }
    Ok(palisade_config::Config::load(&args.config)?.events.log_dir)
}

/// How often a followed log is checked for new lines.
const FOLLOW_POLL: std::time::Duration = std::time::Duration::from_millis(200);

fn run_events(args: EventsArgs) -> anyhow::Result<ExitCode> {
    let dir = events_log_dir(&args)?;
    let since = args
        .since
        .as_deref()
        .map(|s| events::parse_since(s, std::time::SystemTime::now()))
        .transpose()?;
    let filter = events::Filter {
        namespace: args.namespace,
        pod: args.pod,
        container: args.container,
        rule: args.rule,
        min_severity: args.severity,
        action: args.action,
        since,
    };
    if !args.follow && !dir.is_dir() {
        anyhow::bail!("event log {}: no such directory", dir.display());
    }
    let (mut log, mut lines) = events::Log::open(&dir)?;
    let mut warned_lost = false;
    loop {
        let mut text = String::new();
        for line in lines {
            match line {
                events::Line::Event { event, raw } => {
                    if filter.matches(&event) {
                        if args.json {
                            text.push_str(&raw);
                        } else {
                            text.push_str(&events::human_line(&event));
                        }
                        text.push('\n');
                    }
                }
                events::Line::Malformed { file, line, reason } => {
                    eprintln!(
                        "palisade: {}:{line}: malformed event, skipped: {reason}",
                        file.display()
                    );
                }
            }
        }
        if !text.is_empty() {
            let mut out = std::io::stdout().lock();
            match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
                // The reader went away (`| head`): done, also when following.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                    return Ok(ExitCode::SUCCESS)
                }
                Err(e) => return Err(e).context("writing to stdout"),
                Ok(()) => {}
            }
        }
        if log.lost && !warned_lost {
            eprintln!(
                "palisade: event log {}: rotated faster than it was read; some events were missed",
                dir.display()
            );
            warned_lost = true;
        }
        if !args.follow {
            return Ok(ExitCode::SUCCESS);
        }
        std::thread::sleep(FOLLOW_POLL);
        lines = log.poll()?;
    }
}

/// Paths as given, made absolute: containerd reads `ConfigPath` from its own directory.
fn absolute(path: PathBuf) -> anyhow::Result<PathBuf> {
    std::path::absolute(&path).with_context(|| format!("path {}", path.display()))
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// One line for what a profile command did: `now` the stage it moved to, `held at` the one
/// it pinned.
fn told(
    at: &ProfileAt,
    (event, stage): (palisade_profile::Event, palisade_profile::Stage),
    verb: &str,
) -> anyhow::Result<ExitCode> {
    emit(&format!(
        "workload {}: {:?}: {}, {verb} {}\n",
        at.workload,
        event.kind,
        event.reason,
        stage.name()
    ))?;
    Ok(ExitCode::SUCCESS)
}

fn run_profile(command: ProfileCommand) -> anyhow::Result<ExitCode> {
    let change = |at: ProfileAt, command| -> anyhow::Result<ExitCode> {
        let changed = profile::apply(&at.state_dir, &at.workload, command, now_secs())?;
        told(&at, changed, "now")
    };
    match command {
        ProfileCommand::Show { at } => {
            let doc = profile::load(&at.state_dir, &at.workload)?;
            emit(&profile::show(&doc))?;
            Ok(ExitCode::SUCCESS)
        }
        ProfileCommand::Export {
            at,
            format,
            selector,
            service_range,
            output,
        } => {
            let doc = profile::load(&at.state_dir, &at.workload)?;
            let selector = selector.into_iter().collect();
            let out = profile::export(&doc, format.parse()?, &selector, service_range)?;
            for note in &out.notes {
                eprintln!("palisade: note: {note}");
            }
            match output {
                Some(path) => std::fs::write(&path, &out.text)
                    .with_context(|| format!("writing {}", path.display()))?,
                None => emit(&out.text)?,
            }
            Ok(ExitCode::SUCCESS)
        }
        ProfileCommand::Promote { at } => change(at, palisade_profile::Command::Promote),
        ProfileCommand::Pin { at, stage } => change(at, palisade_profile::Command::Pin(stage)),
        ProfileCommand::Unpin { at } => change(at, palisade_profile::Command::Unpin),
        ProfileCommand::Accept { at } => change(at, palisade_profile::Command::Accept),
        ProfileCommand::Hold { at } => {
            let held = profile::hold(&at.state_dir, &at.workload, now_secs())?;
            told(&at, held, "held at")
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Profile(command) => run_profile(command),
        Command::Policy(PolicyCommand::Check { files, json }) => {
            let kernel = palisade_sandbox::KernelFeatures::probe()
                .context("probing this node's kernel features")?;
            let report = check::check_files(&files, &kernel)?;
            if json {
                print_json(&report)?;
            } else {
                emit(&report.render())?;
            }
            Ok(if report.valid() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Gate(GateCommand::Export {
            state_dir,
            service,
            output,
        }) => {
            let doc = gate::export(&state_dir, &service)?;
            match output {
                Some(path) => std::fs::write(&path, format!("{doc}\n"))
                    .with_context(|| format!("writing {}", path.display()))?,
                None => emit(&format!("{doc}\n"))?,
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Gate(GateCommand::Import {
            state_dir,
            service,
            file,
        }) => {
            let doc = std::fs::read_to_string(&file)
                .with_context(|| format!("profile {}", file.display()))?;
            let path = gate::import(&state_dir, &service, &doc)
                .with_context(|| format!("profile {}", file.display()))?;
            emit(&format!(
                "service {service}: imported into {} (loaded by the service's next pod)\n",
                path.display()
            ))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Status(args) => {
            let s = status::status(&status::StatusOptions {
                bin_dir: args.bin_dir,
                containerd_config: args.containerd_config,
                proc_root: PathBuf::from("/proc"),
                host_root: args.host_root,
                profile_state_dir: args.profile_state_dir,
            })?;
            if args.json {
                print_json(&s)?;
            } else {
                emit(&s.render())?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Install(args) => {
            let config_version = args.config_version.as_deref().map(|v| match v {
                "3" => ConfigVersion::V3,
                _ => ConfigVersion::V2,
            });
            let report = install::install(
                &args.paths.layout()?,
                &install::InstallOptions {
                    dry_run: args.dry_run,
                    shim: args.shim,
                    init: args.init,
                    config_version,
                },
            )?;
            print_report(&report, args.dry_run)?;
            if !args.dry_run {
                emit(&format!("{}\n", install::next_steps()))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Events(args) => run_events(args),
        Command::Uninstall(args) => {
            let report = install::uninstall(&args.paths.layout()?, args.dry_run, args.purge)?;
            print_report(&report, args.dry_run)?;
            if !args.dry_run {
                emit("then: systemctl restart containerd\n")?;
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            // Library errors name their cause already; print each cause once.
            let mut text = String::new();
            for cause in e.chain() {
                let cause = cause.to_string();
                if !text.contains(&cause) {
                    if !text.is_empty() {
                        text.push_str(": ");
                    }
                    text.push_str(&cause);
                }
            }
            eprintln!("palisade: {text}");
            ExitCode::from(1)
        }
    }
}
