//! The HTTP API: one table of routes ([`routes`]) from which both the axum router and
//! the OpenAPI document are built, so the document cannot drift from the handlers.

use crate::auth::{self, Role};
use crate::dashboard;
use crate::error::ApiError;
use crate::extract::{body_bytes, parse_json, ApiJson, ApiQuery, OptionalJson};
use crate::AppState;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put, MethodRouter};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;
use uuid::Uuid;
use verdict_app::queries::{self, Bucket};
use verdict_app::service::{AssignRequest, ConversionRequest, InteractionRequest, PredictRequest};
use verdict_app::AppError;
use verdict_core::experiment::{Command, Experiment};
use verdict_core::Event;

/// A query parameter as documented.
#[derive(Debug, Clone, Copy)]
pub struct Param {
    /// Name.
    pub name: &'static str,
    /// JSON schema type (`integer`, `string`).
    pub ty: &'static str,
    /// Description.
    pub description: &'static str,
}

/// One route: method, path, role, documentation, and its handler.
pub struct Route {
    /// HTTP method.
    pub method: Method,
    /// Path, with `{name}` segments.
    pub path: &'static str,
    /// Role required (`None`: public).
    pub role: Option<Role>,
    /// One-line summary.
    pub summary: &'static str,
    /// Group in the document.
    pub tag: &'static str,
    /// Query parameters.
    pub query: &'static [Param],
    /// Request body schema, if any.
    pub body: Option<Value>,
    /// Body content type (`application/json` or `application/x-ndjson`).
    pub body_type: &'static str,
    /// Documented statuses.
    pub statuses: &'static [(u16, &'static str)],
    /// The handler.
    pub handler: MethodRouter<AppState>,
}

const MIN_POSITION: Param = Param {
    name: "min_position",
    ty: "integer",
    description:
        "wait (bounded) until projections reach this global position; 503 if they do not in time",
};

const DASHBOARD_QUERY: &[Param] = &[
    Param {
        name: "key",
        ty: "string",
        description: "API key (read role); also stored in the login cookie",
    },
    Param {
        name: "refresh",
        ty: "string",
        description: "`0`: do not reload the page every 5 s",
    },
];

const COMMON_ERRORS: &[(u16, &str)] = &[
    (400, "invalid input, naming the field"),
    (401, "missing or unknown API key"),
    (403, "role too low"),
];

fn obj(props: Value, required: &[&str]) -> Value {
    json!({"type": "object", "properties": props, "required": required})
}

fn s(description: &str) -> Value {
    json!({"type": "string", "description": description})
}

