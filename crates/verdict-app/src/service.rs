//! The command side: experiments, assignments, predictions, interactions and
//! conversions become events, appended durably before anything is acknowledged.
//!
//! The command side keeps its own write model (experiment states and who was assigned
//! what), rebuilt from the log at start and updated only after an append succeeded. It
//! never writes a read model.

mod follow;
pub mod input;
pub use follow::FOLLOWER;

use crate::codec;
use crate::error::AppError;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;
use uuid::Uuid;
use verdict_core::assign::{CompiledExperiment, Reason, UserContext};
use verdict_core::event::ShadowComparison;
use verdict_core::event::{
    lifecycle_stream, traffic_stream, ConversionRecorded, Metadata, PredictionFailed,
    PredictionMade, UserAssigned, UserInteracted,
};
use verdict_core::experiment::{
    decide, evolve, Command, Experiment, ExperimentSpec, ShadowVariant, Status,
};
use verdict_core::{DomainError, Event};
use verdict_serve::{Model, Registry};
use verdict_store::{EventData, EventStore, ExpectedVersion, StoreError};

/// Where the current time comes from (a parameter, so tests control it).
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Unix time in microseconds.
    fn now_micros(&self) -> i64;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_micros(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as i64)
    }
}

/// One experiment as the command side knows it.
#[derive(Debug)]
struct Live {
    state: Experiment,
    router: CompiledExperiment,
    models: Vec<Arc<dyn Model>>,
    /// Shadow arms and their models, in definition order.
    shadows: Vec<(ShadowVariant, Arc<dyn Model>)>,
}

/// Shadow calls in flight, across experiments: beyond this, mirrors are dropped (and
/// counted) rather than queued, so a slow shadow model cannot build up memory or steal
/// the request path's capacity.
const SHADOW_IN_FLIGHT: usize = 256;

impl Live {
    fn control(&self) -> usize {
        let def = self
            .state
            .definition
            .as_ref()
            .expect("live experiments are created");
        def.variants
            .iter()
            .position(|v| v.key == def.control().key)
            .unwrap_or(0)
    }
}

/// A prediction request.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PredictRequest {
    /// Experiment.
    pub experiment_id: String,
    /// User.
    pub user_id: String,
    /// Targeting attributes.
    #[serde(default)]
    pub attributes: Map<String, Value>,
    /// Model input.
    #[serde(default)]
    pub input: Value,
}

/// What the caller gets back from a prediction.
#[derive(Debug, Clone, Serialize)]
pub struct PredictResponse {
    /// Experiment.
    pub experiment_id: String,
    /// User.
    pub user_id: String,
    /// Variant served.
    pub variant: String,
    /// Model served.
    pub model: String,
    /// Version the model reported.
    pub model_version: Option<String>,
    /// The model's output (absent when it failed).
    pub output: Option<Value>,
    /// Prediction id (for joining outcomes to predictions).
    pub prediction_id: Uuid,
    /// Model latency measured by the server.
    pub latency_ms: f64,
    /// Of `latency_ms`, the time in the model itself, when the backend measures it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_ms: Option<f64>,
    /// Whether the user is in the experiment (false: the control is served, nothing
    /// is recorded).
    pub in_experiment: bool,
    /// The failure, if the model failed: `{kind, message}`.
    pub error: Option<Value>,
    /// Global position of the last event written (or the head, when nothing was).
    pub position: u64,
}

/// An assignment request.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssignRequest {
    /// Experiment.
    pub experiment_id: String,
    /// User.
    pub user_id: String,
    /// Targeting attributes.
    #[serde(default)]
    pub attributes: Map<String, Value>,
}

/// An assignment.
#[derive(Debug, Clone, Serialize)]
pub struct AssignResponse {
    /// Experiment.
    pub experiment_id: String,
    /// User.
    pub user_id: String,
    /// Variant to serve (the control when not in the experiment).
    pub variant: String,
    /// Its model.
    pub model: String,
    /// Whether the user is in the experiment.
    pub in_experiment: bool,
    /// The hash that chose the variant, when hashing chose it.
    pub bucket: Option<f64>,
    /// Global position of the `UserAssigned` written, or the head.
    pub position: u64,
}

/// An interaction.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InteractionRequest {
    /// Client idempotency key.
    pub event_id: Option<Uuid>,
    /// Experiment.
    pub experiment_id: String,
    /// User.
    pub user_id: String,
    /// `click`, `view`, ...
    pub action: String,
    /// The item.
    pub item_id: Option<String>,
    /// What the client believes the variant is: ignored for attribution.
    pub variant: Option<String>,
    /// The seed's name for the model: ignored for attribution.
    pub model_version: Option<String>,
}

