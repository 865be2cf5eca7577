//! `floatlb`: the agent daemon and its one-shot commands.

use clap::Parser;
use floatlb_agent::cli::{Cli, LogFormat};

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    match cli.command {
        Some(cmd) => anyhow::bail!("not implemented yet: {cmd:?}"),
        None => {
            if let Some(path) = &cli.run.config {
                let cfg = floatlb_agent::config::LbConfig::load(path)?;
                tracing::info!(services = cfg.services.len(), "configuration loaded");
            }
            anyhow::bail!("the daemon is not implemented yet")
        }
    }
}
