//! In-process ONNX models (`onnx:<path>`), behind the [`Engine`] trait.
//!
//! Loading reads the file (and its optional spec `<stem>.json`, see [`mapping`]), lets the
//! engine check the operators and the input signature, checks the spec against the graph,
//! and runs one probe row so a model that loads but cannot run is refused at registration,
//! not at the first request. Inference runs on the dedicated [`pool::InferencePool`]
//! (one thread per core, bounded queue, refusal when full), never on an async worker thread
//! nor on tokio's blocking pool.

pub mod engine;
pub mod mapping;
#[cfg(feature = "ort")]
pub mod onnxruntime;
pub mod pool;
pub mod tract;

pub use engine::{Engine, EngineError, Output, OutputData, Session};
pub use mapping::ModelSpec;
pub use pool::{InferencePool, PoolError};
pub use tract::TractEngine;

use crate::{Model, ModelError, Prediction};
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Why an ONNX model could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    /// The engine refused the graph.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The spec file is malformed or does not fit the graph.
    #[error("model spec: {0}")]
    Spec(String),
    /// The probe row failed.
    #[error("probe inference failed: {0}")]
    Probe(String),
}

/// An ONNX model served in-process.
#[derive(Debug, Clone)]
pub struct OnnxModel {
    session: Arc<dyn Session>,
    spec: Arc<ModelSpec>,
    version: String,
    pool: InferencePool,
}

/// FNV-1a 64 of the file: a cheap content version (not a security hash).
fn content_hash(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl OnnxModel {
    /// Loads a graph with `engine`. `name` (usually the file name) and a hash of the bytes
    /// form the model version, so a changed file shows up as a new version in the events.
    pub fn load(
        engine: &dyn Engine,
        name: &str,
        onnx: &[u8],
        spec: ModelSpec,
    ) -> Result<Self, LoadError> {
        let session = engine.load(onnx)?;
        spec.check(session.width(), session.output_names())
            .map_err(LoadError::Spec)?;
        let probe = session
            .run(1, vec![0.0; session.width()])
            .map_err(LoadError::Probe)?;
        mapping::to_json(&spec, &probe, 1, false).map_err(|e| LoadError::Probe(e.to_string()))?;
        Ok(Self {
            session,
            spec: Arc::new(spec),
            version: format!("{name}@{:016x}", content_hash(onnx)),
            pool: InferencePool::global().clone(),
        })
    }

    /// Runs this model's inferences on `pool` instead of the process-wide one.
    pub fn with_pool(mut self, pool: InferencePool) -> Self {
        self.pool = pool;
        self
    }

    /// The engine's session (for measuring pure model time).
    pub fn session(&self) -> &dyn Session {
        &*self.session
    }

    /// The number of input features.
    pub fn width(&self) -> usize {
        self.session.width()
    }

    /// Runs on the calling thread and also returns the pure model time (no mapping, no
    /// thread hop); for benchmarks and for callers already on a blocking thread.
    pub fn predict_blocking(
        &self,
        user_id: &str,
        input: &Value,
    ) -> Result<(Prediction, Duration), ModelError> {
        let (rows, data, batch) = mapping::to_matrix(&self.spec, self.width(), user_id, input)?;
        let start = Instant::now();
        let outputs = self.session.run(rows, data).map_err(ModelError::Internal)?;
        let model_time = start.elapsed();
        let output = mapping::to_json(&self.spec, &outputs, rows, batch)?;
        Ok((
            Prediction {
                output,
                model_version: self.version.clone(),
            },
            model_time,
        ))
    }
}

#[async_trait::async_trait]
impl Model for OnnxModel {
    async fn predict(&self, user_id: &str, input: &Value) -> Result<Prediction, ModelError> {
        self.predict_timed(user_id, input).await.map(|(p, _)| p)
    }

    async fn predict_timed(
        &self,
        user_id: &str,
        input: &Value,
    ) -> Result<(Prediction, Option<Duration>), ModelError> {
        // Map on the async thread (cheap, and errors need no hop); run on the inference pool.
        let (rows, data, batch) = mapping::to_matrix(&self.spec, self.width(), user_id, input)?;
        let (outputs, model_time) = self
            .pool
            .run(self.session.clone(), rows, data)
            .await
            .map_err(|e| match e {
                PoolError::Full { .. } => ModelError::Overloaded(e.to_string()),
                PoolError::Run(e) => ModelError::Internal(e),
                PoolError::Panicked(_) | PoolError::Stopped => ModelError::Internal(e.to_string()),
            })?;
        let prediction = Prediction {
            output: mapping::to_json(&self.spec, &outputs, rows, batch)?,
            model_version: self.version.clone(),
        };
        Ok((prediction, Some(model_time)))
    }
}
