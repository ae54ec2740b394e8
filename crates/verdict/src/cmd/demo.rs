//! `verdict demo`: a whole experiment on simulated traffic through the real server.
//!
//! Starts `verdict serve` on the embedded log in a temporary directory, creates the
//! seed's `exp-001` (rec-v1 vs rec-v2, 50/50), sends 20,000 simulated users over HTTP
//! (predictions, clicks, conversions; rec-v2 converts better by construction), then
//! prints the results table. `--keep` leaves the server running.

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;
use verdict_server::ServerConfig;

/// Arguments of `verdict demo`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Simulated users.
    #[arg(long, default_value_t = 20_000)]
    pub users: usize,
    /// Concurrent simulated clients.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Keep serving after printing the results (until Ctrl-C).
    #[arg(long)]
    pub keep: bool,
    /// Data directory (default: a fresh temporary directory).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Address to listen on (default: a free loopback port; 127.0.0.1:8080 with --keep).
    #[arg(long)]
    pub listen: Option<std::net::SocketAddr>,
    /// Allow `--listen` beyond loopback (the demo has no API keys), as `serve --allow-public`.
    #[arg(long)]
    pub allow_public: bool,
    /// Conversion rate of rec-v1 (control).
    #[arg(long, default_value_t = 0.10)]
    pub control_rate: f64,
    /// Conversion rate of rec-v2 (treatment).
    #[arg(long, default_value_t = 0.12)]
    pub treatment_rate: f64,
}

/// splitmix64: a tiny deterministic generator, so every demo run is the same run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

async fn post(client: &reqwest::Client, url: &str, body: &Value) -> anyhow::Result<Value> {
    let resp = client
        .post(url)
        .json(body)
        .send()
        .await
        .with_context(|| format!("POST {url}"))?;
    let status = resp.status();
    let value: Value = resp.json().await.unwrap_or(Value::Null);
    // 502 is a recorded model failure: part of the experiment, not a demo error.
    if !status.is_success() && status != reqwest::StatusCode::BAD_GATEWAY {
        anyhow::bail!("POST {url}: {status}: {value}");
    }
    Ok(value)
}

/// One simulated user: one or two predictions, maybe a click, maybe a purchase.
async fn simulate_user(
    client: &reqwest::Client,
    base: &str,
    i: usize,
    args: &Args,
    max_position: &AtomicU64,
) -> anyhow::Result<()> {
    let mut rng = Rng(i as u64 * 7919 + 17);
    let user = format!("user-{i}");
    let visits = if rng.unit() < 0.3 { 2 } else { 1 };
    let mut variant = String::new();
    let mut items = Value::Null;
    for _ in 0..visits {
        let p = post(
            client,
            &format!("{base}/api/predictions"),
            &json!({"experiment_id": "exp-001", "user_id": user, "input": {"context": "homepage"}}),
        )
        .await?;
        variant = p["variant"].as_str().unwrap_or_default().to_owned();
        items = p["output"]["items"].clone();
        max_position.fetch_max(p["position"].as_u64().unwrap_or(0), Ordering::Relaxed);
    }
    if rng.unit() < 0.35 {
        let item = items.get(0).map(|v| v.to_string());
        let r = post(client, &format!("{base}/api/interactions"), &json!({"experiment_id": "exp-001", "user_id": user, "action": "click", "item_id": item})).await?;
        max_position.fetch_max(r["position"].as_u64().unwrap_or(0), Ordering::Relaxed);
    }
    let rate = if variant == "treatment" {
        args.treatment_rate
    } else {
        args.control_rate
    };
    if rng.unit() < rate {
        // Order values: 20 to 200, skewed low, as baskets are.
        let amount = (20.0 + 180.0 * rng.unit() * rng.unit()).round();
        let r = post(client, &format!("{base}/api/conversions"), &json!({"experiment_id": "exp-001", "user_id": user, "conversion_type": "purchase", "amount": amount})).await?;
        max_position.fetch_max(r["position"].as_u64().unwrap_or(0), Ordering::Relaxed);
    }
    Ok(())
}

/// Runs `verdict demo`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    // The demo opens a connection per concurrent user; 1,024 descriptors can run short.
    super::raise_open_file_limit();
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(demo(args))
}

async fn demo(args: Args) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let tmp;
    let data_dir = match &args.data_dir {
        Some(d) => d.clone(),
        None => {
            tmp = TempDir::new()?;
            tmp.0.clone()
        }
    };
    let listen = args.listen.unwrap_or_else(|| {
        let port = if args.keep { 8080 } else { 0 };
        std::net::SocketAddr::from(([127, 0, 0, 1], port))
    });
    super::serve::check_exposure(listen, true, args.allow_public)?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let mut config = ServerConfig::new(&data_dir);
    config.allow_public = args.allow_public;
    let server = verdict_server::start(config, listener).await?;
    let base = format!("http://{}", server.addr);
    eprintln!(
        "verdict demo: server on {base}, data in {}",
        data_dir.display()
    );
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .build()?;
    let created = post(
        &client,
        &format!("{base}/api/experiments"),
        &json!({
            "experiment_id": "exp-001",
            "name": "recommendation-model-v2",
            "models": {"control": "rec-v1", "treatment": "rec-v2"},
            "traffic_split": {"control": 50, "treatment": 50},
            "start": true
        }),
    )
    .await?;
    eprintln!(
        "created and started exp-001 (position {})",
        created["position"]
    );

    let bar = ProgressBar::new(args.users as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} simulating users {bar:40} {pos}/{len} {per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let next = Arc::new(AtomicUsize::new(0));
    let max_position = Arc::new(AtomicU64::new(0));
    let args = Arc::new(args);
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency {
        let (client, base, next, max_position, args, bar) = (
            client.clone(),
            base.clone(),
            next.clone(),
            max_position.clone(),
            args.clone(),
            bar.clone(),
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= args.users {
                    return anyhow::Ok(());
                }
                simulate_user(&client, &base, i, &args, &max_position).await?;
                bar.inc(1);
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    bar.finish_and_clear();
    let simulated = started.elapsed();
    let position = max_position.load(Ordering::Relaxed);
    let results: Value = client
        .get(format!(
            "{base}/api/experiments/exp-001/results?min_position={position}"
        ))
        .send()
        .await?
        .json()
        .await?;
    println!("{}", super::results::render(&results));
    println!(
        "{} users simulated in {:.1}s over HTTP; {} events in the log",
        args.users,
        simulated.as_secs_f64(),
        position
    );
    if args.keep {
        println!("serving on {base} (dashboard and API); Ctrl-C to stop");
        let _ = tokio::signal::ctrl_c().await;
    }
    server.shutdown().await?;
    Ok(ExitCode::SUCCESS)
}

/// A temporary directory removed on drop (the demo's default data directory).
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> std::io::Result<Self> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir = std::env::temp_dir().join(format!("verdict-demo-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        Ok(Self(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
