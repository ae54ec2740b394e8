//! A read model rebuilt from position zero (`verdict replay`) equals the one the live
//! projector built while the commands ran, and a restarted projector resumes from its
//! snapshot without double counting.

use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use verdict_app::projector::{self, CheckpointPolicy, Projections};
use verdict_app::service::{CommandService, ConversionRequest, PredictRequest, SystemClock};
use verdict_serve::Registry;
use verdict_store::{EventStore, MemoryStore};

#[tokio::test]
async fn replay_equals_the_live_projection_and_snapshots_resume() {
    let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
    let dir = std::env::temp_dir().join(format!("verdict-replay-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let snapshot = dir.join("projections.json");
    let _ = std::fs::remove_file(&snapshot);
    let registry = Registry::default();
    let commands = CommandService::open(store.clone(), registry, Arc::new(SystemClock))
        .await
        .unwrap();
    let spec =
        json!({"experiment_id": "e", "models": {"control": "builtin:a", "treatment": "builtin:b"}});
    commands.create_experiment(spec, true).await.unwrap();

    let live = Projections::load(&snapshot).unwrap();
    let (stop, rx) = tokio::sync::watch::channel(false);
    let policy = CheckpointPolicy {
        every: Duration::from_millis(1),
        events: 50,
    };
    let task = tokio::spawn(projector::run(store.clone(), live.clone(), policy, rx));
    let mut last = 0;
    for i in 0..300 {
        let p = commands
            .predict(PredictRequest {
                experiment_id: "e".into(),
                user_id: format!("u{i}"),
                attributes: Default::default(),
                input: json!({}),
            })
            .await
            .unwrap();
        last = p.position;
        if i % 4 == 0 {
            let c = ConversionRequest {
                event_id: None,
                experiment_id: "e".into(),
                user_id: format!("u{i}"),
                conversion_type: "purchase".into(),
                amount: f64::from(i),
                variant: None,
                model_version: None,
            };
            last = commands.conversion(c).await.unwrap().position;
        }
    }
    assert!(live.wait_for(last, Duration::from_secs(10)).await);
    stop.send_replace(true);
    task.await.unwrap().unwrap();

    let mut reported = Vec::new();
    let rebuilt = projector::replay(store.as_ref(), |p, h| reported.push((p, h)))
        .await
        .unwrap();
    assert_eq!(rebuilt.position, last);
    assert_eq!(reported.last(), Some(&(last, last)));
    let value = |m: &verdict_app::readmodel::ReadModel| serde_json::to_value(m).unwrap();
    assert_eq!(value(&rebuilt), value(&*live.read().await));

    // The snapshot on disk carries its own checkpoint; loading it and following the
    // store again applies nothing twice.
    let resumed = Projections::load(&snapshot).unwrap();
    assert_eq!(resumed.position(), last);
    let (stop, rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(projector::run(
        store.clone(),
        resumed.clone(),
        CheckpointPolicy::default(),
        rx,
    ));
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.send_replace(true);
    task.await.unwrap().unwrap();
    assert_eq!(value(&*resumed.read().await), value(&rebuilt));
    let _ = std::fs::remove_dir_all(&dir);
}
