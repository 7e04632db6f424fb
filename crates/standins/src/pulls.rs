//! The pull requests of the GitHub stand-in: a test opens, pushes to, labels,
//! closes, merges and reopens them through [`PullRequests`]; the stand-in answers
//! `GET /repos/:o/:r/pulls/:n` and `GET /repos/:o/:r/pulls` (`state`, `per_page`,
//! `page`, with a `Link` header) with pull request objects shaped as GitHub's REST
//! reference documents them (docs.github.com/rest/pulls/pulls). A PR's labels are
//! the labels of its issue (`/issues/:n/labels`), as on GitHub.

use crate::journal::Journal;
use crate::runtime::{json, rfc3339};
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

const DEFAULT_PER_PAGE: usize = 30;
const MAX_PER_PAGE: usize = 100;

#[derive(Clone, Debug)]
struct Pull {
    head_sha: String,
    head_ref: String,
    /// `owner/name`; None when the fork was deleted.
    head_repo: Option<String>,
    open: bool,
    merged: bool,
    created: SystemTime,
    updated: SystemTime,
    closed: Option<SystemTime>,
}

type Key = (String, String, u64);

/// The stand-in's pull requests, shared with its server. Repositories are `owner/name`.
#[derive(Clone)]
pub struct PullRequests {
    pulls: Arc<Mutex<BTreeMap<Key, Pull>>>,
    journal: Journal,
}

impl std::fmt::Debug for PullRequests {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PullRequests")
            .field("count", &self.lock().len())
            .finish()
    }
}

fn key(repository: &str, number: u64) -> Key {
    let (owner, name) = repository.split_once('/').unwrap_or((repository, ""));
    (owner.to_owned(), name.to_owned(), number)
}

