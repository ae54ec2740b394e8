//! From request JSON to the model's input matrix, and from output tensors back to JSON.
//!
//! A model file `x.onnx` may have a spec `x.json` beside it:
//!
//! ```json
//! { "input":  { "features": 8, "hash": ["user_id", "context"] },
//!   "output": { "recommend": { "labels": [101, 102, 103], "k": 3, "scores": "probabilities" } } }
//! ```
//!
//! Input, first rule that applies:
//! 1. `{"features": [1.0, 2.0, ...]}` — one row of exactly the model's width; an array of
//!    arrays is a batch.
//! 2. Named fields, when `input.features` is a list of names (`["sepal_length", ...]`): the
//!    request object's fields, by name, in that order (numbers or booleans; all required).
//! 3. Hashed features, when `input.hash` lists fields: the fields' values (`user_id` is the
//!    request's user; a missing field counts as `""`; non-strings as their JSON text) are
//!    hashed into `width` floats in [-1, 1). This lets a recommender serve the seed's
//!    payload `{"user_id": .., "context": ..}` unchanged. `scripts/models/gen_models.py`
//!    implements the same function, and the fixtures pin it.
//!
//! Output: each graph output by name, for one row without the batch dimension (a single
//! value becomes a scalar): `{"label": 2, "probabilities": [0.1, 0.2, 0.7]}`; for a batch,
//! one entry per row. With `output.recommend`, `items` (the `k` labels with the highest
//! `scores` output, best first) and `scores` (their scores) are added:
//! `{"items": [107, 101, 112], "scores": [0.61, 0.2, 0.05], ...}`.

use super::engine::{Output, OutputData};
use crate::ModelError;
use serde::Deserialize;
use serde_json::{json, Map, Value};

/// The optional `<model>.json` beside a model file.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// How request JSON becomes a row.
    #[serde(default)]
    pub input: InputSpec,
    /// Extra output shaping.
    #[serde(default)]
    pub output: OutputSpec,
}

/// Input side of a [`ModelSpec`].
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    /// The width (a number, for documentation and checking) or the feature names.
    #[serde(default)]
    pub features: Option<Features>,
    /// Fields hashed into the row when no features are given.
    #[serde(default)]
    pub hash: Vec<String>,
}

/// Feature declaration: a count, or names in column order.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Features {
    /// Only the width.
    Width(usize),
    /// Names in column order.
    Names(Vec<String>),
}

/// Output side of a [`ModelSpec`].
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSpec {
    /// Turn class scores into a ranked item list.
    #[serde(default)]
    pub recommend: Option<Recommend>,
}

/// Ranks classes by score: class `i` is item `labels[i]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recommend {
    /// Item id per class, in class order.
    pub labels: Vec<Value>,
    /// How many items to return.
    pub k: usize,
    /// The output holding `[batch, classes]` scores.
    #[serde(default = "default_scores")]
    pub scores: String,
}

fn default_scores() -> String {
    "probabilities".into()
}

impl ModelSpec {
    /// Checks the spec against the graph's width and outputs, so a bad spec fails at load.
    pub fn check(&self, width: usize, outputs: &[String]) -> Result<(), String> {
        match &self.input.features {
            Some(Features::Width(w)) if *w != width => {
                return Err(format!("spec says {w} features, the graph takes {width}"))
            }
            Some(Features::Names(n)) if n.len() != width => {
                return Err(format!(
                    "spec names {} features, the graph takes {width}",
                    n.len()
                ))
            }
            _ => {}
        }
        if let Some(r) = &self.output.recommend {
            if !outputs.contains(&r.scores) {
                return Err(format!(
                    "no output `{}` to rank (outputs: {outputs:?})",
                    r.scores
                ));
            }
            if r.k == 0 || r.k > r.labels.len() {
                return Err(format!("k = {} with {} labels", r.k, r.labels.len()));
            }
        }
        Ok(())
    }
}

fn fnv64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn splitmix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Hashes field values into `width` floats in [-1, 1). Values are joined with U+001F
/// (unit separator), FNV-1a-64 hashed, then expanded with splitmix64; 24 bits per value
/// keep every float exactly representable, so Python reproduces it bit for bit.
pub fn hashed_features(values: &[&str], width: usize) -> Vec<f32> {
    let seed = fnv64(values.join("\u{1f}").as_bytes());
    (0..width as u64)
        .map(|i| {
            let z = splitmix64(seed.wrapping_add((i + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)));
            ((z >> 40) as f64 / f64::from(1u32 << 23) - 1.0) as f32
        })
        .collect()
}

fn number(v: &Value, what: &dyn Fn() -> String) -> Result<f32, ModelError> {
    match v {
        Value::Number(n) => n
            .as_f64()
            .map(|f| f as f32)
            .ok_or_else(|| ModelError::InvalidInput(format!("{} is not a number", what()))),
        Value::Bool(b) => Ok(f32::from(u8::from(*b))),
        other => Err(ModelError::InvalidInput(format!(
            "{} must be a number, got {other}",
            what()
        ))),
    }
}

