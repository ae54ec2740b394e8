//! verdict's embedded, durable, segmented append-only event log.
