//! CloudFormation: deploy a template through change sets (so a plan shows resource-level changes
//! before anything changes), follow stack events, and read outputs.

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_cloudformation::Client;
use aws_sdk_cloudformation::types::{Capability, ChangeSetStatus, ChangeSetType, Parameter, Tag};

use crate::describe_sdk_error;

/// What went wrong with CloudFormation.
#[derive(Debug, thiserror::Error)]
pub enum CfnError {
    /// An API call failed.
    #[error("CloudFormation {action} failed: {detail}")]
    Api {
        /// The call.
        action: &'static str,
        /// What AWS said.
        detail: String,
    },
    /// A change set could not be made.
    #[error("change set {name} failed: {reason}")]
    ChangeSetFailed {
        /// The change set.
        name: String,
        /// Why, in CloudFormation's words.
        reason: String,
    },
    /// The stack ended in a failed state.
    #[error("stack {stack} ended in {status}{}", if failures.is_empty() { String::new() } else { format!(":\n{}", failures.join("\n")) })]
    StackFailed {
        /// The stack.
        stack: String,
        /// Its status.
        status: String,
        /// The resources' failure reasons, oldest first.
        failures: Vec<String>,
    },
    /// Waiting took longer than this.
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout {
        /// What was waited for.
        what: String,
        /// How long.
        after: Duration,
    },
}

/// How long CloudFormation may take to make a change set (it takes seconds; a stuck one is an
/// outage, not a slow template).
pub const CHANGE_SET_TIMEOUT: Duration = Duration::from_secs(600);

/// The most pages of stack events read between two polls (100 events a page).
const EVENT_PAGES: usize = 20;

/// A deployed stack.
#[derive(Debug, Clone, Default)]
pub struct StackInfo {
    /// The stack's name.
    pub name: String,
    /// Its status.
    pub status: String,
    /// Its tags.
    pub tags: BTreeMap<String, String>,
    /// Its outputs.
    pub outputs: BTreeMap<String, String>,
    /// Logical ID → physical ID of every resource.
    pub resources: BTreeMap<String, String>,
}

impl StackInfo {
    /// The stack's output `output`, or (where an emulator leaves outputs out) the physical ID of
    /// the resource `resource` that gives it; never an empty value.
    pub fn value(&self, output: &str, resource: &str) -> Option<String> {
        self.outputs
            .get(output)
            .or_else(|| self.resources.get(resource))
            .filter(|v| !v.is_empty())
            .cloned()
    }
}

/// One resource-level change of a change set.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ResourceChange {
    /// `Add`, `Modify`, `Remove`, `Import`, `Dynamic`.
    pub action: String,
    /// The resource's logical id in the template.
    pub logical_id: String,
    /// Its type (`AWS::ECS::Cluster`).
    pub resource_type: String,
    /// `True`, `False`, `Conditional` for modifications.
    pub replacement: Option<String>,
}

/// A stack event, as streamed while a change set executes.
#[derive(Debug, Clone)]
pub struct StackEvent {
    /// The event's id.
    pub id: String,
    /// The resource's logical id.
    pub logical_id: String,
    /// Its type.
    pub resource_type: String,
    /// Its status after the event.
    pub status: String,
    /// Why, if AWS says.
    pub reason: Option<String>,
}

/// CloudFormation.
pub struct Cfn {
    client: Client,
    /// How often waits poll.
    pub poll: Duration,
}

fn is_terminal(status: &str) -> bool {
    status.ends_with("_COMPLETE") || status.ends_with("_FAILED")
}

fn is_success(status: &str) -> bool {
    matches!(
        status,
        "CREATE_COMPLETE" | "UPDATE_COMPLETE" | "IMPORT_COMPLETE"
    )
}

impl Cfn {
    /// A client from the SDK configuration.
    pub fn new(config: &aws_config::SdkConfig) -> Self {
        Cfn {
            client: Client::new(config),
            poll: Duration::from_secs(2),
        }
    }

