//! GitHub itself as a [`GitHubClient`]: labels on pull requests and commit statuses.

use super::connection::{Call, GitHubConnection};
use crate::http::Effect;
use async_trait::async_trait;
use promotion_core::ports::{CommitState, CommitStatus, GitHubClient, PortError, PullRequestRef};
use reqwest::{Method, StatusCode};

/// GitHub keeps at most this many characters of a commit status description.
pub const MAX_DESCRIPTION: usize = 140;

/// Labels pull requests and sets commit statuses through the GitHub REST API.
#[derive(Clone, Debug)]
pub struct GitHubApi {
    connection: GitHubConnection,
}

impl GitHubApi {
    /// A client that calls GitHub through `connection`.
    pub fn new(connection: GitHubConnection) -> Self {
        Self { connection }
    }
}

fn state_name(state: CommitState) -> &'static str {
    match state {
        CommitState::Pending => "pending",
        CommitState::Success => "success",
        CommitState::Failure => "failure",
        CommitState::Error => "error",
    }
}

/// `text` cut to GitHub's limit, counted in characters, marked with an ellipsis when cut.
fn truncate_description(text: &str) -> String {
    if text.chars().count() <= MAX_DESCRIPTION {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(MAX_DESCRIPTION - 1).collect();
    cut.push('…');
    cut
}

#[async_trait]
impl GitHubClient for GitHubApi {
    async fn add_label(&self, pr: &PullRequestRef, label: &str) -> Result<(), PortError> {
        let number = pr.number.to_string();
        let call = Call::new(
            Method::POST,
            Effect::Write,
            &["repos", &pr.owner, &pr.repo, "issues", &number, "labels"],
        )
        .json(serde_json::json!({ "labels": [label] }));
        self.connection.send(&call).await?.success()?;
        tracing::debug!(connection = self.connection.name(), pr = %number, label, "label added");
        Ok(())
    }

    async fn remove_label(&self, pr: &PullRequestRef, label: &str) -> Result<(), PortError> {
        let number = pr.number.to_string();
        let call = Call::new(
            Method::DELETE,
            Effect::Write,
            &[
                "repos", &pr.owner, &pr.repo, "issues", &number, "labels", label,
            ],
        );
        let answer = self.connection.send(&call).await?;
        // 404: the PR does not have the label, which is what removing it wanted.
        if answer.status == StatusCode::NOT_FOUND {
            tracing::debug!(connection = self.connection.name(), pr = %number, label, "label already absent");
            return Ok(());
        }
        answer.success().map(|_| ())
    }

    async fn set_commit_status(
        &self,
        pr: &PullRequestRef,
        sha: &str,
        status: &CommitStatus,
    ) -> Result<(), PortError> {
        let mut body = serde_json::json!({
            "state": state_name(status.state),
            "context": status.context,
            "description": truncate_description(&status.description),
        });
        if let Some(url) = &status.target_url {
            body["target_url"] = serde_json::Value::String(url.clone());
        }
        let call = Call::new(
            Method::POST,
            Effect::Write,
            &["repos", &pr.owner, &pr.repo, "statuses", sha],
        )
        .json(body);
        self.connection.send(&call).await?.success().map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptions_are_cut_to_140_characters() {
        assert_eq!(truncate_description("short"), "short");
        let long = "é".repeat(200);
        let cut = truncate_description(&long);
        assert_eq!(cut.chars().count(), MAX_DESCRIPTION);
        assert!(cut.ends_with('…'));
        assert_eq!(truncate_description(&"x".repeat(140)), "x".repeat(140));
    }
}
