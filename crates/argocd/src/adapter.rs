//! [`ArgoCdClient`] on the Kubernetes API: Applications are read and patched
//! where Argo CD runs, never through Argo CD's own API server.

use crate::clusters::{ClusterClients, IN_CLUSTER};
use crate::errors;
use crate::hold::{self, Take};
use crate::model::AppData;
use crate::opt_in::{self, ALLOW_PROMOTION_FROM};
use crate::options::PromoteOptions;
use crate::patch::{self, Plan, PlanError};
use crate::status;
use async_trait::async_trait;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use promotion_api::ApplicationRef;
use promotion_core::ports::{
    AppStatus, ArgoCdClient, Hold, PROMOTED_ANNOTATION, PortError, PromotionRequest,
};
use std::future::Future;
use std::sync::Arc;

/// The field manager of every write the controller makes.
pub const FIELD_MANAGER: &str = "promotion-controller";

/// The API resource of Argo CD's Application.
pub fn application_resource() -> ApiResource {
    let gvk = GroupVersionKind::gvk("argoproj.io", "v1alpha1", "Application");
    ApiResource::from_gvk_with_plural(&gvk, "applications")
}

/// Reads and promotes Argo CD Applications through the Kubernetes API.
pub struct KubeArgoCd {
    clusters: Arc<ClusterClients>,
    options: PromoteOptions,
}

impl KubeArgoCd {
    /// An adapter reaching clusters through `clusters`, promoting as `options` say.
    pub fn new(clusters: Arc<ClusterClients>, options: PromoteOptions) -> Self {
        Self { clusters, options }
    }

    async fn api(&self, app: &ApplicationRef) -> Result<Api<DynamicObject>, PortError> {
        let client = self.clusters.client(&app.cluster).await?;
        Ok(Api::namespaced_with(
            client,
            &app.namespace,
            &application_resource(),
        ))
    }

    /// Runs one API call with the configured timeout and maps its error.
    async fn call<T>(
        &self,
        app: &ApplicationRef,
        what: &str,
        fut: impl Future<Output = Result<T, kube::Error>>,
    ) -> Result<T, PortError> {
        self.timed(app, what, fut)
            .await?
            .map_err(|e| self.failed(app, what, &e))
    }

    /// Runs one API call with the configured timeout; only the timeout is mapped.
    async fn timed<T>(
        &self,
        app: &ApplicationRef,
        what: &str,
        fut: impl Future<Output = Result<T, kube::Error>>,
    ) -> Result<Result<T, kube::Error>, PortError> {
        tokio::time::timeout(self.options.timeout, fut)
            .await
            .map_err(|_| errors::timed_out(what, &app.cluster, self.options.timeout))
    }

    fn failed(&self, app: &ApplicationRef, what: &str, err: &kube::Error) -> PortError {
        if app.cluster != IN_CLUSTER && matches!(err, kube::Error::Api(s) if s.code == 401) {
            // Likely rotated credentials: read the Secret again next time.
            self.clusters.forget(&app.cluster);
        }
        errors::from_kube(err, what, &app.cluster)
    }

    async fn get(
        &self,
        api: &Api<DynamicObject>,
        app: &ApplicationRef,
    ) -> Result<DynamicObject, PortError> {
        let what = format!("reading Argo CD Application {}/{}", app.namespace, app.name);
        match self.timed(app, &what, api.get(&app.name)).await? {
            Ok(obj) => Ok(obj),
            Err(kube::Error::Api(s)) if s.code == 404 => Err(PortError::permanent(format!(
                "Argo CD Application {}/{} not found on cluster {}",
                app.namespace, app.name, app.cluster
            ))),
            Err(e) => Err(self.failed(app, &what, &e)),
        }
    }
}

/// How many times a hold write is retried after losing a race (409) before the caller hears of it.
const HOLD_ATTEMPTS: usize = 3;

impl KubeArgoCd {
    async fn write_hold(
        &self,
        api: &Api<DynamicObject>,
        app: &ApplicationRef,
        body: &serde_json::Value,
    ) -> Result<Result<(), kube::Error>, PortError> {
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PatchParams::default()
        };
        let what = format!("writing the hold of {}", describe(app));
        Ok(self
            .timed(
                app,
                &what,
                api.patch(&app.name, &params, &Patch::Merge(body)),
            )
            .await?
            .map(drop))
    }
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

fn describe(app: &ApplicationRef) -> String {
    format!(
        "Argo CD Application {}/{} on cluster {}",
        app.namespace, app.name, app.cluster
    )
}

