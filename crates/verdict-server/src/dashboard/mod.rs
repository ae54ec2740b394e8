//! The dashboard: server-rendered HTML pages with charts drawn as SVG on the server (no
//! JavaScript, nothing from a CDN).
//!
//! - `GET /`: every experiment with its status and active alerts.
//! - `GET /experiments/{id}`: variants with lift bars, the cumulative lift with its
//!   always-valid band, conversion / latency p95 / error rate over time, SRM, sample-size
//!   progress, alerts, the audit log, and start / pause / resume / stop buttons. Pages of
//!   a running experiment reload every 5 s (`?refresh=0` turns that off).
//! - `POST /ui/experiments/{id}/{action}`: the buttons; redirects back, or an error page.
//! - `POST /ui/login`: stores a key in a cookie.
//!
//! Access, when API keys are configured: pages need a `read` key and actions an `admin`
//! key. A key is taken from, in order, the usual headers (`Authorization: Bearer`,
//! `X-API-Key`), the `?key=` query parameter (which also sets the cookie, handy for
//! scripts and bookmarks), and the `verdict_key` cookie set by the login form
//! (`HttpOnly`, `SameSite=Strict`, so another site cannot post the forms with it).
//! Action forms also take the key in a password field, so a read-only login can still
//! act by typing the admin key. Without keys everything is open, as the API is.
//!
//! [`svg`] holds the chart primitives, [`pages`] the HTML of each page.

pub mod pages;
pub mod svg;

use crate::auth::{self, Role};
use crate::error::ApiError;
use crate::AppState;
use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::Form;
use serde::Deserialize;
use serde_json::Value;
use verdict_app::dashboard_queries;
use verdict_app::queries::{self, Bucket};
use verdict_core::experiment::Command;

/// Name of the cookie holding the key.
pub const COOKIE: &str = "verdict_key";

/// Seconds between reloads of a running experiment's page.
pub const REFRESH_SECS: u32 = 5;

/// Audit-log entries shown (the latest).
const AUDIT_ENTRIES: u64 = 30;

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes everything but unreserved characters, for a URL path segment or a
/// query or cookie value (an experiment id may contain `/`, `?` or spaces).
pub fn encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn decode_component(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |j: usize| (bytes[j] as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(i + 1), hex(i + 2)) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The link to an experiment's page.
pub fn experiment_href(id: &str) -> String {
    format!("/experiments/{}", encode_component(id))
}

/// What the request presented, and what it may do.
#[derive(Debug, Clone, Default)]
pub struct Viewer {
    /// Keys are configured (else everything is open).
    pub keys_configured: bool,
    /// The presented credential (header, query or cookie) carries the admin role, so the
    /// forms need no key field.
    pub admin: bool,
    /// A key given as `?key=` to store in the cookie.
    set_cookie: Option<String>,
    /// The token the page's forms carry back ([`crate::Inner::csrf`]).
    pub csrf: String,
}

fn key_headers(key: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    // A key that is not a valid header value cannot match a configured one anyway.
    if let Ok(v) = HeaderValue::from_str(key.trim()) {
        h.insert("x-api-key", v);
    }
    h
}

fn cookie_key(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| decode_component(v))
}

fn has_header_key(headers: &HeaderMap) -> bool {
    headers.contains_key("x-api-key") || headers.contains_key(header::AUTHORIZATION)
}

