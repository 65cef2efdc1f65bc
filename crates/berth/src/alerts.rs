//! `[alerts]` in `serve`: the alerts observe the gateway's telemetry and
//! read its fleet state every `check_every`.

use std::net::SocketAddr;
use std::sync::{Arc, Weak};

use anyhow::Context;
use berth_alerts::Alerts;
use berth_edge::Gateway;

use crate::config::Config;

/// The alerts `[alerts]` asks for, not yet started; `None` without a webhook.
pub fn build(config: &Config, listen: SocketAddr) -> anyhow::Result<Option<Arc<Alerts>>> {
    let Some(settings) = config
        .alerts_config(&gateway_name(listen))
        .context("cannot start alerts ([alerts])")?
    else {
        return Ok(None);
    };
    let (window, crash_loop, every) = (settings.window, settings.crash_loop, settings.check_every);
    let alerts = Alerts::new(settings).context("cannot start alerts ([alerts])")?;
    // Only the host: the URL's path or query may be a credential.
    tracing::info!(
        "alerts: posting to {} (p99 and crash loops over {}, a crash loop at {crash_loop} crashes, checked every {})",
        alerts.webhook(),
        humantime::format_duration(window),
        humantime::format_duration(every)
    );
    Ok(Some(Arc::new(alerts)))
}

/// Starts evaluating the fleet of `gateway` (held weakly: the alerts do not
/// keep a stopping gateway alive).
pub fn start(alerts: &Arc<Alerts>, gateway: Weak<Gateway>) {
    alerts.start(move || {
        gateway
            .upgrade()
            .map(|g| g.fleet_state())
            .unwrap_or_default()
    });
}

/// The gateway as alerts name it: its hostname, else its listen address.
fn gateway_name(listen: SocketAddr) -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| listen.to_string())
}
