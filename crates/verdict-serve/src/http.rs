//! HTTP upstreams: MLflow scoring servers, KServe Open Inference Protocol (V2) servers such
//! as MLServer or Triton, and BentoML endpoints.
//!
//! Request mapping from the prediction's JSON input:
//!
//! | protocol | input | request body |
//! |---|---|---|
//! | `mlflow` | has one of `dataframe_split`, `dataframe_records`, `instances`, `inputs` | sent as is |
//! | `mlflow` | `{"features": [..]}` or `[[..], ..]` | `{"dataframe_split": {"columns": <columns option>, "data": rows}}`, or `{"inputs": rows}` without the `columns` option |
//! | `mlflow` | any other object | `{"dataframe_records": [input]}` (one row of named fields) |
//! | `v2` | has `inputs` | sent as is |
//! | `v2` | `{"features": [..]}` or `[[..], ..]` | `{"inputs": [{"name": <input option, default input-0>, "shape": [rows, n], "datatype": <datatype option, default FP64>, "data": flat}]}` |
//! | `bentoml` | any | sent as is (the API method's parameters are the keys) |
//!
//! Outputs: MLflow's `{"predictions": p}` becomes `{"predictions": p}`; V2 outputs become
//! `{<output name>: data}` (for a single row without the batch dimension, a single value as
//! a scalar); BentoML's response JSON is returned as is.
//!
//! Errors: no connection or a broken one -> `connection` (a broken pooled connection is
//! retried once on a new one first); 4xx -> `upstream_4xx`; 5xx ->
//! `upstream_5xx` (both keep the body, truncated to [`BODY_LIMIT`] bytes); a 2xx body that is
//! not the protocol's shape -> `invalid_output`. Timeouts come from [`crate::guard`].
//!
//! Transport: `http://` endpoints go through [`crate::conn`] (keep-alive connections driven
//! by the calling task: no hand-off to a connection task per call); `https://` ones through
//! reqwest with rustls.

use crate::conn::{chain, CallError, Pool};
use crate::guard::Options;
use crate::{Model, ModelError, Prediction};
use serde_json::{json, Map, Value};
use std::sync::Arc;
use std::time::Duration;

/// How much of an upstream body an error keeps.
pub const BODY_LIMIT: usize = 512;

/// The wire protocol of an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// MLflow scoring server (`POST /invocations`).
    Mlflow,
    /// KServe Open Inference Protocol, REST (`POST .../infer`).
    V2,
    /// A BentoML API endpoint (`POST /<method>`).
    Bentoml,
}

/// The shared HTTP clients, no Nagle delay on either. Timeouts are per model (the guard), not
/// per client.
#[derive(Debug, Clone)]
pub struct Clients {
    /// Pooled keep-alive connections: every call goes here first.
    pooled: reqwest::Client,
    /// No pool: the one retry after a pooled connection turned out dead goes on a new
    /// connection, since the pool may hold more dead ones (an upstream that restarted
    /// closes all of them, and each is found out only on use).
    fresh: reqwest::Client,
}

impl Clients {
    /// Builds both clients.
    pub fn new() -> Self {
        let build = |idle: usize| {
            reqwest::Client::builder()
                .tcp_nodelay(true)
                .pool_max_idle_per_host(idle)
                .pool_idle_timeout(Duration::from_secs(60))
                .connect_timeout(Duration::from_secs(5))
                .build()
                // Building fails only if the TLS backend cannot initialise: a broken build.
                .unwrap_or_else(|e| panic!("cannot build the HTTP client: {e}"))
        };
        Self {
            pooled: build(64),
            fresh: build(0),
        }
    }
}

impl Default for Clients {
    fn default() -> Self {
        Self::new()
    }
}

