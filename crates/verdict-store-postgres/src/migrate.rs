//! Schema migrations: numbered SQL steps, applied once each, in order, under a lock.
//!
//! Every store lives in its own PostgreSQL schema (tests use one each). Opening a store runs
//! the steps it has not recorded in `verdict_migrations`, in one transaction that holds a
//! transaction-level advisory lock keyed by the schema, so stores opening concurrently never
//! apply a step twice. Steps are append-only: a released step is never edited.

use tokio_postgres::Client;

/// The steps, in order; step n is `MIGRATIONS[n - 1]`.
pub const MIGRATIONS: &[(&str, &str)] = &[
    (
        "events and head",
        r#"
    -- One row per event. position is the global order (gap-free, allocated from
    -- verdict_head under its row lock); (stream, version) and event_id are unique so a bug
    -- can never store a second event at a version or an id twice.
    CREATE TABLE verdict_events (
        position       bigint  PRIMARY KEY,
        stream         text    NOT NULL,
        version        bigint  NOT NULL,
        event_id       uuid    NOT NULL UNIQUE,
        event_type     text    NOT NULL,
        schema_version bigint  NOT NULL,
        payload        bytea   NOT NULL,
        metadata       bytea   NOT NULL,
        recorded_at    bigint  NOT NULL,
        UNIQUE (stream, version)
    );
    -- The last allocated position. Its single row is the append lock: an append updates it
    -- first and holds the row lock until it commits.
    CREATE TABLE verdict_head (
        id       boolean PRIMARY KEY DEFAULT true CHECK (id),
        position bigint  NOT NULL
    );
    INSERT INTO verdict_head (id, position) VALUES (true, 0);
    "#,
    ),
    (
        "identity",
        r#"
    -- A random id given to the store once, so read models can tell which store (and not
    -- another one, or this one recreated) they were built from.
    CREATE TABLE verdict_identity (
        id       boolean PRIMARY KEY DEFAULT true CHECK (id),
        identity text    NOT NULL
    );
    INSERT INTO verdict_identity (identity) VALUES (gen_random_uuid()::text);
    "#,
    ),
];

/// Creates `schema` if needed and applies the missing steps.
pub(crate) async fn migrate(
    client: &mut Client,
    schema: &str,
) -> Result<(), tokio_postgres::Error> {
    let tx = client.transaction().await?;
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext('verdict-migrate:' || $1::text))",
        &[&schema],
    )
    .await?;
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS {q};
         CREATE TABLE IF NOT EXISTS {q}.verdict_migrations (
             version    integer     PRIMARY KEY,
             name       text        NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now()
         );",
        q = quote_ident(schema)
    ))
    .await?;
    let applied: i32 = tx
        .query_one(
            &format!(
                "SELECT coalesce(max(version), 0) FROM {}.verdict_migrations",
                quote_ident(schema)
            ),
            &[],
        )
        .await?
        .get(0);
    for (i, (name, sql)) in MIGRATIONS.iter().enumerate().skip(applied as usize) {
        // The connection's search_path is the schema, so the steps name no schema.
        tx.batch_execute(sql).await?;
        tx.execute(
            "INSERT INTO verdict_migrations (version, name) VALUES ($1, $2)",
            &[&(i as i32 + 1), name],
        )
        .await?;
    }
    tx.commit().await
}

/// `name` as a quoted SQL identifier.
pub(crate) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