/// Every route of the API.
pub fn routes() -> Vec<Route> {
    let any_obj = json!({"type": "object"});
    let variant = obj(
        json!({
            "key": s("variant key"), "model": s("model name or URI"), "weight": {"type": "number"},
            "shadow": {"type": "boolean", "description": "mirror a share of the control's requests to this model off the request path; recorded and compared, never served (no weight)"},
            "share": {"type": "number", "description": "shadow variants: share of the control's requests mirrored, in (0, 1]; default 1"},
        }),
        &["key", "model"],
    );
    let experiment_body = json!({
        "type": "object",
        "description": "the seed's shape (models + traffic_split in percent) or the full shape (variants)",
        "properties": {
            "experiment_id": s("unique id"), "name": s("name"), "description": s("description"),
            "models": {"type": "object", "additionalProperties": {"type": "string"}},
            "traffic_split": {"type": "object", "additionalProperties": {"type": "number"}},
            "variants": {"type": "array", "items": variant},
            "coverage": {"type": "number", "minimum": 0, "maximum": 1},
            "hash_attribute": s("attribute hashed"), "hash_version": {"type": "integer", "enum": [1, 2]}, "seed": s("hash seed"),
            "namespace": obj(json!({"id": s("layer id"), "range": {"type": "array", "items": {"type": "number"}}}), &["id", "range"]),
            "condition": any_obj, "forced_variations": {"type": "object", "additionalProperties": {"type": "string"}},
            "primary_metric": s("conversion | revenue_per_user"), "guardrail_metrics": {"type": "array", "items": {"type": "string"}},
            "mde": {"type": "number"}, "alpha": {"type": "number"}, "power": {"type": "number"},
            "baseline_rate": {"type": "number"}, "planned_duration_days": {"type": "number"},
            "start": {"type": "boolean", "description": "create and start in one call"}
        },
        "required": ["experiment_id"]
    });
    let user =
        json!({"experiment_id": s("experiment"), "user_id": s("user"), "attributes": any_obj});
    let mut predict_body = user.clone();
    predict_body["input"] = json!({"description": "model input (any JSON)"});
    let outcome = |extra: Value| {
        let mut p = json!({"event_id": {"type": "string", "format": "uuid", "description": "idempotency key"}, "experiment_id": s("experiment"), "user_id": s("user")});
        if let (Some(p), Some(e)) = (p.as_object_mut(), extra.as_object()) {
            p.extend(e.clone());
        }
        p
    };
    vec![
        Route {
            method: Method::POST,
            path: "/api/experiments",
            role: Some(Role::Admin),
            summary: "Create an experiment (seed or full shape); `start: true` also starts it",
            tag: "experiments",
            query: &[],
            body: Some(experiment_body),
            body_type: "application/json",
            statuses: &[(201, "created, with the position written"), (409, "already exists")],
            handler: post(create_experiment),
        },
        lifecycle_route("/api/experiments/{id}/start", "Start a draft experiment", post(start)),
        lifecycle_route("/api/experiments/{id}/pause", "Pause: everyone gets the control, no exposures recorded", post(pause)),
        lifecycle_route("/api/experiments/{id}/resume", "Resume a paused experiment", post(resume)),
        lifecycle_route("/api/experiments/{id}/stop", "Stop for good (optionally naming a winner)", post(stop)),
        Route {
            method: Method::PUT,
            path: "/api/experiments/{id}/traffic",
            role: Some(Role::Admin),
            summary: "Change weights and/or coverage",
            tag: "experiments",
            query: &[],
            body: Some(obj(json!({"weights": {"type": "object", "additionalProperties": {"type": "number"}}, "coverage": {"type": "number"}, "reason": s("why")}), &[])),
            body_type: "application/json",
            statuses: &[(200, "changed"), (404, "no such experiment"), (409, "illegal transition or concurrent modification")],
            handler: put(traffic),
        },
        Route {
            method: Method::POST,
            path: "/api/assignments",
            role: Some(Role::Ingest),
            summary: "Assign a user (variant only; records the first exposure)",
            tag: "traffic",
            query: &[],
            body: Some(obj(user, &["experiment_id", "user_id"])),
            body_type: "application/json",
            statuses: &[(200, "assigned"), (404, "no such experiment"), (409, "draft experiment")],
            handler: post(assign),
        },
        Route {
            method: Method::POST,
            path: "/api/predictions",
            role: Some(Role::Ingest),
            summary: "Assign, call the variant's model, record exposure and outcome",
            tag: "traffic",
            query: &[],
            body: Some(obj(predict_body, &["experiment_id", "user_id"])),
            body_type: "application/json",
            statuses: &[(200, "prediction"), (404, "no such experiment"), (409, "draft experiment"), (502, "the model failed (recorded)")],
            handler: post(predict),
        },
        Route {
            method: Method::POST,
            path: "/api/interactions",
            role: Some(Role::Ingest),
            summary: "Record an interaction, attributed to the user's assigned variant",
            tag: "traffic",
            query: &[],
            body: Some(obj(outcome(json!({"action": s("click, view, ..."), "item_id": s("item")})), &["experiment_id", "user_id", "action"])),
            body_type: "application/json",
            statuses: &[(201, "recorded"), (404, "no such experiment")],
            handler: post(interaction),
        },
        Route {
            method: Method::POST,
            path: "/api/conversions",
            role: Some(Role::Ingest),
            summary: "Record a conversion, attributed to the user's assigned variant",
            tag: "traffic",
            query: &[],
            body: Some(obj(outcome(json!({"conversion_type": s("purchase, ..."), "amount": {"type": "number"}})), &["experiment_id", "user_id"])),
            body_type: "application/json",
            statuses: &[(201, "recorded"), (404, "no such experiment")],
            handler: post(conversion),
        },
        Route {
            method: Method::POST,
            path: "/api/events/batch",
            role: Some(Role::Ingest),
            summary: "NDJSON bulk ingest of interactions and conversions (`type` per line); one result line each",
            tag: "traffic",
            query: &[],
            body: Some(s("NDJSON (application/x-ndjson; text/plain and forms are refused with 415, since any web page can send those): one {\"type\": \"interaction\"|\"conversion\", ...} per line")),
            body_type: "application/x-ndjson",
            statuses: &[(200, "one result per line")],
            handler: post(batch),
        },
        query_route("/api/experiments", "List experiments", &[MIN_POSITION], get(list_experiments)),
        query_route("/api/experiments/{id}", "One experiment", &[MIN_POSITION], get(get_experiment)),
        query_route("/api/experiments/{id}/results", "Results with statistics against the control", &[MIN_POSITION], get(results)),
        query_route("/api/experiments/{id}/metrics", "Traffic, errors and latency per variant", &[MIN_POSITION], get(metrics)),
        query_route(
            "/api/experiments/{id}/timeline",
            "Figures per hour or day",
            &[MIN_POSITION, Param { name: "bucket", ty: "string", description: "hour (default) or day" }],
            get(timeline),
        ),
        query_route(
            "/api/experiments/{id}/events",
            "The experiment's audit log, paged",
            &[
                Param { name: "from", ty: "integer", description: "first global position (default 1)" },
                Param { name: "limit", ty: "integer", description: "most events (default 100, at most 1000)" },
            ],
            get(events),
        ),
        query_route("/api/alerts", "Alerts, newest first", &[MIN_POSITION], get(alerts)),
        Route {
            method: Method::GET,
            path: "/healthz",
            role: None,
            summary: "Liveness",
            tag: "operations",
            query: &[],
            body: None,
            body_type: "application/json",
            statuses: &[(200, "alive")],
            handler: get(healthz),
        },
        Route {
            method: Method::GET,
            path: "/readyz",
            role: None,
            summary: "Readiness: store open, projections running, with their lag (and, on a node following a shared store, the position its command side has seen)",
            tag: "operations",
            query: &[],
            body: None,
            body_type: "application/json",
            statuses: &[(200, "ready"), (503, "not ready")],
            handler: get(readyz),
        },
        Route {
            method: Method::GET,
            path: "/metrics",
            role: Some(Role::Read),
            summary: "Prometheus metrics (text format 0.0.4)",
            tag: "operations",
            query: &[],
            body: None,
            body_type: "application/json",
            statuses: &[(200, "metrics")],
            handler: get(prometheus),
        },
        Route {
            method: Method::GET,
            path: "/api/openapi.json",
            role: None,
            summary: "This document",
            tag: "operations",
            query: &[],
            body: None,
            body_type: "application/json",
            statuses: &[(200, "OpenAPI 3.1")],
            handler: get(openapi_json),
        },
        Route {
            method: Method::GET,
            path: "/",
            role: None,
            summary: "Dashboard: every experiment with its status and active alerts (HTML; with keys configured, a read key as header, `?key=` or the login cookie)",
            tag: "dashboard",
            query: DASHBOARD_QUERY,
            body: None,
            body_type: "application/json",
            statuses: &[(200, "the page"), (401, "the login form"), (403, "role too low")],
            handler: get(dashboard::index),
        },
        Route {
            method: Method::GET,
            path: "/experiments/{id}",
            role: None,
            summary: "Dashboard: one experiment, its variants, lift, charts, SRM, sample size, alerts, audit log and controls (HTML)",
            tag: "dashboard",
            query: DASHBOARD_QUERY,
            body: None,
            body_type: "application/json",
            statuses: &[(200, "the page"), (401, "the login form"), (403, "role too low"), (404, "no such experiment")],
            handler: get(dashboard::experiment),
        },
        Route {
            method: Method::POST,
            path: "/ui/experiments/{id}/{action}",
            role: None,
            summary: "Dashboard button: start, pause, resume or stop with the admin key (form field, header or cookie); 303 back to the page",
            tag: "dashboard",
            query: &[],
            body: Some(obj(json!({"key": s("admin API key"), "reason": s("why"), "winner": s("winning variant (stop only)")}), &[])),
            body_type: "application/x-www-form-urlencoded",
            statuses: &[(303, "done; back to the experiment page"), (400, "malformed form"), (401, "admin key missing or unknown"), (403, "role too low"), (404, "no such experiment or action"), (409, "illegal transition")],
            handler: post(dashboard::action),
        },
        Route {
            method: Method::POST,
            path: "/ui/login",
            role: None,
            summary: "Dashboard login: checks a read key and keeps it in an HttpOnly, SameSite=Strict cookie; 303 to `next`",
            tag: "dashboard",
            query: &[],
            body: Some(obj(json!({"key": s("API key"), "next": s("local path to return to")}), &["key"])),
            body_type: "application/x-www-form-urlencoded",
            statuses: &[(303, "signed in"), (400, "malformed form"), (401, "unknown key")],
            handler: post(dashboard::login_submit),
        },
    ]
}

