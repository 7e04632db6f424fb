//! Reading and writing the cluster with the user's own credentials, and turning
//! the API server's refusals into one plain sentence.

use crate::view::{Policy, Tracker};
use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Client, Config};
use serde_json::Value;
use std::path::Path;

/// What went wrong talking to the cluster, said the way a user needs to read it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server refused the request (HTTP 403).
    #[error("you may not {verb} {resource} {scope}")]
    Forbidden {
        /// The verb refused.
        verb: String,
        /// The resource.
        resource: String,
        /// "in namespace X" or "in any namespace".
        scope: String,
    },
    /// The object does not exist.
    #[error("{what} not found {scope}")]
    NotFound {
        /// What was looked for.
        what: String,
        /// Where.
        scope: String,
    },
    /// Bad input from the user.
    #[error("{0}")]
    Usage(String),
    /// No usable kubeconfig.
    #[error("kubeconfig: {0}")]
    Config(String),
    /// Any other API error.
    #[error("{verb} {resource}: {message}")]
    Api {
        /// The verb.
        verb: String,
        /// The resource.
        resource: String,
        /// The server's or the transport's message.
        message: String,
    },
}

/// Where a request was made, for error messages.
fn scope(namespace: Option<&str>) -> String {
    match namespace {
        Some(ns) => format!("in namespace {ns}"),
        None => "in any namespace".into(),
    }
}

/// Maps a kube error for `verb resource` in `namespace` to an [`Error`].
pub fn api_error(e: kube::Error, verb: &str, resource: &str, namespace: Option<&str>) -> Error {
    match e {
        kube::Error::Api(status) if status.code == 403 => Error::Forbidden {
            verb: verb.into(),
            resource: resource.into(),
            scope: scope(namespace),
        },
        kube::Error::Api(status) if status.code == 404 => Error::NotFound {
            what: resource.into(),
            scope: scope(namespace),
        },
        kube::Error::Api(status) => Error::Api {
            verb: verb.into(),
            resource: resource.into(),
            message: status.message,
        },
        other => Error::Api {
            verb: verb.into(),
            resource: resource.into(),
            message: other.to_string(),
        },
    }
}

/// The API resource of PullRequestTrackers.
pub fn trackers_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("promotion.io", "v1alpha1", "PullRequestTracker"),
        "pullrequesttrackers",
    )
}

/// The API resource of PromotionPolicies.
pub fn policies_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("promotion.io", "v1alpha1", "PromotionPolicy"),
        "promotionpolicies",
    )
}

/// The API resource of Argo CD Applications.
pub fn applications_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("argoproj.io", "v1alpha1", "Application"),
        "applications",
    )
}

/// A connection to the cluster as the user, with the namespace commands default to.
#[derive(Clone)]
pub struct Cluster {
    /// The client, with the user's credentials.
    pub client: Client,
    /// The kubeconfig context's namespace (or `default`).
    pub default_namespace: String,
}

impl Cluster {
    /// Connects with a kubeconfig file, or the usual lookup ($KUBECONFIG, ~/.kube/config, in-cluster).
    pub async fn connect(kubeconfig: Option<&Path>, context: Option<&str>) -> Result<Self, Error> {
        let options = KubeConfigOptions {
            context: context.map(str::to_string),
            ..KubeConfigOptions::default()
        };
        let config = match kubeconfig {
            Some(path) => {
                let kc = Kubeconfig::read_from(path).map_err(|e| Error::Config(format!("{e}")))?;
                Config::from_custom_kubeconfig(kc, &options)
                    .await
                    .map_err(|e| Error::Config(e.to_string()))?
            }
            None => match Config::from_kubeconfig(&options).await {
                Ok(c) => c,
                Err(e) => Config::incluster().map_err(|_| Error::Config(e.to_string()))?,
            },
        };
        let default_namespace = config.default_namespace.clone();
        let client = Client::try_from(config).map_err(|e| Error::Config(e.to_string()))?;
        Ok(Self {
            client,
            default_namespace,
        })
    }

    /// Wraps an existing client (tests, the demo).
    pub fn from_client(client: Client, default_namespace: &str) -> Self {
        Self {
            client,
            default_namespace: default_namespace.into(),
        }
    }