/// A model behind an HTTP upstream.
#[derive(Debug, Clone)]
pub struct HttpModel {
    clients: Clients,
    /// Connections driven by the calling task, for `http://` endpoints (`https://` ones go
    /// through the TLS client).
    plain: Option<Arc<Pool>>,
    /// The endpoint's path and query, as `plain` sends it.
    target: String,
    protocol: Protocol,
    endpoint: reqwest::Url,
    /// MLflow `dataframe_split` column names.
    columns: Option<Vec<String>>,
    /// V2 input tensor name and datatype.
    v2_input: String,
    v2_datatype: String,
    version: String,
}

/// Cuts `body` to about [`BODY_LIMIT`] bytes on character boundaries, keeping both ends:
/// servers put the summary first (JSON errors) or last (Python tracebacks).
pub fn truncate(body: &str) -> String {
    if body.len() <= BODY_LIMIT {
        return body.to_owned();
    }
    let mut head = BODY_LIMIT / 2;
    while !body.is_char_boundary(head) {
        head -= 1;
    }
    let mut tail = body.len() - BODY_LIMIT / 2;
    while !body.is_char_boundary(tail) {
        tail += 1;
    }
    format!(
        "{} [... {} of {} bytes cut ...] {}",
        &body[..head],
        tail - head,
        body.len(),
        &body[tail..]
    )
}

/// Rows from `{"features": [..]}` (one row) or `[[..], ..]` (a batch).
fn feature_rows(input: &Value) -> Option<Result<(Vec<Value>, bool), ModelError>> {
    let features = input.get("features")?;
    let Value::Array(items) = features else {
        return Some(Err(ModelError::InvalidInput(
            "`features` must be an array".into(),
        )));
    };
    if items.first().is_some_and(Value::is_array) {
        Some(Ok((items.clone(), true)))
    } else {
        Some(Ok((vec![features.clone()], false)))
    }
}

impl HttpModel {
    /// An upstream at `url`; consumes its protocol's options (`columns` for MLflow, `input`
    /// and `datatype` for V2).
    pub fn new(
        clients: Clients,
        protocol: Protocol,
        url: &str,
        options: &mut Options,
    ) -> Result<Self, String> {
        let mut endpoint =
            reqwest::Url::parse(url).map_err(|e| format!("invalid URL `{url}`: {e}"))?;
        if !matches!(endpoint.scheme(), "http" | "https") || endpoint.host().is_none() {
            return Err(format!("invalid URL `{url}`: expected http(s)://host..."));
        }
        let suffix = match protocol {
            Protocol::Mlflow => Some("invocations"),
            Protocol::V2 => Some("infer"),
            Protocol::Bentoml => None,
        };
        if let Some(suffix) = suffix {
            if endpoint.path_segments().and_then(|mut s| s.next_back()) != Some(suffix) {
                let path = format!("{}/{suffix}", endpoint.path().trim_end_matches('/'));
                endpoint.set_path(&path);
            }
        }
        let columns = options
            .take("columns")
            .map(|c| c.split(',').map(str::to_owned).collect());
        let v2_input = options.take("input").unwrap_or_else(|| "input-0".into());
        let v2_datatype = options.take("datatype").unwrap_or_else(|| "FP64".into());
        if !matches!(v2_datatype.as_str(), "FP32" | "FP64" | "INT32" | "INT64") {
            return Err(format!(
                "datatype `{v2_datatype}`: expected FP32, FP64, INT32 or INT64"
            ));
        }
        let version = match protocol {
            Protocol::Mlflow => format!("mlflow:{}", endpoint.origin().ascii_serialization()),
            Protocol::V2 => format!("v2:{}", endpoint.path().trim_end_matches("/infer")),
            Protocol::Bentoml => format!("bentoml:{}", endpoint.path()),
        };
        let plain = match (endpoint.scheme(), endpoint.host_str()) {
            ("http", Some(host)) => Some(Arc::new(Pool::new(
                host,
                endpoint.port_or_known_default().unwrap_or(80),
                endpoint.port().is_none(),
            ))),
            _ => None,
        };
        let mut target = endpoint.path().to_owned();
        if let Some(q) = endpoint.query() {
            target.push('?');
            target.push_str(q);
        }
        Ok(Self {
            clients,
            plain,
            target,
            protocol,
            endpoint,
            columns,
            v2_input,
            v2_datatype,
            version,
        })
    }

