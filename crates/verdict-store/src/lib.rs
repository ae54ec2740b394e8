//! The EventStore trait, its in-memory implementation and the shared conformance suite.