fn lifecycle_route(
    path: &'static str,
    summary: &'static str,
    handler: MethodRouter<AppState>,
) -> Route {
    Route {
        method: Method::POST,
        path,
        role: Some(Role::Admin),
        summary,
        tag: "experiments",
        query: &[],
        body: Some(obj(
            json!({"reason": s("why"), "winner": s("winning variant (stop only)")}),
            &[],
        )),
        body_type: "application/json",
        statuses: &[
            (200, "done, with the position written"),
            (404, "no such experiment"),
            (409, "illegal transition or concurrent modification"),
        ],
        handler,
    }
}

fn query_route(
    path: &'static str,
    summary: &'static str,
    query: &'static [Param],
    handler: MethodRouter<AppState>,
) -> Route {
    Route {
        method: Method::GET,
        path,
        role: Some(Role::Read),
        summary,
        tag: "queries",
        query,
        body: None,
        body_type: "application/json",
        statuses: &[
            (200, "ok"),
            (404, "no such experiment"),
            (503, "projections not caught up with min_position in time"),
        ],
        handler,
    }
}

/// The OpenAPI 3.1 document, generated from [`routes`].
pub fn openapi() -> Value {
    let mut paths: BTreeMap<String, serde_json::Map<String, Value>> = BTreeMap::new();
    for r in routes() {
        let mut parameters: Vec<Value> = r
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        parameters.extend(r.query.iter().map(|p| {
            json!({"name": p.name, "in": "query", "required": false, "description": p.description, "schema": {"type": p.ty, "minimum": if p.ty == "integer" { json!(0) } else { Value::Null }}})
        }));
        for p in &mut parameters {
            if p["schema"]["minimum"].is_null() {
                if let Some(schema) = p["schema"].as_object_mut() {
                    schema.remove("minimum");
                }
            }
        }
        let mut responses = serde_json::Map::new();
        let error_schema = json!({"$ref": "#/components/schemas/Error"});
        for (status, description) in
            r.statuses
                .iter()
                .chain(if r.role.is_some() { COMMON_ERRORS } else { &[] })
        {
            let content = if r.tag == "dashboard" {
                json!({"text/html": {"schema": {"type": "string"}}})
            } else if *status >= 400 {
                json!({"application/json": {"schema": error_schema}})
            } else {
                json!({"application/json": {"schema": {}}})
            };
            responses.insert(
                status.to_string(),
                json!({"description": description, "content": content}),
            );
        }
        let mut op = json!({
            "summary": r.summary,
            "operationId": format!("{}_{}", r.method.as_str().to_lowercase(), r.path.replace(['/', '{', '}', '.'], "_").trim_matches('_')),
            "tags": [r.tag],
            "parameters": parameters,
            "responses": responses,
        });
        if let Some(body) = &r.body {
            op["requestBody"] = json!({"required": r.body_type == "application/json" && r.path == "/api/experiments", "content": {r.body_type: {"schema": body}}});
        }
        if let Some(role) = r.role {
            op["security"] = json!([{"apiKey": []}]);
            op["x-role"] = json!(role.name());
        }
        paths
            .entry(r.path.to_owned())
            .or_default()
            .insert(r.method.as_str().to_lowercase(), op);
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "verdict", "version": env!("CARGO_PKG_VERSION"), "description": "A/B testing for ML models, built on CQRS and event sourcing."},
        "paths": paths,
        "components": {
            "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Error": obj(json!({"error": obj(json!({"code": s("machine-readable"), "message": s("human-readable"), "details": {"type": "object"}}), &["code", "message", "details"])}), &["error"])}
        }
    })
}

