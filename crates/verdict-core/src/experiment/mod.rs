//! The Experiment aggregate: commands in, events out.
//!
//! `decide(state, command)` checks the command against the current state and returns
//! the events it causes, or a [`DomainError`]; `evolve(state, event)` folds an event into
//! the state and cannot fail, because an event is a fact that already happened.
//! Lifecycle: Draft -> Running <-> Paused -> Stopped.

pub mod definition;
pub mod limits;

use crate::assign::CompiledExperiment;
use crate::error::DomainError;
use crate::event::{Event, ExperimentCreated, ExperimentStopped, Lifecycle, TrafficChanged};
pub use definition::{
    ExperimentDefinition, ExperimentSpec, MonitorSettings, ShadowVariant, Variant,
};
pub use limits::{validate_label, validate_text, MAX_DEFINITION_BYTES, MAX_VARIANTS};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use uuid::Uuid;

/// Where an experiment is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Created, not yet serving.
    #[default]
    Draft,
    /// Serving variants.
    Running,
    /// Temporarily serving the control to everyone.
    Paused,
    /// Ended; the control for everyone, for good.
    Stopped,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Status::Draft => "draft",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        })
    }
}

/// How an experiment ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StopInfo {
    /// Why.
    pub reason: Option<String>,
    /// Declared winner.
    pub winner: Option<String>,
    /// Stopped by a guardrail.
    pub auto: bool,
    /// The alert behind an automatic stop.
    pub cause: Option<Uuid>,
}

/// The aggregate's state, folded from its lifecycle stream.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Experiment {
    /// The definition, once created (weights and coverage track traffic changes).
    pub definition: Option<ExperimentDefinition>,
    /// Lifecycle status.
    pub status: Status,
    /// Number of lifecycle events applied: the stream version to expect next time.
    pub version: u64,
    /// Set once stopped.
    pub stop: Option<StopInfo>,
}

/// What a client can ask of an experiment.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Define it (and start it at once when `start`).
    Create {
        /// The validated definition (boxed: it dwarfs the other commands).
        definition: Box<ExperimentDefinition>,
        /// Start immediately.
        start: bool,
    },
    /// Draft -> Running.
    Start,
    /// Running -> Paused.
    Pause {
        /// Why.
        reason: Option<String>,
    },
    /// Paused -> Running.
    Resume,
    /// New weights (by variant key, all of them) and/or coverage.
    ChangeTraffic {
        /// New weights.
        weights: Option<BTreeMap<String, f64>>,
        /// New coverage.
        coverage: Option<f64>,
        /// Why.
        reason: Option<String>,
    },
    /// Running or Paused -> Stopped.
    Stop {
        /// Why.
        reason: Option<String>,
        /// Declared winner (a variant key).
        winner: Option<String>,
        /// Stopped by a guardrail.
        auto: bool,
        /// The alert behind an automatic stop.
        cause: Option<Uuid>,
    },
}

impl Command {
    fn name(&self) -> &'static str {
        match self {
            Command::Create { .. } => "create",
            Command::Start => "start",
            Command::Pause { .. } => "pause",
            Command::Resume => "resume",
            Command::ChangeTraffic { .. } => "change the traffic of",
            Command::Stop { .. } => "stop",
        }
    }
}

/// Decides which events a command causes.
pub fn decide(state: &Experiment, command: Command) -> Result<Vec<Event>, DomainError> {
    let Some(def) = &state.definition else {
        return match command {
            Command::Create { definition, start } => {
                let id = definition.experiment_id.clone();
                let mut events = vec![Event::ExperimentCreated(ExperimentCreated {
                    definition: *definition,
                })];
                if start {
                    events.push(Event::ExperimentStarted(Lifecycle {
                        experiment_id: id,
                        reason: None,
                    }));
                }
                Ok(events)
            }
            _ => Err(DomainError::NotFound),
        };
    };
    validate_reasons(&command)?;
    let id = def.experiment_id.clone();
    let refuse = |command: &Command| DomainError::InvalidTransition {
        command: command.name(),
        status: state.status,
    };
    match (&command, state.status) {
        (Command::Create { .. }, _) => Err(DomainError::AlreadyExists(id)),
        (Command::Start, Status::Draft) => Ok(vec![Event::ExperimentStarted(Lifecycle {
            experiment_id: id,
            reason: None,
        })]),
        (Command::Pause { reason }, Status::Running) => {
            Ok(vec![Event::ExperimentPaused(Lifecycle {
                experiment_id: id,
                reason: reason.clone(),
            })])
        }
        (Command::Resume, Status::Paused) => Ok(vec![Event::ExperimentResumed(Lifecycle {
            experiment_id: id,
            reason: None,
        })]),
        (
            Command::ChangeTraffic {
                weights,
                coverage,
                reason,
            },
            Status::Draft | Status::Running | Status::Paused,
        ) => {
            if weights.is_none() && coverage.is_none() {
                return Err(DomainError::Invalid {
                    field: "weights".into(),
                    message: "give `weights` and/or `coverage`".into(),
                });
            }
            if let Some(w) = weights {
                validate_new_weights(def, w)?;
            }
            if let Some(c) = coverage {
                if !(0.0..=1.0).contains(c) {
                    return Err(DomainError::Invalid {
                        field: "coverage".into(),
                        message: format!("must be in [0, 1], got {c}"),
                    });
                }
            }
            Ok(vec![Event::TrafficChanged(TrafficChanged {
                experiment_id: id,
                weights: weights.clone(),
                coverage: *coverage,
                reason: reason.clone(),
                evidence: None,
            })])
        }
        (
            Command::Stop {
                reason,
                winner,
                auto,
                cause,
            },
            Status::Running | Status::Paused,
        ) => {
            if let Some(w) = winner {
                if def.variant(w).is_none() {
                    return Err(DomainError::Invalid {
                        field: "winner".into(),
                        message: format!("unknown variant `{w}`"),
                    });
                }
            }
            Ok(vec![Event::ExperimentStopped(ExperimentStopped {
                experiment_id: id,
                reason: reason.clone(),
                winner: winner.clone(),
                auto: *auto,
                cause: *cause,
            })])
        }
        _ => Err(refuse(&command)),
    }
}

