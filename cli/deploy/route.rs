//! Routing on the cluster's shared load balancer: the listener rules that send a service its
//! requests (`network.route`), and the rule priorities it holds — a block of [`BLOCK`] per
//! service, chosen from the service's name, kept across re-runs (the service stack records it)
//! and never one another service of the cluster holds. Pure: the rollout reads the other
//! services and the listener's rules, this decides.

use std::collections::BTreeMap;

use serde::Serialize;

use super::spec::RouteKind;

/// Priorities per service: one rule per model, up to this many models.
pub const BLOCK: u32 = 100;
/// Blocks 0..BLOCKS cover priorities 1..=49,900; the catch-all route has the last priority.
const BLOCKS: u32 = 499;
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
}

/// One listener rule: forward requests whose path matches one of `paths`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rule {
    /// Its priority (lower is first).
    pub priority: u32,
    /// Path patterns (ALB wildcards).
    pub paths: Vec<String>,
}

/// A rule already on the listener (read from the load balancer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerRule {
    /// Its priority.
    pub priority: u32,
    /// Its path patterns.
    pub paths: Vec<String>,
}

/// The route of a service and the block of priorities it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Routing {
    /// What the service is routed by.
    #[serde(flatten)]
    pub route: Route,
    /// Its block of priorities: `block * BLOCK + 1 ..= (block + 1) * BLOCK`.
    pub block: u32,
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
        "{path} is routed to {other} already (listener rule priority {priority}): one service per model on a cluster"
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

/// The route of `kind`, given the models of the service's repository.
pub fn route(kind: RouteKind, models: &[String]) -> Result<Route, RouteError> {
    match kind {
        RouteKind::All => Ok(Route::All),
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
    /// The listener rules of this route, in priority order.
    pub fn rules(&self) -> Vec<Rule> {
        match &self.route {
            Route::All => vec![Rule {
                priority: CATCH_ALL_PRIORITY,
                paths: vec!["/*".into()],
            }],
            Route::Models { models } => {
                // A model keeps its slot of the block (from its name) when others come and go,
                // so a rule's path rarely changes under it; names that meet probe on.
                let mut used = [false; BLOCK as usize];
                let mut rules: Vec<Rule> = models
                    .iter()
                    .map(|m| {
                        let mut slot = (fnv1a(m) % BLOCK) as usize;
                        while used[slot] {
                            slot = (slot + 1) % BLOCK as usize;
                        }
                        used[slot] = true;
                        Rule {
                            priority: self.block * BLOCK + 1 + slot as u32,
                            paths: vec![format!("/v2/models/{m}"), format!("/v2/models/{m}/*")],
                        }
                    })
                    .collect();
                rules.sort_by_key(|r| r.priority);
                rules
            }
        }
    }

    /// Whether a priority is one of this route's.
    fn holds(&self, priority: u32) -> bool {
        match self.route {
            Route::All => priority == CATCH_ALL_PRIORITY,
            Route::Models { .. } => block_of(priority) == Some(self.block),
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
            if let Some(path) = rule
                .paths
                .iter()
                .find(|p| mine.iter().any(|m| m.paths.contains(p)))
            {
                return Err(RouteError::Taken {
                    path: path.clone(),
                    other: other.unwrap_or_else(|| "a rule triton-deploy did not make".into()),
                    priority: rule.priority,
                });
            }
        }
        Ok(())
    }
}

/// The block a priority belongs to (for naming a rule's service).
pub fn block_of(priority: u32) -> Option<u32> {
    (1..=BLOCKS * BLOCK)
        .contains(&priority)
        .then(|| (priority - 1) / BLOCK)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn models(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
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
            route: route(RouteKind::Models, &models(&["b", "a", "a"])).unwrap(),
            block: 3,
        };
        let rules = r.rules();
        assert_eq!(rules.len(), 2);
        assert!(rules.iter().all(|x| block_of(x.priority) == Some(3)));
        let a = rules.iter().find(|x| x.paths[0] == "/v2/models/a").unwrap();
        assert_eq!(a.paths, ["/v2/models/a", "/v2/models/a/*"]);
        // A model's priority does not move when another model comes.
        let more = Routing {
            route: route(RouteKind::Models, &models(&["a", "b", "c"])).unwrap(),
            block: 3,
        };
        assert!(more.rules().contains(a));
        // Names whose slots meet still get distinct priorities.
        let many: Vec<String> = (0..BLOCK).map(|i| format!("m{i}")).collect();
        let full = Routing {
            route: route(RouteKind::Models, &many).unwrap(),
            block: 0,
        };
        let mut p: Vec<u32> = full.rules().iter().map(|x| x.priority).collect();
        p.dedup();
        assert_eq!(p, (1..=BLOCK).collect::<Vec<_>>());
        assert_eq!(block_of(301), Some(3));
        assert_eq!(block_of(400), Some(3));
        assert_eq!(block_of(401), Some(4));
        assert_eq!(block_of(CATCH_ALL_PRIORITY), None);
        let all = Routing {
            route: Route::All,
            block: 3,
        };
        assert_eq!(all.rules()[0].priority, CATCH_ALL_PRIORITY);
        assert_eq!(all.rules()[0].paths, ["/*"]);
    }

    #[test]
    fn bad_models_and_taken_paths_are_refused_naming_the_other_service() {
        assert!(matches!(
            route(RouteKind::Models, &models(&["a*b"])),
            Err(RouteError::Unmatchable(_))
        ));
        let many: Vec<String> = (0..=BLOCK).map(|i| format!("m{i}")).collect();
        assert_eq!(
            route(RouteKind::Models, &many),
            Err(RouteError::TooManyModels(101))
        );
        let r = Routing {
            route: route(RouteKind::Models, &models(&["a", "b"])).unwrap(),
            block: 3,
        };
        // Its own rules (a re-run) are no conflict, nor another model's.
        let own = r.rules()[0].priority;
        let existing = vec![
            ListenerRule {
                priority: own,
                paths: r.rules()[0].paths.clone(),
            },
            ListenerRule {
                priority: 901,
                paths: models(&["/v2/models/c", "/v2/models/c/*"]),
            },
        ];
        assert_eq!(r.check(&existing, |_| None), Ok(()));
        let clash = vec![ListenerRule {
            priority: 905,
            paths: models(&["/v2/models/b", "/v2/models/b/*"]),
        }];
        let err = r
            .check(&clash, |p| {
                (block_of(p) == Some(9)).then(|| "images".to_string())
            })
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "/v2/models/b is routed to images already (listener rule priority 905): one service per model on a cluster"
        );
        let all = Routing {
            route: Route::All,
            block: 0,
        };
        let other_all = vec![ListenerRule {
            priority: CATCH_ALL_PRIORITY,
            paths: models(&["/*"]),
        }];
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
}