impl PullRequests {
    pub(crate) fn new(journal: Journal) -> Self {
        Self {
            pulls: Arc::default(),
            journal,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<Key, Pull>> {
        self.pulls.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn change(&self, repository: &str, number: u64, f: impl FnOnce(&mut Pull)) {
        if let Some(p) = self.lock().get_mut(&key(repository, number)) {
            f(p);
            p.updated = SystemTime::now();
        }
    }

    /// Opens PR `number` of `repository` at `head_sha`, from a branch of the repository itself.
    pub fn open(&self, repository: &str, number: u64, head_sha: &str) {
        self.open_from(repository, number, head_sha, Some(repository));
    }

    /// Opens a PR whose head branch lives in `head_repository` (a fork; None: a deleted fork).
    pub fn open_from(
        &self,
        repository: &str,
        number: u64,
        head_sha: &str,
        head_repository: Option<&str>,
    ) {
        let now = SystemTime::now();
        self.lock().insert(
            key(repository, number),
            Pull {
                head_sha: head_sha.to_owned(),
                head_ref: format!("feature-{number}"),
                head_repo: head_repository.map(str::to_owned),
                open: true,
                merged: false,
                created: now,
                updated: now,
                closed: None,
            },
        );
    }

    /// A push to the PR's head branch.
    pub fn push(&self, repository: &str, number: u64, head_sha: &str) {
        self.change(repository, number, |p| p.head_sha = head_sha.to_owned());
    }

    /// Closes the PR without merging it.
    pub fn close(&self, repository: &str, number: u64) {
        self.change(repository, number, |p| {
            p.open = false;
            p.closed = Some(SystemTime::now());
        });
    }

    /// Merges (and so closes) the PR.
    pub fn merge(&self, repository: &str, number: u64) {
        self.change(repository, number, |p| {
            p.open = false;
            p.merged = true;
            p.closed = Some(SystemTime::now());
        });
    }

    /// Reopens a closed, unmerged PR.
    pub fn reopen(&self, repository: &str, number: u64) {
        self.change(repository, number, |p| {
            if !p.merged {
                p.open = true;
                p.closed = None;
            }
        });
    }

    /// Adds a label to the PR (its issue), as a person would on the PR page.
    pub fn label(&self, repository: &str, number: u64, label: &str) {
        let (owner, name, number) = key(repository, number);
        self.journal
            .add_labels(&owner, &name, number, &[label.to_owned()]);
    }

    /// Removes a label from the PR.
    pub fn unlabel(&self, repository: &str, number: u64, label: &str) {
        let (owner, name, number) = key(repository, number);
        self.journal.remove_label(&owner, &name, number, label);
    }
}

fn user(login: &str) -> Value {
    json!({"login": login, "id": 1, "node_id": "MDQ6VXNlcjE=", "type": "User", "site_admin": false})
}

fn repo_json(base: &str, full_name: &str) -> Value {
    let (owner, name) = full_name.split_once('/').unwrap_or((full_name, ""));
    json!({
        "id": 1296269, "node_id": "MDEwOlJlcG9zaXRvcnkxMjk2MjY5",
        "name": name, "full_name": full_name, "owner": user(owner), "private": false,
        "url": format!("{base}/repos/{full_name}"), "default_branch": "main",
    })
}

/// A pull request object; `full` adds what only the single-PR endpoint returns.
fn pull_json(
    base: &str,
    (owner, repo, number): &Key,
    p: &Pull,
    labels: &[String],
    full: bool,
) -> Value {
    let full_name = format!("{owner}/{repo}");
    let url = format!("{base}/repos/{full_name}/pulls/{number}");
    let labels: Vec<Value> = labels
        .iter()
        .enumerate()
        .map(|(i, l)| {
            json!({"id": 208045946 + i, "node_id": "MDU6TGFiZWwyMDgwNDU5NDY=", "url": format!("{base}/repos/{full_name}/labels/{l}"),
                   "name": l, "description": null, "color": "ededed", "default": false})
        })
        .collect();
    let head_owner = p
        .head_repo
        .as_deref()
        .and_then(|r| r.split_once('/'))
        .map_or("ghost", |(o, _)| o);
    let mut v = json!({
        "url": url, "id": 1000 + number, "node_id": "MDExOlB1bGxSZXF1ZXN0MQ==",
        "html_url": format!("{base}/{full_name}/pull/{number}"),
        "issue_url": format!("{base}/repos/{full_name}/issues/{number}"),
        "number": number, "state": if p.open { "open" } else { "closed" }, "locked": false,
        "title": format!("Pull request {number}"), "user": user(head_owner), "body": "",
        "labels": labels,
        "created_at": rfc3339(p.created), "updated_at": rfc3339(p.updated),
        "closed_at": p.closed.map(rfc3339),
        "merged_at": if p.merged { p.closed.map(rfc3339) } else { None },
        "merge_commit_sha": null, "draft": false,
        "head": {
            "label": format!("{head_owner}:{}", p.head_ref), "ref": p.head_ref, "sha": p.head_sha,
            "user": user(head_owner),
            "repo": p.head_repo.as_deref().map(|r| repo_json(base, r)),
        },
        "base": {
            "label": format!("{owner}:main"), "ref": "main",
            "sha": "0000000000000000000000000000000000000000", "user": user(owner),
            "repo": repo_json(base, &full_name),
        },
        "author_association": "CONTRIBUTOR",
    });
    if full {
        v["merged"] = json!(p.merged);
        v["mergeable"] = json!(p.open);
        v["mergeable_state"] = json!(if p.open { "clean" } else { "unknown" });
        v["merged_by"] = if p.merged { user(owner) } else { Value::Null };
        v["comments"] = json!(0);
        v["commits"] = json!(1);
    }
    v
}

/// `GET /repos/:o/:r/pulls/:n`.
pub(crate) fn get(
    pulls: &PullRequests,
    base: &str,
    owner: String,
    repo: String,
    number: &str,
) -> Response {
    let Ok(number) = number.parse::<u64>() else {
        return crate::github::not_found();
    };
    let k = (owner, repo, number);
    let Some(p) = pulls.lock().get(&k).cloned() else {
        return crate::github::not_found();
    };
    let labels = pulls.journal.labels(&k.0, &k.1, number);
    json(StatusCode::OK, pull_json(base, &k, &p, &labels, true))
}

/// `GET /repos/:o/:r/pulls?state=&per_page=&page=`, newest first, as GitHub sorts by default.
pub(crate) fn list(
    pulls: &PullRequests,
    base: &str,
    owner: String,
    repo: String,
    query: &std::collections::HashMap<String, String>,
) -> Response {
    let state = query.get("state").map_or("open", String::as_str);
    if !matches!(state, "open" | "closed" | "all") {
        return crate::github::error(StatusCode::UNPROCESSABLE_ENTITY, "Validation Failed");
    }
    let per_page = query
        .get("per_page")
        .and_then(|p| p.parse().ok())
        .unwrap_or(DEFAULT_PER_PAGE)
        .clamp(1, MAX_PER_PAGE);
    let page: usize = query
        .get("page")
        .and_then(|p| p.parse().ok())
        .unwrap_or(1)
        .max(1);
    let matching: Vec<(Key, Pull)> = pulls
        .lock()
        .iter()
        .rev()
        .filter(|((o, r, _), p)| {
            *o == owner
                && *r == repo
                && match state {
                    "open" => p.open,
                    "closed" => !p.open,
                    _ => true,
                }
        })
        .map(|(k, p)| (k.clone(), p.clone()))
        .collect();
    let last = matching.len().div_ceil(per_page).max(1);
    let items: Vec<Value> = matching
        .iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .map(|(k, p)| pull_json(base, k, p, &pulls.journal.labels(&k.0, &k.1, k.2), false))
        .collect();
    let mut resp = json(StatusCode::OK, Value::Array(items));
    let link_to = |n: usize, rel: &str| {
        format!(
            "<{base}/repos/{owner}/{repo}/pulls?state={state}&per_page={per_page}&page={n}>; rel=\"{rel}\""
        )
    };
    let mut links = Vec::new();
    if page > 1 {
        links.push(link_to(page - 1, "prev"));
    }
    if page < last {
        links.push(link_to(page + 1, "next"));
        links.push(link_to(last, "last"));
    }
    if page > 1 {
        links.push(link_to(1, "first"));
    }
    if !links.is_empty()
        && let Ok(v) = HeaderValue::from_str(&links.join(", "))
    {
        resp.headers_mut().insert("link", v);
    }
    resp
}