/// Reasons are stored in events (and jsonb): no control characters but line breaks.
fn validate_reasons(command: &Command) -> Result<(), DomainError> {
    let reason = match command {
        Command::Pause { reason }
        | Command::ChangeTraffic { reason, .. }
        | Command::Stop { reason, .. } => reason.as_deref(),
        _ => None,
    };
    if let Some(r) = reason {
        limits::validate_text("reason", r, limits::MAX_TEXT_BYTES)?;
    }
    if let Command::Stop {
        winner: Some(w), ..
    } = command
    {
        limits::validate_label("winner", w, limits::MAX_LABEL_BYTES)?;
    }
    Ok(())
}

fn validate_new_weights(
    def: &ExperimentDefinition,
    weights: &BTreeMap<String, f64>,
) -> Result<(), DomainError> {
    for key in weights.keys() {
        if def.variant(key).is_none() {
            return Err(DomainError::Invalid {
                field: format!("weights.{key}"),
                message: "unknown variant".into(),
            });
        }
    }
    for v in &def.variants {
        match weights.get(&v.key) {
            None => {
                return Err(DomainError::Invalid {
                    field: format!("weights.{}", v.key),
                    message: "is missing".into(),
                })
            }
            Some(w) if !(*w > 0.0 && w.is_finite()) => {
                return Err(DomainError::Invalid {
                    field: format!("weights.{}", v.key),
                    message: format!("must be > 0, got {w}"),
                })
            }
            Some(_) => {}
        }
    }
    definition::validate_weight_sum(weights.values().copied()).map_err(|_| DomainError::Invalid {
        field: "weights".into(),
        message: format!("must sum to 1, got {}", weights.values().sum::<f64>()),
    })
}

/// Folds one event into the state. Events of other kinds leave it unchanged.
pub fn evolve(mut state: Experiment, event: &Event) -> Experiment {
    match event {
        Event::ExperimentCreated(e) => {
            state.definition = Some(e.definition.clone());
            state.status = Status::Draft;
        }
        Event::ExperimentStarted(_) | Event::ExperimentResumed(_) => state.status = Status::Running,
        Event::ExperimentPaused(_) => state.status = Status::Paused,
        Event::TrafficChanged(e) => {
            if let Some(def) = &mut state.definition {
                if let Some(w) = &e.weights {
                    for v in &mut def.variants {
                        if let Some(x) = w.get(&v.key) {
                            v.weight = *x;
                        }
                    }
                }
                if let Some(c) = e.coverage {
                    def.coverage = c;
                }
            }
        }
        Event::ExperimentStopped(e) => {
            state.status = Status::Stopped;
            state.stop = Some(StopInfo {
                reason: e.reason.clone(),
                winner: e.winner.clone(),
                auto: e.auto,
                cause: e.cause,
            });
        }
        _ => return state,
    }
    state.version += 1;
    state
}

impl Experiment {
    /// Folds a whole lifecycle stream.
    pub fn from_events<'a>(events: impl IntoIterator<Item = &'a Event>) -> Self {
        events.into_iter().fold(Experiment::default(), evolve)
    }

    /// The router's view: halted unless running.
    pub fn compile(&self) -> Option<CompiledExperiment> {
        let mut c = self.definition.as_ref()?.compile();
        c.halted = self.status != Status::Running;
        Some(c)
    }
}

#[cfg(test)]
mod tests;
