//! The shared conformance suite on the JetStream store, against a real nats-server, and
//! the shared model-based property test (ids reused across streams and expected versions;
//! the id markers make every case decidable, see the crate doc, "Idempotency").

mod common;

use common::NatsFactory;
use proptest::prelude::*;
use verdict_store::conformance::model;

verdict_store::conformance_tests!(jetstream, NatsFactory::new());

/// Runs `ops` against a fresh store of `factory` and the model, on a runtime of its own.
fn agrees(factory: NatsFactory, ops: &[model::Op]) {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(model::check(&factory, ops));
}

proptest! {
    // Each case is a fresh stream on one server per case; a few dozen keep the run short.
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn jetstream_store_agrees_with_model_across_restarts(ops in model::ops(40)) {
        agrees(NatsFactory::new(), &ops);
    }

    // The same without Nats-Msg-Id (duplicate window zero): every retry is as if beyond the
    // window, so only the id markers can tell a retry or a reused id from a new event.
    #[test]
    fn jetstream_store_agrees_with_model_beyond_the_duplicate_window(ops in model::ops(40)) {
        agrees(NatsFactory::with_duplicate_window(std::time::Duration::ZERO), &ops);
    }
}
