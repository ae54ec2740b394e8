//! The default engine: pure-Rust `tract-onnx`. Nothing native to install, nothing
//! downloaded. It runs linear, MLP and tree *classifier* graphs from skl2onnx; it lacks
//! `TreeEnsembleRegressor`, `ZipMap`, `Scaler` and others, which the operator check at load
//! reports by name instead of failing at the first request.

use super::engine::{Engine, EngineError, Output, OutputData, Session};
use std::sync::Arc;
use tract_onnx::pb;
use tract_onnx::prelude::*;

/// Run states a session keeps for reuse, at most (more than the inference threads of any
/// sensible pool).
const MAX_KEPT_STATES: usize = 64;

/// The tract engine. Stateless; cheap to construct.
#[derive(Debug, Clone, Copy, Default)]
pub struct TractEngine;

/// A tract graph optimised for a symbolic batch dimension.
#[derive(Debug)]
pub struct TractSession {
    plan: Arc<TypedRunnableModel>,
    /// The same graph planned for exactly one row: no symbolic batch dimension to resolve
    /// per run, which is most of a one-row inference's cost in tract.
    single: Arc<TypedRunnableModel>,
    /// Run states of `single`, kept between runs: spawning one per run allocates per node
    /// and is a measurable part of a one-row inference. skl2onnx graphs hold no state
    /// across runs, and a state whose run failed is dropped, never reused.
    states: std::sync::Mutex<Vec<TypedSimpleState>>,
    width: usize,
    outputs: Vec<String>,
}

/// Operators the graph uses that `onnx` has no builder for, as `domain:Op` (domain omitted
/// for the default one). Only the top-level graph is checked: skl2onnx emits no subgraphs.
fn missing_ops(onnx: &tract_onnx::Onnx, graph: &pb::GraphProto) -> Vec<String> {
    let mut ops: Vec<String> = graph
        .node
        .iter()
        .filter(|n| !onnx.op_register.0.contains_key(&n.op_type))
        .map(|n| {
            if n.domain.is_empty() || n.domain == "ai.onnx" {
                n.op_type.clone()
            } else {
                format!("{}:{}", n.domain, n.op_type)
            }
        })
        .collect();
    ops.sort();
    ops.dedup();
    ops
}

/// The input width from `[batch, width]`; verdict feeds exactly one float matrix.
fn input_width(graph: &pb::GraphProto) -> Result<usize, EngineError> {
    // Initializers may be listed as inputs in old IR versions; they are not fed.
    let inits: Vec<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let inputs: Vec<&pb::ValueInfoProto> = graph
        .input
        .iter()
        .filter(|i| !inits.contains(&i.name.as_str()))
        .collect();
    let [input] = inputs.as_slice() else {
        return Err(EngineError::UnsupportedInput(format!(
            "expected one input, the graph has {}",
            inputs.len()
        )));
    };
    let Some(pb::type_proto::Value::TensorType(t)) =
        input.r#type.as_ref().and_then(|t| t.value.as_ref())
    else {
        return Err(EngineError::UnsupportedInput(format!(
            "input `{}` is not a tensor",
            input.name
        )));
    };
    if t.elem_type != pb::tensor_proto::DataType::Float as i32 {
        return Err(EngineError::UnsupportedInput(format!(
            "input `{}` must be float32 (elem_type {})",
            input.name, t.elem_type
        )));
    }
    let dims = t
        .shape
        .as_ref()
        .map(|s| s.dim.as_slice())
        .unwrap_or_default();
    match dims {
        [_, d] => match d.value {
            Some(pb::tensor_shape_proto::dimension::Value::DimValue(w)) if w > 0 => Ok(w as usize),
            _ => Err(EngineError::UnsupportedInput(format!(
                "input `{}` has no fixed feature dimension",
                input.name
            ))),
        },
        _ => Err(EngineError::UnsupportedInput(format!(
            "input `{}` must be 2-D [batch, features], has {} dims",
            input.name,
            dims.len()
        ))),
    }
}

