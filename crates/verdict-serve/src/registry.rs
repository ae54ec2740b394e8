//! The model registry: names and URIs to [`Model`]s.
//!
//! A variant's `model` is either a name registered here (the defaults are `rec-v1` and
//! `rec-v2`) or a URI `scheme:rest[#options]`. Schemes:
//!
//! | scheme | example | backend |
//! |---|---|---|
//! | `onnx` | `onnx:models/rec-v2.onnx` | in-process ONNX via tract ([`crate::onnx`]) |
//! | `mlflow` | `mlflow:http://127.0.0.1:5001` | MLflow scoring server, `POST /invocations` |
//! | `v2` | `v2:http://127.0.0.1:8080/v2/models/iris` | KServe Open Inference Protocol |
//! | `bentoml` | `bentoml:http://127.0.0.1:3000/predict` | a BentoML API endpoint |
//! | `builtin` | `builtin:rec-v1` | deterministic [`HashRecommender`] |
//! | `builtin-failing` | `builtin-failing:x` | always fails; for drills |
//!
//! Options after `#` (timeout, concurrency, breaker; see [`crate::guard`]) apply to every
//! scheme except `builtin*`; `onnx:` also takes `engine=tract` (default) or `engine=ort`
//! (ONNX Runtime, cargo feature `ort`, after `onnx::onnxruntime::init`). Relative `onnx:` paths resolve against the registry's base
//! directory (default: the current directory). The shipped demo models
//! (`models/rec-v1.onnx`, `models/rec-v2.onnx`) are also compiled into the binary and used
//! when no file exists at that path, so `rec-v1`/`rec-v2` work from any directory (a test
//! binary runs in its crate's directory, `verdict demo` usually in the repository root).
//! Resolution loads and checks the model, and happens when an experiment is created, so an
//! unknown name, scheme, option or an unloadable model is refused then, not at the first
//! request.

use crate::builtin::HashRecommender;
use crate::files::{read_regular, MAX_MODEL_BYTES, MAX_SPEC_BYTES};
use crate::guard::{Guarded, Options};
use crate::http::{HttpModel, Protocol};
use crate::onnx::{Engine, ModelSpec, OnnxModel, TractEngine};
use crate::Model;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

/// Why a model reference could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// Neither a registered name nor a URI.
    #[error("unknown model `{0}` (register it in verdict.toml [models], or use a URI such as builtin:{0})")]
    UnknownModel(String),
    /// A URI with a scheme this build does not serve.
    #[error("unknown model scheme `{scheme}` in `{uri}`")]
    UnknownScheme {
        /// The scheme.
        scheme: String,
        /// The whole reference.
        uri: String,
    },
    /// The model exists but cannot be loaded.
    #[error("cannot load model `{uri}`: {reason}")]
    Unloadable {
        /// The reference.
        uri: String,
        /// Why.
        reason: String,
    },
}

/// The demo models compiled into the binary: (path as written in the default URIs, graph,
/// spec).
const SHIPPED: &[(&str, &[u8], &str)] = &[
    (
        "models/rec-v1.onnx",
        include_bytes!("../../../models/rec-v1.onnx"),
        include_str!("../../../models/rec-v1.json"),
    ),
    (
        "models/rec-v2.onnx",
        include_bytes!("../../../models/rec-v2.onnx"),
        include_str!("../../../models/rec-v2.json"),
    ),
];

/// Resolves model references; cheap to clone (clones share loaded models).
#[derive(Debug, Clone, Default)]
pub struct Registry {
    /// Registered names -> URIs.
    names: BTreeMap<String, String>,
    /// Loaded models by URI, shared by every experiment using them.
    loaded: Arc<std::sync::Mutex<BTreeMap<String, Arc<dyn Model>>>>,
    /// Where relative `onnx:` paths start; `None` is the current directory.
    base_dir: Option<PathBuf>,
    /// One set of HTTP clients for every upstream, so connections are pooled; built on
    /// first use.
    clients: Arc<OnceLock<crate::http::Clients>>,
    /// Where in-process models run; `None` is the process-wide pool.
    pool: Option<crate::onnx::InferencePool>,
    /// How long loading one model may take; `None` is [`DEFAULT_LOAD_TIMEOUT`].
    load_timeout: Option<std::time::Duration>,
}

/// How long loading (reading and compiling) one in-process model may take by default.
pub const DEFAULT_LOAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

impl Registry {
    /// The default registry: `rec-v1` and `rec-v2` as the shipped ONNX demo models
    /// (logistic regression and a small MLP ranking 12 items; both serve
    /// `{"user_id", "context"}` payloads through hashed features).
    pub fn with_defaults() -> Self {
        let mut r = Self::default();
        r.register("rec-v1", "onnx:models/rec-v1.onnx");
        r.register("rec-v2", "onnx:models/rec-v2.onnx");
        r
    }