/// Who is looking: `Err` is the page to show instead (the login form, or forbidden).
fn authorize(
    state: &AppState,
    headers: &HeaderMap,
    query_key: Option<&str>,
    next: &str,
) -> Result<Viewer, Box<Response>> {
    let keys = &state.config.api_keys;
    if keys.is_empty() {
        return Ok(Viewer {
            keys_configured: false,
            admin: true,
            set_cookie: None,
            csrf: state.csrf.clone(),
        });
    }
    let (presented, set_cookie) = if has_header_key(headers) {
        (headers.clone(), None)
    } else if let Some(k) = query_key.filter(|k| !k.is_empty()) {
        (key_headers(k), Some(k.to_owned()))
    } else if let Some(k) = cookie_key(headers) {
        (key_headers(&k), None)
    } else {
        return Err(Box::new(login(
            StatusCode::UNAUTHORIZED,
            &state.csrf,
            next,
            None,
        )));
    };
    match auth::check(keys, &presented, Role::Read) {
        Ok(()) => Ok(Viewer {
            keys_configured: true,
            admin: auth::check(keys, &presented, Role::Admin).is_ok(),
            set_cookie,
            csrf: state.csrf.clone(),
        }),
        Err(e) if e.status == StatusCode::UNAUTHORIZED => Err(Box::new(login(
            StatusCode::UNAUTHORIZED,
            &state.csrf,
            next,
            Some(&e.message),
        ))),
        Err(e) => Err(Box::new(error_page(e.status, &e.message))),
    }
}

fn set_cookie_header(key: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!(
        "{COOKIE}={}; Path=/; HttpOnly; SameSite=Strict",
        encode_component(key)
    ))
    .ok()
}