/// A conversion.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConversionRequest {
    /// Client idempotency key.
    pub event_id: Option<Uuid>,
    /// Experiment.
    pub experiment_id: String,
    /// User.
    pub user_id: String,
    /// `purchase`, ...
    #[serde(default = "default_conversion_type")]
    pub conversion_type: String,
    /// Revenue.
    #[serde(default)]
    pub amount: f64,
    /// What the client believes the variant is: ignored for attribution.
    pub variant: Option<String>,
    /// The seed's name for the model: ignored for attribution.
    pub model_version: Option<String>,
}

fn default_conversion_type() -> String {
    "conversion".to_owned()
}

/// The result of recording an outcome.
#[derive(Debug, Clone, Serialize)]
pub struct Recorded {
    /// The event id (the client's, or a new one).
    pub event_id: Uuid,
    /// Global position.
    pub position: u64,
    /// The variant it was attributed to; `None` for a user never assigned.
    pub variant: Option<String>,
}

/// The command side.
pub struct CommandService {
    store: Arc<dyn EventStore>,
    registry: Registry,
    clock: Arc<dyn Clock>,
    experiments: RwLock<HashMap<String, Arc<Live>>>,
    /// experiment -> user -> variant index: first exposures are recorded once, and
    /// outcomes are attributed to what the user was actually served.
    assignments: Mutex<HashMap<String, HashMap<String, u32>>>,
    /// Bounds shadow calls in flight.
    shadow_permits: Arc<tokio::sync::Semaphore>,
    /// Mirrors dropped because [`SHADOW_IN_FLIGHT`] calls were already running.
    shadow_dropped: AtomicU64,
    /// The last position the store follower applied, plus one; zero while not following
    /// (see [`CommandService::followed`]).
    followed_next: AtomicU64,
}

fn store_error(e: StoreError) -> AppError {
    match e {
        StoreError::WrongExpectedVersion { stream, expected, current } => AppError::Conflict(format!(
            "concurrent modification of {stream}: expected version {expected}, found {current}; reload and retry"
        )),
        StoreError::DuplicateEventId { event_id, position } => {
            AppError::IdConflict { event_id, position }
        }
        StoreError::InvalidAppend(m) => AppError::Invalid { field: "body".into(), message: m },
        other => AppError::Unavailable(other.to_string()),
    }
}

fn domain_error(e: DomainError) -> AppError {
    match e {
        DomainError::Invalid { field, message } => AppError::Invalid { field, message },
        DomainError::NotFound => AppError::NotFound("experiment not found".into()),
        e @ (DomainError::AlreadyExists(_) | DomainError::InvalidTransition { .. }) => {
            AppError::Conflict(e.to_string())
        }
    }
}

impl std::fmt::Debug for CommandService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandService")
            .field("registry", &self.registry)
            .finish_non_exhaustive()
    }
}

