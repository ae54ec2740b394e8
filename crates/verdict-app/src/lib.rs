//! verdict's application layer: command handlers, projections, read models and queries.
//!
//! - [`service`]: the command side (experiments, assignments, predictions, outcomes);
//!   every acknowledged command is a durable append.
//! - [`readmodel`]: the read model and how each event changes it.
//! - [`projector`]: follows the store into the read model, with atomic snapshots.
//! - [`queries`]: results, metrics, timelines and listings, computed with
//!   `verdict-stats` from the read model.
//! - [`dashboard_queries`]: the timeline with the cumulative lift per bucket, for the
//!   dashboard.
//! - [`health`]: component health of the background tasks, and their supervision.
//! - [`monitor`]: the six monitors, alerts as events, and the guardrail stop.
//! - [`instrument`]: a store decorator measuring appends for `/metrics`.
//! - [`codec`]: domain events to and from the store's envelope.
//!
//! Nothing here knows HTTP; the server crate maps [`AppError`] to statuses.

pub mod codec;
pub mod dashboard_queries;
pub mod error;
pub mod health;
pub mod instrument;
pub mod monitor;
pub mod projector;
pub mod queries;
pub mod readmodel;
pub mod scan;
pub mod service;

pub use error::AppError;
pub use projector::Projections;
pub use service::CommandService;
