//! Why the demo could not run or its self-check failed.

use crate::error::StartError;

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("demo could not bind a loopback port: {0}")]
    Io(#[from] std::io::Error),
    #[error("demo config is invalid: {0}")]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Start(#[from] StartError),
    #[error("demo self-check failed: {0}")]
    Check(String),
}