impl CommandService {
    /// Builds the command side and rebuilds its write model from the log.
    pub async fn open(
        store: Arc<dyn EventStore>,
        registry: Registry,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, AppError> {
        let service = Self {
            store,
            registry,
            clock,
            experiments: RwLock::new(HashMap::new()),
            assignments: Mutex::new(HashMap::new()),
            shadow_permits: Arc::new(tokio::sync::Semaphore::new(SHADOW_IN_FLIGHT)),
            shadow_dropped: AtomicU64::new(0),
            followed_next: AtomicU64::new(0),
        };
        service.rebuild().await?;
        Ok(service)
    }

    async fn rebuild(&self) -> Result<(), AppError> {
        let head = self.store.head().await.map_err(store_error)?;
        let mut states: HashMap<String, Experiment> = HashMap::new();
        let mut assignments: HashMap<String, HashMap<String, u32>> = HashMap::new();
        let mut from = 1;
        while from <= head {
            let page = self.store.read_all(from, 8192).await.map_err(store_error)?;
            let Some(last) = page.last() else { break };
            from = last.position + 1;
            for recorded in &page {
                // Only lifecycle and exposure events shape the write model; skip decoding the rest.
                let t = recorded.event_type.as_str();
                if !(t.starts_with("Experiment") || t == "TrafficChanged" || t == "UserAssigned") {
                    continue;
                }
                let Ok(event) = codec::decode(recorded) else {
                    continue;
                };
                match &event {
                    Event::UserAssigned(a) => {
                        let Some(state) = states.get(&a.experiment_id) else {
                            continue;
                        };
                        let Some(def) = &state.definition else {
                            continue;
                        };
                        if let Some(i) = def.variants.iter().position(|v| v.key == a.variant) {
                            assignments
                                .entry(a.experiment_id.clone())
                                .or_default()
                                .entry(a.user_id.clone())
                                .or_insert(i as u32);
                        }
                    }
                    e if e.is_lifecycle() => {
                        let state = states.remove(e.experiment_id()).unwrap_or_default();
                        states.insert(e.experiment_id().to_owned(), evolve(state, e));
                    }
                    _ => {}
                }
            }
        }
        let mut live = HashMap::new();
        for (id, state) in states {
            // A model that cannot load becomes a failing stand-in (make_live_existing).
            let _ = self.load_models(&state).await;
            match self.make_live_existing(state) {
                Ok(l) => {
                    live.insert(id, Arc::new(l));
                }
                Err(e) => {
                    tracing::error!(experiment = %id, error = %e, "experiment's models cannot be loaded")
                }
            }
        }
        *self.experiments.write().unwrap_or_else(|e| e.into_inner()) = live;
        *self.assignments.lock().unwrap_or_else(|e| e.into_inner()) = assignments;
        Ok(())
    }

    /// Loads every model `state` names on tokio's blocking pool, so a slow load (a large
    /// ONNX file, up to the registry's load timeout) holds no async worker and no lock;
    /// [`Self::make_live`] then finds them loaded. Errors name the variant as there.
    async fn load_models(&self, state: &Experiment) -> Result<(), AppError> {
        let Some(def) = &state.definition else {
            return Ok(());
        };
        let models: Vec<(String, String)> = def
            .variants
            .iter()
            .enumerate()
            .map(|(i, v)| (format!("variants[{i}].model"), v.model.clone()))
            .chain(
                def.shadows
                    .iter()
                    .map(|s| ("variants".to_owned(), s.model.clone())),
            )
            .collect();
        for (field, model) in models {
            let registry = self.registry.clone();
            let loaded = tokio::task::spawn_blocking(move || {
                registry
                    .resolve(&model)
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            })
            .await
            .map_err(|e| AppError::Unavailable(format!("loading a model: {e}")))?;
            if let Err(message) = loaded {
                return Err(AppError::Invalid { field, message });
            }
        }
        Ok(())
    }

    fn make_live(&self, state: Experiment) -> Result<Live, AppError> {
        self.build_live(state, false)
    }

    /// [`Self::make_live`] for an experiment that exists already (rebuild, follow): a model
    /// this node cannot load becomes a stand-in whose every call fails with the reason, so
    /// the experiment stays in the write model and can still be paused, stopped or stopped
    /// by its guardrail (it would otherwise vanish, and with it the P1 stop).
    fn make_live_existing(&self, state: Experiment) -> Result<Live, AppError> {
        self.build_live(state, true)
    }

    fn build_live(&self, state: Experiment, lenient: bool) -> Result<Live, AppError> {
        let def = state
            .definition
            .as_ref()
            .ok_or_else(|| AppError::NotFound("experiment not found".into()))?;
        let resolve = |model: &str| -> Result<Arc<dyn Model>, verdict_serve::RegistryError> {
            match self.registry.resolve(model) {
                Err(e) if lenient => {
                    tracing::error!(experiment = %def.experiment_id, model, error = %e, "model cannot be loaded on this node: its calls fail until it can; lifecycle commands work");
                    Ok(Arc::new(verdict_serve::Unloaded::new(model, e.to_string())))
                }
                other => other,
            }
        };
        let models = def
            .variants
            .iter()
            .enumerate()
            .map(|(i, v)| {
                resolve(&v.model).map_err(|e| AppError::Invalid {
                    field: format!("variants[{i}].model"),
                    message: e.to_string(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let shadows = def
            .shadows
            .iter()
            .map(|s| {
                resolve(&s.model)
                    .map(|m| (s.clone(), m))
                    .map_err(|e| AppError::Invalid {
                        field: "variants".into(),
                        message: format!("shadow variant `{}`: {e}", s.key),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let router = state.compile().expect("created experiments compile");
        Ok(Live {
            state,
            router,
            models,
            shadows,
        })
    }

    fn live(&self, id: &str) -> Result<Arc<Live>, AppError> {
        self.experiments
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
            .ok_or_else(|| AppError::NotFound(format!("experiment `{id}` not found")))
    }

    /// The current state of every experiment the command side knows.
    pub fn states(&self) -> Vec<Experiment> {
        self.experiments
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(|l| l.state.clone())
            .collect()
    }

    fn event_data(&self, event: &Event, event_id: Option<Uuid>) -> EventData {
        codec::encode(
            event,
            event_id.unwrap_or_else(Uuid::now_v7),
            self.clock.now_micros(),
            &Metadata::default(),
        )
    }

    /// The store's head position.
    pub async fn head(&self) -> Result<u64, AppError> {
        self.store.head().await.map_err(store_error)
    }

    /// Creates an experiment from the seed's or the full shape; `start` starts it too.
    pub async fn create_experiment(
        &self,
        body: Value,
        start: bool,
    ) -> Result<(Experiment, u64), AppError> {
        let definition = ExperimentSpec::from_json(body)
            .and_then(ExperimentSpec::validate)
            .map_err(domain_error)?;
        let id = definition.experiment_id.clone();
        if self.live(&id).is_ok() {
            return Err(AppError::Conflict(format!(
                "experiment `{id}` already exists"
            )));
        }
        let events = decide(
            &Experiment::default(),
            Command::Create {
                definition: Box::new(definition),
                start,
            },
        )
        .map_err(domain_error)?;
        let state = events.iter().fold(Experiment::default(), evolve);
        // Resolve every model before anything is written: an unknown model names its variant.
        self.load_models(&state).await?;
        let live = self.make_live(state.clone())?;
        let data = events.iter().map(|e| self.event_data(e, None)).collect();
        let result = self
            .store
            .append(&lifecycle_stream(&id), ExpectedVersion::NoStream, data)
            .await
            .map_err(store_error)?;
        self.experiments
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(id)
            .or_insert(Arc::new(live)); // the store follower may have been first
        Ok((state, result.last_position))
    }

    /// Applies a lifecycle command (start, pause, resume, traffic, stop) with optimistic
    /// concurrency on the experiment's stream.
    pub async fn execute(&self, id: &str, command: Command) -> Result<(Experiment, u64), AppError> {
        let live = self.live(id)?;
        let events = decide(&live.state, command).map_err(domain_error)?;
        let data = events.iter().map(|e| self.event_data(e, None)).collect();
        let expected = ExpectedVersion::Exact(live.state.version);
        match self
            .store
            .append(&lifecycle_stream(id), expected, data)
            .await
        {
            Ok(result) => {
                let mut map = self.experiments.write().unwrap_or_else(|e| e.into_inner());
                let current = map.get(id).cloned().unwrap_or(live);
                if current.state.version >= result.stream_version {
                    // The store follower (several nodes) applied these events already.
                    return Ok((current.state.clone(), result.last_position));
                }
                let state = events.iter().fold(current.state.clone(), evolve);
                let router = state.compile().expect("created experiments compile");
                map.insert(
                    id.to_owned(),
                    Arc::new(Live {
                        state: state.clone(),
                        router,
                        models: current.models.clone(),
                        shadows: current.shadows.clone(),
                    }),
                );
                Ok((state, result.last_position))
            }
            Err(e @ StoreError::WrongExpectedVersion { .. }) => {
                // Someone else wrote: refresh from the log so the next attempt sees it.
                self.refresh(id).await?;
                Err(store_error(e))
            }
            Err(e) => Err(store_error(e)),
        }
    }

    async fn refresh(&self, id: &str) -> Result<(), AppError> {
        let events = self
            .store
            .read_stream(&lifecycle_stream(id), 1, usize::MAX)
            .await
            .map_err(store_error)?;
        let mut state = Experiment::default();
        for r in &events {
            if let Ok(e) = codec::decode(r) {
                state = evolve(state, &e);
            }
        }
        let _ = self.load_models(&state).await;
        let live = self.make_live_existing(state)?;
        self.experiments
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.to_owned(), Arc::new(live));
        Ok(())
    }

    /// Decides the user's variant: a user already assigned keeps their variant while the
    /// experiment runs (sticky across traffic changes); otherwise the router decides.
    /// Returns (variant index, in experiment, bucket, first exposure).
    fn route(
        &self,
        live: &Live,
        experiment_id: &str,
        user_id: &str,
        attributes: &Map<String, Value>,
    ) -> (usize, bool, Option<f64>, Option<Reason>) {
        if live.state.status == Status::Running {
            if let Some(i) = self.assigned_variant(experiment_id, user_id) {
                return (i as usize, true, None, None);
            }
        }
        let d = live
            .router
            .decide(&UserContext::new(Some(user_id), attributes));
        match d.variation {
            Some(i) => (i, true, d.bucket, Some(d.reason)),
            None => (live.control(), false, None, None),
        }
    }

    /// Claims the first exposure of `user_id`; false if someone else already did.
    fn claim(&self, experiment_id: &str, user_id: &str, variant: usize) -> bool {
        let mut map = self.assignments.lock().unwrap_or_else(|e| e.into_inner());
        // Look up before `entry`, which would allocate the key on every call.
        if !map.contains_key(experiment_id) {
            map.insert(experiment_id.to_owned(), HashMap::new());
        }
        let Some(users) = map.get_mut(experiment_id) else {
            return false;
        };
        if users.contains_key(user_id) {
            return false;
        }
        users.insert(user_id.to_owned(), variant as u32);
        true
    }

    fn unclaim(&self, experiment_id: &str, user_id: &str) {
        if let Some(users) = self
            .assignments
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(experiment_id)
        {
            users.remove(user_id);
        }
    }

    fn assigned_variant(&self, experiment_id: &str, user_id: &str) -> Option<u32> {
        self.assignments
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(experiment_id)
            .and_then(|m| m.get(user_id))
            .copied()
    }

    fn user_assigned(
        live: &Live,
        user_id: &str,
        i: usize,
        bucket: Option<f64>,
        reason: Reason,
    ) -> Event {
        let def = live.state.definition.as_ref().expect("created");
        Event::UserAssigned(UserAssigned {
            experiment_id: def.experiment_id.clone(),
            user_id: user_id.to_owned(),
            variant: def.variants[i].key.clone(),
            model: def.variants[i].model.clone(),
            bucket,
            experiment_version: live.state.version,
            reason: reason_name(reason).to_owned(),
        })
    }

    /// Assigns without predicting (for callers that run the model themselves).
    pub async fn assign(&self, req: AssignRequest) -> Result<AssignResponse, AppError> {
        let live = self.live(&req.experiment_id)?;
        input::user_id(&req.user_id)?;
        if live.state.status == Status::Draft {
            return Err(AppError::Conflict(format!(
                "experiment `{}` is a draft: start it first",
                req.experiment_id
            )));
        }
        let (i, in_experiment, bucket, first) =
            self.route(&live, &req.experiment_id, &req.user_id, &req.attributes);
        let def = live.state.definition.as_ref().expect("created");
        let mut position = None;
        if let Some(reason) = first {
            if self.claim(&req.experiment_id, &req.user_id, i) {
                let event = Self::user_assigned(&live, &req.user_id, i, bucket, reason);
                let data = vec![self.event_data(&event, None)];
                match self
                    .store
                    .append(
                        &traffic_stream(&req.experiment_id),
                        ExpectedVersion::Any,
                        data,
                    )
                    .await
                {
                    Ok(r) => position = Some(r.last_position),
                    Err(e) => {
                        self.unclaim(&req.experiment_id, &req.user_id);
                        return Err(store_error(e));
                    }
                }
            }
        }
        let position = match position {
            Some(p) => p,
            None => self.head().await?,
        };
        Ok(AssignResponse {
            experiment_id: req.experiment_id,
            user_id: req.user_id,
            variant: def.variants[i].key.clone(),
            model: def.variants[i].model.clone(),
            in_experiment,
            bucket,
            position,
        })
    }

    /// Assigns, calls the variant's model, and records the exposure and the outcome.
    pub async fn predict(&self, mut req: PredictRequest) -> Result<PredictResponse, AppError> {
        let live = self.live(&req.experiment_id)?;
        input::user_id(&req.user_id)?;
        if live.state.status == Status::Draft {
            return Err(AppError::Conflict(format!(
                "experiment `{}` is a draft: start it first",
                req.experiment_id
            )));
        }
        let (i, in_experiment, bucket, first) =
            self.route(&live, &req.experiment_id, &req.user_id, &req.attributes);
        let def = live.state.definition.as_ref().expect("created");
        let variant = &def.variants[i];
        let prediction_id = Uuid::now_v7();
        let started = Instant::now();
        let outcome = live.models[i].predict_timed(&req.user_id, &req.input).await;
        let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
        let model_ms = outcome
            .as_ref()
            .ok()
            .and_then(|(_, t)| t.map(|t| t.as_secs_f64() * 1000.0));
        let mut response = PredictResponse {
            experiment_id: req.experiment_id.clone(),
            user_id: req.user_id.clone(),
            variant: variant.key.clone(),
            model: variant.model.clone(),
            model_version: None,
            output: None,
            prediction_id,
            latency_ms,
            model_ms,
            in_experiment,
            error: None,
            position: 0,
        };
        // Mirror the control's successful, recorded answers to the shadow arms.
        let mirror = in_experiment && i == live.control() && !live.shadows.is_empty();
        let mut mirror_output = None;
        let outcome_event = match outcome.map(|(p, _)| p) {
            Ok(p) => {
                response.model_version = Some(p.model_version.clone());
                response.output = Some(p.output.clone());
                if mirror {
                    mirror_output = Some(p.output.clone());
                }
                Event::PredictionMade(PredictionMade {
                    experiment_id: req.experiment_id.clone(),
                    user_id: req.user_id.clone(),
                    variant: variant.key.clone(),
                    model: variant.model.clone(),
                    model_version: p.model_version,
                    prediction_id,
                    // The input moves into the event unless a mirror still needs it.
                    input: if mirror {
                        req.input.clone()
                    } else {
                        std::mem::take(&mut req.input)
                    },
                    output: p.output,
                    latency_ms,
                    model_ms,
                    shadow: false,
                    comparison: None,
                })
            }
            Err(e) => {
                response.error =
                    Some(serde_json::json!({"kind": e.kind(), "message": e.to_string()}));
                Event::PredictionFailed(PredictionFailed {
                    experiment_id: req.experiment_id.clone(),
                    user_id: req.user_id.clone(),
                    variant: variant.key.clone(),
                    model: variant.model.clone(),
                    prediction_id,
                    error_kind: e.kind().to_owned(),
                    message: truncate(&e.to_string(), 2048),
                    latency_ms,
                    shadow: false,
                })
            }
        };
        if !in_experiment {
            // Outside the experiment (paused, stopped, not covered): the control answers
            // and nothing is recorded.
            response.position = self.head().await?;
            return Ok(response);
        }
        let mut events = Vec::with_capacity(2);
        let claimed = match first {
            Some(reason) if self.claim(&req.experiment_id, &req.user_id, i) => {
                events.push(Self::user_assigned(&live, &req.user_id, i, bucket, reason));
                true
            }
            _ => false,
        };
        events.push(outcome_event);
        let data = events.iter().map(|e| self.event_data(e, None)).collect();
        match self
            .store
            .append(
                &traffic_stream(&req.experiment_id),
                ExpectedVersion::Any,
                data,
            )
            .await
        {
            Ok(r) => {
                response.position = r.last_position;
                // Only after the control's answer is durable: no shadow without its control.
                if let Some(output) = mirror_output {
                    self.mirror(&live, &req, prediction_id, &output, latency_ms);
                }
            }
            Err(e) => {
                if claimed {
                    self.unclaim(&req.experiment_id, &req.user_id);
                }
                return Err(store_error(e));
            }
        }
        Ok(response)
    }

    /// Mirrors were dropped because too many shadow calls were in flight.
    pub fn shadow_dropped(&self) -> u64 {
        self.shadow_dropped.load(Ordering::Relaxed)
    }

    /// Shadow calls running now, from the model call until their event is appended.
    pub fn shadow_in_flight(&self) -> usize {
        SHADOW_IN_FLIGHT - self.shadow_permits.available_permits()
    }

    /// While [`CommandService::follow`] runs: the position up to which this node's command
    /// side has seen the store (what other nodes wrote is attributed from then on). `None`
    /// on a node that does not follow the store.
    pub fn followed(&self) -> Option<u64> {
        self.followed_next.load(Ordering::Acquire).checked_sub(1)
    }

    /// Calls each shadow arm whose share takes this request, off the request path, and
    /// records its answer (`shadow: true`, sharing the control's `prediction_id`) with the
    /// comparison against the control's output. Best effort: a mirror is never
    /// acknowledged to anyone, so a failed append is logged, not retried.
    fn mirror(
        &self,
        live: &Live,
        req: &PredictRequest,
        prediction_id: Uuid,
        control_output: &Value,
        control_latency_ms: f64,
    ) {
        for (shadow, model) in &live.shadows {
            if !mirrored(prediction_id, shadow.share) {
                continue;
            }
            let Ok(permit) = self.shadow_permits.clone().try_acquire_owned() else {
                self.shadow_dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let (store, clock, model) = (self.store.clone(), self.clock.clone(), model.clone());
            let (shadow, control_output) = (shadow.clone(), control_output.clone());
            let (experiment_id, user_id, input) = (
                req.experiment_id.clone(),
                req.user_id.clone(),
                req.input.clone(),
            );
            tokio::spawn(async move {
                let _permit = permit;
                let started = Instant::now();
                let outcome = model.predict(&user_id, &input).await;
                let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
                let event = match outcome {
                    Ok(p) => {
                        let c = verdict_serve::shadow::compare(&control_output, &p.output);
                        Event::PredictionMade(PredictionMade {
                            experiment_id,
                            user_id,
                            variant: shadow.key,
                            model: shadow.model,
                            model_version: p.model_version,
                            prediction_id,
                            input,
                            output: p.output,
                            latency_ms,
                            model_ms: None,
                            shadow: true,
                            comparison: Some(ShadowComparison {
                                agree: c.agree,
                                overlap: c.overlap,
                                mean_abs_diff: c.mean_abs_diff,
                                control_latency_ms,
                            }),
                        })
                    }
                    Err(e) => Event::PredictionFailed(PredictionFailed {
                        experiment_id,
                        user_id,
                        variant: shadow.key,
                        model: shadow.model,
                        prediction_id,
                        error_kind: e.kind().to_owned(),
                        message: truncate(&e.to_string(), 2048),
                        latency_ms,
                        shadow: true,
                    }),
                };
                let data = codec::encode(
                    &event,
                    Uuid::now_v7(),
                    clock.now_micros(),
                    &Metadata::default(),
                );
                if let Err(e) = store
                    .append(&event.stream(), ExpectedVersion::Any, vec![data])
                    .await
                {
                    tracing::warn!(error = %e, "recording a shadow prediction failed");
                }
            });
        }
    }

    fn outcome_variant(&self, live: &Live, user_id: &str) -> Option<String> {
        let def = live.state.definition.as_ref()?;
        let i = self.assigned_variant(&def.experiment_id, user_id)?;
        def.variants.get(i as usize).map(|v| v.key.clone())
    }

    /// Records an interaction, attributed to the user's assigned variant.
    pub async fn interaction(&self, req: InteractionRequest) -> Result<Recorded, AppError> {
        let event = self.interaction_event(&req)?;
        self.record(event, req.event_id).await
    }

    /// Records a conversion, attributed to the user's assigned variant.
    pub async fn conversion(&self, req: ConversionRequest) -> Result<Recorded, AppError> {
        let event = self.conversion_event(&req)?;
        self.record(event, req.event_id).await
    }

    /// Validates an interaction into its event.
    pub fn interaction_event(&self, req: &InteractionRequest) -> Result<Event, AppError> {
        let live = self.live(&req.experiment_id)?;
        input::interaction(req)?;
        Ok(Event::UserInteracted(UserInteracted {
            experiment_id: req.experiment_id.clone(),
            user_id: req.user_id.clone(),
            action: req.action.clone(),
            item_id: req.item_id.clone(),
            variant: self.outcome_variant(&live, &req.user_id),
        }))
    }

    /// Validates a conversion into its event.
    pub fn conversion_event(&self, req: &ConversionRequest) -> Result<Event, AppError> {
        let live = self.live(&req.experiment_id)?;
        input::conversion(req)?;
        Ok(Event::ConversionRecorded(ConversionRecorded {
            experiment_id: req.experiment_id.clone(),
            user_id: req.user_id.clone(),
            conversion_type: req.conversion_type.clone(),
            amount: req.amount,
            variant: self.outcome_variant(&live, &req.user_id),
        }))
    }

    async fn record(&self, event: Event, event_id: Option<Uuid>) -> Result<Recorded, AppError> {
        let data = self.event_data(&event, event_id);
        let id = data.event_id;
        match self
            .store
            .append(&event.stream(), ExpectedVersion::Any, vec![data])
            .await
        {
            Ok(r) => Ok(Recorded {
                event_id: id,
                position: r.last_position,
                variant: outcome_variant_of(&event),
            }),
            Err(e) => self.settle_retry(&event, e).await,
        }
    }

    /// An outcome whose id is stored with other content may still be the client's retry:
    /// the variant it is attributed to is derived, and can have become known between two
    /// attempts (the exposure was recorded meanwhile). It is the same outcome when what
    /// the client sent is the same; then the original is the answer, else a conflict
    /// naming where the id is stored.
    async fn settle_retry(&self, event: &Event, e: StoreError) -> Result<Recorded, AppError> {
        let StoreError::DuplicateEventId { event_id, position } = e else {
            return Err(store_error(e));
        };
        let conflict = AppError::IdConflict { event_id, position };
        if position == 0 {
            return Err(conflict);
        }
        let stored = self
            .store
            .read_all(position, 1)
            .await
            .map_err(store_error)?
            .into_iter()
            .next()
            .filter(|r| r.event_id == event_id && r.stream == event.stream());
        let Some(stored) = stored else {
            return Err(conflict);
        };
        match codec::decode(&stored) {
            Ok(original) if same_outcome(&original, event) => Ok(Recorded {
                event_id,
                position,
                variant: outcome_variant_of(&original),
            }),
            _ => Err(conflict),
        }
    }

    /// Appends one event to its stream without a version check (alerts, outcomes).
    pub async fn append_event(&self, event: Event) -> Result<u64, AppError> {
        let data = self.event_data(&event, None);
        let r = self
            .store
            .append(&event.stream(), ExpectedVersion::Any, vec![data])
            .await
            .map_err(store_error)?;
        Ok(r.last_position)
    }

    /// [`Self::append_event`] with a chosen event id, so a caller that retries an append
    /// whose outcome it does not know (`Unavailable`) sends the very same event again and
    /// the store recognises it instead of storing it twice.
    pub async fn append_event_as(&self, event: &Event, event_id: Uuid) -> Result<u64, AppError> {
        let data = self.event_data(event, Some(event_id));
        let r = self
            .store
            .append(&event.stream(), ExpectedVersion::Any, vec![data])
            .await
            .map_err(store_error)?;
        Ok(r.last_position)
    }

    /// Records many outcome events at once: one durable append per experiment. Returns
    /// one result per event, in order.
    pub async fn record_many(
        &self,
        events: Vec<(Event, Option<Uuid>)>,
    ) -> Vec<Result<Recorded, AppError>> {
        let mut results: Vec<Option<Result<Recorded, AppError>>> =
            (0..events.len()).map(|_| None).collect();
        let mut groups: HashMap<String, Vec<(usize, EventData, Option<String>)>> = HashMap::new();
        for (i, (event, id)) in events.iter().enumerate() {
            let variant = match event {
                Event::ConversionRecorded(c) => c.variant.clone(),
                Event::UserInteracted(x) => x.variant.clone(),
                _ => None,
            };
            groups.entry(event.stream()).or_default().push((
                i,
                self.event_data(event, *id),
                variant,
            ));
        }
        for (stream, group) in groups {
            let data: Vec<EventData> = group.iter().map(|(_, d, _)| d.clone()).collect();
            match self.store.append(&stream, ExpectedVersion::Any, data).await {
                Ok(r) => {
                    for (k, (i, d, variant)) in group.into_iter().enumerate() {
                        results[i] = Some(Ok(Recorded {
                            event_id: d.event_id,
                            position: r.first_position + k as u64,
                            variant,
                        }));
                    }
                }
                Err(StoreError::DuplicateEventId { .. }) => {
                    // Some ids were stored before (a partial retry): go one by one, so
                    // each retried event is acknowledged and each new one stored.
                    for (i, d, variant) in group {
                        let id = d.event_id;
                        let appended = self
                            .store
                            .append(&stream, ExpectedVersion::Any, vec![d])
                            .await;
                        results[i] = Some(match appended {
                            Ok(r) => Ok(Recorded {
                                event_id: id,
                                position: r.last_position,
                                variant,
                            }),
                            Err(e) => self.settle_retry(&events[i].0, e).await,
                        });
                    }
                }
                Err(e) => {
                    let message = e.to_string();
                    for (i, _, _) in group {
                        results[i] = Some(Err(AppError::Unavailable(message.clone())));
                    }
                }
            }
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(AppError::Unavailable("not processed".into()))))
            .collect()
    }
}

/// The variant an outcome was attributed to.
fn outcome_variant_of(event: &Event) -> Option<String> {
    match event {
        Event::ConversionRecorded(c) => c.variant.clone(),
        Event::UserInteracted(i) => i.variant.clone(),
        _ => None,
    }
}

/// Whether two outcome events say the same thing about what the client sent (the derived
/// attribution aside).
fn same_outcome(a: &Event, b: &Event) -> bool {
    match (a, b) {
        (Event::ConversionRecorded(x), Event::ConversionRecorded(y)) => {
            x.experiment_id == y.experiment_id
                && x.user_id == y.user_id
                && x.conversion_type == y.conversion_type
                && x.amount.to_bits() == y.amount.to_bits()
        }
        (Event::UserInteracted(x), Event::UserInteracted(y)) => {
            x.experiment_id == y.experiment_id
                && x.user_id == y.user_id
                && x.action == y.action
                && x.item_id == y.item_id
        }
        _ => false,
    }
}

/// Whether a request takes part in a shadow arm with this share: a pure function of the
/// prediction id's random bits (UUIDv7 keeps 62 of them at the low end).
fn mirrored(prediction_id: Uuid, share: f64) -> bool {
    if share >= 1.0 {
        return true;
    }
    let bits = (prediction_id.as_u128() as u64) & ((1u64 << 62) - 1);
    (bits as f64) / ((1u64 << 62) as f64) < share
}

fn reason_name(r: Reason) -> &'static str {
    match r {
        Reason::Hashed => "hashed",
        Reason::ForcedUser => "forced_user",
        Reason::ForcedByContext => "forced_by_context",
        Reason::QueryString => "query_string",
        Reason::ForcedByExperiment => "forced_by_experiment",
        _ => "other",
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}
