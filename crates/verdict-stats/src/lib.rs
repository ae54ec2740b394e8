//! Pure statistics on summary numbers for verdict experiments.
//!
//! Every method works on per-arm sufficient statistics (users, sums, sums of squares,
//! cross-products), never on raw events, and does no I/O, reads no clock and draws no random
//! numbers. The layers:
//!
//! - [`dist`]: normal, Student t and chi-square tails and quantiles, exact in the tails
//!   (`libm::erfc`, incomplete beta by continued fraction, Hill's expansion for huge df).
//! - [`compare`]: conversion (pooled z-test, Wald and delta-method intervals) and means
//!   (Welch t) with every derived figure; [`adjust`]: CUPED and ratio-metric moments.
//! - [`sequential`]: always-valid confidence sequences (GrowthBook/Eppo, N* = 5000).
//! - [`bayes`]: chance to beat control and risk (exact Beta quadrature; normal for means).
//! - [`srm`], [`multiple`], [`power`]: sample ratio mismatch, Holm/BH, sample size.
//! - [`analysis`]: the JSON contract of `verdict analyze`.
//!
//! Where the specification left a choice open, this crate follows GrowthBook or statsmodels;
//! `docs/STATS.md` lists each choice. Figures that are undefined for the data (zero variance,
//! zero control mean, fewer than two users) are `None` with a reason, never NaN.

pub mod adjust;
pub mod analysis;
pub mod bayes;
pub mod compare;
pub mod dist;
pub mod multiple;
pub mod power;
pub mod sequential;
pub mod srm;

pub use analysis::{analyze, AnalysisInput, AnalysisOutput};

/// Errors of this crate: only malformed input can fail; computations return `None` instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A field of the analysis request is missing or invalid.
    #[error("{field}: {reason}")]
    InvalidInput {
        /// Path of the field, e.g. `variants[1].users`.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
}
