//! The inference-engine seam: an [`Engine`] loads a graph into a [`Session`] that runs
//! batches of float rows. tract is the default engine; others (ONNX Runtime) plug in here
//! without touching input/output mapping, the registry or the HTTP side.

use std::fmt;
use std::sync::Arc;

/// Why a graph could not be loaded by an engine.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// The graph uses operators this engine does not implement.
    #[error("{engine} does not implement operator(s) {}", ops.join(", "))]
    UnsupportedOperators {
        /// The engine's name.
        engine: &'static str,
        /// Operator types (with their domain when not the default one).
        ops: Vec<String>,
    },
    /// The graph's inputs are not the single 2-D float tensor `[batch, features]` verdict feeds.
    #[error("unsupported input signature: {0}")]
    UnsupportedInput(String),
    /// The file is not a valid ONNX graph, or the engine failed to prepare it.
    #[error("invalid model: {0}")]
    Invalid(String),
}

/// One output tensor of a run, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    /// The graph's output name (`label`, `probabilities`, `variable`, ...).
    pub name: String,
    /// The shape; the first dimension is the batch.
    pub shape: Vec<usize>,
    /// The values.
    pub data: OutputData,
}

/// Output values, widened to the two kinds JSON can tell apart.
#[derive(Debug, Clone, PartialEq)]
pub enum OutputData {
    /// Floating-point outputs (scores, probabilities, regression values).
    Float(Vec<f32>),
    /// Integer outputs (class labels).
    Int(Vec<i64>),
}

impl OutputData {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            OutputData::Float(v) => v.len(),
            OutputData::Int(v) => v.len(),
        }
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A loaded graph, ready to run; shared by every request (no lock: runs are independent).
pub trait Session: Send + Sync + fmt::Debug {
    /// The number of features per row (the graph input's second dimension).
    fn width(&self) -> usize;

    /// The graph's output names, in order.
    fn output_names(&self) -> &[String];

    /// Runs `rows` rows of `width()` floats each (`data.len() == rows * width()`). Blocking:
    /// callers run it off the async worker threads.
    fn run(&self, rows: usize, data: Vec<f32>) -> Result<Vec<Output>, String>;
}

/// An inference engine.
pub trait Engine: Send + Sync + fmt::Debug {
    /// A short name for errors, versions and metrics (`tract`, `ort`).
    fn name(&self) -> &'static str;

    /// Loads an ONNX graph from its bytes, checking its operators and its input signature.
    fn load(&self, onnx: &[u8]) -> Result<Arc<dyn Session>, EngineError>;
}
