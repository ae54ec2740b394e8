//! Choosing the event store from a URL: the one place a backend is picked.
//!
//! | URL | backend |
//! |---|---|
//! | none, `log:` or `log:DIR` | the embedded log in `<data-dir>/events` (or `DIR`) |
//! | `postgres://user@host:port/db?schema=verdict&pool=8` | `verdict-store-postgres` |
//! | `nats://h1:4222,h2:4222,h3:4222?replicas=3&stream=VERDICT&subjects=verdict.ev&duplicate_window_s=120` | `verdict-store-nats` |
//!
//! `schema` and `pool` (PostgreSQL) and `replicas`, `stream`, `subjects`,
//! `duplicate_window_s`, `id_retention_s`, `timeout_ms`, `startup_wait_s` (JetStream) are verdict's own parameters; other
//! PostgreSQL parameters go to the driver. `replicas` applies when the store creates the
//! stream (3 is the durable setting, with `sync_interval: always` on every server);
//! `startup_wait_s` (default 30) is how long opening waits for a cluster that is still
//! electing its meta leader.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use verdict_readmodel_postgres::split_params;
use verdict_store::EventStore;
use verdict_store_nats::{NatsOptions, NatsStore};
use verdict_store_postgres::{PgOptions, PgStore};

/// A parsed `--store` URL.
#[derive(Debug, Clone)]
pub enum StoreUrl {
    /// The embedded log; `None` means `<data-dir>/events`.
    Log(Option<PathBuf>),
    /// PostgreSQL.
    Postgres(PgOptions),
    /// NATS JetStream.
    Nats(NatsOptions),
}

/// Why a store URL is unusable or its store cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The URL is malformed or names an unknown backend or parameter.
    #[error("store URL {url:?}: {message}")]
    BadUrl {
        /// The URL (without credentials).
        url: String,
        /// What is wrong.
        message: String,
    },
    /// Opening the store failed.
    #[error("opening the {backend} store: {message}")]
    Open {
        /// Which backend.
        backend: &'static str,
        /// Why.
        message: String,
    },
}

/// The URL with any password masked, for messages and logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

impl StoreUrl {
    /// Parses a `--store` value (see the module doc).
    pub fn parse(url: &str) -> Result<Self, BackendError> {
        let bad = |message: String| BackendError::BadUrl {
            url: redact(url),
            message,
        };
        let (base, params) = split_params(url);
        if base == "log:" || base.is_empty() || base == "log" {
            return Ok(Self::Log(None));
        }
        if let Some(dir) = base.strip_prefix("log:") {
            return Ok(Self::Log(Some(PathBuf::from(dir))));
        }
        if base.starts_with("postgres://") || base.starts_with("postgresql://") {
            let mut options = PgOptions::new(String::new());
            let mut rest = Vec::new();
            for (k, v) in params {
                match k.as_str() {
                    "schema" => options.schema = v,
                    "pool" => {
                        options.pool_size = v
                            .parse()
                            .map_err(|_| bad(format!("pool={v} is not a number")))?
                    }
                    _ => rest.push(format!("{k}={v}")),
                }
            }
            options.url = if rest.is_empty() {
                base
            } else {
                format!("{base}?{}", rest.join("&"))
            };
            options
                .url
                .parse::<tokio_postgres::Config>()
                .map_err(|e| bad(e.to_string()))?;
            return Ok(Self::Postgres(options));
        }
        if base.starts_with("nats://") {
            let servers: Vec<String> = base
                .split(',')
                .map(|s| {
                    let s = s.trim();
                    if s.contains("://") {
                        s.to_owned()
                    } else {
                        format!("nats://{s}")
                    }
                })
                .collect();
            let mut options = NatsOptions::new(servers.join(","));
            for (k, v) in params {
                let number = |v: &str| {
                    v.parse::<u64>()
                        .map_err(|_| bad(format!("{k}={v} is not a number")))
                };
                match k.as_str() {
                    "replicas" => options.replicas = number(&v)? as usize,
                    "stream" => options.stream = v,
                    "subjects" => options.subject_prefix = v,
                    "duplicate_window_s" => {
                        options.duplicate_window = Duration::from_secs(number(&v)?)
                    }
                    "id_retention_s" => {
                        options.id_retention = Some(Duration::from_secs(number(&v)?))
                    }
                    "timeout_ms" => options.request_timeout = Duration::from_millis(number(&v)?),
                    "startup_wait_s" => options.startup_wait = Duration::from_secs(number(&v)?),
                    other => {
                        return Err(bad(format!(
                        "unknown parameter {other:?} (known: replicas, stream, subjects, duplicate_window_s, id_retention_s, timeout_ms, startup_wait_s)"
                    )))
                    }
                }
            }
            if !(1..=5).contains(&options.replicas) {
                return Err(bad(format!("replicas={} must be 1 to 5", options.replicas)));
            }
            return Ok(Self::Nats(options));
        }
        Err(bad(
            "unknown backend: use postgres://..., nats://... or log:[DIR] (the default)".into(),
        ))
    }