    /// Sets the directory relative `onnx:` paths resolve against (e.g. the directory of
    /// verdict.toml). Models already loaded are kept.
    pub fn with_base_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.base_dir = Some(dir.into());
        self
    }

    /// Runs the in-process models it loads from now on on `pool` instead of the
    /// process-wide [`crate::onnx::InferencePool::global`].
    pub fn with_pool(mut self, pool: crate::onnx::InferencePool) -> Self {
        self.pool = Some(pool);
        self
    }

    /// Gives up loading a model after `timeout` (the load goes on in the background and
    /// its result is dropped).
    pub fn with_load_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.load_timeout = Some(timeout);
        self
    }

    /// Registers (or replaces) a name.
    pub fn register(&mut self, name: &str, uri: &str) {
        self.names.insert(name.to_owned(), uri.to_owned());
    }

    /// The registered names and their URIs.
    pub fn names(&self) -> &BTreeMap<String, String> {
        &self.names
    }

    /// Resolves a name or URI, loading the model once. The lock on loaded models is not
    /// held while loading, so a slow load delays no other experiment; an in-process model
    /// loads on its own thread and is given up after the load timeout.
    pub fn resolve(&self, reference: &str) -> Result<Arc<dyn Model>, RegistryError> {
        let uri = self.names.get(reference).map_or(reference, String::as_str);
        let cached = self
            .loaded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(uri)
            .cloned();
        if let Some(m) = cached {
            return Ok(m);
        }
        let model = if uri.starts_with("onnx:") {
            self.load_bounded(reference, uri)?
        } else {
            self.load(reference, uri)?
        };
        let mut loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        // Two resolves may have loaded it at once: the first stored wins, so every
        // experiment shares one instance.
        Ok(loaded.entry(uri.to_owned()).or_insert(model).clone())
    }

    fn load_bounded(&self, reference: &str, uri: &str) -> Result<Arc<dyn Model>, RegistryError> {
        let timeout = self.load_timeout.unwrap_or(DEFAULT_LOAD_TIMEOUT);
        let (tx, rx) = std::sync::mpsc::channel();
        let (this, r, u) = (self.clone(), reference.to_owned(), uri.to_owned());
        let spawned = std::thread::Builder::new()
            .name("verdict-model-load".into())
            .spawn(move || {
                let _ = tx.send(this.load(&r, &u));
            });
        let unloadable = |reason: String| RegistryError::Unloadable {
            uri: uri.to_owned(),
            reason,
        };
        if let Err(e) = spawned {
            return Err(unloadable(format!("starting a loader thread: {e}")));
        }
        match rx.recv_timeout(timeout) {
            Ok(result) => result,
            Err(_) => Err(unloadable(format!(
                "loading took longer than {} s; gave up",
                timeout.as_secs_f64()
            ))),
        }
    }

    fn load(&self, reference: &str, uri: &str) -> Result<Arc<dyn Model>, RegistryError> {
        let Some((scheme, rest)) = uri.split_once(':') else {
            return Err(RegistryError::UnknownModel(reference.to_owned()));
        };
        let unloadable = |reason: String| RegistryError::Unloadable {
            uri: uri.to_owned(),
            reason,
        };
        match scheme {
            "builtin" if !rest.is_empty() => return Ok(Arc::new(HashRecommender::new(rest))),
            "builtin-failing" if !rest.is_empty() => {
                return Ok(Arc::new(HashRecommender::failing(rest)))
            }
            "onnx" | "mlflow" | "v2" | "bentoml" => {}
            _ => {
                return Err(RegistryError::UnknownScheme {
                    scheme: scheme.to_owned(),
                    uri: uri.to_owned(),
                })
            }
        }
        let (target, mut options) = Options::split(rest).map_err(unloadable)?;
        if target.is_empty() {
            return Err(unloadable("empty location".into()));
        }
        let model: Arc<dyn Model> = if scheme == "onnx" {
            let engine = engine(options.take("engine").as_deref()).map_err(unloadable)?;
            let model = self.load_onnx(target, engine).map_err(unloadable)?;
            options.finish().map_err(unloadable)?;
            Arc::new(Guarded::new(model, &options))
        } else {
            let protocol = match scheme {
                "mlflow" => Protocol::Mlflow,
                "v2" => Protocol::V2,
                _ => Protocol::Bentoml,
            };
            let clients = self.clients.get_or_init(crate::http::Clients::new).clone();
            let model =
                HttpModel::new(clients, protocol, target, &mut options).map_err(unloadable)?;
            options.finish().map_err(unloadable)?;
            Arc::new(Guarded::new(model, &options))
        };
        Ok(model)
    }

    /// Reads an ONNX file and its spec, falling back to the compiled-in demo models.
    fn load_onnx(&self, path: &str, engine: &dyn Engine) -> Result<OnnxModel, String> {
        let full = match &self.base_dir {
            Some(base) if Path::new(path).is_relative() => base.join(path),
            _ => PathBuf::from(path),
        };
        let name = Path::new(path)
            .file_name()
            .map_or(path.into(), |n| n.to_string_lossy().into_owned());
        let (bytes, spec_text) = match read_regular(&full, MAX_MODEL_BYTES) {
            Ok(bytes) => {
                let spec_path = full.with_extension("json");
                let spec = match read_regular(&spec_path, MAX_SPEC_BYTES) {
                    Ok(s) => Some(
                        String::from_utf8(s)
                            .map_err(|_| format!("{}: not UTF-8", spec_path.display()))?,
                    ),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                    Err(e) => return Err(format!("{}: {e}", spec_path.display())),
                };
                (bytes, spec)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let normal = path.trim_start_matches("./");
                match SHIPPED.iter().find(|(p, _, _)| *p == normal) {
                    Some((_, bytes, spec)) => (bytes.to_vec(), Some((*spec).to_owned())),
                    None => return Err(format!("{}: {e}", full.display())),
                }
            }
            Err(e) => return Err(format!("{}: {e}", full.display())),
        };
        let spec: ModelSpec = match spec_text {
            Some(s) => serde_json::from_str(&s).map_err(|e| format!("{name} spec: {e}"))?,
            None => ModelSpec::default(),
        };
        let model = OnnxModel::load(engine, &name, &bytes, spec).map_err(|e| e.to_string())?;
        Ok(match &self.pool {
            Some(pool) => model.with_pool(pool.clone()),
            None => model,
        })
    }
}

