//! Routing on the cluster's shared load balancer: the listener rules that send a service its
//! requests (`network.route`, and its gRPC with `network.grpc`), and the rule priorities it holds.
//! A service has a block, chosen from its name, kept across re-runs (the service stack records
//! it) and never one another service of the cluster holds. The block gives it two priorities in
//! the head band (1–978: its gRPC rule, then its host or path rule), which come before every
//! service's model rules, and [`BLOCK`] in the model band (1,001–49,900: a rule per model). A
//! service routed by host gets every request for its name, whichever model it asks for. Pure:
//! the rollout reads the other services and the listener's rules, this decides.

use std::collections::BTreeMap;

use serde::Serialize;

use super::spec::{DeploymentSpec, RouteKind};

/// Priorities per service: one rule per model, up to this many models.
pub const BLOCK: u32 = 100;
/// Blocks 0..BLOCKS: head-band priorities 1..=978, model-band ones 1,001..=49,900.
const BLOCKS: u32 = 489;
/// Where the model band starts (after the head band).
const MODEL_BAND: u32 = 1000;
/// The path prefix of Triton's gRPC service (`inference.GRPCInferenceService/<method>`).
pub const GRPC_PATHS: &str = "/inference.GRPCInferenceService/*";
/// The priority of an `all` route: after every other rule.
pub const CATCH_ALL_PRIORITY: u32 = 50_000;

/// What a service is routed by, with what it needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "by", rename_all = "snake_case")]
pub enum Route {
    /// Each model's paths.
    Models {
        /// The models of the service's repository.
        models: Vec<String>,
    },
    /// Every path no other rule takes.
    All,
    /// Every request for a host name.
    Host {
        /// The name (`network.hostname`).
        host: String,
    },
    /// Every path under a prefix, which the load balancer strips.
    Path {
        /// `/name` (`network.path_prefix`).
        prefix: String,
    },
}

/// Where a rule forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// The service's HTTP target group (Triton's :8000).
    Http,
    /// Its gRPC target group (Triton's :8001).
    Grpc,
}

/// One listener rule: forward requests for one of `hosts` (any, when empty) whose path matches
/// one of `paths` (any, when empty) to `target`, rewriting the path first where `rewrite` says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rule {
    /// Its priority (lower is first).
    pub priority: u32,
    /// Host names (host-header condition).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// Path patterns (ALB wildcards).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    /// A URL rewrite: (regex, replacement).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<(String, String)>,
    /// The target group it forwards to.
    pub target: Target,
}

/// A rule already on the listener (read from the load balancer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerRule {
    /// Its priority.
    pub priority: u32,
    /// Its host names.
    pub hosts: Vec<String>,
    /// Its path patterns.
    pub paths: Vec<String>,
}

/// The route of a service and the block of priorities it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Routing {
    /// What the service is routed by.
    #[serde(flatten)]
    pub route: Route,
    /// Its block of priorities (see the module's docs).
    pub block: u32,
    /// The host its gRPC requests come for, when its gRPC port is behind the load balancer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grpc_host: Option<String>,
}

/// Why a route cannot be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// More models than a block holds.
    #[error(
        "{0} models: a service routed by model holds at most {BLOCK} rules (network.route = \"all\" takes every path)"
    )]
    TooManyModels(usize),
    /// A model name the load balancer cannot match literally.
    #[error(
        "model '{0}': its name holds '*' or '?', which the load balancer reads as wildcards, or is longer than a path pattern allows (128 characters)"
    )]
    Unmatchable(String),
    /// The route takes a path another service is routed by.
    #[error(
        "{path} is routed to {other} already (listener rule priority {priority}): one service per model, host or path prefix on a cluster"
    )]
    Taken {
        /// The path pattern.
        path: String,
        /// The service (or rule) that has it.
        other: String,
        /// That rule's priority.
        priority: u32,
    },
    /// No free block is left (the listener holds ~500 services).
    #[error("no free block of listener rule priorities is left on this load balancer")]
    Full,
}

