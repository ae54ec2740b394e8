//! Model backends for verdict: what stands behind each variant.
//!
//! - [`Model`]: one trait every backend implements (in-process or proxied); it takes the
//!   request's JSON input and returns JSON output, or a classified [`ModelError`].
//! - [`Registry`]: resolves a variant's `model` (a registered name such as `rec-v1`, or a
//!   URI such as `builtin:rec-v2`) to a [`Model`], and refuses unknown names up front so
//!   experiment creation can name the bad variant.
//! - [`onnx`]: in-process ONNX models behind an engine trait (tract by default); the
//!   default `rec-v1`/`rec-v2` are small ONNX recommenders shipped in `models/`.
//! - [`http`]: proxies to model servers (MLflow, KServe V2 / MLServer, BentoML) with pooled
//!   connections and classified errors; [`conn`]: its plain-HTTP connections, driven by
//!   the calling task.
//! - [`guard`]: per-model timeout, concurrency limit and circuit breaker.
//! - [`builtin`]: deterministic models that need nothing installed, for tests and drills.
//! - [`shadow`]: compares a shadow variant's output with the control's (agreement,
//!   overlap, mean absolute difference).
//!
//! Latency is measured by the caller around [`Model::predict`], so every backend is
//! measured the same way.

pub mod builtin;
pub mod conn;
pub mod files;
pub mod guard;
pub mod http;
pub mod onnx;
pub mod registry;
pub mod shadow;

pub use registry::{Registry, RegistryError, Unloaded};

use serde_json::Value;

/// A model's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    /// The output served to the caller.
    pub output: Value,
    /// The version the backend reports (file hash, server version, ...).
    pub model_version: String,
}

/// Why a model did not answer. `kind()` is what `PredictionFailed.error_kind` records.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ModelError {
    /// The model did not answer in time.
    #[error("timed out after {0} ms")]
    Timeout(u64),
    /// The upstream could not be reached.
    #[error("connection failed: {0}")]
    Connection(String),
    /// The upstream refused the request (4xx); the body is kept, truncated.
    #[error("upstream answered {status}: {body}")]
    Upstream4xx {
        /// HTTP status.
        status: u16,
        /// Response body, truncated.
        body: String,
    },
    /// The upstream failed (5xx); the body is kept, truncated.
    #[error("upstream failed with {status}: {body}")]
    Upstream5xx {
        /// HTTP status.
        status: u16,
        /// Response body, truncated.
        body: String,
    },
    /// The model answered something that is not a valid output.
    #[error("invalid output: {0}")]
    InvalidOutput(String),
    /// The input cannot be turned into the model's input.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// Too many requests in flight, or the circuit breaker is open.
    #[error("overloaded: {0}")]
    Overloaded(String),
    /// The model itself failed.
    #[error("model error: {0}")]
    Internal(String),
}

impl ModelError {
    /// A stable, machine-readable kind for events and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            ModelError::Timeout(_) => "timeout",
            ModelError::Connection(_) => "connection",
            ModelError::Upstream4xx { .. } => "upstream_4xx",
            ModelError::Upstream5xx { .. } => "upstream_5xx",
            ModelError::InvalidOutput(_) => "invalid_output",
            ModelError::InvalidInput(_) => "invalid_input",
            ModelError::Overloaded(_) => "overloaded",
            ModelError::Internal(_) => "internal",
        }
    }
}

/// A model behind a variant.
#[async_trait::async_trait]
pub trait Model: Send + Sync + std::fmt::Debug {
    /// Predicts for one request. `user_id` is passed separately because most
    /// recommenders key on it; `input` is the request's JSON input.
    async fn predict(&self, user_id: &str, input: &Value) -> Result<Prediction, ModelError>;

    /// Like [`Model::predict`], also returning the time spent in the model itself (the
    /// engine's run for in-process models, the upstream round trip for HTTP ones), so the
    /// caller can record model time and platform overhead separately. `None` when the
    /// backend does not measure it.
    async fn predict_timed(
        &self,
        user_id: &str,
        input: &Value,
    ) -> Result<(Prediction, Option<std::time::Duration>), ModelError> {
        self.predict(user_id, input).await.map(|p| (p, None))
    }
}