#[async_trait]
impl ArgoCdClient for KubeArgoCd {
    async fn application_status(&self, app: &ApplicationRef) -> Result<AppStatus, PortError> {
        let api = self.api(app).await?;
        let obj = self.get(&api, app).await?;
        let mut status = status::app_status(&AppData::from_value(&obj.data));
        status.opt_in = obj
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(ALLOW_PROMOTION_FROM))
            .cloned();
        tracing::debug!(app = %describe(app), ?status, "read application status");
        Ok(status)
    }

    async fn promote(&self, app: &ApplicationRef, req: &PromotionRequest) -> Result<(), PortError> {
        let api = self.api(app).await?;
        let obj = self.get(&api, app).await?;
        if !opt_in::allows(
            obj.metadata.annotations.as_ref(),
            &req.policy_namespace,
            &req.target_environment,
        ) {
            return Err(PortError::permanent(format!(
                "{} does not allow promotion by policy {}/{} to environment {}: its annotation {ALLOW_PROMOTION_FROM} must list \"{}/{}\"",
                describe(app),
                req.policy_namespace,
                req.policy,
                req.target_environment,
                req.policy_namespace,
                req.target_environment,
            )));
        }
        let body = match patch::plan(&obj, req, &self.options) {
            Ok(Plan::AlreadyThere) => {
                tracing::debug!(app = %describe(app), revision = %req.revision, "already at the revision");
                return Ok(());
            }
            Ok(Plan::Patch(body)) => body,
            Err(e @ PlanError::OperationInProgress) => {
                return Err(PortError::transient(format!(
                    "cannot promote {}: {e}",
                    describe(app)
                )));
            }
            Err(e) => {
                return Err(PortError::permanent(format!(
                    "cannot promote {}: {e}",
                    describe(app)
                )));
            }
        };
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PatchParams::default()
        };
        let what = format!(
            "patching Argo CD Application {}/{}",
            app.namespace, app.name
        );
        self.call(
            app,
            &what,
            api.patch(&app.name, &params, &Patch::Merge(&body)),
        )
        .await?;
        tracing::info!(
            app = %describe(app),
            revision = %req.revision,
            policy = %format!("{}/{}", req.policy_namespace, req.policy),
            sync = self.options.sync,
            "promoted application"
        );
        Ok(())
    }

    async fn promotion_marker(&self, app: &ApplicationRef) -> Result<Option<String>, PortError> {
        let api = self.api(app).await?;
        let obj = self.get(&api, app).await?;
        Ok(obj
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(PROMOTED_ANNOTATION))
            .cloned())
    }

    async fn holder(&self, app: &ApplicationRef) -> Result<Option<String>, PortError> {
        let api = self.api(app).await?;
        Ok(hold::holder_of(&self.get(&api, app).await?))
    }

    async fn acquire(
        &self,
        app: &ApplicationRef,
        holder: &str,
        breaking: Option<&str>,
    ) -> Result<Hold, PortError> {
        let api = self.api(app).await?;
        let what = format!("taking the hold of {}", describe(app));
        for _ in 0..HOLD_ATTEMPTS {
            let obj = self.get(&api, app).await?;
            let take = hold::take(&obj, holder, breaking);
            let Take::Write(body) = &take else {
                return Ok(hold::outcome(&take).unwrap_or(Hold::Acquired));
            };
            match self.write_hold(&api, app, body).await? {
                Ok(()) => {
                    tracing::info!(app = %describe(app), %holder, broke = ?breaking, "took the hold");
                    return Ok(Hold::Acquired);
                }
                // Someone wrote the app since it was read: read again and decide again.
                Err(e) if is_conflict(&e) => continue,
                Err(e) => return Err(self.failed(app, &what, &e)),
            }
        }
        Err(PortError::transient(format!(
            "{what}: the application kept changing ({HOLD_ATTEMPTS} conflicts)"
        )))
    }

    async fn release(&self, app: &ApplicationRef, holder: &str) -> Result<(), PortError> {
        let api = self.api(app).await?;
        let what = format!("releasing the hold of {}", describe(app));
        for _ in 0..HOLD_ATTEMPTS {
            // A deleted application holds nothing.
            let Some(obj) = self.call(app, &what, api.get_opt(&app.name)).await? else {
                return Ok(());
            };
            let Some(body) = hold::give_up(&obj, holder) else {
                return Ok(());
            };
            match self.write_hold(&api, app, &body).await? {
                Ok(()) => {
                    tracing::info!(app = %describe(app), %holder, "released the hold");
                    return Ok(());
                }
                Err(e) if is_conflict(&e) => continue,
                Err(e) => return Err(self.failed(app, &what, &e)),
            }
        }
        Err(PortError::transient(format!(
            "{what}: the application kept changing ({HOLD_ATTEMPTS} conflicts)"
        )))
    }
}