/// Builds the router from the route table, with each route's role check.
pub fn router(state: AppState) -> axum::Router {
    let mut by_path: BTreeMap<&'static str, MethodRouter<AppState>> = BTreeMap::new();
    for r in routes() {
        let handler = match r.role {
            Some(role) => r.handler.route_layer(axum::middleware::from_fn_with_state(
                (state.clone(), role),
                require_role,
            )),
            None => r.handler,
        };
        let merged = match by_path.remove(r.path) {
            Some(existing) => existing.merge(handler),
            None => handler,
        };
        by_path.insert(r.path, merged);
    }
    let mut router = axum::Router::new();
    for (path, handler) in by_path {
        router = router.route(path, handler);
    }
    router
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method not allowed on this route",
            )
        })
        .with_state(state)
}

async fn require_role(
    State((state, role)): State<(AppState, Role)>,
    headers: HeaderMap,
    req: Request,
    next: Next,
) -> Response {
    match auth::check(&state.config.api_keys, &headers, role) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

type ApiResult = Result<Response, ApiError>;

fn ok(status: StatusCode, body: Value) -> ApiResult {
    Ok((status, Json(body)).into_response())
}

fn experiment_json(state: &Experiment, position: u64) -> Value {
    json!({
        "experiment_id": state.definition.as_ref().map(|d| d.experiment_id.clone()),
        "status": state.status,
        "version": state.version,
        "definition": state.definition,
        "stop": state.stop,
        "position": position,
    })
}

async fn create_experiment(
    State(s): State<AppState>,
    ApiJson(mut body): ApiJson<Value>,
) -> ApiResult {
    let start = match body.as_object_mut().and_then(|m| m.remove("start")) {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => b,
        Some(_) => return Err(ApiError::invalid("start", "must be a boolean")),
    };
    if !body.is_object() {
        return Err(ApiError::invalid("body", "must be a JSON object"));
    }
    let (state, position) = s.commands.create_experiment(body, start).await?;
    ok(StatusCode::CREATED, experiment_json(&state, position))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LifecycleBody {
    reason: Option<String>,
    winner: Option<String>,
}

async fn lifecycle(s: &AppState, id: &str, command: Command) -> ApiResult {
    let (state, position) = s.commands.execute(id, command).await?;
    ok(StatusCode::OK, experiment_json(&state, position))
}

async fn start(
    State(s): State<AppState>,
    Path(id): Path<String>,
    OptionalJson(_b): OptionalJson<LifecycleBody>,
) -> ApiResult {
    lifecycle(&s, &id, Command::Start).await
}

async fn pause(
    State(s): State<AppState>,
    Path(id): Path<String>,
    OptionalJson(b): OptionalJson<LifecycleBody>,
) -> ApiResult {
    lifecycle(&s, &id, Command::Pause { reason: b.reason }).await
}

async fn resume(
    State(s): State<AppState>,
    Path(id): Path<String>,
    OptionalJson(_b): OptionalJson<LifecycleBody>,
) -> ApiResult {
    lifecycle(&s, &id, Command::Resume).await
}

async fn stop(
    State(s): State<AppState>,
    Path(id): Path<String>,
    OptionalJson(b): OptionalJson<LifecycleBody>,
) -> ApiResult {
    lifecycle(
        &s,
        &id,
        Command::Stop {
            reason: b.reason,
            winner: b.winner,
            auto: false,
            cause: None,
        },
    )
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TrafficBody {
    weights: Option<BTreeMap<String, f64>>,
    coverage: Option<f64>,
    reason: Option<String>,
}

async fn traffic(
    State(s): State<AppState>,
    Path(id): Path<String>,
    ApiJson(b): ApiJson<TrafficBody>,
) -> ApiResult {
    lifecycle(
        &s,
        &id,
        Command::ChangeTraffic {
            weights: b.weights,
            coverage: b.coverage,
            reason: b.reason,
        },
    )
    .await
}

async fn assign(State(s): State<AppState>, ApiJson(req): ApiJson<AssignRequest>) -> ApiResult {
    let r = s.commands.assign(req).await?;
    ok(StatusCode::OK, serde_json::to_value(r).unwrap_or_default())
}

async fn predict(State(s): State<AppState>, ApiJson(req): ApiJson<PredictRequest>) -> ApiResult {
    let r = s.commands.predict(req).await?;
    let status = if r.error.is_some() {
        StatusCode::BAD_GATEWAY
    } else {
        StatusCode::OK
    };
    ok(status, serde_json::to_value(r).unwrap_or_default())
}

async fn interaction(
    State(s): State<AppState>,
    ApiJson(req): ApiJson<InteractionRequest>,
) -> ApiResult {
    let r = s.commands.interaction(req).await?;
    ok(
        StatusCode::CREATED,
        serde_json::to_value(r).unwrap_or_default(),
    )
}

async fn conversion(
    State(s): State<AppState>,
    ApiJson(req): ApiJson<ConversionRequest>,
) -> ApiResult {
    let r = s.commands.conversion(req).await?;
    ok(
        StatusCode::CREATED,
        serde_json::to_value(r).unwrap_or_default(),
    )
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum BatchLine {
    Interaction(InteractionRequest),
    Conversion(ConversionRequest),
}

async fn batch(State(s): State<AppState>, req: Request) -> ApiResult {
    let bytes = body_bytes(req, &()).await?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| ApiError::invalid("body", "must be UTF-8 NDJSON"))?;
    // Validate every line first; then store the valid ones with one append per stream.
    let mut results: Vec<Value> = Vec::new();
    let mut pending: Vec<(usize, Event, Option<Uuid>)> = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let line_no = i + 1;
        let parsed = parse_json::<BatchLine>(line.as_bytes()).and_then(|l| {
            match &l {
                BatchLine::Interaction(r) => {
                    s.commands.interaction_event(r).map(|e| (e, r.event_id))
                }
                BatchLine::Conversion(r) => s.commands.conversion_event(r).map(|e| (e, r.event_id)),
            }
            .map_err(ApiError::from)
        });
        match parsed {
            Ok((event, id)) => {
                results.push(Value::Null);
                pending.push((results.len() - 1, event, id));
            }
            Err(e) => results.push(json!({"line": line_no, "ok": false, "error": {"code": e.code, "message": e.message, "details": e.details}})),
        }
    }
    let line_numbers: Vec<usize> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, _)| i + 1)
        .collect();
    let slots: Vec<usize> = pending.iter().map(|(slot, _, _)| *slot).collect();
    let stored = s
        .commands
        .record_many(pending.into_iter().map(|(_, e, id)| (e, id)).collect())
        .await;
    for (slot, r) in slots.into_iter().zip(stored) {
        results[slot] = match r {
            Ok(rec) => {
                json!({"line": line_numbers[slot], "ok": true, "event_id": rec.event_id, "position": rec.position, "variant": rec.variant})
            }
            Err(e) => {
                let e = ApiError::from(e);
                json!({"line": line_numbers[slot], "ok": false, "error": {"code": e.code, "message": e.message, "details": e.details}})
            }
        };
    }
    let mut out = String::new();
    for r in &results {
        out.push_str(&r.to_string());
        out.push('\n');
    }
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/x-ndjson")],
        out,
    )
        .into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct QueryParams {
    min_position: Option<u64>,
    bucket: Option<String>,
}

