//! The application's error type; the server maps each variant to one HTTP status.

/// Why a command or query failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AppError {
    /// Bad input: 400, naming the field.
    #[error("invalid `{field}`: {message}")]
    Invalid {
        /// Path of the field.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// No such experiment: 404.
    #[error("{0}")]
    NotFound(String),
    /// Illegal transition, concurrent modification, draft experiment: 409.
    #[error("{0}")]
    Conflict(String),
    /// The store cannot serve the request (outcome unknown for writes): 503.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// A client's `event_id` is already stored with another event (not a retry): 409,
    /// naming where the first one is.
    #[error("event_id {event_id} is already used by a different event, stored at position {position}; a retry must resend the same event, a new event needs a new id")]
    IdConflict {
        /// The reused id.
        event_id: uuid::Uuid,
        /// Where the event first sent with it is stored (0: repeated within one request).
        position: u64,
    },
    /// Projections did not reach the requested position in time: 503.
    #[error("projections have not reached position {wanted} yet (at {reached}); retry shortly")]
    NotCaughtUp {
        /// The requested position.
        wanted: u64,
        /// Where projections are.
        reached: u64,
    },
}
