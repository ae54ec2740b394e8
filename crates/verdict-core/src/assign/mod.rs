//! Assignment: which variation a user gets, bucket-for-bucket as GrowthBook's SDKs.
//!
//! - [`hash`]: FNV-1a over UTF-16, hash versions 1 and 2, bucket ranges.
//! - [`condition`]: Mongo-style targeting with JavaScript's coercions.
//! - [`jsregex`]: JavaScript regular expressions on a linear-time engine.
//! - [`router`]: a compiled experiment and the decision, in `runExperiment`'s order.
//! - [`growthbook`]: GrowthBook's SDK JSON shapes, for the conformance suite.

pub mod condition;
pub mod growthbook;
pub mod hash;
pub mod jsregex;
pub mod router;

pub use router::{CompiledExperiment, Decision, Namespace, Reason, UserContext};
