//! The `tokenproxy` binary: flags, logging, and the process's exit status. Each subcommand
//! is a function in `tokenproxy::cli` that returns a [`cli::Exit`], the one table of exit
//! codes (0, 1, 2 usage, 69 no token, 78 bad config, and `exec`'s command's own).

#[cfg(all(feature = "mimalloc", feature = "jemalloc"))]
compile_error!("the mimalloc and jemalloc features each set the global allocator: enable one");

#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use tokenproxy::cli::{self, Exit};
use tokenproxy::signals::stop_signal;

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
    /// For benchmarks (docs/performance.md, "Runtimes"): `auto` is tokio's current-thread
    /// runtime when there is one worker (everything on one thread, no work-stealing machinery:
    /// 1.3x the requests per second of a one-worker multi-thread runtime) and the multi-thread
    /// runtime otherwise; the other two force one. More current-thread workers are more
    /// processes, sharing the listening ports with TOKENPROXY_REUSE_PORT=1.
    #[arg(long, global = true, hide = true, value_enum, default_value_t = Runtime::Auto, env = "TOKENPROXY_RUNTIME")]
    runtime: Runtime,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Runtime {
    Auto,
    MultiThread,
    CurrentThread,
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
    heap::keep_top();
    let cli = Cli::parse();
    let (level, to_stderr) = cli.command.logging();
    init_logging(cli.log_format, level, to_stderr);
    // tokio's own default: one worker per CPU this process may use.
    let workers = cli.workers.map_or_else(
        || std::thread::available_parallelism().map_or(1, usize::from),
        usize::from,
    );
    let mut runtime = match (cli.runtime, workers) {
        (Runtime::CurrentThread, _) if cli.workers.is_some_and(|n| n > 1) => {
            eprintln!("tokenproxy: a current-thread runtime is one worker; run one process per worker with TOKENPROXY_REUSE_PORT=1");
            return ExitCode::from(cli::Exit::Usage.code());
        }
        (Runtime::CurrentThread, _) | (Runtime::Auto, 1) => {
            tokio::runtime::Builder::new_current_thread()
        }
        (Runtime::MultiThread | Runtime::Auto, n) => {
            let mut multi = tokio::runtime::Builder::new_multi_thread();
            multi.worker_threads(n);
            multi
        }
    };
    let exit = match runtime.enable_all().build() {
        Ok(rt) => rt.block_on(cli.command.run()),
        Err(e) => cli::failed("cannot start the runtime", &e),
    };
    ExitCode::from(exit.code())
}

/// glibc's malloc gives memory at the top of its heap back to the kernel once more than
/// `M_TRIM_THRESHOLD` (128 KiB) of it is free, and takes it back with `brk` and fresh pages when
/// it is needed again. A proxy's buffers come and go with every request: at 32 keep-alive
/// connections the heap crossed that line every seven requests (a `brk` each time, and page
/// faults on the regrown pages): about a microsecond of kernel time a request, near a tenth of
/// its CPU (docs/performance.md, "Tenth round"). So the binary starts from the settings glibc
/// itself moves to once it has handed out and freed a 1 MiB buffer: blocks under 1 MiB from the
/// heap, and the heap's top trimmed only past 2 MiB free; at most 2 MiB more stays resident
/// after a burst. glibc's own settings in the environment (`GLIBC_TUNABLES=glibc.malloc.…`,
/// `MALLOC_*_`) win. Not with another allocator built in.
mod heap {
    #[cfg(all(
        target_os = "linux",
        target_env = "gnu",
        not(any(feature = "mimalloc", feature = "jemalloc"))
    ))]
    pub fn keep_top() {
        /// 1 MiB: more than hyper's largest read buffer (about 408 KiB).
        const MMAP_THRESHOLD: libc::c_int = 1 << 20;
        /// Twice that, as glibc's own adjustment would set it.
        const TRIM_THRESHOLD: libc::c_int = 2 << 20;
        let set = |name: &str| std::env::var_os(name).is_some_and(|v| !v.is_empty());
        if !operator_chose(set, std::env::var("GLIBC_TUNABLES").ok()) {
            // SAFETY: mallopt takes the arena's lock and changes two numbers of its policy,
            // before any other thread of this process exists. A value glibc refuses leaves
            // its default, which is only slower.
            unsafe {
                libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
                libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
            }
        }
    }

    #[cfg(not(all(
        target_os = "linux",
        target_env = "gnu",
        not(any(feature = "mimalloc", feature = "jemalloc"))
    )))]
    pub fn keep_top() {}

    /// Whether the environment sets glibc's malloc policy itself: a `MALLOC_…_` variable that
    /// mallopt would override, or a `glibc.malloc.` tunable.
    #[cfg_attr(
        not(all(
            target_os = "linux",
            target_env = "gnu",
            not(any(feature = "mimalloc", feature = "jemalloc"))
        )),
        allow(dead_code)
    )]
    pub fn operator_chose(set: impl Fn(&str) -> bool, tunables: Option<String>) -> bool {
        [
            "MALLOC_TRIM_THRESHOLD_",
            "MALLOC_MMAP_THRESHOLD_",
            "MALLOC_TOP_PAD_",
            "MALLOC_MMAP_MAX_",
        ]
        .into_iter()
        .any(set)
            || tunables.is_some_and(|t| t.split(':').any(|kv| kv.starts_with("glibc.malloc.")))
    }

    #[cfg(test)]
    mod tests {
        use super::operator_chose;

        #[test]
        fn the_operators_malloc_settings_win() {
            let none = |_: &str| false;
            assert!(!operator_chose(none, None));
            assert!(!operator_chose(none, Some("glibc.pthread.rseq=0".into())));
            assert!(operator_chose(
                none,
                Some("glibc.pthread.rseq=0:glibc.malloc.trim_threshold=0".into())
            ));
            assert!(operator_chose(|n| n == "MALLOC_TRIM_THRESHOLD_", None));
            assert!(operator_chose(|n| n == "MALLOC_MMAP_THRESHOLD_", None));
            assert!(!operator_chose(|n| n == "MALLOC_ARENA_MAX", None));
        }
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

    async fn run(self) -> Exit {
        match self {
            Command::Run { config } => cli::run::run(&config, stop_signal()).await,
            Command::Validate { config, online } => cli::validate::run(&config, online).await,
            Command::Ca { config, out } => cli::ca::run(&config, out.as_deref()),
            Command::Status { admin, json } => cli::status::run(admin, json).await,
            Command::Exec {
                config,
                ephemeral,
                command,
            } => cli::exec::command(&config, ephemeral, &command).await,
            Command::Token {
                config,
                upstream,
                format,
                show,
            } => cli::token::run(&config, &upstream, format.into(), show).await,
            Command::Wait {
                admin,
                timeout,
                interval,
            } => cli::outcome(
                cli::wait::wait_ready(admin, timeout, interval).await,
                "wait",
            ),
            Command::Demo { once } => {
                cli::outcome(cli::demo::run(once, stop_signal()).await, "demo")
            }
        }
    }
}

impl From<TokenFormat> for cli::token::Format {
    fn from(f: TokenFormat) -> Self {
        match f {
            TokenFormat::Raw => cli::token::Format::Raw,
            TokenFormat::Header => cli::token::Format::Header,
            TokenFormat::Json => cli::token::Format::Json,
        }
    }
}

/// Logs go to stdout (stderr for `exec` and `token`; `exec`'s proxy writes its access log there too). Colour codes only when it is a terminal and `NO_COLOR` is unset or
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
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(terminal && !no_color)
        .with_writer(writer);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
