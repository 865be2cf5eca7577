//! `floatlb`: the agent daemon and its one-shot commands.

use clap::Parser;
use floatlb_agent::cli::{Cli, Command, LogFormat};

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        // The AWS SDK warns about missing optional sources (profile files,
        // instance roles); floatlb reports what is missing itself.
        .unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new(
                "info,aws_config=error,aws_runtime=error,aws_smithy_runtime=error",
            )
        });
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
        Some(Command::Cloud(cmd)) => match floatlb_agent::cloudctl::run(&cmd).await {
            Ok(run) => {
                if cmd.json {
                    println!("{}", serde_json::to_string_pretty(&run)?);
                } else {
                    print!("{}", floatlb_agent::cloudctl::render(&run));
                }
                std::process::exit(if run.as_asked { 0 } else { 1 });
            }
            Err(e) => {
                eprintln!("floatlb cloud: {e}");
                std::process::exit(2);
            }
        },
        None => {
            if let Some(path) = &cli.run.config {
                let cfg = floatlb_agent::config::LbConfig::load(path)?;
                tracing::info!(services = cfg.services.len(), "configuration loaded");
            }
            anyhow::bail!("the daemon is not implemented yet")
        }
    }
}
