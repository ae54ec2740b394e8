//! The shared conformance suite on the JetStream store, against a real nats-server.

mod common;

use common::NatsFactory;

verdict_store::conformance_tests!(jetstream, NatsFactory::new());
