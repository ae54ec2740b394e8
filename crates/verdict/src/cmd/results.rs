//! `verdict results ID`: an experiment's results from a running server, as a table.

use anyhow::Context;
use serde_json::Value;
use std::process::ExitCode;

/// Arguments of `verdict results`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Experiment id.
    pub id: String,
    /// Server URL.
    #[arg(long, env = "VERDICT_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// API key (role read or higher).
    #[arg(long, env = "VERDICT_API_KEY")]
    pub api_key: Option<String>,
    /// Print the raw JSON instead of the table.
    #[arg(long)]
    pub json: bool,
}

fn pct(v: &Value) -> String {
    v.as_f64()
        .map_or_else(|| "n/a".to_owned(), |x| format!("{:.2}%", x * 100.0))
}

fn num(v: &Value, digits: usize) -> String {
    v.as_f64()
        .map_or_else(|| "n/a".to_owned(), |x| format!("{x:.digits$}"))
}

fn interval(v: &Value, scale: f64, suffix: &str) -> String {
    match (
        v.get(0).and_then(Value::as_f64),
        v.get(1).and_then(Value::as_f64),
    ) {
        (Some(a), Some(b)) => format!("[{:+.2}{suffix}, {:+.2}{suffix}]", a * scale, b * scale),
        _ => "n/a".to_owned(),
    }
}

fn pvalue(v: &Value) -> String {
    match v.as_f64() {
        Some(p) if p < 1e-4 => format!("{p:.2e}"),
        Some(p) => format!("{p:.4}"),
        None => "n/a".to_owned(),
    }
}

/// Renders `/results` as the table `verdict demo` prints.
pub fn render(results: &Value) -> String {
    let mut out = String::new();
    let name = results["name"].as_str().unwrap_or_default();
    out.push_str(&format!(
        "experiment {} ({name}), status {}, primary metric {}\n\n",
        results["experiment_id"].as_str().unwrap_or_default(),
        results["status"].as_str().unwrap_or_default(),
        results["primary_metric"].as_str().unwrap_or_default()
    ));
    out.push_str(&format!(
        "{:<12} {:<10} {:>8} {:>11} {:>11} {:>9} {:>12} {:>11} {:>10}\n",
        "variant",
        "model",
        "users",
        "predictions",
        "conversions",
        "conv rate",
        "revenue/user",
        "latency p95",
        "error rate"
    ));
    for v in results["variants"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "{:<12} {:<10} {:>8} {:>11} {:>11} {:>9} {:>12} {:>11} {:>10}\n",
            v["key"].as_str().unwrap_or_default(),
            v["model"].as_str().unwrap_or_default(),
            v["users"].to_string(),
            v["predictions"].to_string(),
            v["conversions"].to_string(),
            pct(&v["conversion_rate"]),
            num(&v["revenue_per_user"], 2),
            v["latency_ms"]["p95"]
                .as_f64()
                .map_or_else(|| "n/a".to_owned(), |x| format!("{x:.2} ms")),
            pct(&v["error_rate"]),
        ));
    }
    for c in results["comparisons"].as_array().into_iter().flatten() {
        let key = c["key"].as_str().unwrap_or_default();
        let conv = &c["conversion"];
        out.push_str(&format!(
            "\n{key} vs {} — conversion\n",
            results["control"].as_str().unwrap_or_default()
        ));
        out.push_str(&format!(
            "  lift (absolute)    {:>+8.3} pp   95% CI {}   p = {}\n",
            conv["diff"].as_f64().unwrap_or(f64::NAN) * 100.0,
            interval(&conv["diff_ci"], 100.0, " pp"),
            pvalue(&conv["p_value"])
        ));
        out.push_str(&format!(
            "  lift (relative)    {:>+8.2} %    95% CI {}\n",
            conv["relative"].as_f64().unwrap_or(f64::NAN) * 100.0,
            interval(&conv["relative_ci"], 100.0, " %")
        ));
        out.push_str(&format!(
            "  always-valid CI    {}   sequential p = {}\n",
            interval(&conv["sequential_ci"], 100.0, " pp"),
            pvalue(&conv["sequential_p_value"])
        ));
        out.push_str(&format!(
            "  chance to beat control {}\n",
            pct(&conv["chance_to_beat_control"])
        ));
        let rev = &c["revenue_per_user"];
        out.push_str(&format!(
            "  revenue/user diff  {:>+8.3}   95% CI {}   p = {}\n",
            rev["diff"].as_f64().unwrap_or(f64::NAN),
            interval(&rev["diff_ci"], 1.0, ""),
            pvalue(&rev["p_value"])
        ));
    }
    let srm = &results["srm"];
    out.push_str(&format!(
        "\nSRM p-value {} ({})\n",
        pvalue(&srm["p_value"]),
        if srm["mismatch"] == Value::Bool(true) {
            "MISMATCH"
        } else {
            "ok"
        }
    ));
    if let Some(reached) = results["sample_size"]["share_reached"].as_f64() {
        out.push_str(&format!(
            "sample size: {:.0}% of {} users per variant\n",
            reached * 100.0,
            num(&results["sample_size"]["users_per_variant_ceil"], 0)
        ));
    }
    let d = &results["decision"];
    out.push_str(&format!(
        "decision: {} — {}\n",
        d["action"].as_str().unwrap_or_default().to_uppercase(),
        d["reason"].as_str().unwrap_or_default()
    ));
    if results["unattributed_conversions"].as_u64().unwrap_or(0) > 0 {
        out.push_str(&format!(
            "({} conversions of never-assigned users left out)\n",
            results["unattributed_conversions"]
        ));
    }
    out
}

/// Runs `verdict results`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Runtime::new()?;
    let body: Value = rt.block_on(async {
        let mut req = reqwest::Client::new().get(format!(
            "{}/api/experiments/{}/results",
            args.url.trim_end_matches('/'),
            args.id
        ));
        if let Some(k) = &args.api_key {
            req = req.bearer_auth(k);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("connecting to {}", args.url))?;
        let status = resp.status();
        let body: Value = resp.json().await?;
        if !status.is_success() {
            anyhow::bail!(
                "{status}: {}",
                body["error"]["message"].as_str().unwrap_or_default()
            );
        }
        anyhow::Ok(body)
    })?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&body)?);
    } else {
        print!("{}", render(&body));
    }
    Ok(ExitCode::SUCCESS)
}
