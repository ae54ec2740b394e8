//! `GET /readyz` and the component list behind it and `verdict_component_up`.
//!
//! The truth about readiness comes from two places: the background tasks' [`Health`]
//! registry (projector, snapshot, monitors, webhooks, followers) and the store's own write
//! path ([`EventStore::health`], e.g. a log writer stopped by ENOSPC until its probe write
//! succeeds). Any component down makes `/readyz` answer 503 naming it.
//!
//! [`Health`]: verdict_app::health::Health
//! [`EventStore::health`]: verdict_store::EventStore::health

use crate::AppState;
use verdict_app::health::ComponentStatus;

/// The component the store's write path reports as.
pub const STORE: &str = "store";

/// Every component's state: the registry's, with the store's write path read now (and
/// recorded in the registry, so its outages are counted like the others').
pub fn components(state: &AppState) -> Vec<ComponentStatus> {
    match state.store.health() {
        Ok(()) => state.health.up(STORE),
        Err(reason) => state.health.down(STORE, reason),
    }
    state.health.components()
}

/// `verdict_component_up{component=...}`: 1 up, 0 down.
pub fn render(out: &mut String, components: &[ComponentStatus]) {
    use std::fmt::Write;
    let _ = writeln!(
        out,
        "# HELP verdict_component_up Whether a background component works (1) or is failing (0); /readyz names the cause."
    );
    let _ = writeln!(out, "# TYPE verdict_component_up gauge");
    for c in components {
        let _ = writeln!(
            out,
            "verdict_component_up{{component=\"{}\"}} {}",
            c.name,
            u8::from(c.up)
        );
    }
}
