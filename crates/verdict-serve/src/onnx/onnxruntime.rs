//! Optional engine (cargo feature `ort`): ONNX Runtime through the `ort` crate with
//! `load-dynamic`. For graphs tract cannot run (tree regressors, gradient boosting,
//! scalers). Nothing is downloaded or linked at build time: the shared library is loaded at
//! run time from a path the operator configures — the `onnxruntime` PyPI wheel ships it as
//! `onnxruntime/capi/libonnxruntime.so.<version>` — with [`init`], before any `ort` model is
//! loaded. Select it per model with `onnx:<path>#engine=ort`.

use super::engine::{Engine, EngineError, Output, OutputData, Session};
use ort::environment::Environment;
use ort::value::{Tensor, TensorElementType, ValueType};
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

static ENVIRONMENT: OnceLock<Environment> = OnceLock::new();

/// Loads ONNX Runtime from `library` once per process. Later calls are no-ops.
pub fn init(library: &Path) -> Result<(), EngineError> {
    if ENVIRONMENT.get().is_some() {
        return Ok(());
    }
    if !library.is_file() {
        return Err(EngineError::Invalid(format!(
            "ONNX Runtime library {} not found (pip download --no-deps onnxruntime, unzip, use onnxruntime/capi/libonnxruntime.so.*)",
            library.display()
        )));
    }
    let env = ort::init_from(library)
        .map_err(|e| EngineError::Invalid(format!("loading {}: {e}", library.display())))?
        .with_name("verdict")
        .build()
        .map_err(|e| EngineError::Invalid(format!("ONNX Runtime environment: {e}")))?;
    let _ = ENVIRONMENT.set(env);
    Ok(())
}

/// Whether [`init`] has succeeded.
pub fn initialised() -> bool {
    ENVIRONMENT.get().is_some()
}

/// The ONNX Runtime engine.
#[derive(Debug, Clone, Copy, Default)]
pub struct OrtEngine;

/// An ONNX Runtime session. `run` needs `&mut`, so calls on one model are serialised; with
/// one intra-op thread per session, parallelism comes from serving many models/requests.
#[derive(Debug)]
pub struct OrtSession {
    session: Mutex<ort::session::Session>,
    width: usize,
    outputs: Vec<String>,
}

impl Engine for OrtEngine {
    fn name(&self) -> &'static str {
        "ort"
    }

    fn load(&self, onnx: &[u8]) -> Result<Arc<dyn Session>, EngineError> {
        let env = ENVIRONMENT.get().ok_or_else(|| {
            EngineError::Invalid(
                "ONNX Runtime is not loaded: configure the path to libonnxruntime.so".into(),
            )
        })?;
        // ort's builder errors are not Send; keep only their text.
        let invalid = |e: ort::Error| EngineError::Invalid(e.to_string());
        let session = ort::session::Session::builder(env)
            .map_err(invalid)?
            .with_intra_threads(1)
            .map_err(|e| EngineError::Invalid(e.to_string()))?
            .commit_from_memory(onnx)
            .map_err(invalid)?;
        let [input] = session.inputs() else {
            return Err(EngineError::UnsupportedInput(format!(
                "expected one input, the graph has {}",
                session.inputs().len()
            )));
        };
        let width = match input.dtype() {
            ValueType::Tensor {
                ty: TensorElementType::Float32,
                shape,
                ..
            } if shape.len() == 2 && shape[1] > 0 => usize::try_from(shape[1]).unwrap_or(0),
            other => {
                return Err(EngineError::UnsupportedInput(format!(
                    "input `{}` must be float32 [batch, features], is {other:?}",
                    input.name()
                )))
            }
        };
        for o in session.outputs() {
            if !matches!(o.dtype(), ValueType::Tensor { .. }) {
                return Err(EngineError::Invalid(format!(
                    "output `{}` is not a tensor ({:?}); convert classifiers with zipmap=False",
                    o.name(),
                    o.dtype()
                )));
            }
        }
        let outputs = session
            .outputs()
            .iter()
            .map(|o| o.name().to_owned())
            .collect();
        Ok(Arc::new(OrtSession {
            session: Mutex::new(session),
            width,
            outputs,
        }))
    }
}

impl Session for OrtSession {
    fn width(&self) -> usize {
        self.width
    }

    fn output_names(&self) -> &[String] {
        &self.outputs
    }

    fn run(&self, rows: usize, data: Vec<f32>) -> Result<Vec<Output>, String> {
        let input = Tensor::from_array(([rows, self.width], data)).map_err(|e| e.to_string())?;
        let mut session = self.session.lock().unwrap_or_else(|e| e.into_inner());
        let results = session
            .run(ort::inputs![input])
            .map_err(|e| e.to_string())?;
        self.outputs
            .iter()
            .map(|name| {
                let v = &results[name.as_str()];
                let err = |e: ort::Error| format!("output `{name}`: {e}");
                let (shape, data) = match v.dtype() {
                    ValueType::Tensor {
                        ty: TensorElementType::Float32,
                        ..
                    } => {
                        let (s, d) = v.try_extract_tensor::<f32>().map_err(err)?;
                        (s.to_vec(), OutputData::Float(d.to_vec()))
                    }
                    ValueType::Tensor {
                        ty: TensorElementType::Float64,
                        ..
                    } => {
                        let (s, d) = v.try_extract_tensor::<f64>().map_err(err)?;
                        (
                            s.to_vec(),
                            OutputData::Float(d.iter().map(|&x| x as f32).collect()),
                        )
                    }
                    ValueType::Tensor {
                        ty: TensorElementType::Int64,
                        ..
                    } => {
                        let (s, d) = v.try_extract_tensor::<i64>().map_err(err)?;
                        (s.to_vec(), OutputData::Int(d.to_vec()))
                    }
                    ValueType::Tensor {
                        ty: TensorElementType::Int32,
                        ..
                    } => {
                        let (s, d) = v.try_extract_tensor::<i32>().map_err(err)?;
                        (
                            s.to_vec(),
                            OutputData::Int(d.iter().map(|&x| i64::from(x)).collect()),
                        )
                    }
                    other => return Err(format!("output `{name}` has unsupported type {other:?}")),
                };
                let shape = shape
                    .iter()
                    .map(|&d| usize::try_from(d).unwrap_or(0))
                    .collect();
                Ok(Output {
                    name: name.clone(),
                    shape,
                    data,
                })
            })
            .collect()
    }
}