    /// The stack, or `None` when it does not exist (or was deleted).
    pub async fn describe(&self, name: &str) -> Result<Option<StackInfo>, CfnError> {
        let out = match self.client.describe_stacks().stack_name(name).send().await {
            Ok(o) => o,
            Err(e) => {
                let code = crate::error_code(&e);
                let msg = describe_sdk_error(&e);
                if crate::quirks::says_not_found(code.as_deref(), &msg) {
                    return Ok(None);
                }
                return Err(CfnError::Api {
                    action: "DescribeStacks",
                    detail: msg,
                });
            }
        };
        let Some(s) = out.stacks().first() else {
            return Ok(None);
        };
        let status = s
            .stack_status()
            .map(|x| x.as_str().to_string())
            .unwrap_or_default();
        if status == "DELETE_COMPLETE" {
            return Ok(None);
        }
        let mut info = StackInfo {
            name: name.to_string(),
            status,
            tags: s
                .tags()
                .iter()
                .map(|t| {
                    (
                        t.key().unwrap_or_default().to_string(),
                        t.value().unwrap_or_default().to_string(),
                    )
                })
                .collect(),
            outputs: s
                .outputs()
                .iter()
                .map(|o| {
                    (
                        o.output_key().unwrap_or_default().to_string(),
                        o.output_value().unwrap_or_default().to_string(),
                    )
                })
                .collect(),
            resources: BTreeMap::new(),
        };
        // ListStackResources, every page (DescribeStackResources stops at 100).
        let mut pages = self
            .client
            .list_stack_resources()
            .stack_name(name)
            .into_paginator()
            .items()
            .send();
        while let Some(r) = pages.try_next().await.map_err(|e| CfnError::Api {
            action: "ListStackResources",
            detail: describe_sdk_error(&e),
        })? {
            info.resources.insert(
                r.logical_resource_id().unwrap_or_default().to_string(),
                r.physical_resource_id().unwrap_or_default().to_string(),
            );
        }
        Ok(Some(info))
    }

