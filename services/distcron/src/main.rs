//! The `distcron` binary: the whole system in one process (see the crate docs). Also serves as
//! the group leader of the worker's runs (`__group-leader`, see `distcron_worker::leader`).

use anyhow::Context;
use distcron::EmbeddedConfig;

fn main() -> anyhow::Result<()> {
    distcron_worker::leader::block_on_unless_leader(serve()).context("starting the runtime")?
}

async fn serve() -> anyhow::Result<()> {
    let config: EmbeddedConfig = distcron_config::load().unwrap_or_else(|e| e.exit());
    let _telemetry = distcron_server::init_process("distcron", &config.telemetry)?;
    let shutdown = distcron_server::cancel_on_signal();
    distcron::run(config, shutdown).await?;
    Ok(())
}
