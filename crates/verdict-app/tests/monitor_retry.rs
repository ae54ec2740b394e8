//! A guardrail stop that fails (the store was briefly unavailable) is not forgotten: the
//! monitors report themselves down and stop the experiment on a later tick.

use serde_json::json;
use std::sync::Arc;
use verdict_app::health::Health;
use verdict_app::monitor::{Action, MonitorRunner, MONITOR_RUNNER};
use verdict_app::projector::Projections;
use verdict_app::readmodel::ReadModel;
use verdict_app::service::{CommandService, PredictRequest, SystemClock};
use verdict_serve::Registry;
use verdict_store::conformance::faulty::Faulty;
use verdict_store::{EventStore, MemoryStore};

async fn project(store: &Faulty, projections: &Projections) {
    let events = store
        .read_all(projections.position() + 1, usize::MAX)
        .await
        .unwrap();
    projections.apply(&events).await;
}

/// Experiment `g` whose treatment model always fails, with `monitors`, after 200
/// predictions, projected.
async fn failing_treatment(
    monitors: serde_json::Value,
) -> (Arc<Faulty>, Arc<CommandService>, Arc<Projections>) {
    let store = Arc::new(Faulty::new());
    let commands = Arc::new(
        CommandService::open(store.clone(), Registry::default(), Arc::new(SystemClock))
            .await
            .unwrap(),
    );
    commands
        .create_experiment(
            json!({
                "experiment_id": "g",
                "variants": [{"key": "control", "model": "builtin:a"}, {"key": "treatment", "model": "builtin-failing:b"}],
                "monitors": monitors
            }),
            true,
        )
        .await
        .unwrap();
    for i in 0..200 {
        let _ = commands
            .predict(PredictRequest {
                experiment_id: "g".into(),
                user_id: format!("u{i}"),
                attributes: Default::default(),
                input: serde_json::Value::Null,
            })
            .await;
    }
    let projections = Projections::new(ReadModel::default(), None);
    project(&store, &projections).await;
    (store, commands, projections)
}

#[tokio::test]
async fn a_failed_guardrail_stop_is_retried_while_the_alert_fires() {
    let (store, commands, projections) = failing_treatment(json!({"min_sample": 20})).await;
    let health = Health::new();
    let runner = MonitorRunner::new(commands.clone(), projections.clone(), Arc::new(SystemClock))
        .with_health(health.clone());

    // The alert is raised (the traffic stream is fine), the stop is refused.
    store.refuse_appends_to(Some("experiment-"));
    let actions = runner.tick().await;
    assert!(actions.iter().any(|a| matches!(
        a,
        Action::Raised {
            monitor: "error_rate",
            ..
        }
    )));
    assert!(!actions.iter().any(|a| matches!(a, Action::Stopped { .. })));
    assert!(!health.is_up(MONITOR_RUNNER));
    let why = health.components()[0].error.clone().unwrap();
    assert!(why.contains("could not stop"), "{why}");
    project(&store, &projections).await;
    assert_eq!(
        projections.read().await.experiments["g"].state.status,
        verdict_core::experiment::Status::Running
    );

    // Still failing: still down, still no stop, and no second alert.
    let actions = runner.tick().await;
    assert!(actions.is_empty(), "{actions:?}");
    assert!(!health.is_up(MONITOR_RUNNER));

    // The store recovers: the next tick stops the experiment, caused by the same alert.
    store.refuse_appends_to(None);
    let actions = runner.tick().await;
    let alert = projections.read().await.experiments["g"].alerts[0].alert_id;
    assert_eq!(
        actions,
        [Action::Stopped {
            experiment_id: "g".into(),
            alert_id: alert
        }]
    );
    assert!(health.is_up(MONITOR_RUNNER));
    project(&store, &projections).await;
    let model = projections.read().await;
    assert_eq!(
        model.experiments["g"].state.status,
        verdict_core::experiment::Status::Stopped
    );
    assert_eq!(model.experiments["g"].alerts.len(), 1);
}

