//! The HTML of each dashboard page, from the query results (the same JSON the API
//! returns, so the page and `/results` cannot disagree). Every string that comes from a
//! user (ids, names, variant keys, model names, reasons, alert messages) goes through
//! [`escape`].

use super::svg::{ci_bar, civil, Band, LineChart, Series};
use super::{encode_component, escape, experiment_href, ExperimentData, REFRESH_SECS};
use axum::http::StatusCode;
use serde_json::Value;
use std::fmt::Write as _;

const CSS: &str = r#"
:root{--bg:#f5f6f8;--card:#fff;--ink:#1f2933;--muted:#66788a;--line:#e3e7ec;--accent:#2563eb;
--up:#15803d;--down:#b91c1c;--warn:#b45309}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--ink);font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
a{color:var(--accent);text-decoration:none}a:hover{text-decoration:underline}
header.top{background:#111827;color:#e5e7eb;padding:10px 28px;display:flex;align-items:center;gap:24px}
header.top .brand{color:#fff;font-weight:700;font-size:17px;letter-spacing:.3px}
header.top nav a{color:#cbd5e1;margin-right:16px;font-size:13px}
main{max-width:1360px;margin:0 auto;padding:22px 28px 40px}
h1{font-size:24px;margin:0 0 4px}h2{font-size:16px;margin:0 0 12px}h3{font-size:14px;margin:0 0 6px;color:#374151}
.sub{color:var(--muted);font-size:13px}.muted{color:var(--muted)}.small{font-size:12px}
.card{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:16px 18px;margin-bottom:18px;box-shadow:0 1px 2px rgba(16,24,40,.04)}
.grid{display:grid;gap:18px;grid-template-columns:repeat(auto-fit,minmax(300px,1fr))}
.grid2{display:grid;gap:18px;grid-template-columns:repeat(auto-fit,minmax(520px,1fr))}
.grid>.card,.grid2>.card{margin-bottom:0}
.row{display:flex;justify-content:space-between;align-items:flex-start;gap:24px;flex-wrap:wrap;margin-bottom:18px}
table{width:100%;border-collapse:collapse}
th{text-align:left;font-weight:600;color:var(--muted);font-size:12px;text-transform:uppercase;letter-spacing:.4px;padding:6px 10px;border-bottom:1px solid var(--line)}
td{padding:8px 10px;border-bottom:1px solid var(--line);vertical-align:middle}
tr:last-child td{border-bottom:none}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
.badge{display:inline-block;padding:2px 9px;border-radius:999px;font-size:12px;font-weight:600;text-transform:lowercase}
.status-running{background:#dcfce7;color:#166534}.status-paused{background:#fef3c7;color:#92400e}
.status-stopped{background:#e5e7eb;color:#374151}.status-draft{background:#dbeafe;color:#1e40af}
.sev-P1{background:#fee2e2;color:#991b1b}.sev-P2{background:#ffedd5;color:#9a3412}.sev-P3{background:#e0f2fe;color:#075985}
.ok{color:var(--up);font-weight:600}.bad{color:var(--down);font-weight:600}
.decision{border-left:5px solid var(--muted)}
.decision-ship{border-left-color:var(--up)}.decision-stop{border-left-color:var(--down)}.decision-investigate{border-left-color:var(--warn)}
.decision .action{font-weight:700;text-transform:uppercase;letter-spacing:.5px;margin-right:8px}
.big{font-size:22px;font-weight:700}
.progress{height:12px;background:#e5e7eb;border-radius:999px;overflow:hidden;margin:8px 0 6px}
.progress>div{height:100%;background:var(--accent);border-radius:999px}
.progress.done>div{background:var(--up)}
svg.chart{width:100%;height:auto;display:block}
svg.chart .gridline{stroke:#eef0f3}svg.chart .zero{stroke:#9ca3af;stroke-dasharray:4 3}
svg.chart text{font:11px system-ui,sans-serif;fill:#6b7280}svg.chart .legend{fill:#374151;font-size:12px}
svg.chart .empty{font-size:14px}
svg.ci .axis{stroke:#e5e7eb;stroke-width:2}svg.ci .zero{stroke:#6b7280;stroke-width:1}
svg.ci .up{fill:#86efac}svg.ci .down{fill:#fca5a5}svg.ci .flat{fill:#cbd5e1}svg.ci .est{fill:#111827}
.lift{display:flex;align-items:center;gap:10px}.lift .v{min-width:64px;text-align:right;font-weight:600;white-space:nowrap}
.swatch{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:6px}
form.controls{display:flex;gap:10px;align-items:flex-end;flex-wrap:wrap}
form.controls label{display:flex;flex-direction:column;font-size:12px;color:var(--muted);gap:3px}
input,select{font:inherit;padding:6px 8px;border:1px solid #cbd5e1;border-radius:6px;background:#fff}
button{font:inherit;font-weight:600;padding:7px 16px;border-radius:6px;border:1px solid #cbd5e1;background:#fff;cursor:pointer}
button:hover{background:#f3f4f6}button.primary{background:var(--accent);border-color:var(--accent);color:#fff}
button.danger{background:#fff;border-color:#fca5a5;color:var(--down)}button.danger:hover{background:#fef2f2}
.details{font:12px ui-monospace,SFMono-Regular,Menlo,monospace;color:#374151;word-break:break-word}
.caption{color:var(--muted);font-size:12px;margin-top:6px}
.login{max-width:420px;margin:80px auto}
"#;

/// The page frame: head, styles, top bar; `refresh` adds the reload.
fn layout(title: &str, refresh: bool, body: &str) -> String {
    let meta = if refresh {
        format!(r#"<meta http-equiv="refresh" content="{REFRESH_SECS}">"#)
    } else {
        String::new()
    };
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">{meta}
<title>{} · verdict</title><style>{CSS}</style></head>
<body><header class="top"><a class="brand" href="/">verdict</a><nav><a href="/">Experiments</a><a href="/api/alerts">Alerts (JSON)</a><a href="/api/openapi.json">API</a><a href="/metrics">Metrics</a></nav></header>
<main>{body}</main></body></html>"#,
        escape(title)
    )
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or_default()
}

/// `0.1234` → `12.34%`; missing → `–`.
pub fn pct(v: Option<f64>, digits: usize) -> String {
    v.filter(|x| x.is_finite())
        .map_or("–".into(), |x| format!("{:.*}%", digits, x * 100.0))
}

/// `0.1234` → `+12.3%`.
pub fn signed_pct(v: Option<f64>) -> String {
    v.filter(|x| x.is_finite())
        .map_or("–".into(), |x| format!("{:+.1}%", x * 100.0))
}

/// `20000` → `20,000`.
pub fn count(v: Option<u64>) -> String {
    let Some(v) = v else { return "–".into() };
    let digits = v.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn p_value(v: Option<f64>) -> String {
    match v {
        Some(p) if p < 0.001 => "&lt;0.001".into(),
        Some(p) => format!("{p:.3}"),
        None => "–".into(),
    }
}

fn ms(v: Option<f64>) -> String {
    v.map_or("–".into(), |x| format!("{x:.1} ms"))
}

/// An RFC 3339 time from the API as `YYYY-MM-DD HH:MM:SS` (UTC, as stored).
fn short_time(v: &Value) -> String {
    match v.as_str() {
        Some(t) if t.len() >= 19 => escape(&t[..19].replace('T', " ")),
        Some(t) => escape(t),
        None => "–".into(),
    }
}

fn micros_time(m: i64) -> String {
    let secs = m.div_euclid(1_000_000);
    let (y, mo, d) = civil(secs);
    let t = secs.rem_euclid(86_400);
    format!(
        "{y}-{mo:02}-{d:02} {:02}:{:02}:{:02}",
        t / 3600,
        t % 3600 / 60,
        t % 60
    )
}

fn status_badge(status: &str) -> String {
    format!(
        r#"<span class="badge status-{0}">{0}</span>"#,
        escape(status)
    )
}

fn severity_badge(sev: &str) -> String {
    format!(r#"<span class="badge sev-{0}">{0}</span>"#, escape(sev))
}

/// The login form (when keys are configured and none was presented).
pub fn login(csrf: &str, next: &str, message: Option<&str>) -> String {
    let msg = message.map_or(String::new(), |m| {
        format!(r#"<p class="bad">{}</p>"#, escape(m))
    });
    layout(
        "Sign in",
        false,
        &format!(
            r#"<div class="card login"><h1>Sign in</h1><p class="sub">This server requires an API key with the <b>read</b> role (an <b>admin</b> key also enables the experiment controls). It is kept in a cookie for this site only.</p>{msg}
<form method="post" action="/ui/login" class="controls"><input type="hidden" name="csrf" value="{}"><input type="hidden" name="next" value="{}"><label>API key<input type="password" name="key" autocomplete="current-password" required autofocus></label><button class="primary" type="submit">Sign in</button></form></div>"#,
            escape(csrf),
            escape(next)
        ),
    )
}

/// An error page.
pub fn error(status: StatusCode, message: &str) -> String {
    layout(
        &status.to_string(),
        false,
        &format!(
            r#"<div class="card"><h1>{}</h1><p class="bad">{}</p><p><a href="/">All experiments</a></p></div>"#,
            escape(&status.to_string()),
            escape(message)
        ),
    )
}

/// `GET /`: the list of experiments and the active alerts.
pub fn index(list: &Value, alerts: &Value, refresh: bool) -> String {
    let mut body = String::from(
        r#"<div class="row"><div><h1>Experiments</h1><div class="sub">Every experiment with its status and active alerts.</div></div></div>"#,
    );
    let active: Vec<&Value> = alerts["alerts"]
        .as_array()
        .map(|a| a.iter().filter(|a| a["active"] == true).collect())
        .unwrap_or_default();
    if !active.is_empty() {
        body.push_str(r#"<div class="card" id="active-alerts"><h2>Active alerts</h2><table><tr><th>Severity</th><th>Experiment</th><th>Monitor</th><th>Message</th><th>Raised (UTC)</th></tr>"#);
        for a in &active {
            let id = s(a, "experiment_id");
            let _ = write!(
                body,
                r#"<tr class="alert"><td>{}</td><td><a href="{}">{}</a></td><td>{}</td><td>{}</td><td>{}</td></tr>"#,
                severity_badge(s(a, "severity")),
                escape(&experiment_href(id)),
                escape(id),
                escape(s(a, "monitor")),
                escape(s(a, "message")),
                short_time(&a["raised_at"])
            );
        }
        body.push_str("</table></div>");
    }
    let items = list["experiments"].as_array().cloned().unwrap_or_default();
    body.push_str(r#"<div class="card"><table id="experiments">"#);
    if items.is_empty() {
        body.push_str(r#"<tr><td class="muted">No experiments yet. Create one with <code>POST /api/experiments</code> (or run <code>verdict demo --keep</code>).</td></tr>"#);
    } else {
        body.push_str(r#"<tr><th>Experiment</th><th>Status</th><th>Variants</th><th class="num">Users</th><th>Alerts</th><th>Started (UTC)</th><th>Stopped (UTC)</th></tr>"#);
    }
    for e in &items {
        let id = s(e, "experiment_id");
        let n_alerts = e["active_alerts"].as_u64().unwrap_or(0);
        let alert_cell = if n_alerts == 0 {
            r#"<span class="muted">none</span>"#.to_owned()
        } else {
            let msgs: Vec<String> = active
                .iter()
                .filter(|a| s(a, "experiment_id") == id)
                .map(|a| {
                    format!(
                        "{} {}",
                        severity_badge(s(a, "severity")),
                        escape(s(a, "message"))
                    )
                })
                .collect();
            format!(
                r#"<span class="bad">{n_alerts} active</span><div class="small">{}</div>"#,
                msgs.join("<br>")
            )
        };
        let variants: Vec<String> = e["variants"]
            .as_array()
            .map(|v| v.iter().filter_map(|k| k.as_str()).map(escape).collect())
            .unwrap_or_default();
        let name = s(e, "name");
        let _ = write!(
            body,
            r#"<tr class="experiment" data-id="{}"><td><a href="{}"><b>{}</b></a>{}</td><td>{}</td><td>{}</td><td class="num">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>"#,
            escape(id),
            escape(&experiment_href(id)),
            escape(id),
            if name.is_empty() || name == id {
                String::new()
            } else {
                format!(r#"<div class="sub">{}</div>"#, escape(name))
            },
            status_badge(s(e, "status")),
            variants.join(", "),
            count(e["users"].as_u64()),
            alert_cell,
            short_time(&e["started_at"]),
            short_time(&e["stopped_at"])
        );
    }
    body.push_str("</table></div>");
    if refresh {
        let _ = write!(
            body,
            r#"<p class="caption">Reloads every {REFRESH_SECS} s while an experiment runs · <a href="/?refresh=0">stop reloading</a></p>"#
        );
    }
    layout("Experiments", refresh, &body)
}

const PALETTE: [&str; 6] = [
    "#2563eb", "#ea580c", "#9333ea", "#0891b2", "#db2777", "#65a30d",
];
const CONTROL_COLOR: &str = "#64748b";

/// Colours by variant index: the control grey, treatments from the palette.
/// Shadow arms (absent when there are none): calls, agreement with the control and
/// latency against the control's on the same mirrored requests.
fn shadows_card(metrics: &Value) -> String {
    let shadows = metrics["shadows"].as_array().cloned().unwrap_or_default();
    if shadows.is_empty() {
        return String::new();
    }
    let mut out = String::from(
        r#"<div class="card"><h2>Shadow variants</h2><table id="shadows"><tr><th>Shadow</th><th class="num">Share</th><th class="num">Calls</th><th class="num">Error rate</th><th class="num">Agreement</th><th class="num">Item overlap</th><th class="num">Mean |diff|</th><th class="num">Latency p50 / p99</th><th class="num">Control p50 / p99</th></tr>"#,
    );
    for sh in &shadows {
        let diff = sh["mean_abs_diff"]
            .as_f64()
            .map_or("–".to_owned(), |d| format!("{d:.4}"));
        let _ = write!(
            out,
            r#"<tr class="shadow" data-key="{}"><td><b>{}</b><div class="sub">{}</div></td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td><td class="num agreement">{}</td><td class="num">{}</td><td class="num">{diff}</td><td class="num">{} / {}</td><td class="num">{} / {}</td></tr>"#,
            escape(s(sh, "key")),
            escape(s(sh, "key")),
            escape(s(sh, "model")),
            pct(sh["share"].as_f64(), 0),
            count(Some(
                sh["predictions"].as_u64().unwrap_or(0) + sh["errors"].as_u64().unwrap_or(0)
            )),
            pct(sh["error_rate"].as_f64(), 2),
            pct(sh["agreement_rate"].as_f64(), 1),
            pct(sh["mean_overlap"].as_f64(), 1),
            ms(sh["latency_ms"]["p50"].as_f64()),
            ms(sh["latency_ms"]["p99"].as_f64()),
            ms(sh["control_latency_ms"]["p50"].as_f64()),
            ms(sh["control_latency_ms"]["p99"].as_f64()),
        );
    }
    out.push_str(r#"</table><div class="caption">Each shadow model gets a copy of a share of the control's requests after the control answered; its answers are recorded and compared with the control's, never served. Agreement: same top item (or label); overlap: share of the control's items the shadow also returned.</div></div>"#);
    out
}

fn colors(keys: &[String], control: &str) -> Vec<&'static str> {
    let mut next = 0;
    keys.iter()
        .map(|k| {
            if k == control {
                CONTROL_COLOR
            } else {
                next += 1;
                PALETTE[(next - 1) % PALETTE.len()]
            }
        })
        .collect()
}

fn fmt_pct_axis(v: f64) -> String {
    let p = v * 100.0;
    if (p - p.round()).abs() < 1e-9 {
        format!("{p:.0}%")
    } else if (p * 10.0 - (p * 10.0).round()).abs() < 1e-9 {
        format!("{p:.1}%")
    } else {
        format!("{p:.2}%")
    }
}

fn fmt_signed_pct_axis(v: f64) -> String {
    if v > 0.0 {
        format!("+{}", fmt_pct_axis(v))
    } else {
        fmt_pct_axis(v)
    }
}

fn fmt_ms_axis(v: f64) -> String {
    if v >= 10.0 || v == 0.0 {
        format!("{v:.0} ms")
    } else {
        format!("{v:.1} ms")
    }
}

/// The always-valid interval of a comparison on the relative scale (the sequential
/// interval of the difference over the control rate, as the lift chart's band).
fn relative_band(cmp: &Value, control_rate: Option<f64>) -> Option<[f64; 2]> {
    let ci = cmp["sequential_ci"].as_array()?;
    let (lo, hi) = (ci.first()?.as_f64()?, ci.get(1)?.as_f64()?);
    let c = control_rate.filter(|c| *c > 0.0)?;
    Some([lo / c, hi / c])
}

/// `GET /experiments/{id}`.
pub fn experiment(id: &str, d: &ExperimentData) -> String {
    let r = &d.results;
    let status = s(&d.experiment, "status");
    let name = s(r, "name");
    let control = s(r, "control").to_owned();
    let variants = r["variants"].as_array().cloned().unwrap_or_default();
    let keys: Vec<String> = variants.iter().map(|v| s(v, "key").to_owned()).collect();
    let palette = colors(&keys, &control);
    let alpha = d.experiment["definition"]["alpha"].as_f64().unwrap_or(0.05);
    let level = format!("{}%", ((1.0 - alpha) * 100.0).round());
    let control_rate = variants
        .iter()
        .find(|v| s(v, "key") == control)
        .and_then(|v| v["conversion_rate"].as_f64());
    let comparisons = r["comparisons"].as_array().cloned().unwrap_or_default();
    let comparison = |key: &str| {
        comparisons
            .iter()
            .find(|c| s(c, "key") == key)
            .map(|c| c["conversion"].clone())
    };
    let mut body = String::new();

    // Title, status and controls.
    let _ = write!(
        body,
        r#"<div class="row"><div><div class="sub"><a href="/">Experiments</a> / {}</div><h1>{}</h1><div class="sub">{} · primary metric <b>{}</b> · started {} UTC{}</div>{}</div>{}</div>"#,
        escape(id),
        escape(if name.is_empty() { id } else { name }),
        status_badge(status),
        escape(s(r, "primary_metric")),
        short_time(&d.experiment["started_at"]),
        if d.experiment["stopped_at"].is_string() {
            format!(" · stopped {} UTC", short_time(&d.experiment["stopped_at"]))
        } else {
            String::new()
        },
        refresh_note(id, status, d.refresh),
        controls(id, status, &keys, d)
    );

    // The decision in words.
    let decision = &r["decision"];
    let action = s(decision, "action");
    let stop = &d.experiment["stop"];
    if status == "stopped" {
        // Once stopped, what was decided matters more than what the figures suggest.
        let mut what = vec![if stop["auto"] == true {
            "automatically, by a guardrail".to_owned()
        } else {
            "by hand".to_owned()
        }];
        if let Some(w) = stop["winner"].as_str() {
            what.push(format!("winner <b>{}</b>", escape(w)));
        }
        if let Some(reason) = stop["reason"].as_str() {
            what.push(format!("reason: {}", escape(reason)));
        }
        let _ = write!(
            body,
            r#"<div class="card decision" id="decision"><span class="action">stopped</span>{}<div class="sub">The figures at the stop: {}</div></div>"#,
            what.join(" · "),
            escape(s(decision, "reason"))
        );
    } else {
        let _ = write!(
            body,
            r#"<div class="card decision decision-{}" id="decision"><span class="action">{}</span>{}</div>"#,
            escape(action),
            escape(action),
            escape(s(decision, "reason"))
        );
    }

    // SRM, sample size, alerts at a glance.
    body.push_str(r#"<div class="grid" style="margin-bottom:18px">"#);
    body.push_str(&srm_card(r, &variants));
    body.push_str(&sample_size_card(r, &variants));
    let active = d.alerts["alerts"]
        .as_array()
        .map_or(0, |a| a.iter().filter(|a| a["active"] == true).count());
    let _ = write!(
        body,
        r##"<div class="card" id="alerts-summary"><h3>Alerts</h3><div class="big {}">{}</div><div class="sub">{} · <a href="#alerts">details</a></div></div>"##,
        if active > 0 { "bad" } else { "ok" },
        if active > 0 {
            format!("{active} active")
        } else {
            "none active".into()
        },
        if active > 0 {
            "monitors are firing"
        } else {
            "all six monitors quiet"
        }
    );
    body.push_str("</div>");

    // Variant table with the lift bars.
    let max = comparisons
        .iter()
        .map(|c| {
            let cmp = &c["conversion"];
            let mut m = cmp["relative"].as_f64().unwrap_or(0.0).abs();
            if let Some([lo, hi]) = relative_band(cmp, control_rate) {
                m = m.max(lo.abs()).max(hi.abs());
            }
            m
        })
        .fold(0.02f64, f64::max)
        * 1.15;
    body.push_str(
        r#"<div class="card"><h2>Variants</h2><table id="variants"><tr><th>Variant</th><th class="num">Weight</th><th class="num">Users</th><th class="num">Conversions</th><th class="num">Conv. rate</th><th>Lift vs control</th><th class="num">p (always-valid)</th><th class="num">Chance to beat</th><th class="num">Error rate</th><th class="num">Latency p95</th></tr>"#,
    );
    for (i, v) in variants.iter().enumerate() {
        let key = s(v, "key");
        let (lift, p, chance) = if key == control {
            (
                r#"<span class="muted">control</span>"#.to_owned(),
                "–".to_owned(),
                "–".to_owned(),
            )
        } else {
            let cmp = comparison(key).unwrap_or(Value::Null);
            let rel = cmp["relative"].as_f64();
            let band = relative_band(&cmp, control_rate);
            let range = band.map_or(String::new(), |[lo, hi]| {
                format!(
                    r#"<div class="small muted">{} to {}</div>"#,
                    signed_pct(Some(lo)),
                    signed_pct(Some(hi))
                )
            });
            (
                format!(
                    r#"<div class="lift"><div class="v">{}{range}</div>{}</div>"#,
                    signed_pct(rel),
                    ci_bar(rel, band, max)
                ),
                p_value(cmp["sequential_p_value"].as_f64()),
                pct(cmp["chance_to_beat_control"].as_f64(), 1),
            )
        };
        let _ = write!(
            body,
            r#"<tr class="variant" data-key="{}"><td><span class="swatch" style="background:{}"></span><b>{}</b><div class="sub">{}</div></td><td class="num">{}</td><td class="num users">{}</td><td class="num">{}</td><td class="num rate">{}</td><td>{lift}</td><td class="num">{p}</td><td class="num">{chance}</td><td class="num">{}</td><td class="num">{}</td></tr>"#,
            escape(key),
            palette[i],
            escape(key),
            escape(s(v, "model")),
            pct(v["weight"].as_f64(), 0),
            count(v["users"].as_u64()),
            count(v["conversions"].as_u64()),
            pct(v["conversion_rate"].as_f64(), 2),
            pct(v["error_rate"].as_f64(), 2),
            ms(v["latency_ms"]["p95"].as_f64()),
        );
    }
    let _ = write!(
        body,
        r#"</table><div class="caption">Lift: conversion rate relative to the control. Bar: its always-valid {level} interval (safe to read at any time) on an axis from −{m} to +{m}, zero marked; green above zero, red below, grey while it straddles zero. p (always-valid) and chance to beat are for conversion.</div></div>"#,
        m = fmt_pct_axis((max * 100.0).round() / 100.0)
    );

    // Charts.
    body.push_str(&charts(d, &keys, &control, &palette, &level));

    body.push_str(&shadows_card(&d.metrics));

    // Alerts and audit log.
    body.push_str(&alerts_card(&d.alerts));
    body.push_str(&audit_card(&d.audit));
    layout(if name.is_empty() { id } else { name }, d.refresh, &body)
}

fn refresh_note(id: &str, status: &str, refresh: bool) -> String {
    let href = escape(&experiment_href(id));
    if refresh {
        format!(
            r#"<div class="caption">Reloads every {REFRESH_SECS} s while running · <a href="{href}?refresh=0">stop reloading</a></div>"#
        )
    } else if status == "running" {
        format!(
            r#"<div class="caption">Not reloading · <a href="{href}">reload every {REFRESH_SECS} s</a></div>"#
        )
    } else {
        String::new()
    }
}

/// Start / pause / resume / stop: one form, one button per allowed transition (the
/// server still decides; a refused one shows the error page).
fn controls(id: &str, status: &str, keys: &[String], d: &ExperimentData) -> String {
    let actions: &[(&str, &str, &str)] = match status {
        "draft" => &[("start", "Start", "primary")],
        "running" => &[("pause", "Pause", ""), ("stop", "Stop", "danger")],
        "paused" => &[("resume", "Resume", "primary"), ("stop", "Stop", "danger")],
        _ => &[],
    };
    if actions.is_empty() {
        return r#"<div class="card" id="controls"><span class="muted">Stopped for good: every user gets the control.</span></div>"#.into();
    }
    let base = format!("/ui/experiments/{}", encode_component(id));
    let mut f = format!(
        r#"<form class="controls card" id="controls" method="post" action="{}/{}">"#,
        escape(&base),
        actions[0].0
    );
    let _ = write!(
        f,
        r#"<input type="hidden" name="csrf" value="{}">"#,
        escape(&d.viewer.csrf)
    );
    if d.viewer.keys_configured && !d.viewer.admin {
        f.push_str(r#"<label>Admin key<input type="password" name="key" autocomplete="current-password" required></label>"#);
    }
    f.push_str(r#"<label>Reason<input type="text" name="reason" placeholder="optional" size="16"></label>"#);
    if actions.iter().any(|a| a.0 == "stop") {
        f.push_str(r#"<label>Winner (stop)<select name="winner"><option value="">none</option>"#);
        for k in keys {
            let _ = write!(f, r#"<option value="{0}">{0}</option>"#, escape(k));
        }
        f.push_str("</select></label>");
    }
    for (action, label, class) in actions {
        let _ = write!(
            f,
            r#"<button type="submit" class="{class}" formaction="{}/{action}">{label}</button>"#,
            escape(&base)
        );
    }
    f.push_str("</form>");
    f
}

fn srm_card(r: &Value, variants: &[Value]) -> String {
    let srm = &r["srm"];
    let total: u64 = variants.iter().filter_map(|v| v["users"].as_u64()).sum();
    let split: Vec<String> = variants
        .iter()
        .map(|v| {
            let observed = v["users"].as_u64().unwrap_or(0) as f64 / total.max(1) as f64;
            format!(
                "{} {} (planned {})",
                escape(s(v, "key")),
                pct(Some(observed), 1),
                pct(v["weight"].as_f64(), 0)
            )
        })
        .collect();
    let (class, verdict) = match (srm["mismatch"].as_bool(), srm["p_value"].as_f64()) {
        (Some(true), Some(p)) => ("bad", format!("Mismatch (p = {})", p_value(Some(p)))),
        (_, Some(p)) => ("ok", format!("OK (p = {})", p_value(Some(p)))),
        _ => ("muted", "not enough data".to_owned()),
    };
    format!(
        r#"<div class="card" id="srm"><h3>Sample ratio (SRM)</h3><div class="big {class}">{verdict}</div><div class="sub">{}</div></div>"#,
        split.join(" · ")
    )
}

fn sample_size_card(r: &Value, variants: &[Value]) -> String {
    let ss = &r["sample_size"];
    let smallest = variants.iter().filter_map(|v| v["users"].as_u64()).min();
    let needed = ss["users_per_variant_ceil"].as_u64();
    let body = match (ss["share_reached"].as_f64(), needed) {
        (Some(share), Some(needed)) => {
            let width = (share.clamp(0.0, 1.0) * 100.0).round();
            format!(
                r#"<div class="big">{}</div><div class="progress{}" role="progressbar" aria-valuenow="{width}" aria-valuemin="0" aria-valuemax="100"><div style="width:{width}%"></div></div><div class="sub">{} of {} users in the smallest variant · MDE {} relative on a {} baseline</div>"#,
                pct(Some(share), 0),
                if share >= 1.0 { " done" } else { "" },
                count(smallest),
                count(Some(needed)),
                pct(ss["relative_mde"].as_f64(), 0),
                pct(ss["baseline_rate"].as_f64(), 1),
            )
        }
        _ => format!(
            r#"<div class="big muted">–</div><div class="sub">{}</div>"#,
            escape(ss["null_reason"].as_str().unwrap_or("no plan yet"))
        ),
    };
    format!(r#"<div class="card" id="sample-size"><h3>Sample size</h3>{body}</div>"#)
}

fn charts(
    d: &ExperimentData,
    keys: &[String],
    control: &str,
    palette: &[&'static str],
    level: &str,
) -> String {
    let points = d.timeline["points"].as_array().cloned().unwrap_or_default();
    let bucket = d.timeline["bucket"].as_str().unwrap_or("hour");
    let x = |p: &Value| p["start_unix"].as_f64().unwrap_or(0.0);
    let per_variant = |field: &str| -> Vec<Series> {
        keys.iter()
            .enumerate()
            .map(|(i, k)| Series {
                name: k.clone(),
                color: palette[i],
                points: points
                    .iter()
                    .map(|p| (x(p), p["variants"][i][field].as_f64()))
                    .collect(),
            })
            .collect()
    };
    let mut lift_series = Vec::new();
    let mut bands = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        if k == control {
            continue;
        }
        lift_series.push(Series {
            name: format!("{k} vs {control}"),
            color: palette[i],
            points: points
                .iter()
                .map(|p| (x(p), p["lifts"][i]["relative"].as_f64()))
                .collect(),
        });
        bands.push(Band {
            color: palette[i],
            points: points
                .iter()
                .filter_map(|p| {
                    let b = p["lifts"][i]["relative_band"].as_array()?;
                    Some((x(p), b.first()?.as_f64()?, b.get(1)?.as_f64()?))
                })
                .collect(),
        });
    }
    let lift = LineChart {
        id: "chart-lift".into(),
        title: "Cumulative relative lift with its always-valid band".into(),
        series: lift_series,
        bands,
        y_format: fmt_signed_pct_axis,
        include_zero: true,
        min_top: None,
    };
    let conversion = LineChart {
        id: "chart-conversion".into(),
        title: "Conversion rate (cumulative) per model".into(),
        series: per_variant("conversion_rate"),
        bands: vec![],
        y_format: fmt_pct_axis,
        include_zero: true,
        min_top: None,
    };
    let latency = LineChart {
        id: "chart-latency".into(),
        title: "Prediction latency p95 per model".into(),
        series: per_variant("latency_p95_ms"),
        bands: vec![],
        y_format: fmt_ms_axis,
        include_zero: true,
        min_top: Some(10.0),
    };
    let errors = LineChart {
        id: "chart-errors".into(),
        title: "Error rate per model".into(),
        series: per_variant("error_rate"),
        bands: vec![],
        y_format: fmt_pct_axis,
        include_zero: true,
        min_top: Some(0.01),
    };
    let single = if points.len() == 1 {
        format!(" Only one {bucket} of data so far: the lines grow one point per {bucket}.")
    } else {
        String::new()
    };
    format!(
        r#"<div class="grid2" style="margin-bottom:18px">
<div class="card"><h2>Cumulative lift over time</h2>{}<div class="caption">Relative lift of each treatment over the control with all users up to the end of each {bucket}; shaded: the always-valid {level} interval (a confidence sequence, safe to read at every refresh), divided by the control rate.{single}</div></div>
<div class="card"><h2>Conversion rate</h2>{}<div class="caption">Share of each model's users who converted, cumulative, per {bucket}.</div></div>
<div class="card"><h2>Latency p95</h2>{}<div class="caption">95th percentile of successful prediction latency within each {bucket}.</div></div>
<div class="card"><h2>Error rate</h2>{}<div class="caption">Failed predictions over all prediction requests within each {bucket}.</div></div>
</div>"#,
        lift.render(),
        conversion.render(),
        latency.render(),
        errors.render()
    )
}

fn alerts_card(alerts: &Value) -> String {
    let mut all = alerts["alerts"].as_array().cloned().unwrap_or_default();
    // Active first, then newest first (the query's order) within each group.
    all.sort_by_key(|a| a["active"] != true);
    let mut out = String::from(r#"<div class="card" id="alerts"><h2>Alerts</h2>"#);
    if all.is_empty() {
        out.push_str(r#"<p class="muted">No alert has fired for this experiment.</p></div>"#);
        return out;
    }
    out.push_str(r#"<table><tr><th>Severity</th><th>Monitor</th><th>Message</th><th>Raised (UTC)</th><th>State</th></tr>"#);
    for a in all.iter().take(30) {
        let state = if a["active"] == true {
            r#"<span class="bad">active</span>"#.to_owned()
        } else {
            format!("resolved {}", short_time(&a["resolved_at"]))
        };
        let _ = write!(
            out,
            r#"<tr class="alert"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{state}</td></tr>"#,
            severity_badge(s(a, "severity")),
            escape(s(a, "monitor")),
            escape(s(a, "message")),
            short_time(&a["raised_at"])
        );
    }
    out.push_str("</table></div>");
    out
}

/// A compact view of an event's data: scalar fields as `name: value`, large values
/// (the definition of a created experiment) abbreviated.
fn details(data: &Value) -> String {
    let Some(map) = data.as_object() else {
        return String::new();
    };
    // A created experiment carries its whole definition; the variants and the plan say
    // what it is, the rest is in `GET /api/experiments/{id}`.
    let created = map.contains_key("variants") && map.contains_key("hash_version");
    let mut parts = Vec::new();
    if created {
        if let Some(vs) = map.get("variants").and_then(Value::as_array) {
            let vs: Vec<String> = vs
                .iter()
                .map(|v| {
                    format!(
                        "{} = {} ({})",
                        escape(s(v, "key")),
                        escape(s(v, "model")),
                        pct(v["weight"].as_f64(), 0)
                    )
                })
                .collect();
            parts.push(format!("<b>variants</b>: {}", vs.join(", ")));
        }
    }
    for (k, v) in map {
        let shown_when_created = ["name", "primary_metric", "mde", "alpha"];
        if k == "experiment_id"
            || v.is_null()
            || (created && !shown_when_created.contains(&k.as_str()))
        {
            continue;
        }
        let text = match v {
            Value::String(s) => s.clone(),
            Value::Object(_) | Value::Array(_) => {
                let t = v.to_string();
                if t.chars().count() > 120 {
                    format!("{}…", t.chars().take(120).collect::<String>())
                } else {
                    t
                }
            }
            other => other.to_string(),
        };
        parts.push(format!("<b>{}</b>: {}", escape(k), escape(&text)));
    }
    parts.join(" · ")
}

fn audit_card(audit: &[Value]) -> String {
    let mut out = String::from(
        r#"<div class="card" id="audit"><h2>Audit log</h2><div class="sub" style="margin-bottom:8px">The experiment's lifecycle events as stored, newest first.</div>"#,
    );
    if audit.is_empty() {
        out.push_str(r#"<p class="muted">No events.</p></div>"#);
        return out;
    }
    out.push_str(r#"<table><tr><th class="num">Position</th><th>Recorded (UTC)</th><th>Event</th><th>Details</th></tr>"#);
    for e in audit {
        let recorded = e["recorded_at"].as_str().map_or_else(
            || micros_time(e["recorded_at"].as_i64().unwrap_or(0)),
            |t| short_time(&Value::String(t.to_owned())),
        );
        let mut det = details(&e["data"]);
        let meta = details(&e["metadata"]);
        if !meta.is_empty() {
            let _ = write!(det, r#"<div class="muted">{meta}</div>"#);
        }
        let _ = write!(
            out,
            r#"<tr class="event"><td class="num">{}</td><td>{recorded}</td><td><b>{}</b></td><td class="details">{det}</td></tr>"#,
            e["position"].as_u64().unwrap_or(0),
            escape(s(e, "type"))
        );
    }
    out.push_str("</table></div>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn number_formats() {
        assert_eq!(pct(Some(0.12345), 2), "12.35%");
        assert_eq!(pct(None, 2), "–");
        assert_eq!(pct(Some(f64::NAN), 2), "–");
        assert_eq!(signed_pct(Some(0.2)), "+20.0%");
        assert_eq!(signed_pct(Some(-0.034)), "-3.4%");
        assert_eq!(count(Some(1234567)), "1,234,567");
        assert_eq!(count(Some(999)), "999");
        assert_eq!(fmt_pct_axis(0.05), "5%");
        assert_eq!(fmt_pct_axis(0.025), "2.5%");
        assert_eq!(fmt_signed_pct_axis(0.1), "+10%");
        assert_eq!(
            micros_time(1_764_028_800_000_000 + 3_661_000_000),
            "2025-11-25 01:01:01"
        );
    }

    #[test]
    fn details_escape_and_abbreviate() {
        let d = details(&serde_json::json!({
            "experiment_id": "x", "reason": "<b>why</b>", "auto": true,
            "definition": {"long": "y".repeat(300)}
        }));
        let created = details(&serde_json::json!({
            "experiment_id": "x", "name": "n", "hash_version": 1, "seed": "s",
            "variants": [{"key": "control", "model": "m<1>", "weight": 0.5}]
        }));
        assert!(created.contains("control = m&lt;1&gt; (50%)"), "{created}");
        assert!(!created.contains("seed"), "{created}");
        assert!(d.contains("&lt;b&gt;why&lt;/b&gt;"), "{d}");
        assert!(d.contains("<b>auto</b>: true"));
        assert!(d.contains('…') && !d.contains("experiment_id"));
    }

    #[test]
    fn control_is_grey_and_treatments_coloured() {
        let keys = vec!["treatment".to_owned(), "control".to_owned(), "b".to_owned()];
        assert_eq!(
            colors(&keys, "control"),
            vec![PALETTE[0], CONTROL_COLOR, PALETTE[1]]
        );
    }
}