async fn caught_up(s: &AppState, min_position: Option<u64>) -> Result<(), ApiError> {
    if let Some(p) = min_position {
        if p > s.projections.position() {
            // A position the log has never had cannot be waited for: that is the
            // client's mistake, not a transient condition.
            let head = s
                .store
                .head()
                .await
                .map_err(|e| AppError::Unavailable(e.to_string()))?;
            if p > head {
                return Err(ApiError::invalid(
                    "min_position",
                    format!("is beyond the head of the event log ({head})"),
                ));
            }
        }
        if !s.projections.wait_for(p, s.config.query_wait).await {
            return Err(AppError::NotCaughtUp {
                wanted: p,
                reached: s.projections.position(),
            }
            .into());
        }
    }
    Ok(())
}

/// Every read-model query: wait for `min_position`, then answer under the read lock.
async fn query(
    s: &AppState,
    min_position: Option<u64>,
    answer: impl FnOnce(&verdict_app::readmodel::ReadModel) -> Result<Value, AppError>,
) -> ApiResult {
    caught_up(s, min_position).await?;
    let model = s.projections.read().await;
    ok(StatusCode::OK, answer(&model)?)
}

async fn list_experiments(
    State(s): State<AppState>,
    ApiQuery(q): ApiQuery<QueryParams>,
) -> ApiResult {
    query(&s, q.min_position, |m| Ok(queries::list_experiments(m))).await
}

