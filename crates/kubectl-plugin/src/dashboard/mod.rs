//! `kubectl promotion dashboard`: a local web server (127.0.0.1 only) that shows
//! the pipeline of a namespace with the user's own credentials, live.

mod pages;

use crate::cluster::{Cluster, Error, api_error, to_tracker, trackers_resource};
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use futures::{Stream, StreamExt};
use kube::api::{Api, DynamicObject};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

/// A bound, not yet serving, dashboard.
pub struct Server {
    listener: tokio::net::TcpListener,
    router: Router,
}

struct AppState {
    cluster: Cluster,
    default_namespace: String,
    pages: pages::Pages,
}

type Shared = Arc<AppState>;

impl Server {
    /// Binds 127.0.0.1:`port` (0: any free port).
    pub async fn bind(
        cluster: Cluster,
        default_namespace: String,
        port: u16,
    ) -> Result<Self, Error> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .map_err(|e| Error::Usage(format!("cannot listen on 127.0.0.1:{port}: {e}")))?;
        let state = Arc::new(AppState {
            cluster,
            default_namespace,
            pages: pages::Pages::new()?,
        });
        let router = Router::new()
            .route("/", get(root))
            .route("/go", get(go))
            .route("/ns/{ns}", get(namespace_page))
            .route("/ns/{ns}/board", get(board_fragment))
            .route("/ns/{ns}/events", get(events))
            .route("/ns/{ns}/pr/{name}", get(pr_page))
            .with_state(state);
        Ok(Self { listener, router })
    }

    /// The address it listens on.
    pub fn address(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// Serves until `shutdown` completes.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), Error> {
        axum::serve(self.listener, self.router)
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(|e| Error::Usage(format!("dashboard server: {e}")))
    }
}

fn problem(state: &AppState, e: &Error) -> Response {
    let code = match e {
        Error::Forbidden { .. } => StatusCode::FORBIDDEN,
        Error::NotFound { .. } => StatusCode::NOT_FOUND,
        _ => StatusCode::BAD_GATEWAY,
    };
    (code, Html(state.pages.problem(&e.to_string()))).into_response()
}

async fn root(State(state): State<Shared>) -> Redirect {
    Redirect::to(&format!("/ns/{}", state.default_namespace))
}

#[derive(serde::Deserialize)]
struct Go {
    ns: String,
}

async fn go(Query(q): Query<Go>) -> Redirect {
    let ns: String =
        q.ns.chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
            .collect();
    Redirect::to(&format!("/ns/{ns}"))
}

async fn namespace_page(State(state): State<Shared>, Path(ns): Path<String>) -> Response {
    let trackers = match state.cluster.trackers(Some(&ns)).await {
        Ok(t) => t,
        Err(e) => return problem(&state, &e),
    };
    let policies = state.cluster.policies(Some(&ns)).await.unwrap_or_default();
    Html(state.pages.namespace(&ns, &trackers, &policies)).into_response()
}

async fn board_fragment(State(state): State<Shared>, Path(ns): Path<String>) -> Response {
    match render_board(&state, &ns).await {
        Ok(board) => Html(board).into_response(),
        Err(e) => problem(&state, &e),
    }
}

async fn render_board(state: &AppState, ns: &str) -> Result<String, Error> {
    let trackers = state.cluster.trackers(Some(ns)).await?;
    let policies = state.cluster.policies(Some(ns)).await.unwrap_or_default();
    Ok(state.pages.board(ns, &trackers, &policies, None))
}

async fn pr_page(
    State(state): State<Shared>,
    Path((ns, name)): Path<(String, String)>,
) -> Response {
    let t = match state.cluster.tracker(&ns, &name).await {
        Ok(t) => t,
        Err(e) => return problem(&state, &e),
    };
    let ctx = crate::cli::explain_context(&state.cluster, &t).await;
    let (events, note) = match state.cluster.events(&ns, &name).await {
        Ok(e) => (e, None),
        Err(e) => (Vec::new(), Some(format!("Events not shown: {e}"))),
    };
    Html(state.pages.pr(&ns, &t, &ctx, &events, note.as_deref())).into_response()
}

/// Server-sent events: the board, re-rendered whenever a tracker of the namespace changes.
async fn events(
    State(state): State<Shared>,
    Path(ns): Path<String>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let ar = trackers_resource();
    let api: Api<DynamicObject> = Api::namespaced_with(state.cluster.client.clone(), &ns, &ar);
    let writer = reflector::store::Writer::<DynamicObject>::new(ar);
    let reader = writer.as_reader();
    let changes = watcher(api, watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .boxed();
    let stream = futures::stream::unfold(
        (changes, false, String::new()),
        move |(mut changes, mut ready, mut last)| {
            let state = state.clone();
            let reader = reader.clone();
            let ns = ns.clone();
            async move {
                loop {
                    let event = changes.next().await?;
                    match event {
                        Ok(watcher::Event::InitDone) => ready = true,
                        Ok(_) => {}
                        Err(e) => {
                            let msg = match watch_error(e, &ns) {
                                Some(err) => err.to_string(),
                                None => continue,
                            };
                            let event = Event::default().event("problem").data(msg);
                            return Some((Ok(event), (changes, ready, last)));
                        }
                    }
                    if !ready {
                        continue;
                    }
                    let mut trackers: Vec<_> = reader
                        .state()
                        .iter()
                        .map(|o| to_tracker((**o).clone()))
                        .collect();
                    trackers.sort_by(|a, b| a.name().cmp(b.name()));
                    let policies = state.cluster.policies(Some(&ns)).await.unwrap_or_default();
                    let html = state.pages.board(&ns, &trackers, &policies, None);
                    if html == last {
                        continue;
                    }
                    last = html.clone();
                    let event = Event::default().event("board").data(html.replace('\r', ""));
                    return Some((Ok(event), (changes, ready, last)));
                }
            }
        },
    );
    Sse::new(stream).keep_alive(KeepAlive::default())
}

fn watch_error(e: watcher::Error, ns: &str) -> Option<Error> {
    let err = match e {
        watcher::Error::InitialListFailed(e)
        | watcher::Error::WatchStartFailed(e)
        | watcher::Error::WatchFailed(e) => e,
        watcher::Error::WatchError(status) => kube::Error::Api(status),
        _ => return None,
    };
    match api_error(err, "watch", "pullrequesttrackers", Some(ns)) {
        e @ Error::Forbidden { .. } => Some(e),
        _ => None,
    }
}
