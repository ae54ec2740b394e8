//! The shared conformance suite and the model-based property test on the log store.

mod common;

use common::LogFactory;
use proptest::prelude::*;
use verdict_store::conformance::model;

// Segments of 4 KiB, so the suite crosses many segment boundaries.
verdict_store::conformance_tests!(log_small_segments, LogFactory::new(4096));
verdict_store::conformance_tests!(log_default_segments, LogFactory::new(256 << 20));
// Appends that always queue for the writer thread (no inline commits).
verdict_store::conformance_tests!(log_queued_only, LogFactory::queued(4096));
// The fsync spinner must change nothing but timing.
verdict_store::conformance_tests!(log_spinning, LogFactory::spinning(64 << 10));

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn log_store_agrees_with_model_across_restarts(ops in model::ops(60)) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(model::check(&LogFactory::new(1024), &ops));
    }
}
