//! What verdict's upstream client adds on top of calling the same upstream directly: a V2
//! fake server on loopback (axum, fixed response), called sequentially over one keep-alive
//! connection (a) with a bare reqwest POST of the same body and (b) through
//! `Registry::resolve("v2:...")` (request mapping, guard, breaker, response parsing and
//! checking). Interleaved in rounds so load changes hit both alike; prints p50/p99.
//!
//! `cargo run --release -p verdict-serve --example upstream_overhead [requests]`

use axum::routing::post;
use axum::Router;
use serde_json::json;
use std::time::{Duration, Instant};

fn pct(v: &mut [Duration], p: f64) -> f64 {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i].as_secs_f64() * 1e6
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20_000);
    let body = r#"{"model_name":"iris","model_version":"v1","outputs":[{"name":"predict","shape":[1,1],"datatype":"INT64","data":[2]}]}"#;
    let app = Router::new().route("/v2/models/iris/infer", post(move || async move { body }));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    listener.set_nonblocking(true).unwrap();
    // The server gets its own thread, like a separate process would.
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let l = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(l, app).await.unwrap();
        });
    });

    let url = format!("http://{addr}/v2/models/iris/infer");
    let direct = reqwest::Client::builder()
        .tcp_nodelay(true)
        .build()
        .unwrap();
    let model = verdict_serve::Registry::default()
        .resolve(&format!("v2:http://{addr}/v2/models/iris"))
        .unwrap();
    let input = json!({"features": [5.1, 3.5, 1.4, 0.2]});
    let wire = json!({"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": [5.1, 3.5, 1.4, 0.2]}]});

    let (mut a, mut b) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for i in 0..n + 1000 {
        let t = Instant::now();
        let r = direct.post(&url).json(&wire).send().await.unwrap();
        let v: serde_json::Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
        std::hint::black_box(v);
        let da = t.elapsed();
        let t = Instant::now();
        std::hint::black_box(model.predict("u", &input).await.unwrap());
        let db = t.elapsed();
        if i >= 1000 {
            a.push(da);
            b.push(db);
        }
    }
    let (a50, a99) = (pct(&mut a, 0.5), pct(&mut a, 0.99));
    let (b50, b99) = (pct(&mut b, 0.5), pct(&mut b, 0.99));
    println!("{n} sequential requests each, loopback, one keep-alive connection");
    println!("direct reqwest  p50 {a50:7.1} µs  p99 {a99:7.1} µs");
    println!("verdict v2:     p50 {b50:7.1} µs  p99 {b99:7.1} µs");
    println!(
        "added           p50 {:7.1} µs  p99 {:7.1} µs",
        b50 - a50,
        b99 - a99
    );
}