    /// Whether other processes may append to this store (then each node follows its tail).
    pub fn is_shared(&self) -> bool {
        !matches!(self, Self::Log(_))
    }

    /// A short name for logs.
    pub fn backend(&self) -> &'static str {
        match self {
            Self::Log(_) => "embedded log",
            Self::Postgres(_) => "PostgreSQL",
            Self::Nats(_) => "JetStream",
        }
    }

    /// Opens the store (`data_dir` and `fsync_spin` matter for the embedded log only).
    pub async fn open(
        &self,
        data_dir: &Path,
        fsync_spin: Duration,
    ) -> Result<Arc<dyn EventStore>, BackendError> {
        match self {
            Self::Log(dir) => {
                let dir = dir
                    .clone()
                    .unwrap_or_else(|| verdict_store_log::log_dir(data_dir));
                std::fs::create_dir_all(data_dir).map_err(|e| BackendError::Open {
                    backend: "embedded log",
                    message: format!("{}: {e}", data_dir.display()),
                })?;
                let options = verdict_store_log::LogOptions {
                    spin_during_sync: fsync_spin,
                    ..verdict_store_log::LogOptions::default()
                };
                let log = verdict_store_log::LogStore::open(&dir, options).map_err(|e| {
                    BackendError::Open {
                        backend: "embedded log",
                        message: format!("{}: {e}", dir.display()),
                    }
                })?;
                Ok(Arc::new(log))
            }
            Self::Postgres(options) => {
                let store =
                    PgStore::open(options.clone())
                        .await
                        .map_err(|e| BackendError::Open {
                            backend: "PostgreSQL",
                            message: e.to_string(),
                        })?;
                Ok(Arc::new(store))
            }
            Self::Nats(options) => {
                let store =
                    NatsStore::open(options.clone())
                        .await
                        .map_err(|e| BackendError::Open {
                            backend: "JetStream",
                            message: e.to_string(),
                        })?;
                Ok(Arc::new(store))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_select_backends_and_options() {
        assert!(matches!(StoreUrl::parse("").unwrap(), StoreUrl::Log(None)));
        assert!(matches!(
            StoreUrl::parse("log:/tmp/x").unwrap(),
            StoreUrl::Log(Some(_))
        ));
        let StoreUrl::Postgres(pg) =
            StoreUrl::parse("postgres://u@127.0.0.1/db?schema=events&pool=4").unwrap()
        else {
            panic!("postgres")
        };
        assert_eq!((pg.schema.as_str(), pg.pool_size), ("events", 4));
        assert_eq!(pg.url, "postgres://u@127.0.0.1/db");
        let StoreUrl::Nats(n) = StoreUrl::parse(
            "nats://127.0.0.1:4222,127.0.0.1:4223?replicas=3&stream=EV&id_retention_s=604800&startup_wait_s=5",
        )
        .unwrap() else {
            panic!("nats")
        };
        assert_eq!(n.replicas, 3);
        assert_eq!(n.id_retention, Some(Duration::from_secs(604_800)));
        assert_eq!(n.stream, "EV");
        assert_eq!(n.startup_wait, Duration::from_secs(5));
        assert_eq!(n.url, "nats://127.0.0.1:4222,nats://127.0.0.1:4223");
        for bad in [
            "mysql://x",
            "nats://h?replicas=0",
            "nats://h?replica=3",
            "postgres://h?pool=x",
        ] {
            let err = StoreUrl::parse(bad).unwrap_err().to_string();
            assert!(err.contains("store URL"), "{bad}: {err}");
        }
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
    }
}
