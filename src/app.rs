//! Wiring: the database (external or embedded), the HTTP server, the intake writers and
//! the delivery workers, started together and stopped in order.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use secrecy::ExposeSecret;
use sqlx::postgres::PgConnectOptions;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::engine::{DeliveryWorker, Shutdown, ShutdownTrigger, TriggerHandler};
use crate::store::Store;
use crate::store::embedded::{Durability, EmbeddedPostgres};
use crate::webhook::DecodeContext;
use crate::webhook::intake::IntakeWriter;

/// Database of the embedded cluster.
const EMBEDDED_DATABASE: &str = "bg_agent";

/// The app's database, and the private cluster serving it when `DATABASE_URL` is unset.
pub struct Database {
    pub store: Store,
    embedded: Option<EmbeddedPostgres>,
}

impl Database {
    /// Connects (starting the embedded cluster if needed) and applies migrations.
    pub async fn open(config: &Config) -> anyhow::Result<Self> {
        let (options, embedded) = match &config.database_url {
            Some(url) => {
                let options: PgConnectOptions = url
                    .expose_secret()
                    .parse()
                    .context("DATABASE_URL is not a valid PostgreSQL URL")?;
                (options, None)
            }
            None => {
                let dir = config.data_dir.join("postgres");
                tracing::info!(dir = %dir.display(), "DATABASE_URL is unset: starting the embedded PostgreSQL");
                let embedded = EmbeddedPostgres::start(&dir, Durability::Durable).await?;
                embedded
                    .ensure_database(EMBEDDED_DATABASE)
                    .await
                    .context("creating the embedded database")?;
                (embedded.connect_options(EMBEDDED_DATABASE), Some(embedded))
            }
        };
        let store = Store::connect(options, config.db_max_connections)
            .await
            .context("connecting to PostgreSQL")?;
        store.migrate().await.context("applying migrations")?;
        Ok(Self { store, embedded })
    }

    pub async fn close(self) {
        self.store.close().await;
        if let Some(embedded) = self.embedded {
            embedded.stop().await;
        }
    }
}

/// A running server; [`RunningServer::stop`] shuts it down gracefully.
pub struct RunningServer {
    pub addr: SocketAddr,
    shutdown: ShutdownTrigger,
    task: JoinHandle<anyhow::Result<()>>,
}

impl RunningServer {
    /// Serves on `listener` until stopped.
    pub fn start<H: TriggerHandler>(
        config: &Config,
        store: Store,
        handler: Arc<H>,
        listener: TcpListener,
    ) -> anyhow::Result<Self> {
        let addr = listener.local_addr()?;
        let (trigger, shutdown) = Shutdown::new();
        let (writer, fresh, writers) = IntakeWriter::spawn(store.clone(), &config.intake);
        let context = DecodeContext {
            app_id: config.app_id.and_then(|id| i64::try_from(id).ok()),
            app_slug: config.app_slug.clone(),
        };
        let worker = DeliveryWorker::new(store.clone(), handler, context, config.worker.clone());
        let workers: Vec<_> = (0..config.worker.workers)
            .map(|_| tokio::spawn(worker.clone().run(fresh.clone(), shutdown.clone())))
            .collect();
        let router = crate::web::router(store, Arc::new(config.webhook_secrets.clone()), writer);
        let mut server_shutdown = shutdown.clone();
        let task = tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move { server_shutdown.requested().await })
                .await
                .context("HTTP server failed")?;
            // In-flight requests are answered; the router's writer handles are gone, so
            // the writers drain their queue and stop.
            for handle in writers {
                handle.await.context("intake writer panicked")?;
            }
            for handle in workers {
                handle.await.context("delivery worker panicked")?;
            }
            Ok(())
        });
        Ok(Self {
            addr,
            shutdown: trigger,
            task,
        })
    }

    /// Graceful stop: finish in-flight requests, store what was accepted, stop workers.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.trigger();
        self.wait().await
    }

    /// Waits for the server to end (after a stop requested elsewhere).
    pub async fn wait(self) -> anyhow::Result<()> {
        self.task.await.context("server task panicked")?
    }

    pub fn shutdown_trigger(&self) -> &ShutdownTrigger {
        &self.shutdown
    }
}