fn html(status: StatusCode, viewer: Option<&Viewer>, body: String) -> Response {
    let mut resp = (status, Html(body)).into_response();
    if let Some(v) = viewer
        .and_then(|v| v.set_cookie.as_deref())
        .and_then(set_cookie_header)
    {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    // Figures change with every event; a cached page would show stale ones.
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

fn login(status: StatusCode, csrf: &str, next: &str, message: Option<&str>) -> Response {
    html(status, None, pages::login(csrf, next, message))
}

/// An HTML error page with `status`.
pub fn error_page(status: StatusCode, message: &str) -> Response {
    html(status, None, pages::error(status, message))
}

/// Query parameters of the pages.
#[derive(Debug, Default, Deserialize)]
pub struct PageQuery {
    key: Option<String>,
    refresh: Option<String>,
}

/// `GET /`: the experiment list.
pub async fn index(
    State(s): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Response {
    // A malformed query string is ignored rather than refused: it only carries options.
    let q = query.map(|Query(q)| q).unwrap_or_default();
    let viewer = match authorize(&s, &headers, q.key.as_deref(), "/") {
        Ok(v) => v,
        Err(page) => return *page,
    };
    let (list, alerts) = {
        let model = s.projections.read().await;
        (
            queries::list_experiments(&model),
            queries::alerts(&model, None),
        )
    };
    let refresh = q.refresh.as_deref() != Some("0")
        && list["experiments"]
            .as_array()
            .is_some_and(|a| a.iter().any(|e| e["status"] == "running"));
    html(
        StatusCode::OK,
        Some(&viewer),
        pages::index(&list, &alerts, refresh),
    )
}

/// Everything the experiment page shows.
#[derive(Debug)]
pub struct ExperimentData {
    /// `queries::experiment`.
    pub experiment: Value,
    /// `queries::results`.
    pub results: Value,
    /// `dashboard_queries::lift_timeline`.
    pub timeline: Value,
    /// `queries::alerts` of this experiment.
    pub alerts: Value,
    /// `queries::metrics` (per variant and per shadow arm).
    pub metrics: Value,
    /// The latest lifecycle events, newest first (envelopes).
    pub audit: Vec<Value>,
    /// Who is looking.
    pub viewer: Viewer,
    /// Reload the page every few seconds.
    pub refresh: bool,
}

/// Above this many hours of data the timeline is drawn per day.
const HOURLY_UP_TO: i64 = 96 * 3600;

/// `GET /experiments/{id}`: one experiment.
pub async fn experiment(
    State(s): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Response {
    // A malformed query string is ignored rather than refused: it only carries options.
    let q = query.map(|Query(q)| q).unwrap_or_default();
    let viewer = match authorize(&s, &headers, q.key.as_deref(), &experiment_href(&id)) {
        Ok(v) => v,
        Err(page) => return *page,
    };
    let read = {
        let model = s.projections.read().await;
        queries::experiment(&model, &id).and_then(|experiment| {
            let results = queries::results(&model, &id)?;
            let mut timeline = dashboard_queries::lift_timeline(&model, &id, Bucket::Hour)?;
            let span = |t: &Value| {
                let starts: Vec<i64> = t["points"]
                    .as_array()
                    .map(|p| p.iter().filter_map(|p| p["start_unix"].as_i64()).collect())
                    .unwrap_or_default();
                starts.last().zip(starts.first()).map_or(0, |(l, f)| l - f)
            };
            if span(&timeline) > HOURLY_UP_TO {
                timeline = dashboard_queries::lift_timeline(&model, &id, Bucket::Day)?;
            }
            Ok((
                experiment,
                results,
                timeline,
                queries::alerts(&model, Some(&id)),
                queries::metrics(&model, &id)?,
            ))
        })
    };
    let (experiment, results, timeline, alerts, metrics) = match read {
        Ok(r) => r,
        Err(e) => {
            let e = ApiError::from(e);
            return error_page(e.status, &e.message);
        }
    };
    let audit = audit_log(&s, &id).await.unwrap_or_default();
    let refresh = q.refresh.as_deref() != Some("0") && experiment["status"] == "running";
    let data = ExperimentData {
        experiment,
        results,
        timeline,
        alerts,
        metrics,
        audit,
        viewer: viewer.clone(),
        refresh,
    };
    html(StatusCode::OK, Some(&viewer), pages::experiment(&id, &data))
}

/// The latest lifecycle events of `id`, newest first, read from the store (the audit
/// log is the events themselves, not a projection of them).
async fn audit_log(s: &AppState, id: &str) -> Result<Vec<Value>, verdict_store::StoreError> {
    let stream = verdict_core::event::lifecycle_stream(id);
    let version = s.store.stream_version(&stream).await?;
    let from = version.saturating_sub(AUDIT_ENTRIES - 1).max(1);
    let events = s
        .store
        .read_stream(&stream, from, AUDIT_ENTRIES as usize)
        .await?;
    Ok(events
        .iter()
        .rev()
        .map(|e| serde_json::to_value(verdict_app::codec::envelope(e)).unwrap_or_default())
        .collect())
}

/// The login form's fields.
#[derive(Debug, Deserialize)]
pub struct LoginForm {
    key: String,
    next: Option<String>,
    #[serde(default)]
    csrf: String,
}

/// Only paths of this site, so the form cannot be used to redirect elsewhere. Browsers
/// drop tabs and newlines from URLs and read `\` as `/`, so `/\t/evil.example` would
/// become `//evil.example`: any whitespace, control character or backslash is refused.
fn local_path(next: Option<&str>) -> String {
    match next {
        Some(p)
            if p.starts_with('/')
                && !p.starts_with("//")
                && !p
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control() || c == '\\') =>
        {
            p.to_owned()
        }
        _ => "/".to_owned(),
    }
}

/// Compares tokens in full whatever they hold, so timing tells nothing of a prefix.
fn same_token(given: &str, expected: &str) -> bool {
    given.len() == expected.len()
        && given
            .bytes()
            .zip(expected.bytes())
            .fold(0u8, |d, (a, b)| d | (a ^ b))
            == 0
}

/// The page the forms of another site (or a stale page) get.
fn csrf_refused() -> Response {
    error_page(
        StatusCode::FORBIDDEN,
        "this form did not come from this server's page (its CSRF token does not match); reload the page and try again",
    )
}

fn see_other(location: &str) -> Response {
    let mut resp = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

/// `POST /ui/login`: checks the key (role `read`), stores it in the cookie, redirects.
pub async fn login_submit(
    State(s): State<AppState>,
    form: Result<Form<LoginForm>, FormRejection>,
) -> Response {
    let Form(f) = match form {
        Ok(f) => f,
        Err(e) => return error_page(StatusCode::BAD_REQUEST, &e.body_text()),
    };
    let next = local_path(f.next.as_deref());
    if !same_token(&f.csrf, &s.csrf) {
        return csrf_refused();
    }
    if let Err(e) = auth::check(&s.config.api_keys, &key_headers(&f.key), Role::Read) {
        return login(e.status, &s.csrf, &next, Some(&e.message));
    }
    let mut resp = see_other(&next);
    if let Some(v) = set_cookie_header(&f.key) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

/// The action form's fields.
#[derive(Debug, Default, Deserialize)]
pub struct ActionForm {
    #[serde(default)]
    csrf: String,
    key: Option<String>,
    reason: Option<String>,
    winner: Option<String>,
}

/// `POST /ui/experiments/{id}/{action}`: start, pause, resume or stop, with the admin
/// key from the form (or the cookie / headers); back to the page, or an error page.
pub async fn action(
    State(s): State<AppState>,
    Path((id, action)): Path<(String, String)>,
    headers: HeaderMap,
    form: Result<Form<ActionForm>, FormRejection>,
) -> Response {
    let f = match form {
        Ok(Form(f)) => f,
        Err(e) => return error_page(StatusCode::BAD_REQUEST, &e.body_text()),
    };
    if !same_token(&f.csrf, &s.csrf) {
        return csrf_refused();
    }
    let nonempty = |v: Option<String>| v.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
    let reason = nonempty(f.reason);
    let command = match action.as_str() {
        "start" => Command::Start,
        "pause" => Command::Pause { reason },
        "resume" => Command::Resume,
        "stop" => Command::Stop {
            reason,
            winner: nonempty(f.winner),
            auto: false,
            cause: None,
        },
        other => {
            return error_page(
                StatusCode::NOT_FOUND,
                &format!("no such action `{other}` (start, pause, resume or stop)"),
            )
        }
    };
    let keys = &s.config.api_keys;
    let presented = match nonempty(f.key) {
        Some(k) => key_headers(&k),
        None if has_header_key(&headers) => headers.clone(),
        None => key_headers(&cookie_key(&headers).unwrap_or_default()),
    };
    if let Err(e) = auth::check(keys, &presented, Role::Admin) {
        let message = if e.status == StatusCode::UNAUTHORIZED {
            "the admin API key is required for this action".to_owned()
        } else {
            e.message
        };
        return error_page(e.status, &message);
    }
    match s.commands.execute(&id, command).await {
        Ok((_, position)) => {
            // Back on the page, the new status should already show.
            s.projections.wait_for(position, s.config.query_wait).await;
            see_other(&experiment_href(&id))
        }
        Err(e) => {
            let e = ApiError::from(e);
            error_page(e.status, &format!("{action} {id}: {}", e.message))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_covers_html_specials() {
        assert_eq!(
            escape(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(escape("plain é"), "plain é");
    }

    #[test]
    fn components_round_trip() {
        for s in ["exp-001", "a b/c?d=e&f", "ключ", "100%"] {
            assert_eq!(decode_component(&encode_component(s)), s);
        }
        assert_eq!(encode_component("a/b c"), "a%2Fb%20c");
        assert_eq!(decode_component("bad%zz%4"), "bad%zz%4");
    }

    #[test]
    fn redirects_stay_local() {
        assert_eq!(local_path(Some("/experiments/x")), "/experiments/x");
        assert_eq!(local_path(Some("//evil.example")), "/");
        assert_eq!(local_path(Some("https://evil.example")), "/");
        assert_eq!(local_path(Some("/\\evil")), "/");
        assert_eq!(local_path(Some("/\t/evil.example")), "/");
        assert_eq!(local_path(Some("/\n/evil.example")), "/");
        assert_eq!(local_path(Some("/ /evil.example")), "/");
        assert_eq!(local_path(None), "/");
    }

    #[test]
    fn cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; verdict_key=k%20y; b=2"),
        );
        assert_eq!(cookie_key(&h).as_deref(), Some("k y"));
        assert_eq!(cookie_key(&HeaderMap::new()), None);
    }
}
