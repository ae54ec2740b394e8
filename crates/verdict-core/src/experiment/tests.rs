//! Given/when/then tests of the aggregate: given past events, when a command, then
//! these events (or this error).

use super::*;
use crate::event::Event;
use serde_json::json;

fn definition() -> ExperimentDefinition {
    ExperimentSpec::from_json(json!({
        "experiment_id": "exp-001",
        "name": "recommendation-model-v2",
        "models": {"control": "rec-v1", "treatment": "rec-v2"},
        "traffic_split": {"control": 50, "treatment": 50},
    }))
    .unwrap()
    .validate()
    .unwrap()
}

/// The given/when/then harness (as serverlesstechnology/cqrs's `TestFramework`).
struct Given(Vec<Event>);

impl Given {
    fn when(self, command: Command) -> Then {
        let state = Experiment::from_events(&self.0);
        Then(decide(&state, command))
    }
}

struct Then(Result<Vec<Event>, DomainError>);

impl Then {
    fn then_expect_events(self, expected: Vec<Event>) {
        assert_eq!(self.0.expect("command refused"), expected);
    }
    fn then_expect_error(self, expected: DomainError) {
        assert_eq!(self.0.expect_err("command accepted"), expected);
    }
}

fn given(events: Vec<Event>) -> Given {
    Given(events)
}

fn created() -> Event {
    Event::ExperimentCreated(ExperimentCreated {
        definition: definition(),
    })
}
fn lifecycle(id: &str) -> Lifecycle {
    Lifecycle {
        experiment_id: id.to_owned(),
        reason: None,
    }
}
fn started() -> Event {
    Event::ExperimentStarted(lifecycle("exp-001"))
}
fn paused() -> Event {
    Event::ExperimentPaused(lifecycle("exp-001"))
}
fn stop(auto: bool) -> Command {
    Command::Stop {
        reason: Some("done".into()),
        winner: None,
        auto,
        cause: None,
    }
}
fn stopped(auto: bool) -> Event {
    Event::ExperimentStopped(ExperimentStopped {
        experiment_id: "exp-001".into(),
        reason: Some("done".into()),
        winner: None,
        auto,
        cause: None,
    })
}

#[test]
fn create_emits_created() {
    given(vec![])
        .when(Command::Create {
            definition: Box::new(definition()),
            start: false,
        })
        .then_expect_events(vec![created()]);
}

#[test]
fn create_and_start_in_one_command() {
    given(vec![])
        .when(Command::Create {
            definition: Box::new(definition()),
            start: true,
        })
        .then_expect_events(vec![created(), started()]);
}

#[test]
fn create_twice_is_refused() {
    given(vec![created()])
        .when(Command::Create {
            definition: Box::new(definition()),
            start: false,
        })
        .then_expect_error(DomainError::AlreadyExists("exp-001".into()));
}

#[test]
fn commands_on_a_missing_experiment_are_refused() {
    given(vec![])
        .when(Command::Start)
        .then_expect_error(DomainError::NotFound);
}

#[test]
fn start_pause_resume_stop() {
    given(vec![created()])
        .when(Command::Start)
        .then_expect_events(vec![started()]);
    given(vec![created(), started()])
        .when(Command::Pause { reason: None })
        .then_expect_events(vec![paused()]);
    given(vec![created(), started(), paused()])
        .when(Command::Resume)
        .then_expect_events(vec![Event::ExperimentResumed(lifecycle("exp-001"))]);
    given(vec![created(), started(), paused()])
        .when(stop(false))
        .then_expect_events(vec![stopped(false)]);
    given(vec![created(), started()])
        .when(stop(true))
        .then_expect_events(vec![stopped(true)]);
}

#[test]
fn illegal_transitions_are_refused() {
    let refused =
        |command: &'static str, status| DomainError::InvalidTransition { command, status };
    given(vec![created()])
        .when(Command::Pause { reason: None })
        .then_expect_error(refused("pause", Status::Draft));
    given(vec![created()])
        .when(stop(false))
        .then_expect_error(refused("stop", Status::Draft));
    given(vec![created(), started()])
        .when(Command::Start)
        .then_expect_error(refused("start", Status::Running));
    given(vec![created(), started()])
        .when(Command::Resume)
        .then_expect_error(refused("resume", Status::Running));
    given(vec![created(), started(), stopped(false)])
        .when(Command::Start)
        .then_expect_error(refused("start", Status::Stopped));
    given(vec![created(), started(), stopped(false)])
        .when(stop(false))
        .then_expect_error(refused("stop", Status::Stopped));
    given(vec![created(), started(), stopped(false)])
        .when(Command::ChangeTraffic {
            weights: None,
            coverage: Some(0.5),
            reason: None,
        })
        .then_expect_error(refused("change the traffic of", Status::Stopped));
}