    /// The URL requests go to.
    pub fn endpoint(&self) -> &reqwest::Url {
        &self.endpoint
    }

    /// The request body for `input`, and whether it is a batch.
    fn request(&self, input: &Value) -> Result<(Value, bool), ModelError> {
        match self.protocol {
            Protocol::Mlflow => {
                const KEYS: [&str; 4] = [
                    "dataframe_split",
                    "dataframe_records",
                    "instances",
                    "inputs",
                ];
                if KEYS.iter().any(|k| input.get(k).is_some()) {
                    return Ok((input.clone(), true));
                }
                if let Some(rows) = feature_rows(input) {
                    let (rows, batch) = rows?;
                    let body = match &self.columns {
                        Some(c) => json!({"dataframe_split": {"columns": c, "data": rows}}),
                        None => json!({ "inputs": rows }),
                    };
                    return Ok((body, batch));
                }
                match input {
                    Value::Object(_) => Ok((json!({ "dataframe_records": [input] }), false)),
                    _ => Err(ModelError::InvalidInput("expected a JSON object".into())),
                }
            }
            Protocol::V2 => {
                if input.get("inputs").is_some() {
                    return Ok((input.clone(), true));
                }
                let Some(rows) = feature_rows(input) else {
                    return Err(ModelError::InvalidInput(
                        "expected {\"features\": [..]} or a V2 {\"inputs\": [..]} body".into(),
                    ));
                };
                let (rows, batch) = rows?;
                let mut data = Vec::new();
                let mut width = None;
                for (r, row) in rows.iter().enumerate() {
                    let Value::Array(values) = row else {
                        return Err(ModelError::InvalidInput(format!(
                            "features[{r}] is not an array"
                        )));
                    };
                    if *width.get_or_insert(values.len()) != values.len() {
                        return Err(ModelError::InvalidInput("rows of different lengths".into()));
                    }
                    if let Some(bad) = values.iter().find(|v| !v.is_number()) {
                        return Err(ModelError::InvalidInput(format!(
                            "feature {bad} is not a number"
                        )));
                    }
                    data.extend(values.iter().cloned());
                }
                let body = json!({"inputs": [{
                    "name": self.v2_input,
                    "shape": [rows.len(), width.unwrap_or(0)],
                    "datatype": self.v2_datatype,
                    "data": data,
                }]});
                Ok((body, batch))
            }
            Protocol::Bentoml => Ok((input.clone(), false)),
        }
    }

