//! RunnerSet dispatch: by provider and connection name, with a default per provider.

use async_trait::async_trait;
use promotion_adapters::RunnerSet;
use promotion_api::Provider;
use promotion_core::ports::{
    ErrorKind, PortError, RunHandle, RunRef, RunState, RunStatus, TestRunner, TriggerRequest,
};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// A runner that names itself in every answer and records the calls it got.
struct Named {
    name: &'static str,
    calls: Mutex<Vec<&'static str>>,
}

impl Named {
    fn new(name: &'static str) -> Arc<Self> {
        Arc::new(Self {
            name,
            calls: Mutex::default(),
        })
    }

    fn calls(&self) -> Vec<&'static str> {
        self.calls.lock().unwrap().clone()
    }
}

#[async_trait]
impl TestRunner for Named {
    async fn trigger(&self, _: &TriggerRequest) -> Result<RunHandle, PortError> {
        self.calls.lock().unwrap().push("trigger");
        Ok(RunHandle {
            run_id: self.name.into(),
            url: None,
        })
    }

    async fn status(&self, _: &RunRef) -> Result<RunStatus, PortError> {
        self.calls.lock().unwrap().push("status");
        Ok(RunStatus {
            state: RunState::Running,
            url: None,
            message: Some(self.name.into()),
            run_id: None,
        })
    }

    async fn find(
        &self,
        _: &TriggerRequest,
        _: std::time::SystemTime,
    ) -> Result<promotion_core::ports::Found, PortError> {
        self.calls.lock().unwrap().push("find");
        Ok(promotion_core::ports::Found::Absent)
    }

    async fn cancel(&self, _: &RunRef) -> Result<(), PortError> {
        self.calls.lock().unwrap().push("cancel");
        Ok(())
    }
}

fn request(provider: Provider, connection: Option<&str>) -> TriggerRequest {
    TriggerRequest {
        provider,
        connection: connection.map(str::to_owned),
        job: "job".into(),
        git_ref: None,
        parameters: BTreeMap::new(),
        correlation_id: "cid".into(),
    }
}

fn run(provider: Provider, connection: Option<&str>) -> RunRef {
    RunRef {
        correlation_id: None,
        provider,
        connection: connection.map(str::to_owned),
        job: "job".into(),
        run_id: "1".into(),
    }
}

#[tokio::test]
async fn calls_go_to_the_named_connection_of_the_provider() {
    let (main, other, gitlab) = (
        Named::new("jenkins-main"),
        Named::new("jenkins-other"),
        Named::new("gitlab-main"),
    );
    let mut set = RunnerSet::new();
    set.register(Provider::Jenkins, "jenkins-main", main.clone());
    set.register(Provider::Jenkins, "jenkins-other", other.clone());
    set.register(Provider::Gitlab, "gitlab-main", gitlab.clone());

    let h = set
        .trigger(&request(Provider::Jenkins, Some("jenkins-other")))
        .await
        .unwrap();
    assert_eq!(h.run_id, "jenkins-other");
    let s = set
        .status(&run(Provider::Gitlab, Some("gitlab-main")))
        .await
        .unwrap();
    assert_eq!(s.message.as_deref(), Some("gitlab-main"));
    set.find(
        &request(Provider::Jenkins, Some("jenkins-main")),
        std::time::SystemTime::now(),
    )
    .await
    .unwrap();
    set.cancel(&run(Provider::Jenkins, Some("jenkins-other")))
        .await
        .unwrap();

    assert_eq!(main.calls(), vec!["find"]);
    assert_eq!(other.calls(), vec!["trigger", "cancel"]);
    assert_eq!(gitlab.calls(), vec!["status"]);
}

