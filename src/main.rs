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
/// Exit code when no token could be had (EX_UNAVAILABLE), for `token` (and `exec`).
const EXIT_NO_TOKEN: u8 = 69;

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

#[derive(Clone, Copy, ValueEnum)]
enum TokenFormat {
    Raw,
    Header,
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
    /// Check a config file: exit 0, or print each problem with its line and exit 78. With
    /// --online, also find each client's token endpoint (discovery included) and see that it
    /// answers (exit 1 if one does not); no credentials are sent.
    Validate {
        #[arg(short, long, env = "TOKENPROXY_CONFIG")]
        config: PathBuf,
        #[arg(long)]
        online: bool,
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
    /// Run a command with the proxy beside it, in this process: for batch jobs, cron jobs and
    /// scripts. Waits for every upstream's token (else exits 69 without running it), sets
    /// HTTP_PROXY (and HTTPS_PROXY and the trust variables with interception),
    /// TOKENPROXY_URL_<UPSTREAM> per reverse listener, passes SIGINT/SIGTERM/SIGHUP on, and
    /// exits with the command's status (128+N if it died of signal N).
    Exec {
        #[arg(short, long, env = "TOKENPROXY_CONFIG")]
        config: PathBuf,
        /// Put the listeners on ephemeral loopback ports, so jobs on one host never collide.
        #[arg(long)]
        ephemeral: bool,
        /// The command and its arguments (after `--` if they start with `-`).
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<std::ffi::OsString>,
    },
    /// Print a token for UPSTREAM, fetched exactly as the proxy would. The output is a
    /// credential: it is not printed to a terminal without --show. Exits 78 on a config error
    /// or an unknown upstream, 69 when no token could be had within tokens.wait_timeout.
    Token {
        #[arg(short, long, env = "TOKENPROXY_CONFIG")]
        config: PathBuf,
        /// The upstream, by its name in the config.
        upstream: String,
        /// raw: the token; header: `Authorization: Bearer …`; json: access_token, token_type, expires_at.
        #[arg(long, value_enum, default_value_t = TokenFormat::Raw)]
        format: TokenFormat,
        /// Print the token even when stdout is a terminal.
        #[arg(long)]
        show: bool,
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
    /// Show a running proxy's /status as a table (or the JSON with --json); exit 0 when it is
    /// ready, 1 when not, so it works in scripts.
    Status {
        /// The admin listener to ask.
        #[arg(long, default_value = "127.0.0.1:9901")]
        admin: std::net::SocketAddr,
        #[arg(long)]
        json: bool,
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
    let (level, to_stderr) = cli.command.logging();
    init_logging(cli.log_format, level, to_stderr);
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
    /// The default log level, and whether logs go to stderr. The demo's own output is the
    /// point; `exec` and `token` leave stdout to the command and the token.
    fn logging(&self) -> (&'static str, bool) {
        match self {
            Command::Demo { .. } => ("warn", false),
            Command::Exec { .. } | Command::Token { .. } => ("warn", true),
            _ => ("info", false),
        }
    }

    async fn run(self) -> ExitCode {
        match self {
            Command::Validate { config, online } => validate(&config, online).await,
            Command::Run { config } => run(&config).await,
            Command::Ca { config, out } => ca(&config, out.as_deref()),
            Command::Status { admin, json } => match tokenproxy::status::fetch(admin, json).await {
                Ok((text, ready)) => {
                    print!("{text}");
                    if ready {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::from(1)
                    }
                }
                Err(e) => failed("status", &e),
            },
            Command::Exec {
                config,
                ephemeral,
                command,
            } => exec(&config, ephemeral, &command).await,
            Command::Token {
                config,
                upstream,
                format,
                show,
            } => token(&config, &upstream, format, show).await,
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

async fn validate(path: &Path, online: bool) -> ExitCode {
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => return config_error(path, &e),
    };
    let (clients, upstreams) = (config.clients.len(), config.upstreams.len());
    println!(
        "{}: ok ({clients} clients, {upstreams} upstreams)",
        path.display()
    );
    if !online {
        return ExitCode::SUCCESS;
    }
    let mut reachable = true;
    for (client, result) in tokenproxy::online::check(&config).await {
        match result {
            Ok(url) => println!("  client {client}: token endpoint {url} answers"),
            Err(e) => {
                reachable = false;
                println!("  client {client}: {e}");
            }
        }
    }
    if reachable {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
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

async fn exec(path: &Path, ephemeral: bool, command: &[std::ffi::OsString]) -> ExitCode {
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => return config_error(path, &e),
    };
    let status = match tokenproxy::exec::run(config, ephemeral, command).await {
        Ok(status) => status,
        Err(e) => {
            eprintln!("tokenproxy exec: {e}");
            e.status()
        }
    };
    ExitCode::from(u8::try_from(status).unwrap_or(1))
}

async fn token(path: &Path, upstream: &str, format: TokenFormat, show: bool) -> ExitCode {
    use tokenproxy::print_token::{fetch, Format};
    if std::io::stdout().is_terminal() && !show {
        eprintln!("tokenproxy token: the output is a credential; not printing it to a terminal (pipe it, or pass --show)");
        return ExitCode::from(2);
    }
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => return config_error(path, &e),
    };
    let format = match format {
        TokenFormat::Raw => Format::Raw,
        TokenFormat::Header => Format::Header,
        TokenFormat::Json => Format::Json,
    };
    match fetch(&config, upstream, format).await {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tokenproxy token: {e}");
            let code = if e.is_config_error() {
                EXIT_CONFIG
            } else {
                EXIT_NO_TOKEN
            };
            ExitCode::from(code)
        }
    }
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

/// Logs, the access log among them, go to stdout (stderr for `exec` and `token`). Colour codes only when it is a terminal and `NO_COLOR` is unset or
/// empty (no-color.org): `kubectl logs`, journald and log shippers read plain text.
fn init_logging(format: LogFormat, default_level: &str, to_stderr: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    let terminal = if to_stderr {
        std::io::stderr().is_terminal()
    } else {
        std::io::stdout().is_terminal()
    };
    use tracing_subscriber::fmt::writer::BoxMakeWriter;
    let writer = if to_stderr {
        BoxMakeWriter::new(std::io::stderr)
    } else {
        BoxMakeWriter::new(std::io::stdout)
    };
    if to_stderr {
        tokenproxy::proxy::access::to_stderr();
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(terminal && !no_color)
        .with_writer(writer);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