/// The route of `kind`, given the models of the service's repository, its host name and its path
/// prefix (which the spec has checked).
pub fn route(
    kind: RouteKind,
    models: &[String],
    host: Option<&str>,
    prefix: Option<&str>,
) -> Result<Route, RouteError> {
    match kind {
        RouteKind::All => Ok(Route::All),
        RouteKind::Host => Ok(Route::Host {
            host: host.unwrap_or_default().to_string(),
        }),
        RouteKind::Path => Ok(Route::Path {
            prefix: prefix.unwrap_or_default().to_string(),
        }),
        RouteKind::Models => {
            if models.len() > BLOCK as usize {
                return Err(RouteError::TooManyModels(models.len()));
            }
            if let Some(bad) = models
                .iter()
                .find(|m| m.contains(['*', '?']) || m.len() + "/v2/models//*".len() > 128)
            {
                return Err(RouteError::Unmatchable(bad.clone()));
            }
            let mut models = models.to_vec();
            models.sort();
            models.dedup();
            Ok(Route::Models { models })
        }
    }
}

/// The routing of `spec`'s service: its route (given its repository's models) in `block`, with
/// its gRPC rule when `network.grpc` is on.
pub fn routing(
    spec: &DeploymentSpec,
    models: &[String],
    block: u32,
) -> Result<Routing, RouteError> {
    Ok(Routing {
        route: route(
            spec.route,
            models,
            spec.hostname.as_deref(),
            spec.path_prefix.as_deref(),
        )?,
        block,
        grpc_host: spec.grpc.then(|| spec.hostname.clone()).flatten(),
    })
}

/// The block a service prefers: from its name (FNV-1a), the same on every machine and run.
pub fn preferred_block(service: &str) -> u32 {
    fnv1a(service) % BLOCKS
}