async fn get_experiment(
    State(s): State<AppState>,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<QueryParams>,
) -> ApiResult {
    query(&s, q.min_position, |m| queries::experiment(m, &id)).await
}

async fn results(
    State(s): State<AppState>,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<QueryParams>,
) -> ApiResult {
    query(&s, q.min_position, |m| queries::results(m, &id)).await
}

async fn metrics(
    State(s): State<AppState>,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<QueryParams>,
) -> ApiResult {
    query(&s, q.min_position, |m| queries::metrics(m, &id)).await
}

async fn timeline(
    State(s): State<AppState>,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<QueryParams>,
) -> ApiResult {
    let bucket = match q.bucket.as_deref() {
        None | Some("hour") => Bucket::Hour,
        Some("day") => Bucket::Day,
        Some(other) => {
            return Err(ApiError::invalid(
                "bucket",
                format!("must be `hour` or `day`, got `{other}`"),
            ))
        }
    };
    query(&s, q.min_position, |m| queries::timeline(m, &id, bucket)).await
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsParams {
    from: Option<u64>,
    limit: Option<u64>,
}

/// Most events one audit-log request scans before answering with `next`.
const EVENTS_SCAN_LIMIT: usize = 50_000;

async fn events(
    State(s): State<AppState>,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<EventsParams>,
) -> ApiResult {
    let limit = match q.limit {
        None => 100,
        Some(0) => return Err(ApiError::invalid("limit", "must be at least 1")),
        Some(n) if n > 1000 => return Err(ApiError::invalid("limit", "must be at most 1000")),
        Some(n) => n as usize,
    };
    {
        let model = s.projections.read().await;
        if !model.experiments.contains_key(&id)
            && s.commands
                .states()
                .iter()
                .all(|e| e.definition.as_ref().is_none_or(|d| d.experiment_id != id))
        {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("experiment `{id}` not found"),
            ));
        }
    }
    let (lifecycle, traffic) = (
        verdict_core::event::lifecycle_stream(&id),
        verdict_core::event::traffic_stream(&id),
    );
    let head = s
        .store
        .head()
        .await
        .map_err(|e| AppError::Unavailable(e.to_string()))?;
    let mut from = q.from.unwrap_or(1).max(1);
    let mut out = Vec::new();
    let mut scanned = 0;
    while from <= head && out.len() < limit && scanned < EVENTS_SCAN_LIMIT {
        let page = s
            .store
            .read_all(from, 1024)
            .await
            .map_err(|e| AppError::Unavailable(e.to_string()))?;
        let Some(last) = page.last().map(|e| e.position) else {
            break;
        };
        for e in &page {
            scanned += 1;
            from = e.position + 1;
            if e.stream == lifecycle || e.stream == traffic {
                out.push(serde_json::to_value(verdict_app::codec::envelope(e)).unwrap_or_default());
                if out.len() == limit {
                    break;
                }
            }
        }
        if from <= last {
            break;
        }
    }
    let next = (from <= head).then_some(from);
    ok(StatusCode::OK, json!({"events": out, "next": next}))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AlertParams {
    min_position: Option<u64>,
    experiment_id: Option<String>,
}

