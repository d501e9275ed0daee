//! The `tokenproxy` binary: flags, logging, signals and exit codes. Everything else is in the
//! library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use tokenproxy::config::{Config, ConfigError};

/// Exit code for a bad config (EX_CONFIG from sysexits.h).
const EXIT_CONFIG: u8 = 78;

#[derive(Parser)]
#[command(
    name = "tokenproxy",
    version,
    about = "OAuth 2.0 client-credentials sidecar: adds bearer tokens to outgoing HTTP requests"
)]
struct Cli {
    /// Log format on stdout.
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
        timeout: std::time::Duration,
        /// Time between polls.
        #[arg(long, default_value = "500ms", value_parser = humantime::parse_duration)]
        interval: std::time::Duration,
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
    // The demo's own output is the point; keep its logs to warnings unless RUST_LOG says more.
    let default_level = if matches!(cli.command, Command::Demo { .. }) {
        "warn"
    } else {
        "info"
    };
    init_logging(cli.log_format, default_level);
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = cli.workers {
        runtime.worker_threads(usize::from(n));
    }
    let runtime = match runtime.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tokenproxy: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(async {
        match cli.command {
            Command::Validate { config } => match Config::load(&config) {
                Ok(c) => {
                    println!(
                        "{}: ok ({} clients, {} upstreams)",
                        config.display(),
                        c.clients.len(),
                        c.upstreams.len()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => config_error(&config, &e),
            },
            Command::Run { config: path } => {
                let text = match std::fs::read_to_string(&path) {
                    Ok(t) => t,
                    Err(source) => {
                        return config_error(
                            &path,
                            &ConfigError::Read {
                                path: path.clone(),
                                source,
                            },
                        )
                    }
                };
                let config = match Config::from_yaml_checked(&text) {
                    Ok(c) => c,
                    Err(e) => return config_error(&path, &e),
                };
                let source = tokenproxy::ConfigSource { path, loaded: text };
                match tokenproxy::run(config, Some(source), stop_signal()).await {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        tracing::error!(error = %e, "tokenproxy failed to start");
                        ExitCode::from(1)
                    }
                }
            }
            Command::Wait {
                admin,
                timeout,
                interval,
            } => match tokenproxy::wait::wait_ready(admin, timeout, interval).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("tokenproxy wait: {e}");
                    ExitCode::from(1)
                }
            },
            Command::Demo { once } => match tokenproxy::demo::run(once, stop_signal()).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("tokenproxy demo: {e}");
                    ExitCode::from(1)
                }
            },
        }
    })
}

fn config_error(path: &std::path::Path, e: &ConfigError) -> ExitCode {
    eprintln!("{}: {e}", path.display());
    ExitCode::from(EXIT_CONFIG)
}

fn init_logging(format: LogFormat, default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stdout);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Listens for SIGTERM and SIGINT from the moment it is called, so that a signal that comes
/// right after the start (before anything awaits it) is a graceful stop, not the default
/// exit. The future resolves on the first signal; a second one exits at once.
fn stop_signal() -> impl std::future::Future<Output = ()> {
    let mut signals = StopSignals::listen();
    async move {
        signals.recv().await;
        tokio::spawn(async move {
            signals.recv().await;
            tracing::warn!("second stop signal: exiting without waiting for the drain");
            std::process::exit(1);
        });
    }
}

/// SIGTERM and SIGINT (Ctrl-C where those cannot be had).
struct StopSignals {
    #[cfg(unix)]
    unix: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl StopSignals {
    #[cfg(unix)]
    fn listen() -> Self {
        use tokio::signal::unix::{signal, SignalKind};
        let unix = match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(term), Ok(int)) => Some((term, int)),
            _ => None,
        };
        StopSignals { unix }
    }

    #[cfg(not(unix))]
    fn listen() -> Self {
        StopSignals {}
    }

    async fn recv(&mut self) {
        #[cfg(unix)]
        if let Some((term, int)) = &mut self.unix {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            return;
        }
        let _ = tokio::signal::ctrl_c().await;
    }
}
