//! Pull requests read from the REST API as a [`PullRequestReader`]: the truth a
//! tracker follows (head SHA, open/closed, merged, labels, head repository).
//!
//! `GET /repos/{owner}/{repo}/pulls/{number}` and
//! `GET /repos/{owner}/{repo}/pulls?state=open&per_page=100`, following the `Link`
//! header's `rel="next"` page by page.

use super::connection::{Call, GitHubConnection};
use crate::http::{Answer, Effect, retry_read};
use async_trait::async_trait;
use promotion_core::ports::{PortError, PullRequestReader, PullRequestRef, PullRequestState};
use reqwest::header::LINK;
use reqwest::{Method, StatusCode};
use serde::Deserialize;

/// GitHub's largest page.
const PER_PAGE: u32 = 100;
/// At most this many pages (10,000 open PRs) are read; more is refused rather than
/// followed without end.
const MAX_PAGES: u32 = 100;

/// Reads pull requests through the GitHub REST API.
#[derive(Clone, Debug)]
pub struct GitHubPullRequests {
    connection: GitHubConnection,
}

impl GitHubPullRequests {
    /// A reader that calls GitHub through `connection`.
    pub fn new(connection: GitHubConnection) -> Self {
        Self { connection }
    }

    async fn read_answer(&self, call: &Call) -> Result<Answer, PortError> {
        retry_read(self.connection.settings(), || async {
            let answer = self.connection.send(call).await?;
            if answer.status == StatusCode::NOT_FOUND {
                return Ok(answer);
            }
            answer.success()
        })
        .await
    }
}

/// The fields of GitHub's pull request object that the tracker follows; the list
/// endpoint leaves out `merged`, so `merged_at` says it there.
#[derive(Deserialize)]
struct PullJson {
    number: u64,
    state: String,
    #[serde(default)]
    merged: Option<bool>,
    #[serde(default)]
    merged_at: Option<String>,
    #[serde(default)]
    labels: Vec<LabelJson>,
    head: HeadJson,
}

#[derive(Deserialize)]
struct LabelJson {
    name: String,
}

#[derive(Deserialize)]
struct HeadJson {
    sha: String,
    /// `null` when the head repository (a fork) was deleted.
    #[serde(default)]
    repo: Option<RepoJson>,
}

#[derive(Deserialize)]
struct RepoJson {
    full_name: String,
}

impl PullJson {
    fn into_state(self, what: &str) -> Result<PullRequestState, PortError> {
        let open = match self.state.as_str() {
            "open" => true,
            "closed" => false,
            other => {
                return Err(PortError::permanent(format!(
                    "{what}: pull request #{} has state {other:?}, neither open nor closed",
                    self.number
                )));
            }
        };
        Ok(PullRequestState {
            number: self.number,
            head_sha: self.head.sha,
            open,
            merged: self.merged.unwrap_or(self.merged_at.is_some()),
            labels: self.labels.into_iter().map(|l| l.name).collect(),
            head_repository: self.head.repo.map(|r| r.full_name),
        })
    }
}

/// `connection NAME: METHOD /path`, the start of a message about `answer`.
fn what(answer: &Answer) -> String {
    format!("{}: {}", answer.connection, answer.call)
}

/// The `page` of the `rel="next"` link, if there is one.
fn next_page(answer: &Answer) -> Option<u32> {
    let link = answer.headers.get(LINK)?.to_str().ok()?;
    link.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        let is_next = params
            .split(';')
            .any(|p| p.trim().eq_ignore_ascii_case("rel=\"next\""));
        if !is_next {
            return None;
        }
        let url =
            url::Url::parse(target.trim().trim_start_matches('<').trim_end_matches('>')).ok()?;
        url.query_pairs()
            .find(|(k, _)| k == "page")
            .and_then(|(_, v)| v.parse().ok())
    })
}

#[async_trait]
impl PullRequestReader for GitHubPullRequests {
    async fn pull_request(
        &self,
        pr: &PullRequestRef,
    ) -> Result<Option<PullRequestState>, PortError> {
        let number = pr.number.to_string();
        let call = Call::new(
            Method::GET,
            Effect::Read,
            &["repos", &pr.owner, &pr.repo, "pulls", &number],
        );
        let answer = self.read_answer(&call).await?;
        if answer.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        answer
            .json::<PullJson>()?
            .into_state(&what(&answer))
            .map(Some)
    }

    async fn open_pull_requests(
        &self,
        owner: &str,
        repo: &str,
    ) -> Result<Vec<PullRequestState>, PortError> {
        let mut all = Vec::new();
        let mut page = 1;
        for _ in 0..MAX_PAGES {
            let call = Call::new(Method::GET, Effect::Read, &["repos", owner, repo, "pulls"])
                .query("state", "open")
                .query("per_page", PER_PAGE.to_string())
                .query("page", page.to_string());
            let answer = self.read_answer(&call).await?;
            if answer.status == StatusCode::NOT_FOUND {
                return Err(answer.error());
            }
            let context = what(&answer);
            for pr in answer.json::<Vec<PullJson>>()? {
                all.push(pr.into_state(&context)?);
            }
            match next_page(&answer) {
                // A next page that does not move forward would loop forever.
                Some(next) if next > page => page = next,
                _ => return Ok(all),
            }
        }
        Err(PortError::permanent(format!(
            "connection {}: {owner}/{repo} has more than {} open pull requests; not all read",
            self.connection.name(),
            MAX_PAGES * PER_PAGE
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{RateLimits, Service};
    use reqwest::header::{HeaderMap, HeaderValue};

    fn answer_with_link(link: &str) -> Answer {
        let mut headers = HeaderMap::new();
        headers.insert(LINK, HeaderValue::from_str(link).expect("header"));
        Answer {
            status: StatusCode::OK,
            headers,
            body: Vec::new(),
            connection: "connection gh".into(),
            call: "GET /x".into(),
            effect: Effect::Read,
            service: Service {
                rate_limits: RateLimits::GitHub,
                auth_hint: "check the token",
                json_message: true,
            },
        }
    }

    #[test]
    fn the_next_page_comes_from_the_link_header() {
        // The shape of GitHub's pagination guide: several relations in one header.
        let link = r#"<https://api.github.com/repositories/1300192/pulls?state=open&per_page=100&page=1>; rel="prev", <https://api.github.com/repositories/1300192/pulls?state=open&per_page=100&page=3>; rel="next", <https://api.github.com/repositories/1300192/pulls?state=open&per_page=100&page=5>; rel="last""#;
        assert_eq!(next_page(&answer_with_link(link)), Some(3));
        let last = r#"<https://api.github.com/repositories/1/pulls?page=1>; rel="first", <https://api.github.com/repositories/1/pulls?page=4>; rel="prev""#;
        assert_eq!(next_page(&answer_with_link(last)), None);
        assert_eq!(next_page(&answer_with_link("garbage")), None);
    }
}
