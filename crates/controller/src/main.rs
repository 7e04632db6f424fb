//! The promotion-controller binary: configuration, wiring, leader election,
//! probes, webhooks and the controller loop.

use anyhow::Context as _;
use clap::Parser;
use futures::StreamExt;
use futures::channel::mpsc::UnboundedSender;
use kube::Client;
use promotion_controller::config::{Args, FileConfig};
use promotion_controller::controller::Wake;
use promotion_controller::controller::{self, ControllerConfig, Hooks};
use promotion_controller::leader::{self, Leadership};
use promotion_controller::metrics::Metrics;
use promotion_controller::pr_sync::PullRequestSync;
use promotion_controller::webhook::tls::TlsListener;
use promotion_controller::webhook::{Deliveries, Webhooks};
use promotion_controller::{probes, resync, telemetry, wiring};
use promotion_core::engine::EngineConfig;
use std::future::Future;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    telemetry::init(args.log_format);
    let file = FileConfig::load(&args.config)?;
    let client = client(&args).await?;
    let identity = args
        .identity
        .clone()
        .unwrap_or_else(|| format!("promotion-controller-{}", std::process::id()));
    tracing::info!(%identity, namespace = ?args.namespace, connections = file.connections.len(), "starting");
    for warning in file.warnings() {
        tracing::warn!("configuration: {warning}");
    }

    let wiring = wiring::Wiring::start(client.clone(), &file, &args.lease_namespace)
        .await
        .context("wiring the connections")?;
    let metrics = Arc::new(Metrics::new());
    let ready = Arc::new(AtomicBool::new(false));
    let probe_listener = tokio::net::TcpListener::bind(args.probe_address)
        .await
        .with_context(|| format!("binding {}", args.probe_address))?;
    let probe_app = probes::router(metrics.clone(), ready.clone());
    tokio::spawn(async move {
        if let Err(e) = axum::serve(probe_listener, probe_app).await {
            tracing::error!(error = %e, "probe server stopped");
        }
    });
    let (wake_tx, wake_rx) = futures::channel::mpsc::unbounded();
    let webhook_listener = tokio::net::TcpListener::bind(args.webhook_address)
        .await
        .with_context(|| format!("binding {}", args.webhook_address))?;
    let secrets = wiring.webhook_secrets();
    {
        let secrets = secrets.clone();
        metrics.set_webhook_source(move || secrets.get().enabled());
    }
    let pull_requests = pull_request_sync(&client, &wiring, &file);
    let webhook_app = Webhooks::new(move || secrets.get(), wake_tx)
        .with_pull_requests(pull_requests.clone())
        .with_deliveries(Deliveries::new(
            args.webhook_delivery_cache,
            args.webhook_delivery_ttl,
        ))
        .router();
    match args.webhook_tls() {
        Some(files) => {
            let tls = TlsListener::bind(webhook_listener, files, args.webhook_tls_reload_interval)
                .await
                .context("the webhook TLS certificate")?;
            tracing::info!(address = %args.webhook_address, "webhooks served over TLS");
            tokio::spawn(async move {
                if let Err(e) = axum::serve(tls, webhook_app).await {
                    tracing::error!(error = %e, "webhook server stopped");
                }
            });
        }
        None => {
            tokio::spawn(async move {
                if let Err(e) = axum::serve(webhook_listener, webhook_app).await {
                    tracing::error!(error = %e, "webhook server stopped");
                }
            });
        }
    }

    let mut leadership = None;
    if args.leader_election {
        let l = tokio::select! {
            l = Leadership::start(client.clone(), &args.lease_namespace, &args.lease_name, &identity) => l?,
            _ = shutdown_signal() => return Ok(()),
        };
        leadership = Some(l);
    }
    // CI callbacks outlive one term as leader: each term gets its own receiver.
    let term_wake: Arc<Mutex<Option<UnboundedSender<Wake>>>> = Arc::default();
    {
        let term_wake = term_wake.clone();
        let mut wake_rx = wake_rx;
        tokio::spawn(async move {
            while let Some(w) = wake_rx.next().await {
                if let Some(tx) = term_wake.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
                    let _ = tx.unbounded_send(w);
                }
            }
        });
    }
    let config = ControllerConfig {
        engine: EngineConfig {
            poll_interval: args.poll_interval,
            max_rearms: args.max_rearms,
            deploy_timeout: args.deploy_timeout,
            // A policy test naming a connection that is not configured is invalid on the policy.
            connections: Some(
                file.connections
                    .iter()
                    // GitHub itself runs no tests.
                    .filter(|c| c.kind.provider().is_some())
                    .map(|c| c.name.clone())
                    .collect(),
            ),
            // Namespaces use only the connections, jobs and repositories granted to them.
            access: Some(Arc::new(file.access_rules())),
            // The head of a line is woken by its watched Application; the rest need not
            // ask the API server every poll interval.
            queue_poll_interval: args.watch_applications.then(|| {
                (args.poll_interval * 6).min(args.max_poll_interval.max(args.poll_interval))
            }),
            ..EngineConfig::default()
        },
        namespace: args.namespace.clone(),
        concurrency: args.max_concurrent_reconciles,
        wake_concurrency: args.max_concurrent_wakes,
        watch_applications: args.watch_applications,
        applications_namespaces: args.applications_namespaces.clone(),
        max_poll_interval: args.max_poll_interval,
        ..ControllerConfig::default()
    };
    let ports = wiring.ports();
    loop {
        if let Some(l) = leadership.as_mut() {
            tracing::info!(lease = %args.lease_name, "waiting for leadership");
            tokio::select! {
                acquired = l.acquired() => acquired?,
                _ = shutdown_signal() => break,
            }
            tracing::info!("leading");
        }
        // Only the leader resyncs: one reader of GitHub's API is enough.
        let resync = tokio::spawn(resync::run(pull_requests.clone(), args.pr_resync_interval));
        let (tx, rx) = futures::channel::mpsc::unbounded();
        *term_wake.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx);
        let why = lead(
            client.clone(),
            ports.clone(),
            config.clone(),
            Hooks {
                metrics: Some(metrics.clone()),
                ready: Some(ready.clone()),
                wake: Some(rx),
            },
            leadership.as_ref().map(|l| l.lost()),
        )
        .await;
        resync.abort();
        ready.store(false, Ordering::SeqCst);
        *term_wake.lock().unwrap_or_else(|p| p.into_inner()) = None;
        if why == Stop::Shutdown {
            break;
        }
        match leader::holder(
            client.clone(),
            &args.lease_namespace,
            &args.lease_name,
            &identity,
        )
        .await
        {
            leader::Holder::Other(who) => {
                if let Some(l) = leadership.take() {
                    let _ = l.release().await;
                }
                // Start again as a standby rather than keep running without the lease.
                anyhow::bail!("leadership lost: {who} holds the lease");
            }
            holder => tracing::warn!(
                ?holder,
                "lost the lease without another replica holding it (API server unreachable?): \
                 reconciles stopped; leading again once the lease is ours"
            ),
        }
    }
    if let Some(l) = leadership {
        l.release().await.context("releasing the lease")?;
    }
    tracing::info!("stopped");
    Ok(())
}

