//! Black-box tests of the dashboard: a real server on port 0, traffic over the JSON API,
//! then the HTML pages and the forms, as a browser would use them (no redirects
//! followed automatically, so each 303 is checked).
//!
//! One test drives the server's clock by hand (the command service takes a `Clock`), so
//! the traffic spans several hours and the lift chart has several points and a band.

use reqwest::StatusCode;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use verdict_app::projector::{self, CheckpointPolicy, Projections};
use verdict_app::readmodel::ReadModel;
use verdict_app::service::Clock;
use verdict_server::auth::{ApiKey, Role};
use verdict_server::{AppState, ServerConfig};
use verdict_store::{EventStore, MemoryStore};

struct App {
    base: String,
    client: reqwest::Client,
    clock: Arc<ManualClock>,
    /// The token the dashboard's forms carry.
    csrf: String,
    _shutdown: tokio::sync::watch::Sender<bool>,
    _dir: tempfile::TempDir,
}

/// A clock the test moves.
#[derive(Debug)]
struct ManualClock(AtomicI64);

impl Clock for ManualClock {
    fn now_micros(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

const HOUR: i64 = 3_600_000_000;

/// The server over the in-memory store with a hand-driven clock: the router, the
/// projector and (for alerts) the monitor runner, as `verdict_server::start` wires them.
async fn spawn(keys: Vec<ApiKey>) -> App {
    let dir = tempfile::tempdir().unwrap();
    let mut config = ServerConfig::new(dir.path());
    config.api_keys = keys;
    config.query_wait = Duration::from_secs(5);
    // A fixed, whole hour in the past, so buckets are predictable.
    let clock = Arc::new(ManualClock(AtomicI64::new(1_764_028_800_000_000)));
    let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
    let projections = Projections::new(ReadModel::default(), None);
    let state = AppState::new(store.clone(), projections.clone(), config, clock.clone())
        .await
        .unwrap();
    let (shutdown, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(projector::run(
        store,
        projections.clone(),
        CheckpointPolicy::default(),
        verdict_app::health::Health::new(),
        rx.clone(),
    ));
    let runner = Arc::new(verdict_app::monitor::MonitorRunner::new(
        state.commands.clone(),
        projections,
        clock.clone(),
    ));
    tokio::spawn(runner.run(
        Duration::from_millis(100),
        Duration::from_millis(50),
        rx.clone(),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let csrf = state.csrf.clone();
    let app = verdict_server::app(state);
    tokio::spawn(async move { axum::serve(listener, app).await });
    App {
        base,
        client: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        clock,
        csrf,
        _shutdown: shutdown,
        _dir: dir,
    }
}

impl App {
    async fn api(&self, path: &str, body: Value, key: Option<&str>) -> Value {
        let mut req = self.client.post(format!("{}{path}", self.base)).json(&body);
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        assert!(
            status.is_success() || status == StatusCode::BAD_GATEWAY,
            "{path}: {status} {v}"
        );
        v
    }

    async fn get_json(&self, path: &str, key: Option<&str>) -> Value {
        let mut req = self.client.get(format!("{}{path}", self.base));
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        req.send().await.unwrap().json().await.unwrap()
    }

    /// A page: status, headers and the HTML.
    async fn page(
        &self,
        path: &str,
        cookie: Option<&str>,
    ) -> (StatusCode, reqwest::header::HeaderMap, String) {
        let mut req = self.client.get(format!("{}{path}", self.base));
        if let Some(c) = cookie {
            req = req.header("cookie", c);
        }
        let resp = req.send().await.unwrap();
        let (status, headers) = (resp.status(), resp.headers().clone());
        (status, headers, resp.text().await.unwrap())
    }

    /// Submits a form as a browser does from the server's own page (with its CSRF token).
    async fn form(
        &self,
        path: &str,
        fields: &[(&str, &str)],
    ) -> (StatusCode, Option<String>, String) {
        let mut all = vec![("csrf", self.csrf.as_str())];
        all.extend_from_slice(fields);
        self.raw_form(path, &all, &[]).await
    }

    /// Submits exactly `fields`, with extra `headers`.
    async fn raw_form(
        &self,
        path: &str,
        fields: &[(&str, &str)],
        headers: &[(&str, &str)],
    ) -> (StatusCode, Option<String>, String) {
        let body: Vec<String> = fields
            .iter()
            .map(|(k, v)| format!("{k}={}", verdict_server::dashboard::encode_component(v)))
            .collect();
        let mut req = self
            .client
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/x-www-form-urlencoded");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.body(body.join("&")).send().await.unwrap();
        let status = resp.status();
        let location = resp
            .headers()
            .get("location")
            .map(|v| v.to_str().unwrap().to_owned());
        (status, location, resp.text().await.unwrap())
    }

    /// `users` users each predicted once; converted as `converts(i)` says.
    async fn traffic(
        &self,
        exp: &str,
        from: usize,
        users: usize,
        key: Option<&str>,
        converts: impl Fn(&str, usize) -> bool,
    ) -> u64 {
        let mut last = 0;
        for i in from..from + users {
            let user = format!("user-{i}");
            let p = self
                .api(
                    "/api/predictions",
                    json!({"experiment_id": exp, "user_id": user, "input": {"context": "home"}}),
                    key,
                )
                .await;
            last = last.max(p["position"].as_u64().unwrap_or(0));
            let variant = p["variant"].as_str().unwrap_or_default().to_owned();
            if converts(&variant, i) {
                let c = self
                    .api("/api/conversions", json!({"experiment_id": exp, "user_id": user, "conversion_type": "purchase", "amount": 10.0}), key)
                    .await;
                last = last.max(c["position"].as_u64().unwrap());
            }
        }
        last
    }

    fn advance(&self, micros: i64) {
        self.clock.0.fetch_add(micros, Ordering::SeqCst);
    }
}

/// Treatment converts at 30 %, control at 10 % (deterministic by user index).
fn better_treatment(variant: &str, i: usize) -> bool {
    let rate = if variant == "treatment" { 30 } else { 10 };
    (i * 37) % 100 < rate
}

fn create_body(id: &str, name: &str, treatment_model: &str) -> Value {
    json!({
        "experiment_id": id, "name": name,
        "models": {"control": "builtin:rec-v1", "treatment": treatment_model},
        "traffic_split": {"control": 50, "treatment": 50},
        "monitors": {"min_sample": 20},
        "start": true
    })
}

/// The `<svg id="…">…</svg>` element with this id.
fn svg<'a>(html: &'a str, id: &str) -> &'a str {
    let start = html
        .find(&format!("<svg id=\"{id}\""))
        .unwrap_or_else(|| panic!("no <svg id={id}> in the page"));
    let end = html[start..].find("</svg>").unwrap() + start;
    &html[start..end]
}

#[tokio::test]
async fn experiment_page_after_hours_of_traffic() {
    let app = spawn(vec![]).await;
    app.api(
        "/api/experiments",
        create_body(
            "exp-001",
            "<script>alert('x')</script> & co",
            "builtin:rec-v2",
        ),
        None,
    )
    .await;
    // Three hours of traffic: the lift chart gets three cumulative points.
    let mut last = 0;
    for hour in 0..3 {
        last = app
            .traffic("exp-001", hour * 150, 150, None, better_treatment)
            .await;
        app.advance(HOUR);
    }
    let results = app
        .get_json(
            &format!("/api/experiments/exp-001/results?min_position={last}"),
            None,
        )
        .await;

    let (status, headers, list) = app.page("/", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(
        list.contains(r#"<tr class="experiment" data-id="exp-001">"#),
        "{list}"
    );
    assert!(list.contains(r#"<span class="badge status-running">running</span>"#));
    assert!(list.contains(r#"<meta http-equiv="refresh" content="5">"#));

    let (status, _, page) = app.page("/experiments/exp-001", None).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    // User text is escaped, never markup.
    assert!(!page.contains("<script>alert"), "unescaped name");
    assert!(page.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; co"));
    // One row per variant, with the figures of /results.
    for v in results["variants"].as_array().unwrap() {
        let key = v["key"].as_str().unwrap();
        let row_start = page
            .find(&format!(r#"<tr class="variant" data-key="{key}">"#))
            .unwrap_or_else(|| panic!("no row for {key}"));
        let row = &page[row_start..row_start + page[row_start..].find("</tr>").unwrap()];
        let users = v["users"].as_u64().unwrap();
        assert!(users > 0);
        assert!(
            row.contains(&format!(r#"<td class="num users">{users}</td>"#)),
            "{row}"
        );
        let rate = format!("{:.2}%", v["conversion_rate"].as_f64().unwrap() * 100.0);
        assert!(row.contains(&rate), "{rate} not in {row}");
    }
    let rel = results["comparisons"][0]["conversion"]["relative"]
        .as_f64()
        .unwrap();
    assert!(rel > 0.5, "treatment converts three times as often: {rel}");
    assert!(page.contains(&format!("{:+.1}%", rel * 100.0)));
    // The lift bar is green: its interval is above zero.
    assert!(page.contains(r#"<svg class="ci""#) && page.contains(r#"class="up""#));
    // The lift chart: one line through three hours, and the band around it.
    let lift = svg(&page, "chart-lift");
    let line = lift.split(r#"class="line" d=""#).nth(1).unwrap();
    let line = &line[..line.find('"').unwrap()];
    assert_eq!(line.matches('L').count(), 2, "three points: {line}");
    let band = lift.split(r#"class="band" d=""#).nth(1).expect("a band");
    let band = &band[..band.find('"').unwrap()];
    assert_eq!(band.matches('L').count(), 5, "three up, three back: {band}");
    assert!(band.ends_with('Z'));
    for chart in ["chart-conversion", "chart-latency", "chart-errors"] {
        let c = svg(&page, chart);
        assert_eq!(
            c.matches(r#"class="line""#).count(),
            2,
            "{chart}: a line per model"
        );
    }
    // SRM, sample size, audit log, and the buttons of a running experiment.
    assert!(page.contains(r#"id="srm""#) && page.contains("OK (p = "));
    assert!(page.contains(r#"role="progressbar""#));
    let audit = &page[page.find(r#"id="audit""#).unwrap()..];
    assert!(
        audit.contains("<b>ExperimentStarted</b>") && audit.contains("<b>ExperimentCreated</b>"),
        "{audit}"
    );
    assert!(page.contains(r#"formaction="/ui/experiments/exp-001/pause""#));
    assert!(page.contains(r#"formaction="/ui/experiments/exp-001/stop""#));
    assert!(!page.contains("/resume\""), "no resume while running");
    assert!(page.contains(r#"<meta http-equiv="refresh" content="5">"#));
    let (_, _, quiet) = app.page("/experiments/exp-001?refresh=0", None).await;
    assert!(!quiet.contains("http-equiv=\"refresh\""));
}

#[tokio::test]
async fn buttons_change_the_status_and_errors_are_pages() {
    let app = spawn(vec![]).await;
    app.api(
        "/api/experiments",
        create_body("exp_2.b", "slashes", "builtin:rec-v2"),
        None,
    )
    .await;
    app.traffic("exp_2.b", 0, 40, None, better_treatment).await;
    let page_path = "/experiments/exp_2.b";
    let (status, _, page) = app.page(page_path, None).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains(r#"formaction="/ui/experiments/exp_2.b/pause""#));

    let (status, location, _) = app
        .form(
            "/ui/experiments/exp_2.b/pause",
            &[("reason", "lunch <break>")],
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(location.as_deref(), Some(page_path));
    let (_, _, page) = app.page(page_path, None).await;
    assert!(page.contains("status-paused"), "paused shows at once");
    assert!(
        page.contains("lunch &lt;break&gt;"),
        "the reason is in the audit log"
    );
    assert!(page.contains(r#"formaction="/ui/experiments/exp_2.b/resume""#));
    assert!(
        !page.contains("http-equiv=\"refresh\""),
        "no reload while paused"
    );

    // An illegal transition is an error page, not a silent redirect.
    let (status, _, html) = app.form("/ui/experiments/exp_2.b/pause", &[]).await;
    assert_eq!(status, StatusCode::CONFLICT, "{html}");
    assert!(html.contains("<!doctype html>"));
    let (status, _, _) = app.form("/ui/experiments/exp_2.b/explode", &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, _) = app.form("/ui/experiments/nope/stop", &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, _) = app.page("/experiments/nope", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (status, _, _) = app
        .form(
            "/ui/experiments/exp_2.b/stop",
            &[("winner", "treatment"), ("reason", "done")],
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let exp = app.get_json("/api/experiments/exp_2.b", None).await;
    assert_eq!(exp["status"], "stopped", "{exp}");
    assert_eq!(exp["stop"]["winner"], "treatment", "{exp}");
    let (_, _, page) = app.page(page_path, None).await;
    assert!(page.contains("status-stopped") && !page.contains("formaction="));
    assert!(
        page.contains("by hand · winner <b>treatment</b> · reason: done"),
        "the stop is explained"
    );
    let (_, _, list) = app.page("/", None).await;
    assert!(list.contains("status-stopped"));
}

#[tokio::test]
async fn alerts_show_on_both_pages() {
    let app = spawn(vec![]).await;
    app.api(
        "/api/experiments",
        create_body("failing", "failing model", "builtin-failing:rec-v2"),
        None,
    )
    .await;
    app.traffic("failing", 0, 80, None, |_, _| false).await;
    // The monitor runs on its own; wait for its alert to be projected.
    let mut alerts = Value::Null;
    for _ in 0..100 {
        alerts = app
            .get_json("/api/alerts?experiment_id=failing", None)
            .await;
        // Other monitors (the split) may fire first; the error rate is the one wanted.
        if alerts["alerts"]
            .as_array()
            .is_some_and(|a| a.iter().any(|a| a["monitor"] == "error_rate"))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let alert = alerts["alerts"]
        .as_array()
        .and_then(|a| a.iter().find(|a| a["monitor"] == "error_rate"))
        .unwrap_or_else(|| panic!("no error-rate alert: {alerts}"))
        .clone();
    let message = verdict_server::dashboard::escape(alert["message"].as_str().unwrap());
    let (_, _, page) = app.page("/experiments/failing", None).await;
    let section = &page[page.find(r#"id="alerts""#).expect("alerts section")..];
    assert!(
        section.contains(r#"<span class="badge sev-P1">P1</span>"#),
        "{section}"
    );
    assert!(section.contains(&message), "{message} not in {section}");
    // The error-rate chart has a treatment line at 100 %.
    assert!(svg(&page, "chart-errors").contains("100%"));
    let (_, _, list) = app.page("/", None).await;
    if alert["active"] == true {
        assert!(
            list.contains(r#"id="active-alerts""#) && list.contains(&message),
            "{list}"
        );
    }
    // A P1 stops the experiment (auto_stop); the page shows it, without buttons.
    for _ in 0..100 {
        if app.get_json("/api/experiments/failing", None).await["status"] == "stopped" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, _, page) = app.page("/experiments/failing", None).await;
    assert!(page.contains("status-stopped"), "auto-stopped");
    assert!(
        page.contains("automatically, by a guardrail"),
        "the banner says why"
    );
    assert!(
        page.contains("<b>auto</b>: true"),
        "the audit log shows the automatic stop"
    );
}

#[tokio::test]
async fn keys_guard_pages_and_buttons() {
    let key = |k: &str, role| ApiKey {
        key: k.into(),
        role,
        name: None,
    };
    let app = spawn(vec![
        key("reader-key-0123456789", Role::Read),
        key("admin-key-0123456789", Role::Admin),
    ])
    .await;
    app.api(
        "/api/experiments",
        create_body("exp-001", "guarded", "builtin:rec-v2"),
        Some("admin-key-0123456789"),
    )
    .await;
    app.get_json(
        "/api/experiments/exp-001?min_position=2",
        Some("reader-key-0123456789"),
    )
    .await;

    // No key: the login form, not the data.
    let (status, _, html) = app.page("/experiments/exp-001", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(html.contains(r#"action="/ui/login""#) && !html.contains("data-key="));
    let (status, _, _) = app.page("/?key=wrong", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // ?key= works and sets the cookie; the cookie alone works after.
    let (status, headers, _) = app.page("/?key=reader-key-0123456789", None).await;
    assert_eq!(status, StatusCode::OK);
    let cookie = headers["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let cookie = cookie.split(';').next().unwrap().to_owned();
    let (status, _, page) = app.page("/experiments/exp-001", Some(&cookie)).await;
    assert_eq!(status, StatusCode::OK);
    // A read login sees the buttons with an admin key field.
    assert!(page.contains(r#"name="key""#) && page.contains("/ui/experiments/exp-001/stop"));

    // The login form sets the same cookie and goes back where it was.
    let (status, location, _) = app
        .form(
            "/ui/login",
            &[
                ("key", "reader-key-0123456789"),
                ("next", "/experiments/exp-001"),
            ],
        )
        .await;
    assert_eq!(
        (status, location.as_deref()),
        (StatusCode::SEE_OTHER, Some("/experiments/exp-001"))
    );
    let (status, location, _) = app
        .form(
            "/ui/login",
            &[
                ("key", "reader-key-0123456789"),
                ("next", "//evil.example/"),
            ],
        )
        .await;
    assert_eq!(
        (status, location.as_deref()),
        (StatusCode::SEE_OTHER, Some("/"))
    );
    let (status, _, _) = app.form("/ui/login", &[("key", "nope")]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Buttons need the admin key: none, or a read key, change nothing.
    let (status, _, _) = app.form("/ui/experiments/exp-001/stop", &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, html) = app
        .form(
            "/ui/experiments/exp-001/stop",
            &[("key", "reader-key-0123456789")],
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{html}");
    assert_eq!(
        app.get_json("/api/experiments/exp-001", Some("reader-key-0123456789"))
            .await["status"],
        "running"
    );
    let (status, _, _) = app
        .form(
            "/ui/experiments/exp-001/stop",
            &[("key", "admin-key-0123456789")],
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(
        app.get_json("/api/experiments/exp-001", Some("reader-key-0123456789"))
            .await["status"],
        "stopped"
    );

    // An admin login needs no key field.
    let (_, _, page) = app
        .page("/experiments/exp-001?key=admin-key-0123456789", None)
        .await;
    assert!(!page.contains(r#"name="key""#));
}

#[tokio::test]
async fn forms_from_another_site_change_nothing() {
    let app = spawn(Vec::new()).await;
    app.api(
        "/api/experiments",
        json!({"experiment_id": "exp-001", "models": {"control": "rec-v1", "treatment": "rec-v2"}, "start": true}),
        None,
    )
    .await;
    // The page's own form carries the token (once the experiment is projected).
    let mut html = String::new();
    for _ in 0..200 {
        let (status, _, page) = app.page("/experiments/exp-001", None).await;
        html = page;
        if status == StatusCode::OK {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        html.contains(&format!(r#"name="csrf" value="{}""#, app.csrf)),
        "{html}"
    );
    // A form posted from elsewhere has no token, or a wrong one: refused, nothing stops.
    for fields in [vec![], vec![("csrf", "guessed")]] {
        let (status, _, html) = app
            .raw_form("/ui/experiments/exp-001/stop", &fields, &[])
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{html}");
        assert!(html.contains("CSRF"));
    }
    // With the token but from a foreign origin (the browser says so): refused at the door.
    let (status, _, body) = app
        .raw_form(
            "/ui/experiments/exp-001/stop",
            &[("csrf", &app.csrf)],
            &[("origin", "http://evil.example")],
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let v = app.get_json("/api/experiments/exp-001", None).await;
    assert_eq!(v["status"], "running");
    // The same form from the page itself works.
    let origin = app.base.clone();
    let (status, _, html) = app
        .raw_form(
            "/ui/experiments/exp-001/stop",
            &[("csrf", &app.csrf)],
            &[("origin", &origin)],
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{html}");
    // The login redirect stays on this site whatever `next` says.
    for next in [
        "/\t/evil.example",
        "//evil.example",
        "/\\evil.example",
        "https://evil.example",
    ] {
        let (status, location, _) = app.form("/ui/login", &[("key", ""), ("next", next)]).await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        assert_eq!(location.as_deref(), Some("/"), "{next:?}");
    }
}
