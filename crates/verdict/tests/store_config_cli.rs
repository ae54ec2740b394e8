//! Bad store and read-model configuration is refused before anything starts, with a
//! message that says what is wrong.

use std::process::Command;

fn verdict(args: &[&str]) -> (i32, String) {
    let dir = std::env::temp_dir();
    let out = Command::new(env!("CARGO_BIN_EXE_verdict"))
        .args(args)
        .current_dir(&dir) // no verdict.toml there
        .env_remove("VERDICT_STORE")
        .env_remove("VERDICT_READ_MODELS")
        .env_remove("VERDICT_CONFIG")
        .output()
        .expect("verdict runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_store_configuration_is_a_clear_error() {
    let cases: &[(&[&str], &str)] = &[
        (
            &[
                "serve",
                "--store",
                "mysql://db/x",
                "--listen",
                "127.0.0.1:0",
            ],
            "unknown backend",
        ),
        (
            &[
                "serve",
                "--store",
                "nats://h:4222?replicas=0",
                "--listen",
                "127.0.0.1:0",
            ],
            "replicas=0",
        ),
        (
            &[
                "serve",
                "--read-models",
                "postgres://h/db",
                "--listen",
                "127.0.0.1:0",
            ],
            "needs a shared --store",
        ),
        (
            &[
                "serve",
                "--store",
                "postgres://h/db",
                "--read-models",
                "postgres://h/db?schema=Bad",
                "--listen",
                "127.0.0.1:0",
            ],
            "schema",
        ),
        (
            &["project", "--read-models", "postgres://h/db"],
            "needs --store",
        ),
        (&["project", "--store", "log:"], "shared store"),
        (
            &["project", "--store", "postgres://h/db"],
            "needs --read-models",
        ),
    ];
    let config = tempfile_config("inference_threads = 0\n");
    let zero_threads_file = [
        "serve",
        "--config",
        config.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ];
    let workers_config = tempfile_config_named("workers", "worker_threads = 0\n");
    let zero_workers_file = [
        "serve",
        "--config",
        workers_config.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ];
    let more: &[(&[&str], &str)] = &[
        (
            &[
                "serve",
                "--inference-threads",
                "0",
                "--listen",
                "127.0.0.1:0",
            ],
            "--inference-threads",
        ),
        (&zero_threads_file, "inference_threads must be at least 1"),
        (
            &["serve", "--worker-threads", "0", "--listen", "127.0.0.1:0"],
            "--worker-threads",
        ),
        (&zero_workers_file, "worker_threads must be at least 1"),
    ];
    for (args, wanted) in cases.iter().chain(more) {
        let (code, stderr) = verdict(args);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(
            stderr.contains(wanted),
            "{args:?}: wanted {wanted:?} in {stderr}"
        );
    }
}

/// A verdict.toml with `text` in a fresh temporary directory (left for the OS to clean).
fn tempfile_config(text: &str) -> std::path::PathBuf {
    tempfile_config_named("cfg", text)
}

/// Like `tempfile_config`, in a directory named after `name` (one per config of a test).
fn tempfile_config_named(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("verdict-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("verdict.toml");
    std::fs::write(&path, text).unwrap();
    path
}
