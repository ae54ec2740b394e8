//! The model registry: names and URIs to [`Model`]s.
//!
//! A variant's `model` is either a name registered here (the defaults are `rec-v1` and
//! `rec-v2`) or a URI `scheme:rest`. Schemes: `builtin:<name>` (a deterministic
//! [`HashRecommender`]) and `builtin-failing:<name>` (always fails; for drills).
//! Resolution happens when an experiment is created, so an unknown name is refused then,
//! not at the first request.

use crate::builtin::HashRecommender;
use crate::Model;
use std::collections::BTreeMap;
use std::sync::Arc;

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

/// Resolves model references; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    /// Registered names -> URIs.
    names: BTreeMap<String, String>,
    /// Loaded models by URI, shared by every experiment using them.
    loaded: Arc<std::sync::Mutex<BTreeMap<String, Arc<dyn Model>>>>,
}

impl Registry {
    /// The default registry: `rec-v1` and `rec-v2` as built-in deterministic models.
    pub fn with_defaults() -> Self {
        let mut r = Self::default();
        r.register("rec-v1", "builtin:rec-v1");
        r.register("rec-v2", "builtin:rec-v2");
        r
    }

    /// Registers (or replaces) a name.
    pub fn register(&mut self, name: &str, uri: &str) {
        self.names.insert(name.to_owned(), uri.to_owned());
    }

    /// The registered names and their URIs.
    pub fn names(&self) -> &BTreeMap<String, String> {
        &self.names
    }

    /// Resolves a name or URI, loading the model once.
    pub fn resolve(&self, reference: &str) -> Result<Arc<dyn Model>, RegistryError> {
        let uri = self.names.get(reference).map_or(reference, String::as_str);
        let mut loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(m) = loaded.get(uri) {
            return Ok(m.clone());
        }
        let model = Self::load(reference, uri)?;
        loaded.insert(uri.to_owned(), model.clone());
        Ok(model)
    }

    fn load(reference: &str, uri: &str) -> Result<Arc<dyn Model>, RegistryError> {
        let Some((scheme, rest)) = uri.split_once(':') else {
            return Err(RegistryError::UnknownModel(reference.to_owned()));
        };
        match scheme {
            "builtin" if !rest.is_empty() => Ok(Arc::new(HashRecommender::new(rest))),
            "builtin-failing" if !rest.is_empty() => Ok(Arc::new(HashRecommender::failing(rest))),
            _ => Err(RegistryError::UnknownScheme {
                scheme: scheme.to_owned(),
                uri: uri.to_owned(),
            }),
        }
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
            &r.resolve("builtin:rec-v1").unwrap()
        ));
    }
}
