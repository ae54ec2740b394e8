//! The domain's error type: what a command can be refused for.

use crate::experiment::Status;

/// Why a command was refused. Callers match on the variant (the server maps
/// `Invalid` to 400 and the others to 404 / 409).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DomainError {
    /// A field of the input is invalid.
    #[error("invalid `{field}`: {message}")]
    Invalid {
        /// Path of the field, e.g. `variants[1].weight`.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// Creating an experiment that exists.
    #[error("experiment `{0}` already exists")]
    AlreadyExists(String),
    /// A command on an experiment that does not exist.
    #[error("experiment does not exist")]
    NotFound,
    /// The command is not allowed in the current lifecycle state.
    #[error("cannot {command} an experiment that is {status}")]
    InvalidTransition {
        /// The refused command.
        command: &'static str,
        /// The state it was refused in.
        status: Status,
    },
}