    /// Every live stack tagged `key` = `value` (their names, statuses and tags; resources are not
    /// read), every page of DescribeStacks.
    pub async fn stacks_tagged(&self, key: &str, value: &str) -> Result<Vec<StackInfo>, CfnError> {
        let mut found = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let out = self
                .client
                .describe_stacks()
                .set_next_token(token.clone())
                .send()
                .await
                .map_err(|e| CfnError::Api {
                    action: "DescribeStacks",
                    detail: describe_sdk_error(&e),
                })?;
            for s in out.stacks() {
                let status = s
                    .stack_status()
                    .map(|x| x.as_str().to_string())
                    .unwrap_or_default();
                let tags: BTreeMap<String, String> = s
                    .tags()
                    .iter()
                    .map(|t| {
                        (
                            t.key().unwrap_or_default().to_string(),
                            t.value().unwrap_or_default().to_string(),
                        )
                    })
                    .collect();
                if status != "DELETE_COMPLETE" && tags.get(key).map(String::as_str) == Some(value) {
                    found.push(StackInfo {
                        name: s.stack_name().unwrap_or_default().to_string(),
                        status,
                        tags,
                        outputs: BTreeMap::new(),
                        resources: BTreeMap::new(),
                    });
                }
            }
            token = out.next_token().map(str::to_string);
            if token.is_none() {
                return Ok(found);
            }
        }
    }

    /// Creates a change set and waits for it. Returns its changes; empty when the template and
    /// parameters change nothing (the empty change set is deleted).
    pub async fn create_change_set(
        &self,
        stack: &str,
        change_set: &str,
        create: bool,
        template: &str,
        parameters: &[(String, String)],
        tags: &[(String, String)],
    ) -> Result<Vec<ResourceChange>, CfnError> {
        let params: Vec<Parameter> = parameters
            .iter()
            .map(|(k, v)| {
                Parameter::builder()
                    .parameter_key(k)
                    .parameter_value(v)
                    .build()
            })
            .collect();
        let tags: Vec<Tag> = tags
            .iter()
            .map(|(k, v)| Tag::builder().key(k).value(v).build())
            .collect();
        self.client
            .create_change_set()
            .stack_name(stack)
            .change_set_name(change_set)
            .change_set_type(if create {
                ChangeSetType::Create
            } else {
                ChangeSetType::Update
            })
            .template_body(template)
            .set_parameters(Some(params))
            .set_tags(Some(tags))
            .capabilities(Capability::CapabilityIam)
            .description("triton-deploy rollout")
            .send()
            .await
            .map_err(|e| CfnError::Api {
                action: "CreateChangeSet",
                detail: describe_sdk_error(&e),
            })?;
        let started = std::time::Instant::now();
        loop {
            let d = self
                .client
                .describe_change_set()
                .stack_name(stack)
                .change_set_name(change_set)
                .send()
                .await
                .map_err(|e| CfnError::Api {
                    action: "DescribeChangeSet",
                    detail: describe_sdk_error(&e),
                })?;
            match d.status() {
                Some(ChangeSetStatus::CreateComplete) => {
                    return self.changes(stack, change_set).await;
                }
                Some(ChangeSetStatus::Failed) => {
                    let reason = d.status_reason().unwrap_or_default().to_string();
                    if reason.contains("didn't contain changes") || reason.contains("No updates") {
                        let _ = self.delete_change_set(stack, change_set).await;
                        return Ok(Vec::new());
                    }
                    return Err(CfnError::ChangeSetFailed {
                        name: change_set.into(),
                        reason,
                    });
                }
                _ if started.elapsed() > CHANGE_SET_TIMEOUT => {
                    return Err(CfnError::Timeout {
                        what: format!("change set {change_set} of {stack} to be made"),
                        after: CHANGE_SET_TIMEOUT,
                    });
                }
                _ => tokio::time::sleep(self.poll).await,
            }
        }
    }

    /// A made change set's resource changes, every page of DescribeChangeSet.
    async fn changes(
        &self,
        stack: &str,
        change_set: &str,
    ) -> Result<Vec<ResourceChange>, CfnError> {
        let mut out = Vec::new();
        let mut pages = self
            .client
            .describe_change_set()
            .stack_name(stack)
            .change_set_name(change_set)
            .into_paginator()
            .send();
        while let Some(page) = pages.try_next().await.map_err(|e| CfnError::Api {
            action: "DescribeChangeSet",
            detail: describe_sdk_error(&e),
        })? {
            out.extend(
                page.changes()
                    .iter()
                    .filter_map(|c| c.resource_change())
                    .map(|r| ResourceChange {
                        action: r
                            .action()
                            .map(|a| a.as_str().to_string())
                            .unwrap_or_default(),
                        logical_id: r.logical_resource_id().unwrap_or_default().to_string(),
                        resource_type: r.resource_type().unwrap_or_default().to_string(),
                        replacement: r.replacement().map(|x| x.as_str().to_string()),
                    }),
            );
        }
        Ok(out)
    }

    /// Deletes a stack (used to clean up the empty stack a planning CREATE change set leaves).
    pub async fn delete_stack(&self, stack: &str) -> Result<(), CfnError> {
        self.client
            .delete_stack()
            .stack_name(stack)
            .send()
            .await
            .map_err(|e| CfnError::Api {
                action: "DeleteStack",
                detail: describe_sdk_error(&e),
            })?;
        Ok(())
    }

    /// Deletes a change set that is not to be executed.
    pub async fn delete_change_set(&self, stack: &str, change_set: &str) -> Result<(), CfnError> {
        self.client
            .delete_change_set()
            .stack_name(stack)
            .change_set_name(change_set)
            .send()
            .await
            .map_err(|e| CfnError::Api {
                action: "DeleteChangeSet",
                detail: describe_sdk_error(&e),
            })?;
        Ok(())
    }

    /// Executes a change set and follows the stack until it settles, calling `on_event` for each
    /// new event. On failure, the error lists the failed resources and their reasons.
    pub async fn execute(
        &self,
        stack: &str,
        change_set: &str,
        timeout: Duration,
        on_event: &(dyn Fn(&StackEvent) + Sync),
    ) -> Result<StackInfo, CfnError> {
        let seen_before: std::collections::HashSet<String> = self
            .events(stack, None)
            .await?
            .into_iter()
            .map(|e| e.id)
            .collect();
        self.client
            .execute_change_set()
            .stack_name(stack)
            .change_set_name(change_set)
            .send()
            .await
            .map_err(|e| CfnError::Api {
                action: "ExecuteChangeSet",
                detail: describe_sdk_error(&e),
            })?;
        let started = std::time::Instant::now();
        let mut seen = seen_before.clone();
        let mut failures = Vec::new();
        loop {
            self.new_events(stack, &mut seen, &mut failures, on_event)
                .await?;
            let info = self.describe(stack).await?.unwrap_or_default();
            if is_terminal(&info.status) && !info.status.ends_with("_IN_PROGRESS") {
                if is_success(&info.status) {
                    return Ok(info);
                }
                return Err(CfnError::StackFailed {
                    stack: stack.into(),
                    status: info.status,
                    failures,
                });
            }
            if started.elapsed() > timeout {
                return Err(CfnError::Timeout {
                    what: format!("stack {stack} to settle"),
                    after: timeout,
                });
            }
            tokio::time::sleep(self.poll).await;
        }
    }

    /// Deletes the stack and follows it until it is gone, calling `on_event` for each new event.
    pub async fn delete_and_wait(
        &self,
        stack: &str,
        timeout: Duration,
        on_event: &(dyn Fn(&StackEvent) + Sync),
    ) -> Result<(), CfnError> {
        let mut seen: std::collections::HashSet<String> = self
            .events(stack, None)
            .await?
            .into_iter()
            .map(|e| e.id)
            .collect();
        self.delete_stack(stack).await?;
        let started = std::time::Instant::now();
        let mut failures = Vec::new();
        loop {
            let Some(info) = self.describe(stack).await? else {
                return Ok(());
            };
            self.new_events(stack, &mut seen, &mut failures, on_event)
                .await?;
            if info.status == "DELETE_FAILED" {
                return Err(CfnError::StackFailed {
                    stack: stack.into(),
                    status: info.status,
                    failures,
                });
            }
            if started.elapsed() > timeout {
                return Err(CfnError::Timeout {
                    what: format!("stack {stack} to be deleted"),
                    after: timeout,
                });
            }
            tokio::time::sleep(self.poll).await;
        }
    }

    /// Passes the stack's events not `seen` yet to `on_event`, oldest first, and notes failures.
    async fn new_events(
        &self,
        stack: &str,
        seen: &mut std::collections::HashSet<String>,
        failures: &mut Vec<String>,
        on_event: &(dyn Fn(&StackEvent) + Sync),
    ) -> Result<(), CfnError> {
        let mut events = self.events(stack, Some(seen)).await?;
        events.reverse(); // oldest first
        for e in events {
            if seen.insert(e.id.clone()) {
                if e.status.ends_with("_FAILED") {
                    failures.push(format!(
                        "  {} ({}): {}",
                        e.logical_id,
                        e.resource_type,
                        e.reason.clone().unwrap_or_default()
                    ));
                }
                on_event(&e);
            }
        }
        Ok(())
    }

    /// The stack's events, newest first: the newest page only (`since` = `None`), or every page
    /// back to one holding an event of `since` (at most [`EVENT_PAGES`] pages), so that a busy
    /// stack's events between two polls are not lost past the first page.
    async fn events(
        &self,
        stack: &str,
        since: Option<&std::collections::HashSet<String>>,
    ) -> Result<Vec<StackEvent>, CfnError> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        for _ in 0..EVENT_PAGES {
            let page = match self
                .client
                .describe_stack_events()
                .stack_name(stack)
                .set_next_token(token.clone())
                .send()
                .await
            {
                Ok(o) => o,
                Err(e) => {
                    let code = crate::error_code(&e);
                    let msg = describe_sdk_error(&e);
                    if crate::quirks::says_not_found(code.as_deref(), &msg) {
                        return Ok(out);
                    }
                    return Err(CfnError::Api {
                        action: "DescribeStackEvents",
                        detail: msg,
                    });
                }
            };
            let events: Vec<StackEvent> = page
                .stack_events()
                .iter()
                .map(|e| StackEvent {
                    id: e.event_id().unwrap_or_default().to_string(),
                    logical_id: e.logical_resource_id().unwrap_or_default().to_string(),
                    resource_type: e.resource_type().unwrap_or_default().to_string(),
                    status: e
                        .resource_status()
                        .map(|s| s.as_str().to_string())
                        .unwrap_or_default(),
                    reason: e.resource_status_reason().map(str::to_string),
                })
                .collect();
            let reached = since.is_none_or(|seen| events.iter().any(|e| seen.contains(&e.id)));
            out.extend(events);
            token = page.next_token().map(str::to_string);
            if reached || token.is_none() {
                break;
            }
        }
        Ok(out)
    }
}
