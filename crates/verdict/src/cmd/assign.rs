//! `verdict assign`: batch assignment for conformance and differential testing.
//!
//! Reads NDJSON lines `{"experiment": <definition> | "<id>", "user_id": "...",
//! "attributes": {...}}` on stdin and writes one `{"variant", "in_experiment",
//! "bucket"}` line each, in order. `variant` and `bucket` are `null` when the user is
//! not in the experiment; `bucket` is also `null` when a variant was forced. A bad line
//! stops the run with an error naming the line and the field, and exit code 1.

use anyhow::Context;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::io::{BufRead, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use verdict_core::assign::growthbook::compile_lenient_definition;
use verdict_core::assign::{CompiledExperiment, UserContext};
use verdict_core::{js, DomainError};

/// Arguments of `verdict assign`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Experiment definitions (a JSON array or NDJSON) that lines may name by id
    /// (`"experiment": "exp-001"`) instead of inlining.
    #[arg(long)]
    experiments: Option<PathBuf>,
}

/// A bad input line: which line, which field, what is wrong.
#[derive(Debug)]
struct LineError {
    line: usize,
    field: String,
    message: String,
}

impl std::fmt::Display for LineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: `{}` {}", self.line, self.field, self.message)
    }
}

fn load_experiments(path: &PathBuf) -> anyhow::Result<HashMap<String, CompiledExperiment>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let defs: Vec<Value> = match serde_json::from_str::<Value>(&text) {
        Ok(Value::Array(items)) => items,
        Ok(single @ Value::Object(_)) => vec![single],
        _ => text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .enumerate()
            .map(|(i, l)| {
                serde_json::from_str(l)
                    .with_context(|| format!("{}: line {}", path.display(), i + 1))
            })
            .collect::<anyhow::Result<_>>()?,
    };
    defs.iter()
        .enumerate()
        .map(|(i, d)| {
            let c = compile_lenient_definition(d)
                .map_err(|e| anyhow::anyhow!("{}: definition {}: {e}", path.display(), i + 1))?;
            Ok((c.key.clone(), c))
        })
        .collect()
}

/// One line's decision, or why the line is bad.
fn assign_line(
    line_no: usize,
    line: &str,
    known: &HashMap<String, CompiledExperiment>,
) -> Result<Value, LineError> {
    let err = |field: &str, message: String| LineError {
        line: line_no,
        field: field.to_owned(),
        message,
    };
    let v: Value =
        serde_json::from_str(line).map_err(|e| err("line", format!("is not valid JSON: {e}")))?;
    let Value::Object(obj) = v else {
        return Err(err("line", "must be a JSON object".to_owned()));
    };
    let owned;
    let exp = match obj.get("experiment") {
        Some(Value::String(id)) => known
            .get(id)
            .ok_or_else(|| err("experiment", format!("names unknown experiment `{id}`")))?,
        Some(def @ Value::Object(_)) => {
            owned = compile_lenient_definition(def).map_err(|e| match e {
                DomainError::Invalid { field, message } => err(&field, message),
                other => err("experiment", other.to_string()),
            })?;
            &owned
        }
        Some(_) => {
            return Err(err(
                "experiment",
                "must be an experiment definition (object) or id (string)".to_owned(),
            ))
        }
        None => return Err(err("experiment", "is required".to_owned())),
    };
    let user_id = match obj.get("user_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(n @ Value::Number(_)) => Some(js::to_string(n)),
        Some(_) => return Err(err("user_id", "must be a string".to_owned())),
    };
    let empty = Map::new();
    let attributes = match obj.get("attributes") {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(m)) => m,
        Some(_) => return Err(err("attributes", "must be an object".to_owned())),
    };
    let ctx = UserContext::new(user_id.as_deref(), attributes);
    let d = exp.decide(&ctx);
    Ok(serde_json::json!({
        "variant": d.variation.map(|i| exp.variation_keys[i].clone()),
        "in_experiment": d.in_experiment(),
        "bucket": d.bucket.map(js_number),
    }))
}

/// A number as JavaScript prints it (`0`, not `0.0`), so text comparisons with the
/// SDK's output agree too.
fn js_number(x: f64) -> Value {
    if x.fract() == 0.0 && x.abs() < 9.0e15 {
        Value::from(x as i64)
    } else {
        Value::from(x)
    }
}

/// Runs `verdict assign`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let known = match &args.experiments {
        Some(path) => load_experiments(path)?,
        None => HashMap::new(),
    };
    let stdin = std::io::stdin().lock();
    let mut out = BufWriter::new(std::io::stdout().lock());
    for (i, line) in stdin.lines().enumerate() {
        let line = line.context("reading stdin")?;
        if line.trim().is_empty() {
            continue;
        }
        match assign_line(i + 1, &line, &known) {
            Ok(v) => {
                serde_json::to_writer(&mut out, &v)?;
                out.write_all(b"\n")?;
            }
            Err(e) => {
                out.flush()?;
                eprintln!("verdict assign: {e}");
                return Ok(ExitCode::from(1));
            }
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(line: &str) -> Result<Value, LineError> {
        assign_line(1, line, &HashMap::new())
    }

    #[test]
    fn bad_lines_name_the_field() {
        let field = |line: &str| one(line).unwrap_err().field;
        assert_eq!(field("{"), "line");
        assert_eq!(field(r#"{"user_id": "u"}"#), "experiment");
        assert_eq!(
            field(r#"{"experiment": {"variants": []}, "user_id": "u"}"#),
            "experiment.experiment_id"
        );
        assert_eq!(
            field(r#"{"experiment": {"experiment_id": "e", "variants": [{"key": 1}]}}"#),
            "experiment.variants[0].key"
        );
        assert_eq!(
            field(
                r#"{"experiment": {"experiment_id": "e", "variants": [{"key": "a", "weight": "x"}]}}"#
            ),
            "experiment.variants[0].weight"
        );
        assert_eq!(
            field(r#"{"experiment": {"experiment_id": "e", "variants": [], "coverage": "all"}}"#),
            "experiment.coverage"
        );
        assert_eq!(
            field(r#"{"experiment": {"experiment_id": "e", "variants": []}, "user_id": true}"#),
            "user_id"
        );
        assert_eq!(
            field(r#"{"experiment": {"experiment_id": "e", "variants": []}, "attributes": []}"#),
            "attributes"
        );
    }

    #[test]
    fn decisions_follow_growthbook() {
        // cases.json "run": "default weights - 1" is variation 1 for id "1" on key "my-test".
        let v = one(r#"{"experiment": {"experiment_id": "my-test", "variants": [{"key": "a"}, {"key": "b"}]}, "user_id": "1"}"#).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"variant": "b", "in_experiment": true, "bucket": 0.969})
        );
        let v = one(r#"{"experiment": {"experiment_id": "my-test", "variants": [{"key": "a"}, {"key": "b"}]}, "user_id": ""}"#).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"variant": null, "in_experiment": false, "bucket": null})
        );
    }
}
