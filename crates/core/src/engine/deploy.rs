//! Deploying: wait until Argo CD runs the PR's revision, Synced and Healthy, in
//! the current environment, at most until the deploy deadline (the policy's
//! deployTimeout, or the controller's default); then Deploying fails.

use super::{Engine, EngineError, Next, Step, backoff};
use crate::access::{APPLICATION_NOT_OPTED_IN, app_readable_by};
use crate::conditions::{self, types};
use crate::ports::EventType;
use k8s_openapi::jiff::Timestamp;
use promotion_api::Phase;

impl Engine {
    pub(super) async fn deploying(&self, s: &mut Step<'_>) -> Result<Next, EngineError> {
        let env = s.environment();
        let app = s
            .status
            .application
            .clone()
            .unwrap_or_else(|| s.tracker.spec.application.clone());
        let sha = s.tracker.spec.head_sha.clone();
        let ns = s.tracker.metadata.namespace.clone().unwrap_or_default();
        match self.ports.argo.application_status(&app).await {
            Ok(st) if !app_readable_by(st.opt_in.as_deref(), &ns) => {
                // What the app runs is none of this namespace's business until its owners say so.
                let msg = not_opted_in(&app, &ns);
                if s.status.message.as_deref() != Some(msg.as_str()) {
                    s.status.message = Some(msg.clone());
                    let g = s.generation();
                    conditions::set_unknown(
                        &mut s.status.conditions,
                        types::SYNCED,
                        APPLICATION_NOT_OPTED_IN,
                        msg.clone(),
                        g,
                    );
                    s.condition(types::READY, false, APPLICATION_NOT_OPTED_IN, msg.clone());
                    s.save().await?;
                    s.event(EventType::Warning, APPLICATION_NOT_OPTED_IN, msg)
                        .await;
                }
                Ok(Next::Wait(Some(self.config.poll_interval * 6)))
            }
            Ok(st) if st.deployed_at(&sha) => {
                s.status.phase = Some(Phase::Synced);
                let msg = format!(
                    "{} is Synced and Healthy at {} in {env}",
                    app.name,
                    s.short_sha()
                );
                s.status.message = Some(msg.clone());
                s.condition(types::SYNCED, true, "Synced", msg);
                s.condition(types::READY, true, "Progressing", "deployed; gate next");
                // Not written on its own: the gate's next step (armed intents, Completed, or
                // why it cannot start) is saved with it, and no Event repeats what status says.
                s.deployed_checked = true;
                Ok(Next::Continue)
            }
            Ok(st) => {
                let at = if st.revisions.is_empty() {
                    "no revision".to_string()
                } else {
                    st.revisions.join(",")
                };
                let msg = format!(
                    "waiting for Argo CD: {} is {:?}/{:?} at {at}, want {} in {env}",
                    app.name,
                    st.sync,
                    st.health,
                    s.short_sha()
                );
                let deadline = s
                    .status
                    .deploy_deadline
                    .get_or_insert_with(|| {
                        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                            Timestamp::now() + self.config.deploy_timeout,
                        )
                    })
                    .clone();
                if Timestamp::now() >= deadline.0 {
                    let why = format!(
                        "deploy timed out: {} did not become Synced and Healthy at {} in {env} by {}: it is {:?}/{:?} at {at}",
                        app.name,
                        s.short_sha(),
                        deadline.0,
                        st.sync,
                        st.health
                    );
                    s.condition(types::SYNCED, false, "DeployTimedOut", why.clone());
                    return self.fail(s, "DeployTimedOut", vec![why]).await;
                }
                // Just promoted here, the record already says what it waits for: Argo CD's
                // passing states (OutOfSync, Progressing) are not worth a write each.
                if s.status.phase != Some(Phase::Promoted)
                    && s.status.message.as_deref() != Some(msg.as_str())
                {
                    s.status.message = Some(msg.clone());
                    let g = s.generation();
                    conditions::set_unknown(
                        &mut s.status.conditions,
                        types::SYNCED,
                        "Deploying",
                        msg,
                        g,
                    );
                    // The gate's plan rides on this write, so that a restart between the
                    // arming write and the trigger can tell a run that never left.
                    self.plan_if_unplanned(s);
                    s.save().await?;
                }
                Ok(Next::Wait(Some(self.config.poll_interval)))
            }
            Err(e) => {
                let msg = format!(
                    "cannot read Argo CD application {}/{}: {e}",
                    app.namespace, app.name
                );
                if s.status.message.as_deref() != Some(msg.as_str()) {
                    s.status.message = Some(msg.clone());
                    s.condition(types::READY, false, "ArgoCdUnavailable", msg);
                    s.save().await?;
                }
                Ok(Next::Wait(Some(backoff(
                    self.config.poll_interval,
                    e.retry_after,
                ))))
            }
        }
    }
}

/// Why a tracker in `namespace` may not read `app`.
pub(super) fn not_opted_in(app: &promotion_api::ApplicationRef, namespace: &str) -> String {
    format!(
        "Argo CD Application {}/{} has not opted in to namespace {namespace}: its annotation {} must name it (\"{namespace}/<environment>\" or \"*\") before its status is read",
        app.namespace,
        app.name,
        crate::access::OPT_IN_ANNOTATION
    )
}