/// FNV-1a, 32 bits: a hash that never changes with the toolchain.
fn fnv1a(s: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in s.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// The block of `service`: the one it holds (`own`, from its stack), else the first free one from
/// its preferred block on; `taken` maps the other services' blocks to their names.
pub fn choose_block(
    service: &str,
    own: Option<u32>,
    taken: &BTreeMap<u32, String>,
) -> Result<u32, RouteError> {
    if let Some(b) = own.filter(|b| *b < BLOCKS && !taken.contains_key(b)) {
        return Ok(b);
    }
    let start = preferred_block(service);
    (0..BLOCKS)
        .map(|i| (start + i) % BLOCKS)
        .find(|b| !taken.contains_key(b))
        .ok_or(RouteError::Full)
}

impl Routing {
    /// The first priority of this service's model rules.
    pub fn model_priorities(&self) -> std::ops::RangeInclusive<u32> {
        MODEL_BAND + self.block * BLOCK + 1..=MODEL_BAND + (self.block + 1) * BLOCK
    }

    /// The listener rules of this route, in priority order.
    pub fn rules(&self) -> Vec<Rule> {
        let mut rules = Vec::new();
        if let Some(host) = &self.grpc_host {
            rules.push(Rule {
                priority: 2 * self.block + 1,
                hosts: vec![host.clone()],
                paths: vec![GRPC_PATHS.into()],
                rewrite: None,
                target: Target::Grpc,
            });
        }
        let http = |priority, hosts, paths, rewrite| Rule {
            priority,
            hosts,
            paths,
            rewrite,
            target: Target::Http,
        };
        match &self.route {
            Route::All => rules.push(http(CATCH_ALL_PRIORITY, vec![], vec!["/*".into()], None)),
            Route::Host { host } => {
                rules.push(http(2 * self.block + 2, vec![host.clone()], vec![], None));
            }
            Route::Path { prefix } => rules.push(http(
                2 * self.block + 2,
                vec![],
                vec![format!("{prefix}/*")],
                // `/text/v2/models/m/infer` reaches Triton as `/v2/models/m/infer`.
                Some((format!("^{}/(.*)$", regex_escape(prefix)), "/$1".into())),
            )),
            Route::Models { models } => {
                // A model keeps its slot of the block (from its name) when others come and go,
                // so a rule's path rarely changes under it; names that meet probe on.
                let mut used = [false; BLOCK as usize];
                let mut models: Vec<Rule> = models
                    .iter()
                    .map(|m| {
                        let mut slot = (fnv1a(m) % BLOCK) as usize;
                        while used[slot] {
                            slot = (slot + 1) % BLOCK as usize;
                        }
                        used[slot] = true;
                        http(
                            self.model_priorities().start() + slot as u32,
                            vec![],
                            vec![format!("/v2/models/{m}"), format!("/v2/models/{m}/*")],
                            None,
                        )
                    })
                    .collect();
                rules.append(&mut models);
            }
        }
        rules.sort_by_key(|r| r.priority);
        rules
    }

    /// Whether a priority is one of this route's.
    fn holds(&self, priority: u32) -> bool {
        match self.route {
            Route::All => priority == CATCH_ALL_PRIORITY || block_of(priority) == Some(self.block),
            _ => block_of(priority) == Some(self.block),
        }
    }

    /// Refuses a route that takes a path one of the listener's other rules has, or the catch-all
    /// another service holds; `owner` names the other service holding a priority, where one does.
    pub fn check(
        &self,
        existing: &[ListenerRule],
        owner: impl Fn(u32) -> Option<String>,
    ) -> Result<(), RouteError> {
        let mine = self.rules();
        for rule in existing {
            let other = owner(rule.priority);
            if self.holds(rule.priority) {
                // Its own rule (a re-run) — unless another service has it.
                match other {
                    Some(other) => {
                        return Err(RouteError::Taken {
                            path: rule.paths.first().cloned().unwrap_or_default(),
                            other,
                            priority: rule.priority,
                        });
                    }
                    None => continue,
                }
            }
            if let Some(m) = mine.iter().find(|m| same_requests(m, rule)) {
                let path = match (
                    m.hosts.first(),
                    rule.paths.iter().find(|p| m.paths.contains(p)),
                ) {
                    (Some(h), Some(p)) => format!("{h}{p}"),
                    (Some(h), None) => h.clone(),
                    (None, p) => p.or(m.paths.first()).cloned().unwrap_or_default(),
                };
                return Err(RouteError::Taken {
                    path,
                    other: other.unwrap_or_else(|| "a rule triton-deploy did not make".into()),
                    priority: rule.priority,
                });
            }
        }
        Ok(())
    }
}

/// Whether two rules take the same requests: the same hosts (or none) and a path in common (or
/// neither with a path).
fn same_requests(mine: &Rule, other: &ListenerRule) -> bool {
    let hosts = |h: &[String]| {
        let mut h: Vec<String> = h.iter().map(|x| x.to_ascii_lowercase()).collect();
        h.sort();
        h
    };
    hosts(&mine.hosts) == hosts(&other.hosts)
        && (mine.paths.is_empty() && other.paths.is_empty()
            || other.paths.iter().any(|p| mine.paths.contains(p)))
}

/// A regular expression matching `s` literally.
fn regex_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            let special = r"\.+*?()|[]{}^$".contains(c);
            special.then_some('\\').into_iter().chain([c])
        })
        .collect()
}

