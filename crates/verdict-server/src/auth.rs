//! API keys with roles. `read` may query, `ingest` may also send traffic (predictions,
//! assignments, outcomes), `admin` may do everything. With no keys configured, every
//! request is allowed (the binary then binds to loopback unless told otherwise).

use crate::error::ApiError;
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;

/// What a key may do; each role includes the ones below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Queries and the dashboard.
    Read,
    /// Predictions, assignments, interactions, conversions, batches.
    Ingest,
    /// Experiments: create, start, pause, resume, traffic, stop.
    Admin,
}

impl Role {
    /// The role's name.
    pub fn name(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Ingest => "ingest",
            Role::Admin => "admin",
        }
    }
}

/// A configured key.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq, Eq)]
pub struct ApiKey {
    /// The secret, sent as `Authorization: Bearer <key>` or `X-API-Key: <key>`.
    pub key: String,
    /// What it may do.
    pub role: Role,
    /// A name for logs.
    #[serde(default)]
    pub name: Option<String>,
}

/// The shortest key accepted: a guessable key is no key.
pub const MIN_KEY_LEN: usize = 16;

/// Refuses a configuration with an empty, short, padded or repeated key (a config error
/// at start, never a key that an empty header could match).
pub fn validate_keys(keys: &[ApiKey]) -> Result<(), String> {
    for (i, k) in keys.iter().enumerate() {
        let name = k
            .name
            .as_deref()
            .map_or(String::new(), |n| format!(" ({n})"));
        if k.key.chars().count() < MIN_KEY_LEN {
            return Err(format!(
                "api_keys[{i}].key{name}: keys must have at least {MIN_KEY_LEN} characters"
            ));
        }
        if k.key.trim() != k.key || k.key.chars().any(char::is_control) {
            return Err(format!(
                "api_keys[{i}].key{name}: keys must not have surrounding whitespace or control characters"
            ));
        }
        if keys[..i].iter().any(|o| o.key == k.key) {
            return Err(format!(
                "api_keys[{i}].key{name}: the same key is configured twice"
            ));
        }
    }
    Ok(())
}

fn presented(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
        return Some(v.trim());
    }
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

/// Checks the request's key against `required`: 401 without a valid key, 403 with a
/// key whose role is too low.
pub fn check(keys: &[ApiKey], headers: &HeaderMap, required: Role) -> Result<(), ApiError> {
    if keys.is_empty() {
        return Ok(());
    }
    let Some(given) = presented(headers) else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "an API key is required (Authorization: Bearer <key>)",
        ));
    };
    // Compare every key in full, so timing does not reveal a prefix match.
    let found = keys.iter().fold(None, |acc, k| {
        let eq = k.key.len() == given.len()
            && k.key
                .bytes()
                .zip(given.bytes())
                .fold(0u8, |d, (a, b)| d | (a ^ b))
                == 0;
        if eq {
            Some(k)
        } else {
            acc
        }
    });
    match found {
        None => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "unknown API key",
        )),
        Some(k) if k.role < required => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "this key has role `{}`; `{}` is required",
                k.role.name(),
                required.name()
            ),
        )),
        Some(_) => Ok(()),
    }
}