    fn dynamic(&self, ar: &ApiResource, namespace: Option<&str>) -> Api<DynamicObject> {
        match namespace {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, ar),
            None => Api::all_with(self.client.clone(), ar),
        }
    }

    /// The trackers of a namespace (`None`: all namespaces), by name.
    pub async fn trackers(&self, namespace: Option<&str>) -> Result<Vec<Tracker>, Error> {
        let list = self
            .dynamic(&trackers_resource(), namespace)
            .list(&ListParams::default())
            .await
            .map_err(|e| api_error(e, "list", "pullrequesttrackers", namespace))?;
        let mut out: Vec<Tracker> = list.items.into_iter().map(to_tracker).collect();
        out.sort_by(|a, b| (a.namespace(), a.name()).cmp(&(b.namespace(), b.name())));
        Ok(out)
    }

    /// One tracker by name.
    pub async fn tracker(&self, namespace: &str, name: &str) -> Result<Tracker, Error> {
        self.dynamic(&trackers_resource(), Some(namespace))
            .get(name)
            .await
            .map(to_tracker)
            .map_err(
                |e| match api_error(e, "get", "pullrequesttrackers", Some(namespace)) {
                    Error::NotFound { scope, .. } => Error::NotFound {
                        what: format!("tracker {name}"),
                        scope,
                    },
                    other => other,
                },
            )
    }

    /// The policies of a namespace (`None`: all namespaces).
    pub async fn policies(&self, namespace: Option<&str>) -> Result<Vec<Policy>, Error> {
        let list = self
            .dynamic(&policies_resource(), namespace)
            .list(&ListParams::default())
            .await
            .map_err(|e| api_error(e, "list", "promotionpolicies", namespace))?;
        let mut out: Vec<Policy> = list
            .items
            .into_iter()
            .map(|o| Policy::from_value(serde_json::to_value(o).unwrap_or(Value::Null)))
            .collect();
        out.sort_by(|a, b| (a.namespace(), a.name()).cmp(&(b.namespace(), b.name())));
        Ok(out)
    }

    /// Merges annotations into a tracker (a JSON merge patch: nothing else is touched).
    pub async fn annotate(
        &self,
        namespace: &str,
        name: &str,
        annotations: &[(&str, &str)],
    ) -> Result<Tracker, Error> {
        let map: serde_json::Map<String, Value> = annotations
            .iter()
            .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
            .collect();
        let patch = serde_json::json!({"metadata": {"annotations": map}});
        self.dynamic(&trackers_resource(), Some(namespace))
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map(to_tracker)
            .map_err(|e| api_error(e, "patch", "pullrequesttrackers", Some(namespace)))
    }

    /// The user name the API server knows the caller by (SelfSubjectReview).
    pub async fn whoami(&self) -> Result<String, Error> {
        let review: SelfSubjectReview = serde_json::from_value(serde_json::json!({
            "apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview", "metadata": {}
        }))
        .map_err(|e| Error::Usage(e.to_string()))?;
        let api: Api<SelfSubjectReview> = Api::all(self.client.clone());
        let answer = api
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| api_error(e, "create", "selfsubjectreviews", None))?;
        answer
            .status
            .and_then(|s| s.user_info)
            .and_then(|u| u.username)
            .filter(|u| !u.is_empty())
            .ok_or_else(|| Error::Api {
                verb: "create".into(),
                resource: "selfsubjectreviews".into(),
                message: "the API server did not say who you are".into(),
            })
    }

    /// The Events about one tracker, oldest first.
    pub async fn events(&self, namespace: &str, name: &str) -> Result<Vec<EventView>, Error> {
        let api: Api<Event> = Api::namespaced(self.client.clone(), namespace);
        let list = api
            .list(&ListParams::default())
            .await
            .map_err(|e| api_error(e, "list", "events", Some(namespace)))?;
        let mut items: Vec<EventView> = list
            .items
            .iter()
            .filter(|e| {
                e.regarding.as_ref().is_some_and(|r| {
                    r.kind.as_deref() == Some("PullRequestTracker")
                        && r.name.as_deref() == Some(name)
                })
            })
            .map(|e| EventView::from_value(&serde_json::to_value(e).unwrap_or(Value::Null)))
            .collect();
        items.sort_by_key(|e| e.time);
        Ok(items)
    }

    /// An Argo CD Application, as JSON.
    pub async fn application(&self, namespace: &str, name: &str) -> Result<Value, Error> {
        self.dynamic(&applications_resource(), Some(namespace))
            .get(name)
            .await
            .map(|o| serde_json::to_value(o).unwrap_or(Value::Null))
            .map_err(|e| api_error(e, "get", "applications.argoproj.io", Some(namespace)))
    }
}

/// An Event about a tracker, the parts a timeline shows.
#[derive(Clone, Debug, serde::Serialize)]
pub struct EventView {
    /// When it happened (event time, else the series' last, else creation).
    pub time: Option<chrono::DateTime<chrono::Utc>>,
    /// Normal or Warning.
    pub type_: String,
    /// The reason.
    pub reason: String,
    /// The note.
    pub note: String,
}

impl EventView {
    /// Reads an events.k8s.io/v1 Event from JSON.
    pub fn from_value(v: &Value) -> Self {
        let time = [
            "/eventTime",
            "/series/lastObservedTime",
            "/deprecatedLastTimestamp",
            "/metadata/creationTimestamp",
        ]
        .iter()
        .filter_map(|p| v.pointer(p).and_then(Value::as_str))
        .find_map(|s| s.parse().ok());
        let text = |k: &str| v[k].as_str().unwrap_or("").to_string();
        Self {
            time,
            type_: text("type"),
            reason: text("reason"),
            note: text("note"),
        }
    }
}

/// Converts a dynamic object to the lenient tracker view.
pub fn to_tracker(o: DynamicObject) -> Tracker {
    Tracker::from_value(serde_json::to_value(o).unwrap_or(Value::Null))
}
