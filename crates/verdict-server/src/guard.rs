//! Safe defaults at the door, before any handler runs.
//!
//! * **Loopback means loopback.** A server without API keys (that was not told
//!   `--allow-public`) answers only requests whose `Host` is a loopback name or address, so
//!   a web page cannot reach it through DNS rebinding (a hostile name resolving to
//!   127.0.0.1).
//! * **No cross-site writes.** A state-changing request (POST, PUT, PATCH, DELETE) whose
//!   `Origin` is not this server's, or that a browser marks `Sec-Fetch-Site: cross-site`,
//!   is refused; and an API body must be JSON or NDJSON (or have no declared type), which
//!   a cross-site form or a "simple" `fetch` cannot send without the browser asking first. The dashboard's own
//!   forms post `application/x-www-form-urlencoded` to `/ui/...` and carry a CSRF token
//!   instead ([`crate::dashboard`]).

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use serde_json::json;

use crate::error::ApiError;
use crate::AppState;

fn refused(status: StatusCode, code: &'static str, field: &str, message: String) -> ApiError {
    let mut e = ApiError::new(status, code, message);
    e.details = json!({ "field": field });
    e
}

/// Whether `host` (a `Host` header value, with or without port) names this machine's
/// loopback interface.
pub fn is_loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        // [::1] or [::1]:8080, nothing else after the bracket.
        Some(rest) => match rest.split_once(']') {
            Some((ip, "")) => ip,
            Some((ip, port))
                if port
                    .strip_prefix(':')
                    .is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())) =>
            {
                ip
            }
            _ => return false,
        },
        None => host.rsplit_once(':').map_or(host, |(h, port)| {
            if port.bytes().all(|b| b.is_ascii_digit()) {
                h
            } else {
                host
            }
        }),
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    if name == "localhost" || name.ends_with(".localhost") {
        return true;
    }
    name.parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.to_canonical().is_loopback())
}

fn host_of(req: &Request) -> Option<String> {
    // Two Host headers: which one a proxy or a check believes is anyone's guess.
    if req.headers().get_all(header::HOST).iter().count() > 1 {
        return Some("(several Host headers)".to_owned());
    }
    req.headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| req.uri().authority().map(|a| a.as_str().to_owned()))
}

/// Whether `origin` (an `Origin` header value) is this server, reached as `host`.
fn same_origin(origin: &str, host: &str) -> bool {
    origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .is_some_and(|o| o.eq_ignore_ascii_case(host))
}

/// Media types an API body may have.
fn json_like(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    matches!(
        essence.as_str(),
        "application/json" | "application/x-ndjson" | "application/ndjson" | "application/jsonl"
    ) || (essence.starts_with("application/") && essence.ends_with("+json"))
}

fn has_body(headers: &HeaderMap) -> bool {
    headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .is_some_and(|n| n > 0)
}

/// The checks of the module doc; 403/415 with a JSON error naming the header.
pub async fn guard(
    State(s): State<AppState>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let host = host_of(&req);
    if s.config.api_keys.is_empty() && !s.config.allow_public {
        match host.as_deref() {
            Some(h) if is_loopback_host(h) => {}
            Some(h) => {
                return Err(refused(
                    StatusCode::FORBIDDEN,
                    "forbidden_host",
                    "Host",
                    format!("this server has no API keys and answers only on loopback names (localhost, 127.0.0.1, [::1]), not {h:?}; configure [[api_keys]] to serve other names"),
                ))
            }
            None => {
                return Err(refused(
                    StatusCode::BAD_REQUEST,
                    "missing_host",
                    "Host",
                    "a Host header is required".into(),
                ))
            }
        }
    }
    let writes = matches!(
        *req.method(),
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    );
    if writes {
        let headers = req.headers();
        if let Some(origin) = headers.get(header::ORIGIN) {
            let origin = origin.to_str().unwrap_or("");
            if !host.as_deref().is_some_and(|h| same_origin(origin, h)) {
                return Err(refused(
                    StatusCode::FORBIDDEN,
                    "foreign_origin",
                    "Origin",
                    format!("state-changing requests from another origin ({origin:?}) are refused"),
                ));
            }
        }
        if headers
            .get("sec-fetch-site")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"cross-site"))
        {
            return Err(refused(
                StatusCode::FORBIDDEN,
                "foreign_origin",
                "Sec-Fetch-Site",
                "state-changing requests from another site are refused".into(),
            ));
        }
        // No Content-Type at all is read as JSON: a browser sends a body without one only
        // with an Origin header, which the check above already judged.
        if let Some(ct) = headers
            .get(header::CONTENT_TYPE)
            .filter(|_| req.uri().path().starts_with("/api/") && has_body(headers))
        {
            let ct = ct.to_str().unwrap_or("");
            if !json_like(ct) {
                return Err(refused(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type",
                    "Content-Type",
                    format!("the body must be application/json (or application/x-ndjson for batches), not {ct:?}"),
                ));
            }
        }
    }
    Ok(next.run(req).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for h in [
            "localhost",
            "localhost:8080",
            "LOCALHOST.",
            "app.localhost:1",
            "127.0.0.1",
            "127.1.2.3:80",
            "[::1]:8080",
            "[::1]",
            "[::ffff:127.0.0.1]:80",
        ] {
            assert!(is_loopback_host(h), "{h}");
        }
        for h in [
            "evil.example",
            "evil.example:8080",
            "localhost.evil.example",
            "127.0.0.1.nip.io",
            "10.0.0.1:8080",
            "[::2]:80",
            "0.0.0.0",
            "[::1]junk",
            "[::1]:",
            "[::1]:80x",
            "",
        ] {
            assert!(!is_loopback_host(h), "{h}");
        }
    }

    #[test]
    fn origins_and_media_types() {
        assert!(same_origin("http://127.0.0.1:8080", "127.0.0.1:8080"));
        assert!(!same_origin("http://127.0.0.1:9999", "127.0.0.1:8080"));
        assert!(!same_origin("null", "127.0.0.1:8080"));
        assert!(!same_origin("http://evil.example", "127.0.0.1:8080"));
        assert!(json_like("application/json; charset=utf-8"));
        assert!(json_like("application/x-ndjson"));
        assert!(json_like("application/problem+json"));
        assert!(!json_like("text/plain"));
        assert!(!json_like("application/x-www-form-urlencoded"));
        assert!(!json_like("multipart/form-data; boundary=x"));
        assert!(!json_like(""));
    }
}