/// A model this node could not load, standing in for it: every call fails with the reason
/// (`internal`), so the experiment that names it keeps working for everything but serving.
#[derive(Debug)]
pub struct Unloaded {
    message: String,
}

impl Unloaded {
    /// A stand-in for `reference`, which failed to load because of `reason`.
    pub fn new(reference: &str, reason: String) -> Self {
        Self {
            message: format!("model `{reference}` cannot be loaded on this node: {reason}"),
        }
    }
}

#[async_trait::async_trait]
impl Model for Unloaded {
    async fn predict(
        &self,
        _user_id: &str,
        _input: &serde_json::Value,
    ) -> Result<crate::Prediction, crate::ModelError> {
        Err(crate::ModelError::Internal(self.message.clone()))
    }
}

/// The engine an `onnx:` URI's `engine` option names (default: tract).
fn engine(name: Option<&str>) -> Result<&'static dyn Engine, String> {
    match name {
        None | Some("tract") => Ok(&TractEngine),
        #[cfg(feature = "ort")]
        Some("ort") => Ok(&crate::onnx::onnxruntime::OrtEngine),
        #[cfg(not(feature = "ort"))]
        Some("ort") => Err("engine `ort` is not in this build (cargo feature `ort`)".into()),
        Some(other) => Err(format!("unknown engine `{other}` (tract or ort)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_uris_resolve_and_unknowns_are_refused() {
        let r = Registry::with_defaults();
        assert!(r.resolve("rec-v1").is_ok());
        assert!(r.resolve("builtin:anything").is_ok());
        assert_eq!(
            r.resolve("rec-v3").unwrap_err(),
            RegistryError::UnknownModel("rec-v3".into())
        );
        assert!(matches!(
            r.resolve("ftp:x").unwrap_err(),
            RegistryError::UnknownScheme { .. }
        ));
        // Loaded once, shared.
        assert!(Arc::ptr_eq(
            &r.resolve("rec-v1").unwrap(),
            &r.resolve("onnx:models/rec-v1.onnx").unwrap()
        ));
        assert!(Arc::ptr_eq(
            &r.resolve("builtin:x").unwrap(),
            &r.resolve("builtin:x").unwrap()
        ));
    }

    #[test]
    fn bad_onnx_references_are_unloadable_with_a_reason() {
        let r = Registry::default();
        let reason = |uri: &str| match r.resolve(uri).unwrap_err() {
            RegistryError::Unloadable { reason, .. } => reason,
            other => panic!("{uri}: {other:?}"),
        };
        assert!(reason("onnx:models/nope.onnx").contains("No such file"));
        assert!(reason("onnx:/dev/zero").contains("not a regular file"));
        assert!(reason("onnx:/tmp").contains("not a regular file"));
        assert!(reason("onnx:").contains("empty"));
        assert!(reason("onnx:models/rec-v1.onnx#speed=11").contains("unknown option `speed`"));
        assert!(
            reason("mlflow:not a url").contains("URL"),
            "{}",
            reason("mlflow:not a url")
        );
    }
}
