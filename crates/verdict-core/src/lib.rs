//! Pure domain core of verdict: events, the Experiment aggregate and GrowthBook-exact
//! assignment.
//!
//! Nothing here does I/O, reads a clock or draws random numbers: time, ids and seeds
//! are parameters, so every function is deterministic and testable on its own.
//!
//! - [`assign`]: which variant a user gets (hashing, bucketing, conditions, layers).
//! - [`experiment`]: the Experiment aggregate (`decide` / `evolve`) and its definition.
//! - [`event`]: every domain event, its envelope, encoding and upcasting.
//! - [`js`]: the JavaScript value semantics GrowthBook's targeting inherits.

pub mod assign;
pub mod error;
pub mod event;
pub mod experiment;
pub mod js;

pub use error::DomainError;
pub use event::{Envelope, Event};
pub use experiment::{
    decide, evolve, Command, Experiment, ExperimentDefinition, ExperimentSpec, Status,
};