#[test]
fn traffic_changes_are_validated_and_applied() {
    let weights = |a: f64, b: f64| {
        Some(BTreeMap::from([
            ("control".to_owned(), a),
            ("treatment".to_owned(), b),
        ]))
    };
    given(vec![created(), started()])
        .when(Command::ChangeTraffic {
            weights: weights(0.9, 0.2),
            coverage: None,
            reason: None,
        })
        .then_expect_error(DomainError::Invalid {
            field: "weights".into(),
            message: "must sum to 1, got 1.1".into(),
        });
    given(vec![created(), started()])
        .when(Command::ChangeTraffic {
            weights: None,
            coverage: Some(2.0),
            reason: None,
        })
        .then_expect_error(DomainError::Invalid {
            field: "coverage".into(),
            message: "must be in [0, 1], got 2".into(),
        });
    let change = TrafficChanged {
        experiment_id: "exp-001".into(),
        weights: weights(0.8, 0.2),
        coverage: Some(0.5),
        reason: None,
        evidence: None,
    };
    given(vec![created(), started()])
        .when(Command::ChangeTraffic {
            weights: weights(0.8, 0.2),
            coverage: Some(0.5),
            reason: None,
        })
        .then_expect_events(vec![Event::TrafficChanged(change.clone())]);
    let state = Experiment::from_events(&[created(), started(), Event::TrafficChanged(change)]);
    let def = state.definition.unwrap();
    assert_eq!(
        (def.variants[0].weight, def.variants[1].weight, def.coverage),
        (0.8, 0.2, 0.5)
    );
    assert_eq!(state.version, 3);
}

#[test]
fn stop_winner_must_be_a_variant() {
    given(vec![created(), started()])
        .when(Command::Stop {
            reason: None,
            winner: Some("nope".into()),
            auto: false,
            cause: None,
        })
        .then_expect_error(DomainError::Invalid {
            field: "winner".into(),
            message: "unknown variant `nope`".into(),
        });
}

#[test]
fn only_a_running_experiment_routes_users() {
    let running = Experiment::from_events(&[created(), started()]);
    let router = running.compile().unwrap();
    assert!((0..100).any(|i| router.decide_user(&format!("u{i}")).in_experiment()));
    for events in [
        vec![created()],
        vec![created(), started(), paused()],
        vec![created(), started(), stopped(true)],
    ] {
        let router = Experiment::from_events(&events).compile().unwrap();
        assert!(
            (0..100).all(|i| !router.decide_user(&format!("u{i}")).in_experiment()),
            "{events:?}"
        );
    }
}

#[test]
fn evolve_ignores_traffic_events() {
    let state = Experiment::from_events(&[created()]);
    let after = evolve(
        state.clone(),
        &Event::UserInteracted(crate::event::UserInteracted {
            experiment_id: "exp-001".into(),
            user_id: "u".into(),
            action: "click".into(),
            item_id: None,
            variant: None,
        }),
    );
    assert_eq!(after, state);
}

#[test]
fn shadow_variants_are_kept_apart_from_the_served_arms() {
    let def = ExperimentSpec::from_json(json!({
        "experiment_id": "exp-001",
        "variants": [
            {"key": "control", "model": "rec-v1", "weight": 0.9},
            {"key": "mirror", "model": "rec-v3", "shadow": true, "share": 0.25},
            {"key": "treatment", "model": "rec-v2", "weight": 0.1},
        ],
    }))
    .unwrap()
    .validate()
    .unwrap();
    let keys: Vec<&str> = def.variants.iter().map(|v| v.key.as_str()).collect();
    assert_eq!(keys, ["control", "treatment"], "shadows are never routed");
    assert_eq!(
        def.shadows,
        [ShadowVariant {
            key: "mirror".into(),
            model: "rec-v3".into(),
            share: 0.25
        }]
    );
    // Stored definitions round-trip, and stay byte-identical when there are no shadows.
    let stored = serde_json::to_value(&def).unwrap();
    assert_eq!(
        serde_json::from_value::<ExperimentDefinition>(stored).unwrap(),
        def
    );
    assert!(serde_json::to_value(definition())
        .unwrap()
        .get("shadows")
        .is_none());
    let defaulted = ExperimentSpec::from_json(json!({
        "experiment_id": "e",
        "variants": [
            {"key": "a", "model": "m"}, {"key": "b", "model": "n"},
            {"key": "s", "model": "o", "shadow": true},
        ],
    }))
    .unwrap()
    .validate()
    .unwrap();
    assert_eq!(defaulted.shadows[0].share, 1.0);
    assert_eq!(
        defaulted.variants[0].weight, 0.5,
        "equal weights over served arms"
    );
}

#[test]
fn reasons_with_control_characters_are_refused() {
    let created = Event::ExperimentCreated(crate::event::ExperimentCreated {
        definition: definition(),
    });
    let started = Event::ExperimentStarted(crate::event::Lifecycle {
        experiment_id: "exp-001".into(),
        reason: None,
    });
    Given(vec![created.clone(), started.clone()])
        .when(Command::Pause {
            reason: Some("bad\0reason".into()),
        })
        .then_expect_error(DomainError::Invalid {
            field: "reason".into(),
            message: "must not contain control characters (found '\\0')".into(),
        });
    let events = Given(vec![created, started])
        .when(Command::Pause {
            reason: Some("latency\nspike".into()),
        })
        .0
        .expect("a line break is fine in a reason");
    assert_eq!(events.len(), 1);
}