fn row(values: &[Value], width: usize, index: Option<usize>) -> Result<Vec<f32>, ModelError> {
    let at = |i: usize| match index {
        Some(r) => format!("features[{r}][{i}]"),
        None => format!("features[{i}]"),
    };
    if values.len() != width {
        return Err(ModelError::InvalidInput(format!(
            "{} has {} values, the model takes {width}",
            index.map_or("features".to_owned(), |r| format!("features[{r}]")),
            values.len()
        )));
    }
    values
        .iter()
        .enumerate()
        .map(|(i, v)| number(v, &|| at(i)))
        .collect()
}

/// The model's input for a request: `(rows, row-major data)`, and whether the request was a
/// batch (which keeps the batch dimension in the output).
pub fn to_matrix(
    spec: &ModelSpec,
    width: usize,
    user_id: &str,
    input: &Value,
) -> Result<(usize, Vec<f32>, bool), ModelError> {
    if let Some(features) = input.get("features") {
        let Value::Array(items) = features else {
            return Err(ModelError::InvalidInput(
                "`features` must be an array".into(),
            ));
        };
        if items.first().is_some_and(Value::is_array) {
            let mut data = Vec::with_capacity(items.len() * width);
            for (r, item) in items.iter().enumerate() {
                let Value::Array(values) = item else {
                    return Err(ModelError::InvalidInput(format!(
                        "features[{r}] is not an array"
                    )));
                };
                data.extend(row(values, width, Some(r))?);
            }
            return Ok((items.len(), data, true));
        }
        return Ok((1, row(items, width, None)?, false));
    }
    if let Some(Features::Names(names)) = &spec.input.features {
        if names.iter().any(|n| input.get(n).is_some()) {
            let data = names
                .iter()
                .map(|n| {
                    let v = input.get(n).ok_or_else(|| {
                        ModelError::InvalidInput(format!("missing feature `{n}`"))
                    })?;
                    number(v, &|| format!("`{n}`"))
                })
                .collect::<Result<Vec<_>, _>>()?;
            return Ok((1, data, false));
        }
    }
    if !spec.input.hash.is_empty() {
        let texts: Vec<String> = spec
            .input
            .hash
            .iter()
            .map(|field| match (field.as_str(), input.get(field)) {
                ("user_id", _) => user_id.to_owned(),
                (_, None | Some(Value::Null)) => String::new(),
                (_, Some(Value::String(s))) => s.clone(),
                (_, Some(other)) => other.to_string(),
            })
            .collect();
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        return Ok((1, hashed_features(&refs, width), false));
    }
    let hint = match &spec.input.features {
        Some(Features::Names(n)) => format!(" or the fields {}", n.join(", ")),
        _ => String::new(),
    };
    Err(ModelError::InvalidInput(format!(
        "expected {{\"features\": [{width} numbers]}}{hint}"
    )))
}

fn element(data: &OutputData, i: usize) -> Value {
    match data {
        OutputData::Float(v) => json!(v[i]),
        OutputData::Int(v) => json!(v[i]),
    }
}

/// One row of an output: a scalar when the row has one element, else a flat array.
fn output_row(o: &Output, r: usize, per_row: usize) -> Value {
    if per_row == 1 {
        element(&o.data, r)
    } else {
        Value::Array(
            (r * per_row..(r + 1) * per_row)
                .map(|i| element(&o.data, i))
                .collect(),
        )
    }
}

fn ranked(o: &Output, r: &Recommend, row: usize) -> Result<(Value, Value), ModelError> {
    let classes = r.labels.len();
    let OutputData::Float(scores) = &o.data else {
        return Err(ModelError::InvalidOutput(format!(
            "`{}` is not a float output",
            o.name
        )));
    };
    if o.shape.get(1) != Some(&classes) || scores.len() < (row + 1) * classes {
        return Err(ModelError::InvalidOutput(format!(
            "`{}` has shape {:?}, expected [_, {classes}]",
            o.name, o.shape
        )));
    }
    let s = &scores[row * classes..(row + 1) * classes];
    let mut order: Vec<usize> = (0..classes).collect();
    // Stable sort: equal scores keep class order, so output is deterministic.
    order.sort_by(|&a, &b| s[b].total_cmp(&s[a]));
    order.truncate(r.k);
    let items = order.iter().map(|&i| r.labels[i].clone()).collect();
    let top = order.iter().map(|&i| json!(s[i])).collect();
    Ok((Value::Array(items), Value::Array(top)))
}

