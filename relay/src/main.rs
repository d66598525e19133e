//! The `relay` command line: `run`, `check`, `scrub`, `doctor`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "relay", version, about = "PII-scrubbing HTTP log relay")]
struct Cli {
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    /// Log filter (tracing EnvFilter syntax), e.g. `info` or `relay=debug`. Env: RELAY_LOG.
    #[arg(long, global = true)]
    log_level: Option<String>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Cmd {
    /// Runs the relay.
    Run {
        /// The configuration file.
        #[arg(long, short)]
        config: PathBuf,
        /// Write the bound addresses as JSON to this file once listening.
        #[arg(long)]
        ready_file: Option<PathBuf>,
    },
    /// Checks this host for what relay needs (CPU quota, io_uring, BPF, limits, sysctls,
    /// brokers, upstreams); exits non-zero when a check fails.
    Doctor {
        /// The configuration file (enables the Kafka, upstream and interface checks).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Validates a configuration file and prints it with every default filled in.
    Check {
        /// The configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
}

fn init_logging(format: LogFormat, level: Option<&str>) {
    let filter = level
        .map(str::to_string)
        .or_else(|| std::env::var("RELAY_LOG").ok())
        .unwrap_or_else(|| "info".into());
    let filter = tracing_subscriber::EnvFilter::try_new(&filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => b.init(),
        LogFormat::Json => b.json().init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format, cli.log_level.as_deref());
    let code = match cli.cmd {
        Cmd::Run { config, ready_file } => {
            relay::app::run(&config, relay::app::RunOptions { ready_file })
        }
        Cmd::Doctor { config } => match config.map(|c| relay::config::Config::load(&c)) {
            None => relay::doctor::run(None),
            Some(Ok(c)) => relay::doctor::run(Some(&c)),
            Some(Err(e)) => {
                eprint!("{e}");
                1
            }
        },
        Cmd::Check { config } => match relay::config::Config::load(&config) {
            Ok(c) => {
                print!("{}", c.to_effective_toml());
                0
            }
            Err(e) => {
                eprint!("{e}");
                1
            }
        },
    };
    ExitCode::from(code as u8)
}