/// Why a term as leader ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stop {
    Shutdown,
    LeadershipLost,
}

/// Runs the controller until the lease is lost or a shutdown is requested,
/// finishing the reconciles in flight.
async fn lead(
    client: Client,
    ports: promotion_core::engine::Ports,
    config: ControllerConfig,
    hooks: Hooks,
    lost: Option<impl Future<Output = ()> + Send + 'static>,
) -> Stop {
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<Stop>();
    let watcher = tokio::spawn(async move {
        let why = match lost {
            Some(lost) => tokio::select! {
                _ = lost => Stop::LeadershipLost,
                _ = shutdown_signal() => Stop::Shutdown,
            },
            None => {
                shutdown_signal().await;
                Stop::Shutdown
            }
        };
        let _ = stop_tx.send(why);
    });
    let (why_tx, why_rx) = tokio::sync::oneshot::channel();
    let shutdown = async move {
        let why = stop_rx.await.unwrap_or(Stop::Shutdown);
        tracing::info!(?why, "stopping after the reconciles in flight");
        let _ = why_tx.send(why);
    };
    controller::run(client, ports, config, hooks, shutdown).await;
    watcher.abort();
    why_rx.await.unwrap_or(Stop::Shutdown)
}

/// GitHub's truth about pull requests, read through the github connection, applied to trackers.
fn pull_request_sync(
    client: &Client,
    wiring: &wiring::Wiring,
    file: &FileConfig,
) -> Arc<PullRequestSync> {
    Arc::new(PullRequestSync::new(
        client.clone(),
        wiring.pull_request_reader(),
        file.repositories.clone(),
    ))
}

async fn client(args: &Args) -> anyhow::Result<Client> {
    let config = match &args.kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await?
        }
        None => kube::Config::infer()
            .await
            .context("no kubeconfig and not in a cluster")?,
    };
    Ok(Client::try_from(config)?)
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term => {},
    }
}
