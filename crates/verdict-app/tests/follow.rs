//! Two command sides on one store (two serve nodes): each follows the store's tail, so
//! an experiment created, paused or resumed on one node is known on the other, and an
//! outcome recorded on one node is attributed to the variant the other node assigned.

use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use verdict_app::service::{CommandService, ConversionRequest, PredictRequest, SystemClock};
use verdict_core::experiment::{Command, Status};
use verdict_serve::Registry;
use verdict_store::{EventStore, MemoryStore};

async fn node(store: &Arc<dyn EventStore>) -> Arc<CommandService> {
    let from = store.head().await.unwrap() + 1;
    let service = Arc::new(
        CommandService::open(store.clone(), Registry::default(), Arc::new(SystemClock))
            .await
            .unwrap(),
    );
    let (stop, rx) = tokio::sync::watch::channel(false);
    std::mem::forget(stop); // follow for the whole test
    tokio::spawn(
        service
            .clone()
            .follow(from, verdict_app::health::Health::new(), rx),
    );
    service
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..200 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("never happened: {what}");
}

fn status(node: &CommandService, id: &str) -> Option<(Status, u64)> {
    node.states()
        .into_iter()
        .find(|s| s.definition.as_ref().is_some_and(|d| d.experiment_id == id))
        .map(|s| (s.status, s.version))
}

#[tokio::test]
async fn nodes_on_one_store_follow_each_other() {
    let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
    // Node A knows an experiment from its rebuild; node B starts empty and follows.
    let a = node(&store).await;
    let b = node(&store).await;
    let spec =
        json!({"experiment_id": "e", "models": {"control": "builtin:a", "treatment": "builtin:b"}});
    a.create_experiment(spec, true).await.unwrap();
    eventually("B knows the experiment A created", || {
        status(&b, "e") == Some((Status::Running, 2))
    })
    .await;

    // B assigns users; A attributes their conversions to B's assignment.
    let mut assigned = Vec::new();
    for i in 0..20 {
        let p = b
            .predict(PredictRequest {
                experiment_id: "e".into(),
                user_id: format!("u{i}"),
                attributes: Default::default(),
                input: json!({}),
            })
            .await
            .unwrap();
        assigned.push(p.variant);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    for (i, variant) in assigned.iter().enumerate() {
        let c = a
            .conversion(ConversionRequest {
                event_id: None,
                experiment_id: "e".into(),
                user_id: format!("u{i}"),
                conversion_type: "purchase".into(),
                amount: 1.0,
                variant: None,
                model_version: None,
            })
            .await
            .unwrap();
        assert_eq!(c.variant.as_deref(), Some(variant.as_str()), "user u{i}");
    }

    // A lifecycle change on B reaches A; A's next command builds on it (no conflict).
    b.execute("e", Command::Pause { reason: None })
        .await
        .unwrap();
    eventually("A sees the pause", || {
        status(&a, "e") == Some((Status::Paused, 3))
    })
    .await;
    let (state, _) = a.execute("e", Command::Resume).await.unwrap();
    assert_eq!((state.status, state.version), (Status::Running, 4));
    eventually("B sees the resume", || {
        status(&b, "e") == Some((Status::Running, 4))
    })
    .await;
    // Its own events coming back through the follower do not apply twice.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(status(&a, "e"), Some((Status::Running, 4)));
}
