//! The `tokenproxy` binary: flags, logging and exit codes. Everything else is in the library.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use tokenproxy::config::{Config, ConfigError};
use tokenproxy::signals::stop_signal;
use tokenproxy::ConfigSource;

/// Exit code for a bad config (EX_CONFIG from sysexits.h).
const EXIT_CONFIG: u8 = 78;

#[derive(Parser)]
#[command(
    name = "tokenproxy",
    version,
    about = "OAuth 2.0 client-credentials sidecar: adds bearer tokens to outgoing HTTP requests"
)]
struct Cli {
    /// Log format on stdout. Text is coloured only on a terminal, and never with NO_COLOR set.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "TOKENPROXY_LOG_FORMAT")]
    log_format: LogFormat,
    /// Worker threads serving traffic [default: one per CPU this process may use, which
    /// respects a cgroup CPU limit but not a CPU request].
    #[arg(long, global = true, env = "TOKENPROXY_WORKERS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    workers: Option<u16>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy.
    Run {
        /// Config file (YAML).
        #[arg(short, long, env = "TOKENPROXY_CONFIG")]
        config: PathBuf,
    },
    /// Check a config file: exit 0, or print each problem with its line and exit 78.
    Validate {
        #[arg(short, long, env = "TOKENPROXY_CONFIG")]
        config: PathBuf,
    },
    /// Wait until a tokenproxy's /readyz answers 200 (exit 0), or time out (exit 1).
    /// For a Kubernetes postStart hook that holds the app until tokens are in hand.
    Wait {
        /// The admin listener to poll.
        #[arg(long, default_value = "127.0.0.1:9901")]
        admin: std::net::SocketAddr,
        /// Give up after this long.
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        timeout: Duration,
        /// Time between polls.
        #[arg(long, default_value = "500ms", value_parser = humantime::parse_duration)]
        interval: Duration,
    },
    /// Write the files apps trust the interception CA by (ca.pem, bundle.pem, truststore.p12)
    /// into DIR, or print ca.pem. For a CA from files; a generated CA writes them itself, into
    /// proxy.intercept.trust_dir, when the proxy starts.
    Ca {
        #[arg(short, long, env = "TOKENPROXY_CONFIG")]
        config: PathBuf,
        /// Directory to write into (created if missing); without it, ca.pem goes to stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Run a self-contained demonstration on loopback (built-in authorization server and echo upstream).
    Demo {
        /// Exit after the self-check instead of serving until Ctrl-C.
        #[arg(long)]
        once: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format, cli.command.default_log_level());
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = cli.workers {
        runtime.worker_threads(usize::from(n));
    }
    match runtime.enable_all().build() {
        Ok(rt) => rt.block_on(cli.command.run()),
        Err(e) => failed("cannot start the runtime", &e),
    }
}

impl Command {
    /// The demo's own output is the point; keep its logs to warnings unless RUST_LOG says more.
    fn default_log_level(&self) -> &'static str {
        match self {
            Command::Demo { .. } => "warn",
            _ => "info",
        }
    }

    async fn run(self) -> ExitCode {
        match self {
            Command::Validate { config } => validate(&config),
            Command::Run { config } => run(&config).await,
            Command::Ca { config, out } => ca(&config, out.as_deref()),
            Command::Wait {
                admin,
                timeout,
                interval,
            } => exit(
                tokenproxy::wait::wait_ready(admin, timeout, interval).await,
                "wait",
            ),
            Command::Demo { once } => {
                exit(tokenproxy::demo::run(once, stop_signal()).await, "demo")
            }
        }
    }
}

fn validate(path: &Path) -> ExitCode {
    match Config::load(path) {
        Ok(c) => {
            let (clients, upstreams) = (c.clients.len(), c.upstreams.len());
            println!(
                "{}: ok ({clients} clients, {upstreams} upstreams)",
                path.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => config_error(path, &e),
    }
}

fn ca(path: &Path, out: Option<&Path>) -> ExitCode {
    use tokenproxy::intercept::{trust, trust_anchor};
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => return config_error(path, &e),
    };
    let written = trust_anchor(&config).and_then(|anchor| match out {
        Some(dir) => trust::write(dir, &anchor),
        None => {
            print!("{}", trust::pem(&anchor));
            Ok(())
        }
    });
    exit(written, "ca")
}

async fn run(path: &Path) -> ExitCode {
    let (config, source) = match ConfigSource::load(path) {
        Ok(loaded) => loaded,
        Err(e) => return config_error(path, &e),
    };
    match tokenproxy::run(config, Some(source), stop_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "tokenproxy failed to start");
            ExitCode::from(1)
        }
    }
}

fn exit<E: std::fmt::Display>(result: Result<(), E>, what: &str) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => failed(what, &e),
    }
}

fn failed(what: &str, e: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("tokenproxy {what}: {e}");
    ExitCode::from(1)
}

fn config_error(path: &Path, e: &ConfigError) -> ExitCode {
    eprintln!("{}: {e}", path.display());
    ExitCode::from(EXIT_CONFIG)
}

/// Logs go to stdout. Colour codes only when stdout is a terminal and `NO_COLOR` is unset or
/// empty (no-color.org): `kubectl logs`, journald and log shippers read plain text.
fn init_logging(format: LogFormat, default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stdout().is_terminal() && !no_color)
        .with_writer(std::io::stdout);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
