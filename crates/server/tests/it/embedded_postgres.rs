//! The embedded PostgreSQL that `serve` starts when DATABASE_URL is unset: created on first
//! use, durable across restarts, reachable only over its Unix socket, stopped cleanly.
//! Runs whether or not DATABASE_URL is set, so CI exercises the embedded default too.

use bg_agent::store::embedded::{Durability, EmbeddedPostgres};
use bg_agent::store::{NewDelivery, Store};

#[tokio::test]
async fn embedded_cluster_keeps_data_across_restarts_and_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("postgres");

    let server = EmbeddedPostgres::start(&data, Durability::Durable)
        .await
        .unwrap();
    server.ensure_database("bg_agent").await.unwrap();
    server.ensure_database("bg_agent").await.unwrap(); // idempotent
    let store = Store::connect(server.connect_options("bg_agent"), 2)
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let delivery = NewDelivery {
        guid: "kept-1".into(),
        event: "ping".into(),
        body: bytes::Bytes::from_static(br#"{"zen":"Keep it logically awesome."}"#),
    };
    let fresh = store
        .insert_deliveries(&[delivery], std::time::Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(fresh, [true]);
    // Tuned for a write-heavy inbox (see EmbeddedPostgres::start).
    assert_eq!(store.setting("max_wal_size").await.unwrap(), "4GB");
    assert_ne!(store.setting("wal_compression").await.unwrap(), "off");
    assert_eq!(store.setting("wal_init_zero").await.unwrap(), "off");
    assert_eq!(store.setting("backend_flush_after").await.unwrap(), "256kB");
    assert_eq!(store.setting("bgwriter_delay").await.unwrap(), "10ms");
    store.close().await;
    server.stop().await;
    assert!(
        !data.join("pgdata/postmaster.pid").exists(),
        "a clean stop removes postmaster.pid"
    );

    let server = EmbeddedPostgres::start(&data, Durability::Durable)
        .await
        .unwrap();
    let store = Store::connect(server.connect_options("bg_agent"), 2)
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let record = store
        .delivery("kept-1")
        .await
        .unwrap()
        .expect("survived a restart");
    assert_eq!(record.event, "ping");
    store.close().await;
    server.stop().await;
}

#[tokio::test]
async fn embedded_cluster_does_not_listen_on_tcp() {
    let dir = tempfile::tempdir().unwrap();
    let server = EmbeddedPostgres::start(&dir.path().join("pg"), Durability::Throwaway)
        .await
        .unwrap();
    let store = Store::connect(server.connect_options("postgres"), 1)
        .await
        .unwrap();
    let listen = store.setting("listen_addresses").await.unwrap();
    assert_eq!(listen, "");
    store.close().await;
    server.stop().await;
}

/// As root, PostgreSQL runs as its own user, which cannot reach a data directory under a
/// private home (a checkout in `/root`, where the demo keeps `.bg-agent/`): the cluster
/// then lives where it can, the same place again after a restart.
#[tokio::test]
async fn a_data_directory_under_a_private_home_still_gets_its_cluster() {
    use std::os::unix::fs::PermissionsExt;
    let home = tempfile::tempdir().unwrap();
    std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let data = home.path().join("checkout/.bg-agent/postgres");

    let server = EmbeddedPostgres::start(&data, Durability::Throwaway)
        .await
        .unwrap();
    let cluster = server.cluster_dir().to_owned();
    server.ensure_database("bg_agent").await.unwrap();
    server.stop().await;
    let again = EmbeddedPostgres::start(&data, Durability::Throwaway)
        .await
        .unwrap();
    assert_eq!(
        again.cluster_dir(),
        cluster,
        "the same cluster after a restart"
    );
    again.stop().await;
    if nix::unistd::geteuid().is_root() {
        assert!(!cluster.starts_with(home.path()), "{}", cluster.display());
        std::fs::remove_dir_all(&cluster).unwrap();
    } else {
        assert_eq!(cluster, data.canonicalize().unwrap());
    }
}