/// Output tensors to the response JSON (see the module docs).
pub fn to_json(
    spec: &ModelSpec,
    outputs: &[Output],
    rows: usize,
    batch: bool,
) -> Result<Value, ModelError> {
    let mut out = Map::new();
    for o in outputs {
        if o.shape.first() != Some(&rows) || o.data.len() % rows.max(1) != 0 {
            return Err(ModelError::InvalidOutput(format!(
                "output `{}` has shape {:?} for {rows} rows",
                o.name, o.shape
            )));
        }
        let per_row = o.data.len() / rows.max(1);
        let value = if batch {
            Value::Array((0..rows).map(|r| output_row(o, r, per_row)).collect())
        } else {
            output_row(o, 0, per_row)
        };
        out.insert(o.name.clone(), value);
    }
    if let Some(r) = &spec.output.recommend {
        let o = outputs
            .iter()
            .find(|o| o.name == r.scores)
            .ok_or_else(|| ModelError::InvalidOutput(format!("no output `{}`", r.scores)))?;
        let (items, scores) = if batch {
            let pairs = (0..rows)
                .map(|row| ranked(o, r, row))
                .collect::<Result<Vec<_>, _>>()?;
            let (i, s): (Vec<_>, Vec<_>) = pairs.into_iter().unzip();
            (Value::Array(i), Value::Array(s))
        } else {
            ranked(o, r, 0)?
        };
        out.insert("items".into(), items);
        out.insert("scores".into(), scores);
    }
    Ok(Value::Object(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ModelSpec {
        serde_json::from_value(json!({
            "input": {"features": ["a", "b"], "hash": ["user_id", "context"]},
            "output": {"recommend": {"labels": [10, 20, 30], "k": 2}}
        }))
        .unwrap()
    }

    #[test]
    fn input_rules_in_order() {
        let s = spec();
        assert_eq!(
            to_matrix(&s, 2, "u", &json!({"features": [1, 2.5]})).unwrap(),
            (1, vec![1.0, 2.5], false)
        );
        assert_eq!(
            to_matrix(&s, 2, "u", &json!({"features": [[1, 2], [3, true]]})).unwrap(),
            (2, vec![1.0, 2.0, 3.0, 1.0], true)
        );
        assert_eq!(
            to_matrix(&s, 2, "u", &json!({"b": 4, "a": 3})).unwrap(),
            (1, vec![3.0, 4.0], false)
        );
        let (_, h, _) = to_matrix(&s, 2, "u", &json!({"context": "home"})).unwrap();
        assert_eq!(h, hashed_features(&["u", "home"], 2));
        // user_id comes from the caller, not from the body.
        let (_, h2, _) =
            to_matrix(&s, 2, "u", &json!({"context": "home", "user_id": "x"})).unwrap();
        assert_eq!(h, h2);
        assert!(h.iter().all(|v| (-1.0..1.0).contains(v)));
    }

    #[test]
    fn bad_inputs_are_invalid_input() {
        let s = spec();
        for bad in [
            json!({"features": [1]}),
            json!({"features": [1, "x"]}),
            json!({"features": "1,2"}),
            json!({"features": [[1, 2], 3]}),
            json!({"a": 1}),
        ] {
            let e = to_matrix(&s, 2, "u", &bad).unwrap_err();
            assert_eq!(e.kind(), "invalid_input", "{bad}: {e}");
        }
        let e = to_matrix(&ModelSpec::default(), 3, "u", &json!({})).unwrap_err();
        assert!(e.to_string().contains("3 numbers"), "{e}");
    }

    #[test]
    fn outputs_squeeze_and_rank() {
        let outs = vec![
            Output {
                name: "label".into(),
                shape: vec![2],
                data: OutputData::Int(vec![1, 2]),
            },
            Output {
                name: "probabilities".into(),
                shape: vec![2, 3],
                data: OutputData::Float(vec![0.2, 0.5, 0.3, 0.1, 0.1, 0.8]),
            },
        ];
        let s = spec();
        let one = to_json(&ModelSpec::default(), &outs[..1], 2, true).unwrap();
        assert_eq!(one, json!({"label": [1, 2]}));
        let v = to_json(&s, &outs, 2, true).unwrap();
        assert_eq!(v["items"], json!([[20, 30], [30, 10]]));
        let single: Vec<Output> = vec![
            Output {
                name: "label".into(),
                shape: vec![1],
                data: OutputData::Int(vec![1]),
            },
            Output {
                name: "probabilities".into(),
                shape: vec![1, 3],
                data: OutputData::Float(vec![0.2, 0.5, 0.3]),
            },
        ];
        let v = to_json(&s, &single, 1, false).unwrap();
        assert_eq!(v["label"], json!(1));
        assert_eq!(v["items"], json!([20, 30]));
        assert_eq!(v["scores"], json!([0.5f32, 0.3f32]));
        assert!(s
            .check(2, &["label".into(), "probabilities".into()])
            .is_ok());
        assert!(s
            .check(3, &["label".into(), "probabilities".into()])
            .is_err());
        assert!(s.check(2, &["label".into()]).is_err());
    }
}