#[tokio::test]
async fn no_connection_means_the_providers_default() {
    let (first, second) = (Named::new("first"), Named::new("second"));
    let mut set = RunnerSet::new();
    set.register(Provider::Jenkins, "first", first.clone());
    set.register(Provider::Jenkins, "second", second.clone());

    // The first registered is the default ...
    let h = set
        .trigger(&request(Provider::Jenkins, None))
        .await
        .unwrap();
    assert_eq!(h.run_id, "first");
    // ... until another is named.
    set.set_default(Provider::Jenkins, "second").unwrap();
    let s = set.status(&run(Provider::Jenkins, None)).await.unwrap();
    assert_eq!(s.message.as_deref(), Some("second"));
    assert_eq!(first.calls(), vec!["trigger"]);
    assert_eq!(second.calls(), vec!["status"]);
}

#[tokio::test]
async fn an_unknown_connection_is_permanent_and_named() {
    let mut set = RunnerSet::new();
    set.register(
        Provider::Jenkins,
        "jenkins-main",
        Named::new("jenkins-main"),
    );

    let err = set
        .trigger(&request(Provider::Jenkins, Some("jenkins-typo")))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent);
    assert_eq!(err.message, "unknown jenkins connection 'jenkins-typo'");

    // A connection of another provider does not count.
    let err = set
        .status(&run(Provider::Gitlab, Some("jenkins-main")))
        .await
        .unwrap_err();
    assert_eq!(err.message, "unknown gitlab connection 'jenkins-main'");

    let err = set
        .cancel(&run(Provider::GithubActions, None))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent);
    assert_eq!(err.message, "no github-actions connection is configured");

    let err = set.set_default(Provider::Jenkins, "nope").unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent);
}

#[test]
fn every_kind_builds_its_adapter_and_github_is_no_runner() {
    use promotion_adapters::{
        Adapter, Connection, ConnectionConfig, ConnectionKind, Credentials, GitHubCredentials,
        GitLabCredentials, JenkinsCredentials, SecretString,
    };
    let jenkins = Connection {
        config: ConnectionConfig::new("j", ConnectionKind::Jenkins, "https://ci.example.com")
            .unwrap(),
        credentials: Credentials::Jenkins(JenkinsCredentials {
            user: "bot".into(),
            token: SecretString::new("t"),
        }),
    };
    assert!(matches!(
        Adapter::new(&jenkins).unwrap(),
        Adapter::Runner(_)
    ));
    let gitlab = Connection {
        config: ConnectionConfig::new("g", ConnectionKind::Gitlab, "https://git.example.com")
            .unwrap(),
        credentials: Credentials::Gitlab(GitLabCredentials::AccessToken(SecretString::new("t"))),
    };
    assert!(matches!(Adapter::new(&gitlab).unwrap(), Adapter::Runner(_)));
    let token = Credentials::Github(GitHubCredentials::Token(SecretString::new("t")));
    let actions = Connection {
        config: ConnectionConfig::new("a", ConnectionKind::GithubActions, "https://api.github.com")
            .unwrap(),
        credentials: token.clone(),
    };
    assert!(matches!(
        Adapter::new(&actions).unwrap(),
        Adapter::Runner(_)
    ));
    let github = Connection {
        config: ConnectionConfig::new("h", ConnectionKind::Github, "https://api.github.com")
            .unwrap(),
        credentials: token,
    };
    assert!(matches!(
        Adapter::new(&github).unwrap(),
        Adapter::GitHub { .. }
    ));

    // Credentials of another kind are refused, naming the connection.
    let mixed = Connection {
        config: gitlab.config.clone(),
        credentials: jenkins.credentials.clone(),
    };
    let err = Adapter::new(&mixed).err().unwrap();
    assert_eq!(
        err.to_string(),
        "connection g: credentials do not fit a gitlab connection"
    );
    let mixed = Connection {
        config: github.config.clone(),
        credentials: jenkins.credentials.clone(),
    };
    assert_eq!(
        Adapter::new(&mixed).err().unwrap().to_string(),
        "connection h: credentials do not fit a github connection"
    );
}
