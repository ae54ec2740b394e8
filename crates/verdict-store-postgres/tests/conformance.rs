//! The shared conformance suite and the model-based property test on the PostgreSQL store.

mod common;

use common::PgFactory;
use proptest::prelude::*;
use verdict_store::conformance::model;

verdict_store::conformance_tests!(postgres, PgFactory::new());

proptest! {
    // Each case is a fresh schema; a few dozen keep the run short.
    #![proptest_config(ProptestConfig::with_cases(16))]
    #[test]
    fn postgres_store_agrees_with_model_across_restarts(ops in model::ops(40)) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async {
            let factory = PgFactory::new();
            model::check(&factory, &ops).await;
        });
    }
}