    /// The output JSON and the model version from a 2xx body.
    fn response(&self, body: &str, batch: bool) -> Result<(Value, String), ModelError> {
        let invalid =
            |why: &str| ModelError::InvalidOutput(format!("{why}; body: {}", truncate(body)));
        let value: Value =
            serde_json::from_str(body).map_err(|e| invalid(&format!("not JSON ({e})")))?;
        match self.protocol {
            Protocol::Mlflow => {
                let p = value
                    .get("predictions")
                    .ok_or_else(|| invalid("no `predictions`"))?;
                Ok((json!({ "predictions": p }), self.version.clone()))
            }
            Protocol::V2 => {
                let outputs = value
                    .get("outputs")
                    .and_then(Value::as_array)
                    .ok_or_else(|| invalid("no `outputs` array"))?;
                let mut out = Map::new();
                for o in outputs {
                    let name = o
                        .get("name")
                        .and_then(Value::as_str)
                        .ok_or_else(|| invalid("output without a name"))?;
                    let shape: Vec<u64> = o
                        .get("shape")
                        .and_then(Value::as_array)
                        .map(|s| s.iter().filter_map(Value::as_u64).collect())
                        .ok_or_else(|| invalid("output without a shape"))?;
                    let mut flat = Vec::new();
                    flatten(
                        o.get("data")
                            .ok_or_else(|| invalid("output without data"))?,
                        &mut flat,
                    );
                    let expected: u64 = shape.iter().product();
                    if flat.len() as u64 != expected {
                        return Err(invalid(&format!(
                            "output `{name}` has {} values for shape {shape:?}",
                            flat.len()
                        )));
                    }
                    let value = if batch || shape.first() != Some(&1) {
                        Value::Array(flat)
                    } else if flat.len() == 1 {
                        flat.swap_remove(0)
                    } else {
                        Value::Array(flat)
                    };
                    out.insert(name.to_owned(), value);
                }
                let version = match (
                    value.get("model_name").and_then(Value::as_str),
                    value.get("model_version").and_then(Value::as_str),
                ) {
                    (Some(n), Some(v)) => format!("v2:{n}@{v}"),
                    (Some(n), None) => format!("v2:{n}"),
                    _ => self.version.clone(),
                };
                Ok((Value::Object(out), version))
            }
            Protocol::Bentoml => Ok((value, self.version.clone())),
        }
    }
}

/// Row-major flattening of nested tensor data (the V2 spec allows both forms).
fn flatten(v: &Value, out: &mut Vec<Value>) {
    match v {
        Value::Array(items) => items.iter().for_each(|i| flatten(i, out)),
        other => out.push(other.clone()),
    }
}

#[async_trait::async_trait]
impl Model for HttpModel {
    async fn predict(&self, user_id: &str, input: &Value) -> Result<Prediction, ModelError> {
        self.predict_timed(user_id, input).await.map(|(p, _)| p)
    }

    async fn predict_timed(
        &self,
        _user_id: &str,
        input: &Value,
    ) -> Result<(Prediction, Option<Duration>), ModelError> {
        let (body, batch) = self.request(input)?;
        let start = std::time::Instant::now();
        let (status, text) = match &self.plain {
            Some(pool) => {
                let bytes = serde_json::to_vec(&body)
                    .map_err(|e| ModelError::InvalidInput(format!("encoding the body: {e}")))?;
                match pool.post(&self.target, bytes.into()).await {
                    Ok(r) => (r.status, String::from_utf8_lossy(&r.body).into_owned()),
                    Err(CallError::Connect(e) | CallError::Broken(e)) => {
                        return Err(ModelError::Connection(e))
                    }
                }
            }
            None => self.send_tls(&body).await?,
        };
        if status.is_client_error() {
            return Err(ModelError::Upstream4xx {
                status: status.as_u16(),
                body: truncate(&text),
            });
        }
        if status.is_server_error() {
            return Err(ModelError::Upstream5xx {
                status: status.as_u16(),
                body: truncate(&text),
            });
        }
        if !status.is_success() {
            return Err(ModelError::InvalidOutput(format!(
                "status {status}; body: {}",
                truncate(&text)
            )));
        }
        let upstream_time = start.elapsed();
        let (output, model_version) = self.response(&text, batch)?;
        Ok((
            Prediction {
                output,
                model_version,
            },
            Some(upstream_time),
        ))
    }
}