impl Engine for TractEngine {
    fn name(&self) -> &'static str {
        "tract"
    }

    fn load(&self, bytes: &[u8]) -> Result<Arc<dyn Session>, EngineError> {
        let onnx = tract_onnx::onnx();
        let proto = onnx
            .proto_model_for_read(&mut &*bytes)
            .map_err(|e| EngineError::Invalid(format!("{e:#}")))?;
        let graph = proto
            .graph
            .as_ref()
            .ok_or_else(|| EngineError::Invalid("no graph".into()))?;
        let ops = missing_ops(&onnx, graph);
        if !ops.is_empty() {
            return Err(EngineError::UnsupportedOperators {
                engine: "tract",
                ops,
            });
        }
        let width = input_width(graph)?;
        let outputs = graph.output.iter().map(|o| o.name.clone()).collect();
        let invalid = |e: TractError| EngineError::Invalid(format!("{e:#}"));
        let mut model = onnx.model_for_proto_model(&proto).map_err(invalid)?;
        // skl2onnx declares the batch as an unnamed `None`; tract needs a symbol to plan for
        // any batch size.
        let n = model.symbols.sym("N");
        model
            .set_input_fact(0, f32::fact([n.to_dim(), width.to_dim()]).into())
            .map_err(invalid)?;
        let plan = model
            .into_optimized()
            .and_then(|m| m.into_runnable())
            .map_err(invalid)?;
        let mut one = onnx.model_for_proto_model(&proto).map_err(invalid)?;
        one.set_input_fact(0, f32::fact([1, width]).into())
            .map_err(invalid)?;
        let single = one
            .into_optimized()
            .and_then(|m| m.into_runnable())
            .map_err(invalid)?;
        Ok(Arc::new(TractSession {
            plan,
            single,
            states: std::sync::Mutex::new(Vec::new()),
            width,
            outputs,
        }))
    }
}

impl Session for TractSession {
    fn width(&self) -> usize {
        self.width
    }

    fn output_names(&self) -> &[String] {
        &self.outputs
    }

    fn run(&self, rows: usize, data: Vec<f32>) -> Result<Vec<Output>, String> {
        let input = tract_ndarray::Array2::from_shape_vec((rows, self.width), data)
            .map_err(|e| e.to_string())?;
        let inputs = tvec!(Tensor::from(input).into());
        let result = if rows == 1 {
            let kept = self.states.lock().unwrap_or_else(|e| e.into_inner()).pop();
            let mut state = match kept {
                Some(state) => state,
                None => self.single.spawn().map_err(|e| format!("{e:#}"))?,
            };
            let result = state.run(inputs).map_err(|e| format!("{e:#}"))?;
            let mut states = self.states.lock().unwrap_or_else(|e| e.into_inner());
            // One per inference thread is all that can be in use at once.
            if states.len() < MAX_KEPT_STATES {
                states.push(state);
            }
            result
        } else {
            self.plan.run(inputs).map_err(|e| format!("{e:#}"))?
        };
        result
            .iter()
            .zip(&self.outputs)
            .map(|(t, name)| {
                let shape = t.shape().to_vec();
                // MLP labels come back as TDim; cast every integer type to i64.
                let data = if t.datum_type().is_float() {
                    let t = t.cast_to::<f32>().map_err(|e| format!("{e:#}"))?;
                    OutputData::Float(
                        t.to_plain_array_view::<f32>()
                            .map_err(|e| format!("{e:#}"))?
                            .iter()
                            .copied()
                            .collect(),
                    )
                } else {
                    let t = t.cast_to::<i64>().map_err(|e| {
                        format!("output `{name}` of type {:?}: {e:#}", t.datum_type())
                    })?;
                    OutputData::Int(
                        t.to_plain_array_view::<i64>()
                            .map_err(|e| format!("{e:#}"))?
                            .iter()
                            .copied()
                            .collect(),
                    )
                };
                Ok(Output {
                    name: name.clone(),
                    shape,
                    data,
                })
            })
            .collect()
    }
}
