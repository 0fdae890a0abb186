//! One fresh, migrated database per test, cloned from a template database.
//!
//! The server is the one named by `DATABASE_URL` when it is set; otherwise a private
//! throwaway cluster (see [`bg_agent::store::embedded`]) is started once per test process. No test
//! is ever skipped for lack of a database.

use std::sync::OnceLock;

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgConnection};

use bg_agent::store::embedded::{Durability, EmbeddedPostgres, quote_ident};
use bg_agent::store::{MIGRATOR, Store};

use crate::tcp_proxy::{Target, TcpProxy};

pub struct TestDb {
    store: Store,
    name: String,
    admin: PgConnectOptions,
}

/// Where test databases are created. Kept for the whole process: the embedded cluster
/// (if any) lives as long as the tests that use it.
struct Server {
    admin: PgConnectOptions,
    _embedded: Option<(EmbeddedPostgres, tempfile::TempDir)>,
}

static SERVER: OnceLock<Result<Server, String>> = OnceLock::new();

fn server() -> Result<&'static Server, String> {
    SERVER
        .get_or_init(|| {
            // Started on a runtime of its own: each test has its own runtime, and the
            // server must outlive all of them.
            std::thread::spawn(start_server)
                .join()
                .unwrap_or_else(|_| Err("starting the test database server panicked".into()))
        })
        .as_ref()
        .map_err(Clone::clone)
}

fn start_server() -> Result<Server, String> {
    if let Ok(url) = std::env::var("DATABASE_URL") {
        let admin: PgConnectOptions = url
            .parse()
            .map_err(|e| format!("DATABASE_URL is not a valid PostgreSQL URL: {e}"))?;
        return Ok(Server {
            admin: admin.disable_statement_logging(),
            _embedded: None,
        });
    }
    remove_stale_clusters();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let dir = tempfile::Builder::new()
        .prefix("bg-agent-test-pg-")
        .tempdir()
        .map_err(|e| format!("creating a directory for the test database: {e}"))?;
    let embedded = runtime
        .block_on(EmbeddedPostgres::start(dir.path(), Durability::Throwaway))
        .map_err(|e| e.to_string())?;
    Ok(Server {
        admin: embedded
            .connect_options("postgres")
            .disable_statement_logging(),
        _embedded: Some((embedded, dir)),
    })
}

/// The cluster of each finished test process is left behind (statics are never dropped);
/// its server is gone (it dies with the process), so its directory can go. Fresh ones
/// are spared: another test process may be initialising one right now.
fn remove_stale_clusters() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let is_ours = entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with("bg-agent-test-pg-"));
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > std::time::Duration::from_secs(600));
        if is_ours && old && !path.join("pgdata/postmaster.pid").exists() {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

/// Name of the template for the current migrations: a schema change makes a new one.
fn template_name() -> String {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    for migration in MIGRATOR.iter() {
        hasher.update(migration.version.to_le_bytes());
        hasher.update(&*migration.checksum);
    }
    format!("bg_agent_template_{}", hex::encode(&hasher.finalize()[..8]))
}

async fn ensure_template(
    admin: &mut PgConnection,
    server: &PgConnectOptions,
) -> Result<String, sqlx::Error> {
    let name = template_name();
    // Test processes run in parallel: one builds the template, the others wait.
    sqlx::query("SELECT pg_advisory_lock(7316450001)")
        .execute(&mut *admin)
        .await?;
    let result = async {
        let exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
                .bind(&name)
                .fetch_one(&mut *admin)
                .await?;
        if !exists {
            // Templates of other schemas may belong to another checkout testing against the
            // same server right now (a branch, a clean clone): only those built more than a
            // day ago go.
            let stale: Vec<String> = sqlx::query_scalar(
                "SELECT datname FROM pg_database
                 WHERE datname LIKE 'bg\\_agent\\_template\\_%' AND datname <> $1
                   AND substring(shobj_description(oid, 'pg_database')
                                 FROM 'built at ([0-9]+)')::bigint
                       < extract(epoch FROM now()) - 86400",
            )
            .bind(&name)
            .fetch_all(&mut *admin)
            .await?;
            for old in stale {
                sqlx::query(&format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                    quote_ident(&old)
                ))
                .execute(&mut *admin)
                .await?;
            }
            let building = format!("{name}_building");
            sqlx::query(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                quote_ident(&building)
            ))
            .execute(&mut *admin)
            .await?;
            sqlx::query(&format!("CREATE DATABASE {}", quote_ident(&building)))
                .execute(&mut *admin)
                .await?;
            sqlx::query(&format!(
                "COMMENT ON DATABASE {} IS 'bg-agent test template, built at {}'",
                quote_ident(&building),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs())
            ))
            .execute(&mut *admin)
            .await?;
            let mut conn = server.clone().database(&building).connect().await?;
            MIGRATOR.run(&mut conn).await?;
            conn.close().await?;
            // Renamed only once complete, so nobody clones a half-migrated template.
            sqlx::query(&format!(
                "ALTER DATABASE {} RENAME TO {}",
                quote_ident(&building),
                quote_ident(&name)
            ))
            .execute(&mut *admin)
            .await?;
        }
        Ok::<_, sqlx::Error>(())
    }
    .await;
    sqlx::query("SELECT pg_advisory_unlock(7316450001)")
        .execute(&mut *admin)
        .await?;
    result.map(|()| name)
}

