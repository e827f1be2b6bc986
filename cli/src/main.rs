//! `palisade`: the operator's command line; parses arguments and calls the library.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use palisade_cli::containerd::ConfigVersion;
use palisade_cli::{check, gate, install, status};

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
    /// This node: kernel features, enforcers, installation, pods served.
    Status(StatusArgs),
    /// Add palisade's runtimes to containerd and install the binaries.
    Install(InstallArgs),
    /// Remove what `install` added.
    Uninstall(UninstallArgs),
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
}

impl Paths {
    fn layout(&self) -> anyhow::Result<install::Layout> {
        Ok(install::Layout {
            containerd_config: absolute(self.containerd_config.clone())?,
            bin_dir: absolute(self.bin_dir.clone())?,
            config_dir: absolute(self.config_dir.clone())?,
            state_dir: absolute(self.state_dir.clone())?,
            log_dir: absolute(self.log_dir.clone())?,
        })
    }
}

#[derive(Args)]
struct StatusArgs {
    #[arg(long, default_value = "/etc/containerd/config.toml")]
    containerd_config: PathBuf,
    #[arg(long, default_value = "/usr/local/bin")]
    bin_dir: PathBuf,
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

/// Paths as given, made absolute: containerd reads `ConfigPath` from its own directory.
fn absolute(path: PathBuf) -> anyhow::Result<PathBuf> {
    std::path::absolute(&path).with_context(|| format!("path {}", path.display()))
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
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