impl HttpModel {
    /// One call through the TLS client: its status and body.
    async fn send_tls(&self, body: &Value) -> Result<(hyper::StatusCode, String), ModelError> {
        // A pooled connection the server has since closed (uvicorn drops it after a 500, a
        // restarted server resets it) fails on reuse; retry once on a new connection (not
        // from the pool, which may hold more dead ones). Inference is a pure function of the
        // body, so sending it twice is safe. A refused connection is not retried: that
        // server is down.
        let (mut client, mut retried) = (&self.clients.pooled, false);
        let response = loop {
            match client.post(self.endpoint.clone()).json(body).send().await {
                Ok(r) => break r,
                Err(e) if !retried && e.is_request() && !e.is_connect() => {
                    (client, retried) = (&self.clients.fresh, true);
                }
                Err(e) => return Err(ModelError::Connection(chain(&e))),
            }
        };
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|e| ModelError::Connection(format!("reading the body: {}", chain(&e))))?;
        Ok((status, text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(protocol: Protocol, url: &str, opts: &str) -> HttpModel {
        let (_, mut o) = Options::split(opts).unwrap();
        let m = HttpModel::new(Clients::new(), protocol, url, &mut o).unwrap();
        o.finish().unwrap();
        m
    }

    #[test]
    fn endpoints_and_bodies() {
        let m = model(Protocol::Mlflow, "http://127.0.0.1:5001", "");
        assert_eq!(m.endpoint().as_str(), "http://127.0.0.1:5001/invocations");
        assert_eq!(
            m.request(&json!({"features": [1, 2]})).unwrap(),
            (json!({"inputs": [[1, 2]]}), false)
        );
        assert_eq!(
            m.request(&json!({"context": "home"})).unwrap().0,
            json!({"dataframe_records": [{"context": "home"}]})
        );
        let m = model(Protocol::Mlflow, "http://h:1/invocations", "#columns=a,b");
        assert_eq!(m.endpoint().as_str(), "http://h:1/invocations");
        assert_eq!(
            m.request(&json!({"features": [[1, 2], [3, 4]]})).unwrap(),
            (
                json!({"dataframe_split": {"columns": ["a", "b"], "data": [[1, 2], [3, 4]]}}),
                true
            )
        );
        let m = model(
            Protocol::V2,
            "http://h:1/v2/models/iris/",
            "#input=x&datatype=FP32",
        );
        assert_eq!(m.endpoint().as_str(), "http://h:1/v2/models/iris/infer");
        assert_eq!(
            m.request(&json!({"features": [5.1, 3.5]})).unwrap().0,
            json!({"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [5.1, 3.5]}]})
        );
        assert_eq!(
            m.request(&json!({"features": [[1], [1, 2]]}))
                .unwrap_err()
                .kind(),
            "invalid_input"
        );
        assert_eq!(
            m.request(&json!({"features": ["a"]})).unwrap_err().kind(),
            "invalid_input"
        );
        for bad in ["ftp://h/x", "no url", "http://"] {
            let (_, mut o) = Options::split("").unwrap();
            assert!(
                HttpModel::new(Clients::new(), Protocol::V2, bad, &mut o).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn v2_responses_are_checked_and_squeezed() {
        let m = model(Protocol::V2, "http://h:1/v2/models/iris", "");
        let body = r#"{"model_name":"iris","model_version":"v1","outputs":[
            {"name":"predict","shape":[1,1],"datatype":"INT64","data":[2]},
            {"name":"proba","shape":[1,3],"datatype":"FP64","data":[[0.1,0.2,0.7]]}]}"#;
        let (out, version) = m.response(body, false).unwrap();
        assert_eq!(out, json!({"predict": 2, "proba": [0.1, 0.2, 0.7]}));
        assert_eq!(version, "v2:iris@v1");
        let bad = r#"{"model_name":"iris","outputs":[{"name":"p","shape":[2],"datatype":"INT64","data":[1]}]}"#;
        assert_eq!(m.response(bad, false).unwrap_err().kind(), "invalid_output");
        let e = m.response("<html>oops</html>", false).unwrap_err();
        assert!(e.to_string().contains("<html>oops"), "{e}");
    }

    #[test]
    fn truncation_keeps_char_boundaries() {
        let long = format!("{}END", "é".repeat(600));
        let t = truncate(&long);
        assert!(t.contains(" of 1203 bytes cut ...] "), "{t}");
        assert!(t.starts_with('é') && t.ends_with("éEND"), "{t}");
        assert!(t.len() < BODY_LIMIT + 40);
        assert_eq!(truncate("short"), "short");
    }
}
