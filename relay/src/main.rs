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
    /// Prints a body exactly as relay would forward it on a route (for testing a PII policy
    /// offline); exits 2 with the reason when relay would reject it.
    Scrub {
        /// The configuration file.
        #[arg(long, short)]
        config: PathBuf,
        /// The route whose PII policy applies.
        #[arg(long)]
        route: String,
        /// The request's Content-Type.
        #[arg(long, default_value = "application/json")]
        content_type: String,
        /// The body: a file, or `-` (default) for standard input.
        #[arg(default_value = "-")]
        input: PathBuf,
        /// Print the sanitization receipt (`relay-policy`, `relay-scrubbed-sha256`,
        /// `relay-pii-count`, one `name: value` per line) instead of the scrubbed body.
        #[arg(long)]
        receipt: bool,
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

fn scrub(
    config: &std::path::Path,
    route: &str,
    content_type: &str,
    input: &std::path::Path,
    receipt: bool,
) -> i32 {
    use std::io::{Read, Write};
    let cfg = match relay::config::Config::load(config) {
        Ok(c) => c,
        Err(e) => {
            eprint!("{e}");
            return 1;
        }
    };
    let mut body = Vec::new();
    let read = if input == std::path::Path::new("-") {
        std::io::stdin().read_to_end(&mut body).map(|_| ())
    } else {
        std::fs::File::open(input).and_then(|mut f| f.read_to_end(&mut body).map(|_| ()))
    };
    if let Err(e) = read {
        eprintln!("cannot read {}: {e}", input.display());
        return 1;
    }
    match relay::scrub::scrub_offline(&cfg.routes, &cfg.pii, route, Some(content_type), &body) {
        Ok((out, r)) => {
            let out = if receipt {
                let r = r.unwrap_or_else(|| relay::scrub::Receipt::new("none", "-", &out, 0));
                let mut text = String::new();
                for (name, value) in r.headers() {
                    text.push_str(&format!("{name}: {value}\n"));
                }
                text.into_bytes()
            } else {
                out
            };
            let mut stdout = std::io::stdout().lock();
            if stdout.write_all(&out).and_then(|_| stdout.flush()).is_err() {
                return 1;
            }
            0
        }
        Err(reason) => {
            eprintln!("relay would reject this request: {reason}");
            2
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format, cli.log_level.as_deref());
    let code = match cli.cmd {
        Cmd::Run { config, ready_file } => {
            relay::app::run(&config, relay::app::RunOptions { ready_file })
        }
        Cmd::Scrub {
            config,
            route,
            content_type,
            input,
            receipt,
        } => scrub(&config, &route, &content_type, &input, receipt),
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
