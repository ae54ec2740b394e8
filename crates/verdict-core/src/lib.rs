//! Pure domain core of verdict: events, the Experiment aggregate and GrowthBook-exact
//! assignment.
//!
//! Nothing here does I/O, reads a clock or draws random numbers: time, ids and seeds
//! are parameters, so every function is deterministic and testable on its own.

pub mod assign;
pub mod js;
