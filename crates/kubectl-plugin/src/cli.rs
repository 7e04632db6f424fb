//! The `kubectl promotion` command line: parsing and running each command.

use crate::board::{self, gating_policy};
use crate::chain;
use crate::cluster::{Cluster, Error};
use crate::explain::{self, Context};
use crate::resolve::resolve;
use crate::text::{self, Paint};
use crate::view::{APPROVE_ANNOTATION, APPROVED_BY_ANNOTATION, RETRY_ANNOTATION, short};
use clap::{Parser, Subcommand, ValueEnum};
use std::io::Write;
use std::path::PathBuf;

/// Exit code for an error (the API refused, not found, bad input); 0-2 are `explain`'s verdicts.
pub const EXIT_ERROR: u8 = 3;

/// See and steer every pull request on its way through the environments.
#[derive(Parser, Debug)]
#[command(name = "kubectl-promotion", bin_name = "kubectl promotion", version)]
pub struct Cli {
    /// Path to the kubeconfig file (default: $KUBECONFIG, then ~/.kube/config).
    #[arg(long, global = true)]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use.
    #[arg(long, global = true)]
    pub context: Option<String>,
    /// The namespace (default: the context's).
    #[arg(short = 'n', long, global = true)]
    pub namespace: Option<String>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Output formats of `status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// More columns: tracker, SHA, every gate by name, the controller's message.
    Wide,
    /// Machine-readable JSON.
    Json,
    /// Machine-readable YAML.
    Yaml,
}

/// The commands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// One row per PR, one column per environment in chain order.
    Status {
        /// All namespaces.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
        /// wide, json or yaml.
        #[arg(short = 'o', long, value_enum)]
        output: Option<Output>,
    },
    /// Why a PR is where it is, and the command that moves it on. Exit 0: moving, 1: waits on a person, 2: failed.
    Explain {
        /// A PR number, owner/repo#N, or a tracker name.
        pr: String,
        /// json or yaml instead of text.
        #[arg(short = 'o', long, value_enum)]
        output: Option<Output>,
    },
    /// Approve the promotion of a PR's head commit to an environment.
    Approve {
        /// A PR number, owner/repo#N, or a tracker name.
        pr: String,
        /// The environment to approve the promotion to.
        #[arg(long)]
        to: String,
    },
    /// Start a failed gate again.
    Retry {
        /// A PR number, owner/repo#N, or a tracker name.
        pr: String,
    },
    /// The PR's promotions as a timeline, with the runs that gated each, and its Events.
    History {
        /// A PR number, owner/repo#N, or a tracker name.
        pr: String,
        /// json or yaml instead of text.
        #[arg(short = 'o', long, value_enum)]
        output: Option<Output>,
    },
    /// The environment chain per namespace and selector, with gaps, cycles and conflicts.
    Policies {
        /// All namespaces.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
        /// json or yaml instead of text.
        #[arg(short = 'o', long, value_enum)]
        output: Option<Output>,
    },
    /// `status`, redrawn on every change.
    Watch {
        /// All namespaces.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
        /// More columns.
        #[arg(short = 'o', long, value_enum)]
        output: Option<Output>,
    },
    /// A live pipeline view in the browser, served on 127.0.0.1 with your credentials.
    Dashboard {
        /// The local port (0: any free one).
        #[arg(long, default_value_t = 8000)]
        port: u16,
    },
}

fn structured<T: serde::Serialize>(value: &T, output: Output) -> Result<String, Error> {
    match output {
        Output::Yaml => serde_yaml::to_string(value).map_err(|e| Error::Usage(e.to_string())),
        _ => serde_json::to_string_pretty(value)
            .map(|s| s + "\n")
            .map_err(|e| Error::Usage(e.to_string())),
    }
}

fn write(out: &mut dyn Write, text: &str) -> Result<(), Error> {
    out.write_all(text.as_bytes())
        .and_then(|_| out.flush())
        .map_err(|e| Error::Usage(format!("writing output: {e}")))
}

/// Runs a command, writing to `out`; returns the exit code.
pub async fn run(cli: Cli, out: &mut (dyn Write + Send), paint: Paint) -> Result<u8, Error> {
    let cluster = Cluster::connect(cli.kubeconfig.as_deref(), cli.context.as_deref()).await?;
    run_with(&cluster, cli.namespace, cli.command, out, paint).await
}

/// Runs a command against an existing connection.
pub async fn run_with(
    cluster: &Cluster,
    namespace: Option<String>,
    command: Command,
    out: &mut (dyn Write + Send),
    paint: Paint,
) -> Result<u8, Error> {
    let ns = namespace.unwrap_or_else(|| cluster.default_namespace.clone());
    match command {
        Command::Status {
            all_namespaces,
            output,
        } => {
            let scope = (!all_namespaces).then_some(ns.as_str());
            let b = load_board(cluster, scope).await?;
            let text = match output {
                Some(o @ (Output::Json | Output::Yaml)) => structured(&b, o)?,
                _ => text::status(&b, output == Some(Output::Wide), all_namespaces, paint),
            };
            write(out, &text)?;
            Ok(0)
        }
        Command::Explain { pr, output } => {
            let t = resolve(cluster, &ns, &pr).await?;
            let ctx = explain_context(cluster, &t).await;
            let d = explain::diagnose(&t, &ctx, &pr);
            let text = match output {
                Some(o @ (Output::Json | Output::Yaml)) => structured(&d, o)?,
                _ => explain::render(&d),
            };
            write(out, &text)?;
            Ok(d.verdict.exit_code())
        }
        Command::Approve { pr, to } => {
            let text = approve(cluster, &ns, &pr, &to).await?;
            write(out, &text)?;
            Ok(0)
        }
        Command::Retry { pr } => {
            let t = resolve(cluster, &ns, &pr).await?;
            let value = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            cluster
                .annotate(&ns, t.name(), &[(RETRY_ANNOTATION, value.as_str())])
                .await?;
            let mut text = format!(
                "asked the controller to retry {} (tracker {ns}/{}): {RETRY_ANNOTATION}={value}\n",
                t.pr(),
                t.name()
            );
            if t.phase() != "Failed" {
                text.push_str(&format!(
                    "note: it is {} in {}, not Failed; the controller restarts only a failed gate\n",
                    if t.phase().is_empty() { "Pending" } else { t.phase() },
                    t.environment()
                ));
            }
            write(out, &text)?;
            Ok(0)
        }
        Command::History { pr, output } => {
            let t = resolve(cluster, &ns, &pr).await?;
            let (events, note) = match cluster.events(&ns, t.name()).await {
                Ok(e) => (e, None),
                Err(e) => (Vec::new(), Some(format!("Events not shown: {e}"))),
            };
            let moments = text::timeline(&t, &events);
            let text = match output {
                Some(o @ (Output::Json | Output::Yaml)) => structured(&moments, o)?,
                _ => text::history(&t, &moments, note.as_deref()),
            };
            write(out, &text)?;
            Ok(0)
        }
        Command::Policies {
            all_namespaces,
            output,
        } => {
            let scope = (!all_namespaces).then_some(ns.as_str());
            let chains = chain::chains(&cluster.policies(scope).await?);
            let text = match output {
                Some(o @ (Output::Json | Output::Yaml)) => structured(&chains, o)?,
                _ => text::policies(&chains, paint),
            };
            write(out, &text)?;
            Ok(0)
        }
        Command::Watch {
            all_namespaces,
            output,
        } => {
            let scope = (!all_namespaces).then_some(ns.clone());
            crate::watch::watch(cluster, scope, output == Some(Output::Wide), out, paint).await?;
            Ok(0)
        }
        Command::Dashboard { port } => {
            let server = crate::dashboard::Server::bind(cluster.clone(), ns.clone(), port).await?;
            write(
                out,
                &format!(
                    "kubectl promotion dashboard: http://{}/ns/{ns}  (Ctrl-C stops it)\n",
                    server.address()
                ),
            )?;
            server.run(std::future::pending()).await?;
            Ok(0)
        }
    }
}

/// Trackers and policies of a scope, as a board.
pub async fn load_board(cluster: &Cluster, namespace: Option<&str>) -> Result<board::Board, Error> {
    let trackers = cluster.trackers(namespace).await?;
    // A user who may read trackers but not policies still sees the PRs (columns in name order).
    let policies = cluster.policies(namespace).await.unwrap_or_default();
    Ok(board::board(&trackers, &policies))
}

/// What `explain` looks at besides the tracker, each with the user's own rights.
pub async fn explain_context(cluster: &Cluster, t: &crate::view::Tracker) -> Context {
    let ns = t.namespace();
    let mut ctx = Context::default();
    match cluster.policies(Some(ns)).await {
        Ok(p) => ctx.policies = p,
        Err(e) => ctx.unreadable.push(format!("policies not read: {e}")),
    }
    let status = t.status();
    if t.phase() == "Deploying"
        && let Some(app) = status.application.as_ref()
        && let Some(name) = app.name.as_deref()
    {
        let app_ns = app.namespace.as_deref().unwrap_or("argocd");
        match cluster.application(app_ns, name).await {
            Ok(v) => ctx.application = Some(v),
            Err(e) => ctx.unreadable.push(format!("Application not read: {e}")),
        }
    }
    if let Some(holder) = status.queue.as_ref().and_then(|q| q.holder.clone()) {
        let (hns, hname) = holder.split_once('/').unwrap_or((ns, holder.as_str()));
        match cluster.tracker(hns, hname).await {
            Ok(h) => ctx.holder = Some(h),
            Err(e) => ctx.unreadable.push(format!("holder not read: {e}")),
        }
    }
    ctx
}

/// Approves `pr` for `to` at its head SHA, as the user the API server knows.
pub async fn approve(cluster: &Cluster, ns: &str, pr: &str, to: &str) -> Result<String, Error> {
    let t = resolve(cluster, ns, pr).await?;
    let sha = t.head_sha().to_string();
    if sha.len() < 7 {
        return Err(Error::Usage(format!(
            "tracker {ns}/{} has no head SHA to approve",
            t.name()
        )));
    }
    // Approving an environment no policy leads to would silently do nothing.
    if let Ok(policies) = cluster.policies(Some(ns)).await
        && !policies.is_empty()
        && !policies.iter().any(|p| p.target() == to)
    {
        let mut targets: Vec<&str> = policies.iter().map(|p| p.target()).collect();
        targets.sort();
        targets.dedup();
        return Err(Error::Usage(format!(
            "no policy in namespace {ns} leads to {to}; environments that take approvals: {}",
            targets.join(", ")
        )));
    }
    if !crate::access::allowed(cluster, "approve", ns).await? {
        return Err(Error::Forbidden {
            verb: "approve".into(),
            resource: "pullrequesttrackers".into(),
            scope: format!("in namespace {ns}"),
        });
    }
    let user = cluster.whoami().await?;
    let value = format!("{to}@{sha}");
    let updated = cluster
        .annotate(
            ns,
            t.name(),
            &[
                (APPROVE_ANNOTATION, value.as_str()),
                (APPROVED_BY_ANNOTATION, user.as_str()),
            ],
        )
        .await?;
    let mut text = format!(
        "approved {} for {to} at {} as {user} (tracker {ns}/{}): {APPROVE_ANNOTATION}={value}\n",
        t.pr(),
        short(&sha),
        t.name()
    );
    let policies = cluster.policies(Some(ns)).await.unwrap_or_default();
    let waiting_for = gating_policy(&updated, &policies).map(|p| p.target().to_string());
    if updated.phase() != "AwaitingApproval" || waiting_for.as_deref() != Some(to) {
        text.push_str(&format!(
            "note: it is {} in {} now; the approval counts when its gate to {to} passes at {}\n",
            if updated.phase().is_empty() {
                "Pending"
            } else {
                updated.phase()
            },
            updated.environment(),
            short(&sha)
        ));
    }
    Ok(text)
}