impl TestDb {
    /// A new database with every migration applied.
    pub async fn new() -> Self {
        match Self::try_new().await {
            Ok(db) => db,
            Err(e) => panic!("cannot create a test database: {e}"),
        }
    }

    async fn try_new() -> Result<Self, String> {
        let server = server()?;
        let admin = server.admin.clone();
        let mut conn = admin
            .connect()
            .await
            .map_err(|e| format!("connecting to the test database server: {e}"))?;
        let template = ensure_template(&mut conn, &admin)
            .await
            .map_err(|e| format!("preparing the template database: {e}"))?;
        let name = format!("bg_agent_test_{}", uuid::Uuid::new_v4().simple());
        let create = format!(
            "CREATE DATABASE {} TEMPLATE {}",
            quote_ident(&name),
            quote_ident(&template)
        );
        // Cloning fails while another session is connected to the template (a
        // concurrent clone counts); it is brief, so try again.
        let mut attempt = 0;
        loop {
            match sqlx::query(&create).execute(&mut conn).await {
                Ok(_) => break,
                Err(e) if attempt < 50 && is_template_busy(&e) => {
                    attempt += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(20 + attempt * 10)).await;
                }
                // Another checkout's older test kit dropped it: build it again.
                Err(e) if attempt < 50 && is_missing_database(&e) => {
                    attempt += 1;
                    ensure_template(&mut conn, &admin)
                        .await
                        .map_err(|e| format!("preparing the template database: {e}"))?;
                }
                Err(e) => return Err(format!("creating {name}: {e}")),
            }
        }
        let _ = conn.close().await;
        let store = Store::connect(admin.clone().database(&name), 10)
            .await
            .map_err(|e| format!("connecting to {name}: {e}"))?;
        Ok(Self { store, name, admin })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Options for a second, independent pool on the same database (a second replica).
    pub fn connect_options(&self) -> PgConnectOptions {
        self.admin.clone().database(&self.name)
    }

    /// This database's URL, for a server started as a process of its own.
    pub fn url(&self) -> String {
        let options = self.connect_options();
        let user = options.get_username();
        let port = options.get_port();
        match options.get_socket() {
            Some(dir) => format!(
                "postgres://{user}@localhost/{}?host={}&port={port}",
                self.name,
                dir.display()
            ),
            None => format!(
                "postgres://{user}@{}:{port}/{}",
                options.get_host(),
                self.name
            ),
        }
    }

    /// A proxy to this database's server that a test can cut (an outage) and restore,
    /// with the options that reach the database through it.
    pub async fn outage_proxy(&self) -> (TcpProxy, PgConnectOptions) {
        let options = self.connect_options();
        let port = options.get_port();
        let target = match options.get_socket() {
            Some(dir) => Target::Unix(dir.join(format!(".s.PGSQL.{port}"))),
            None => {
                let host = options.get_host();
                let host = if host == "localhost" {
                    "127.0.0.1"
                } else {
                    host
                };
                let ip = host.parse().expect("the test database server's address");
                Target::Tcp(std::net::SocketAddr::new(ip, port))
            }
        };
        let proxy = TcpProxy::start(target).await;
        // Fresh options: a socket directory, once set, would win over any host.
        let through = PgConnectOptions::new_without_pgpass()
            .host("127.0.0.1")
            .port(proxy.addr().port())
            .username(options.get_username())
            .database(&self.name)
            .disable_statement_logging();
        (proxy, through)
    }
}

fn is_missing_database(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|code| code == "3D000")
}

fn is_template_busy(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|code| code == "55006")
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = std::mem::take(&mut self.name);
        let admin = self.admin.clone();
        // Drop runs inside the test's runtime, which cannot be blocked on: use a thread.
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                if let Ok(mut conn) = admin.connect().await {
                    let _ = sqlx::query(&format!(
                        "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                        quote_ident(&name)
                    ))
                    .execute(&mut conn)
                    .await;
                }
            });
        })
        .join();
    }
}