async fn alerts(State(s): State<AppState>, ApiQuery(q): ApiQuery<AlertParams>) -> ApiResult {
    query(&s, q.min_position, |m| {
        Ok(queries::alerts(m, q.experiment_id.as_deref()))
    })
    .await
}

async fn healthz() -> ApiResult {
    ok(StatusCode::OK, json!({"status": "ok"}))
}

async fn readyz(State(s): State<AppState>) -> ApiResult {
    let head = s
        .store
        .head()
        .await
        .map_err(|e| AppError::Unavailable(e.to_string()))?;
    let position = s.projections.position();
    let components = crate::readiness::components(&s);
    let down: Vec<&str> = components
        .iter()
        .filter(|c| !c.up)
        .map(|c| c.name.as_str())
        .collect();
    let status = if down.is_empty() {
        "ready"
    } else {
        "not_ready"
    };
    let listed: serde_json::Map<String, Value> = components
        .iter()
        .map(|c| {
            let mut v = json!({"up": c.up, "failures": c.failures});
            if let Some(e) = &c.error {
                v["error"] = json!(e);
            }
            (c.name.clone(), v)
        })
        .collect();
    let mut body = json!({"status": status, "head": head, "projected": position, "lag": head.saturating_sub(position), "down": down, "components": listed});
    // On a node that follows a shared store: how far its command side has seen the others'
    // writes (an outcome is attributed only to an exposure this node has seen).
    if let Some(followed) = s.commands.followed() {
        body["followed"] = json!(followed);
    }
    let code = if down.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    ok(code, body)
}

async fn prometheus(State(s): State<AppState>) -> ApiResult {
    let head = s
        .store
        .head()
        .await
        .map_err(|e| AppError::Unavailable(e.to_string()))?;
    let text = {
        let model = s.projections.read().await;
        let mut text = crate::metrics::render(&model, head, &s.store_stats);
        crate::metrics::shadow_calls(
            &mut text,
            s.commands.shadow_dropped(),
            s.commands.shadow_in_flight(),
        );
        crate::readiness::render(&mut text, &crate::readiness::components(&s));
        text
    };
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

async fn openapi_json() -> ApiResult {
    ok(StatusCode::OK, openapi())
}

/// How long a query waits for `min_position` by default.
pub const DEFAULT_QUERY_WAIT: Duration = Duration::from_secs(5);
