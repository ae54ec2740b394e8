//! Appends N small events to the log in `<data-dir>/events`: `cargo run --example fill -- DIR N`.

use verdict_store::{EventData, EventStore, ExpectedVersion};
use verdict_store_log::{log_dir, LogOptions, LogStore};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let data_dir = std::path::PathBuf::from(args.next().ok_or("usage: fill DATA_DIR N")?);
    let n: u64 = args.next().ok_or("usage: fill DATA_DIR N")?.parse()?;
    let store = LogStore::open(
        log_dir(&data_dir),
        LogOptions {
            segment_size: 64 << 10,
            ..LogOptions::default()
        },
    )?;
    for i in 0..n {
        let e = EventData::new(
            uuid::Uuid::now_v7(),
            "Filled",
            format!("{{\"i\":{i}}}").into_bytes(),
        );
        store
            .append(&format!("stream-{}", i % 7), ExpectedVersion::Any, vec![e])
            .await?;
    }
    store.close().await?;
    println!("head {}", store.head().await?);
    Ok(())
}
