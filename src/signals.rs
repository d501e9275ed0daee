//! Stop signals for the binary: SIGTERM and SIGINT.
//!
//! They are listened for from the moment [`stop_signal`] is called, so a signal that comes
//! right after the start (before anything awaits it) is a graceful stop, not the default exit.

use tokio::signal::unix::{signal, Signal, SignalKind};

/// Resolves on the first SIGTERM or SIGINT; a second one exits the process at once.
pub fn stop_signal() -> impl std::future::Future<Output = ()> {
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

/// SIGTERM and SIGINT; Ctrl-C through tokio if they cannot be registered.
struct StopSignals(Option<(Signal, Signal)>);

impl StopSignals {
    fn listen() -> Self {
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(term), Ok(int)) => StopSignals(Some((term, int))),
            _ => StopSignals(None),
        }
    }

    async fn recv(&mut self) {
        match &mut self.0 {
            Some((term, int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            None => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
}