/// A node that cannot load an experiment's model (the file is gone, a model server is
/// unreachable at start) keeps the experiment: its predictions fail with the reason, and it
/// can still be stopped — by a person or by its guardrail.
#[tokio::test]
async fn an_experiment_whose_model_cannot_load_here_can_still_be_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m.onnx");
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/../../models/rec-v1.onnx"),
        &model,
    )
    .unwrap();
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/../../models/rec-v1.json"),
        model.with_extension("json"),
    )
    .unwrap();
    let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
    let uri = format!("onnx:{}", model.display());
    let first = CommandService::open(store.clone(), Registry::default(), Arc::new(SystemClock))
        .await
        .unwrap();
    first
        .create_experiment(
            json!({"experiment_id": "m", "variants": [{"key": "control", "model": "builtin:a"}, {"key": "treatment", "model": uri}]}),
            true,
        )
        .await
        .unwrap();
    // Another node (or this one restarted) where the file is gone.
    std::fs::remove_file(&model).unwrap();
    let node = CommandService::open(store.clone(), Registry::default(), Arc::new(SystemClock))
        .await
        .unwrap();
    let served: Vec<_> = futures_results(&node).await;
    assert!(
        served
            .iter()
            .any(|r| matches!(r, Err(e) if e.contains("cannot be loaded on this node"))),
        "{served:?}"
    );
    assert!(served.iter().any(|r| r.is_ok()), "the control still serves");
    node.execute(
        "m",
        verdict_core::experiment::Command::Stop {
            reason: Some("model missing".into()),
            winner: None,
            auto: true,
            cause: None,
        },
    )
    .await
    .expect("stopped without the model");
    let status = node
        .states()
        .into_iter()
        .find(|s| {
            s.definition
                .as_ref()
                .is_some_and(|d| d.experiment_id == "m")
        })
        .unwrap()
        .status;
    assert_eq!(status, verdict_core::experiment::Status::Stopped);
}

/// Predictions for 40 users: the variant's answer, or the error message.
async fn futures_results(node: &CommandService) -> Vec<Result<String, String>> {
    let mut out = Vec::new();
    for i in 0..40 {
        let r = node
            .predict(PredictRequest {
                experiment_id: "m".into(),
                user_id: format!("u{i}"),
                attributes: Default::default(),
                input: serde_json::Value::Null,
            })
            .await;
        out.push(match r {
            Ok(p) => match p.error {
                Some(error) => Err(error.to_string()),
                None => Ok(p.variant),
            },
            Err(e) => Err(e.to_string()),
        });
    }
    out
}

/// An alert whose append was stored but not acknowledged (unknown outcome) is retried as the
/// same event, so it is raised once, not twice.
#[tokio::test]
async fn a_raise_with_a_lost_acknowledgement_is_not_raised_twice() {
    let (store, commands, projections) =
        failing_treatment(json!({"min_sample": 20, "auto_stop": false})).await;
    let runner = MonitorRunner::new(commands.clone(), projections.clone(), Arc::new(SystemClock));
    let head = store.head().await.unwrap();
    // Every append is stored but answered `Unavailable`.
    store.lose_acks_to(Some(""));
    let actions = runner.tick().await;
    assert!(actions.is_empty(), "{actions:?}");
    store.lose_acks_to(None);
    // The projection has not seen it yet; the next tick tries again.
    let actions = runner.tick().await;
    assert!(actions.iter().any(|a| matches!(
        a,
        Action::Raised {
            monitor: "error_rate",
            ..
        }
    )));
    let raised: Vec<_> = store
        .read_all(head + 1, usize::MAX)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.event_type == "AlertRaised")
        .collect();
    assert_eq!(raised.len(), 1, "the alert was stored twice");
    project(&store, &projections).await;
    assert_eq!(projections.read().await.experiments["g"].alerts.len(), 1);
}