/// The block a priority belongs to (for naming a rule's service).
pub fn block_of(priority: u32) -> Option<u32> {
    if (1..=2 * BLOCKS).contains(&priority) {
        Some((priority - 1) / 2)
    } else if (MODEL_BAND + 1..=MODEL_BAND + BLOCKS * BLOCK).contains(&priority) {
        Some((priority - MODEL_BAND - 1) / BLOCK)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn models(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn by_models(m: &[String]) -> Result<Route, RouteError> {
        route(RouteKind::Models, m, None, None)
    }

    fn lr(priority: u32, hosts: &[&str], paths: &[&str]) -> ListenerRule {
        ListenerRule {
            priority,
            hosts: models(hosts),
            paths: models(paths),
        }
    }

    #[test]
    fn a_service_keeps_its_block_and_another_probes_past_it() {
        let none = BTreeMap::new();
        let a = choose_block("text", None, &none).unwrap();
        assert_eq!(a, preferred_block("text"));
        assert_eq!(choose_block("text", None, &none).unwrap(), a, "stable");
        // Another service that prefers the same block gets the next free one.
        let taken = BTreeMap::from([(a, "text".to_string())]);
        let clash = (0..10_000)
            .map(|i| format!("svc{i}"))
            .find(|s| preferred_block(s) == a)
            .expect("some name hashes to the same block");
        assert_eq!(
            choose_block(&clash, None, &taken).unwrap(),
            (a + 1) % BLOCKS
        );
        // The block a service's stack records is kept, even when it is not the preferred one.
        assert_eq!(choose_block("text", Some(7), &none).unwrap(), 7);
        // ... unless another service holds it now.
        let seven = BTreeMap::from([(7, "other".to_string())]);
        assert_ne!(choose_block("text", Some(7), &seven).unwrap(), 7);
        let all: BTreeMap<u32, String> = (0..BLOCKS).map(|b| (b, format!("s{b}"))).collect();
        assert_eq!(choose_block("x", None, &all), Err(RouteError::Full));
    }

    #[test]
    fn rules_per_model_are_in_the_block_and_the_catch_all_is_last() {
        let r = Routing {
            route: by_models(&models(&["b", "a", "a"])).unwrap(),
            block: 3,
            grpc_host: None,
        };
        let rules = r.rules();
        assert_eq!(rules.len(), 2);
        assert!(rules.iter().all(|x| block_of(x.priority) == Some(3)));
        let a = rules.iter().find(|x| x.paths[0] == "/v2/models/a").unwrap();
        assert_eq!(a.paths, ["/v2/models/a", "/v2/models/a/*"]);
        // A model's priority does not move when another model comes.
        let more = Routing {
            route: by_models(&models(&["a", "b", "c"])).unwrap(),
            block: 3,
            grpc_host: None,
        };
        assert!(more.rules().contains(a));
        // Names whose slots meet still get distinct priorities.
        let many: Vec<String> = (0..BLOCK).map(|i| format!("m{i}")).collect();
        let full = Routing {
            route: by_models(&many).unwrap(),
            block: 0,
            grpc_host: None,
        };
        let mut p: Vec<u32> = full.rules().iter().map(|x| x.priority).collect();
        p.dedup();
        assert_eq!(p, (1001..=1000 + BLOCK).collect::<Vec<_>>());
        assert_eq!(block_of(1301), Some(3));
        assert_eq!(block_of(1400), Some(3));
        assert_eq!(block_of(1401), Some(4));
        assert_eq!(block_of(7), Some(3), "the head band: two a block");
        assert_eq!(block_of(8), Some(3));
        assert_eq!(block_of(9), Some(4));
        assert_eq!(block_of(1000), None);
        assert_eq!(block_of(CATCH_ALL_PRIORITY), None);
        let last = BLOCKS - 1;
        assert!(2 * last + 2 < 1000 && 1000 + (last + 1) * BLOCK < CATCH_ALL_PRIORITY);
        let all = Routing {
            route: Route::All,
            block: 3,
            grpc_host: None,
        };
        assert_eq!(all.rules()[0].priority, CATCH_ALL_PRIORITY);
        assert_eq!(all.rules()[0].paths, ["/*"]);
    }

    #[test]
    fn bad_models_and_taken_paths_are_refused_naming_the_other_service() {
        assert!(matches!(
            by_models(&models(&["a*b"])),
            Err(RouteError::Unmatchable(_))
        ));
        let many: Vec<String> = (0..=BLOCK).map(|i| format!("m{i}")).collect();
        assert_eq!(by_models(&many), Err(RouteError::TooManyModels(101)));
        let r = Routing {
            route: by_models(&models(&["a", "b"])).unwrap(),
            block: 3,
            grpc_host: None,
        };
        // Its own rules (a re-run) are no conflict, nor another model's.
        let own = r.rules()[0].priority;
        let existing = vec![
            ListenerRule {
                priority: own,
                hosts: vec![],
                paths: r.rules()[0].paths.clone(),
            },
            lr(1901, &[], &["/v2/models/c", "/v2/models/c/*"]),
            // The same model's paths for another host are another route.
            lr(
                19,
                &["other.example.com"],
                &["/v2/models/a", "/v2/models/a/*"],
            ),
        ];
        assert_eq!(r.check(&existing, |_| None), Ok(()));
        let clash = vec![lr(1905, &[], &["/v2/models/b", "/v2/models/b/*"])];
        let err = r
            .check(&clash, |p| {
                (block_of(p) == Some(9)).then(|| "images".to_string())
            })
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "/v2/models/b is routed to images already (listener rule priority 1905): one service per model, host or path prefix on a cluster"
        );
        let all = Routing {
            route: Route::All,
            block: 0,
            grpc_host: None,
        };
        let other_all = vec![lr(CATCH_ALL_PRIORITY, &[], &["/*"])];
        // The catch-all priority is this route's own: a re-run, not a conflict...
        assert_eq!(all.check(&other_all, |_| None), Ok(()));
        // ... unless another service holds it.
        let err = all
            .check(&other_all, |p| {
                (p == CATCH_ALL_PRIORITY).then(|| "images".to_string())
            })
            .unwrap_err();
        assert!(
            err.to_string().starts_with("/* is routed to images"),
            "{err}"
        );
    }

    #[test]
    fn host_path_and_grpc_rules_come_first_and_clash_on_the_same_host_or_prefix() {
        let host = Routing {
            route: route(RouteKind::Host, &[], Some("text.example.com"), None).unwrap(),
            block: 5,
            grpc_host: Some("text.example.com".into()),
        };
        let rules = host.rules();
        assert_eq!(rules.len(), 2);
        // gRPC first (its path is more specific), then every other request for the host.
        assert_eq!(
            (
                rules[0].priority,
                rules[0].target,
                rules[0].paths.as_slice()
            ),
            (11, Target::Grpc, [GRPC_PATHS.to_string()].as_slice())
        );
        assert_eq!(rules[0].hosts, ["text.example.com"]);
        assert_eq!((rules[1].priority, rules[1].target), (12, Target::Http));
        assert!(rules[1].paths.is_empty());
        // Both before any service's model rules.
        assert!(rules.iter().all(|r| r.priority < 1001));
        assert!(rules.iter().all(|r| block_of(r.priority) == Some(5)));

        let path = Routing {
            route: route(RouteKind::Path, &[], None, Some("/text.v1")).unwrap(),
            block: 6,
            grpc_host: None,
        };
        let rules = path.rules();
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0].paths, ["/text.v1/*"]);
        let (re, to) = rules[0].rewrite.clone().unwrap();
        assert_eq!((re.as_str(), to.as_str()), (r"^/text\.v1/(.*)$", "/$1"));

        // A re-run is no clash; another service on the same host, or the same prefix, is.
        assert_eq!(
            host.check(&[lr(12, &["text.example.com"], &[])], |_| None),
            Ok(())
        );
        let err = host
            .check(&[lr(40, &["TEXT.example.com"], &[])], |_| {
                Some("chat".into())
            })
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("text.example.com is routed to chat"),
            "{err}"
        );
        assert_eq!(
            host.check(&[lr(40, &["chat.example.com"], &[])], |_| Some(
                "chat".into()
            )),
            Ok(())
        );
        let err = path
            .check(&[lr(2, &[], &["/text.v1/*"])], |_| Some("old".into()))
            .unwrap_err();
        assert!(
            err.to_string().starts_with("/text.v1/* is routed to old"),
            "{err}"
        );
        // A catch-all service's gRPC rule is in its block's head band.
        let all = Routing {
            route: Route::All,
            block: 2,
            grpc_host: Some("a.example.com".into()),
        };
        assert_eq!(
            all.rules().iter().map(|r| r.priority).collect::<Vec<_>>(),
            [5, CATCH_ALL_PRIORITY]
        );
        assert_eq!(
            all.check(&[lr(5, &["a.example.com"], &[GRPC_PATHS])], |_| None),
            Ok(())
        );
    }
}
