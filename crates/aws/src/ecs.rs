//! ECS: task definitions (taken and returned in the ECS API's JSON shape, so that what `render`
//! prints is what is registered and what is read back can be diffed), services and their
//! deployments, and stopped tasks' reasons.

use aws_sdk_ecs::Client;
use aws_sdk_ecs::types::{
    AwsVpcConfiguration, CapacityProviderStrategyItem, ContainerDefinition,
    DeploymentCircuitBreaker, DeploymentConfiguration, DesiredStatus, EfsAuthorizationConfig,
    EfsAuthorizationConfigIam, EfsTransitEncryption, EfsVolumeConfiguration, HealthCheck,
    KeyValuePair, LinuxParameters, LoadBalancer, LogConfiguration, LogDriver, MountPoint,
    NetworkConfiguration, NetworkMode, PlacementStrategy, PlacementStrategyType, PortMapping,
    PropagateTags, ResourceRequirement, ResourceType, Tag, TaskDefinitionField, TransportProtocol,
    Ulimit, UlimitName, Volume,
};
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::{ApiError, api};

const SVC: &str = "ECS";
/// Triton's gRPC port, where a second target group sends.
const GRPC_PORT: i32 = 8001;

/// A task definition in the API's JSON shape did not map onto the API's types.
fn bad(what: impl std::fmt::Display) -> ApiError {
    ApiError::local(
        SVC,
        "RegisterTaskDefinition",
        format!("invalid task definition: {what}"),
    )
}

fn s<'a>(v: &'a Value, k: &str) -> Option<&'a str> {
    v.get(k).and_then(Value::as_str)
}
fn n(v: &Value, k: &str) -> Option<i32> {
    v.get(k).and_then(Value::as_i64).map(|x| x as i32)
}
fn strings(v: &Value, k: &str) -> Option<Vec<String>> {
    v.get(k).and_then(Value::as_array).map(|a| {
        a.iter()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect()
    })
}
fn list<'a>(v: &'a Value, k: &str) -> &'a [Value] {
    v.get(k)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// JSON container definition → the SDK's, for every field `taskdef` writes.
pub fn container_from_json(c: &Value) -> Result<ContainerDefinition, ApiError> {
    let mut b = ContainerDefinition::builder()
        .set_name(s(c, "name").map(str::to_string))
        .set_image(s(c, "image").map(str::to_string))
        .set_essential(c.get("essential").and_then(Value::as_bool))
        .set_cpu(n(c, "cpu"))
        .set_memory(n(c, "memory"))
        .set_memory_reservation(n(c, "memoryReservation"))
        .set_command(strings(c, "command"))
        .set_entry_point(strings(c, "entryPoint"))
        .set_stop_timeout(n(c, "stopTimeout"))
        .set_user(s(c, "user").map(str::to_string));
    for r in list(c, "resourceRequirements") {
        b = b.resource_requirements(
            ResourceRequirement::builder()
                .r#type(ResourceType::from(s(r, "type").unwrap_or_default()))
                .value(s(r, "value").unwrap_or_default())
                .build()
                .map_err(bad)?,
        );
    }
    for p in list(c, "portMappings") {
        let mut pm = PortMapping::builder()
            .set_container_port(n(p, "containerPort"))
            .set_host_port(n(p, "hostPort"))
            .set_name(s(p, "name").map(str::to_string))
            .set_protocol(s(p, "protocol").map(TransportProtocol::from));
        if let Some(a) = s(p, "appProtocol") {
            pm = pm.app_protocol(a.into());
        }
        b = b.port_mappings(pm.build());
    }
    if let Some(h) = c.get("healthCheck") {
        b = b.health_check(
            HealthCheck::builder()
                .set_command(strings(h, "command"))
                .set_interval(n(h, "interval"))
                .set_timeout(n(h, "timeout"))
                .set_retries(n(h, "retries"))
                .set_start_period(n(h, "startPeriod"))
                .build()
                .map_err(bad)?,
        );
    }
    if let Some(l) = c.get("linuxParameters") {
        b = b.linux_parameters(
            LinuxParameters::builder()
                .set_shared_memory_size(n(l, "sharedMemorySize"))
                .set_init_process_enabled(l.get("initProcessEnabled").and_then(Value::as_bool))
                .build(),
        );
    }
    for u in list(c, "ulimits") {
        b = b.ulimits(
            Ulimit::builder()
                .name(UlimitName::from(s(u, "name").unwrap_or_default()))
                .soft_limit(n(u, "softLimit").unwrap_or_default())
                .hard_limit(n(u, "hardLimit").unwrap_or_default())
                .build()
                .map_err(bad)?,
        );
    }
    if let Some(l) = c.get("logConfiguration") {
        let mut lb = LogConfiguration::builder()
            .log_driver(LogDriver::from(s(l, "logDriver").unwrap_or_default()));
        if let Some(o) = l.get("options").and_then(Value::as_object) {
            for (k, v) in o {
                lb = lb.options(k, v.as_str().unwrap_or_default());
            }
        }
        b = b.log_configuration(lb.build().map_err(bad)?);
    }
    for m in list(c, "mountPoints") {
        b = b.mount_points(
            MountPoint::builder()
                .set_source_volume(s(m, "sourceVolume").map(str::to_string))
                .set_container_path(s(m, "containerPath").map(str::to_string))
                .set_read_only(m.get("readOnly").and_then(Value::as_bool))
                .build(),
        );
    }
    for e in list(c, "environment") {
        b = b.environment(
            KeyValuePair::builder()
                .set_name(s(e, "name").map(str::to_string))
                .set_value(s(e, "value").map(str::to_string))
                .build(),
        );
    }
    Ok(b.build())
}

fn put(m: &mut Map<String, Value>, k: &str, v: Option<Value>) {
    if let Some(v) = v {
        m.insert(k.to_string(), v);
    }
}

/// The SDK's container definition → JSON, the inverse of [`container_from_json`] (fields ECS fills
/// with defaults when they were not sent stay out only when empty).
pub fn container_to_json(c: &ContainerDefinition) -> Value {
    let mut m = Map::new();
    put(&mut m, "name", c.name().map(|x| json!(x)));
    put(&mut m, "image", c.image().map(|x| json!(x)));
    put(&mut m, "essential", c.essential().map(|x| json!(x)));
    if c.cpu() != 0 {
        m.insert("cpu".into(), json!(c.cpu()));
    }
    put(&mut m, "memory", c.memory().map(|x| json!(x)));
    put(
        &mut m,
        "memoryReservation",
        c.memory_reservation().map(|x| json!(x)),
    );
    if !c.command().is_empty() {
        m.insert("command".into(), json!(c.command()));
    }
    if !c.entry_point().is_empty() {
        m.insert("entryPoint".into(), json!(c.entry_point()));
    }
    put(&mut m, "stopTimeout", c.stop_timeout().map(|x| json!(x)));
    put(&mut m, "user", c.user().map(|x| json!(x)));
    if !c.resource_requirements().is_empty() {
        m.insert(
            "resourceRequirements".into(),
            c.resource_requirements()
                .iter()
                .map(|r| json!({"type": r.r#type().as_str(), "value": r.value()}))
                .collect(),
        );
    }
    if !c.port_mappings().is_empty() {
        m.insert(
            "portMappings".into(),
            c.port_mappings()
                .iter()
                .map(|p| {
                    let mut o = Map::new();
                    put(
                        &mut o,
                        "containerPort",
                        p.container_port().map(|x| json!(x)),
                    );
                    put(&mut o, "hostPort", p.host_port().map(|x| json!(x)));
                    put(&mut o, "protocol", p.protocol().map(|x| json!(x.as_str())));
                    put(&mut o, "name", p.name().map(|x| json!(x)));
                    put(
                        &mut o,
                        "appProtocol",
                        p.app_protocol().map(|x| json!(x.as_str())),
                    );
                    Value::Object(o)
                })
                .collect(),
        );
    }
    if let Some(h) = c.health_check() {
        let mut o = Map::new();
        o.insert("command".into(), json!(h.command()));
        put(&mut o, "interval", h.interval().map(|x| json!(x)));
        put(&mut o, "timeout", h.timeout().map(|x| json!(x)));
        put(&mut o, "retries", h.retries().map(|x| json!(x)));
        put(&mut o, "startPeriod", h.start_period().map(|x| json!(x)));
        m.insert("healthCheck".into(), Value::Object(o));
    }
    if let Some(l) = c.linux_parameters() {
        let mut o = Map::new();
        put(
            &mut o,
            "sharedMemorySize",
            l.shared_memory_size().map(|x| json!(x)),
        );
        put(
            &mut o,
            "initProcessEnabled",
            l.init_process_enabled().map(|x| json!(x)),
        );
        m.insert("linuxParameters".into(), Value::Object(o));
    }
    if !c.ulimits().is_empty() {
        m.insert(
            "ulimits".into(),
            c.ulimits()
                .iter()
                .map(|u| json!({"name": u.name().as_str(), "softLimit": u.soft_limit(), "hardLimit": u.hard_limit()}))
                .collect(),
        );
    }
    if let Some(l) = c.log_configuration() {
        let options: Map<String, Value> = l
            .options()
            .map(|o| o.iter().map(|(k, v)| (k.clone(), json!(v))).collect())
            .unwrap_or_default();
        m.insert(
            "logConfiguration".into(),
            json!({"logDriver": l.log_driver().as_str(), "options": options}),
        );
    }
    if !c.mount_points().is_empty() {
        m.insert(
            "mountPoints".into(),
            c.mount_points()
                .iter()
                .map(|p| {
                    let mut o = Map::new();
                    put(&mut o, "sourceVolume", p.source_volume().map(|x| json!(x)));
                    put(
                        &mut o,
                        "containerPath",
                        p.container_path().map(|x| json!(x)),
                    );
                    put(&mut o, "readOnly", p.read_only().map(|x| json!(x)));
                    Value::Object(o)
                })
                .collect(),
        );
    }
    if !c.environment().is_empty() {
        m.insert(
            "environment".into(),
            c.environment()
                .iter()
                .map(|e| json!({"name": e.name(), "value": e.value()}))
                .collect(),
        );
    }
    Value::Object(m)
}

/// JSON volume → the SDK's (EFS volumes and plain named volumes).
pub fn volume_from_json(v: &Value) -> Result<Volume, ApiError> {
    let mut b = Volume::builder().set_name(s(v, "name").map(str::to_string));
    if let Some(e) = v.get("efsVolumeConfiguration") {
        let mut eb = EfsVolumeConfiguration::builder()
            .file_system_id(s(e, "fileSystemId").unwrap_or_default())
            .set_root_directory(s(e, "rootDirectory").map(str::to_string))
            .set_transit_encryption(s(e, "transitEncryption").map(EfsTransitEncryption::from));
        if let Some(a) = e.get("authorizationConfig") {
            eb = eb.authorization_config(
                EfsAuthorizationConfig::builder()
                    .set_access_point_id(s(a, "accessPointId").map(str::to_string))
                    .set_iam(s(a, "iam").map(EfsAuthorizationConfigIam::from))
                    .build(),
            );
        }
        b = b.efs_volume_configuration(eb.build().map_err(bad)?);
    }
    Ok(b.build())
}

/// A task definition volume in the API's JSON form.
pub fn volume_to_json(v: &Volume) -> Value {
    let mut m = Map::new();
    put(&mut m, "name", v.name().map(|x| json!(x)));
    if let Some(e) = v.efs_volume_configuration() {
        let mut o = Map::new();
        o.insert("fileSystemId".into(), json!(e.file_system_id()));
        put(
            &mut o,
            "rootDirectory",
            e.root_directory().map(|x| json!(x)),
        );
        put(
            &mut o,
            "transitEncryption",
            e.transit_encryption().map(|x| json!(x.as_str())),
        );
        if let Some(a) = e.authorization_config() {
            let mut ao = Map::new();
            put(
                &mut ao,
                "accessPointId",
                a.access_point_id().map(|x| json!(x)),
            );
            put(&mut ao, "iam", a.iam().map(|x| json!(x.as_str())));
            o.insert("authorizationConfig".into(), Value::Object(ao));
        }
        m.insert("efsVolumeConfiguration".into(), Value::Object(o));
    }
    Value::Object(m)
}

/// A registered task definition revision: its ARN, revision, and the definition in JSON shape
/// (only the fields `taskdef` writes, so it compares with a rendered one).
#[derive(Debug, Clone, Serialize)]
pub struct TaskDefinition {
    /// The revision's ARN.
    pub arn: String,
    /// Its revision number.
    pub revision: i32,
    /// `ACTIVE` or `INACTIVE`.
    pub status: String,
    /// The definition as the API's JSON.
    pub definition: Value,
}

/// The desired service, in ECS terms.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServiceConfig {
    /// The cluster.
    pub cluster: String,
    /// The service's name.
    pub service_name: String,
    /// The task definition ARN it runs.
    pub task_definition: String,
    /// `None` leaves the desired count to autoscaling on updates.
    pub desired_count: Option<i32>,
    /// (capacity provider, weight, base)
    pub capacity_provider_strategy: Vec<(String, i32, i32)>,
    /// Rolling deployments keep at least this percentage running.
    pub minimum_healthy_percent: i32,
    /// …and run at most this percentage.
    pub maximum_percent: i32,
    /// Roll back a deployment the circuit breaker stops.
    pub circuit_breaker_rollback: bool,
    /// Seconds health checks are ignored after a task starts.
    pub health_check_grace_period_seconds: i32,
    /// The load balancer's target group.
    pub target_group_arn: String,
    /// A second target group on the container's gRPC port (8001), if any.
    pub grpc_target_group_arn: Option<String>,
    /// The container the target group sends to.
    pub container_name: String,
    /// Its port.
    pub container_port: i32,
    /// Subnets of the tasks' network interfaces.
    pub subnets: Vec<String>,
    /// Their security groups.
    pub security_groups: Vec<String>,
    /// Allow ECS Exec.
    pub enable_execute_command: bool,
    /// Tags on the service.
    pub tags: Vec<(String, String)>,
}

/// One service deployment as ECS reports it.
#[derive(Debug, Clone, Serialize)]
pub struct Deployment {
    /// The deployment's id.
    pub id: String,
    /// PRIMARY, ACTIVE or INACTIVE.
    pub status: String,
    /// The task definition it deploys.
    pub task_definition: String,
    /// Tasks wanted.
    pub desired: i32,
    /// Tasks running.
    pub running: i32,
    /// Tasks starting.
    pub pending: i32,
    /// Tasks that failed to start.
    pub failed: i32,
    /// IN_PROGRESS, COMPLETED or FAILED.
    pub rollout_state: Option<String>,
    /// Why it is in its rollout state, if ECS says.
    pub rollout_state_reason: Option<String>,
}

/// One of the service's events.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceEvent {
    /// Its id.
    pub id: String,
    /// When (RFC 3339).
    pub at: Option<String>,
    /// What ECS said.
    pub message: String,
}

/// A service as observed.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceState {
    /// The service's ARN.
    pub arn: String,
    /// `ACTIVE`, `DRAINING` or `INACTIVE`.
    pub status: String,
    /// The task definition it runs.
    pub task_definition: String,
    /// Tasks wanted.
    pub desired: i32,
    /// Tasks running.
    pub running: i32,
    /// Tasks starting.
    pub pending: i32,
    /// Its deployments, newest first.
    pub deployments: Vec<Deployment>,
    /// Newest first, as ECS returns them.
    pub events: Vec<ServiceEvent>,
    /// Its tags.
    pub tags: Vec<(String, String)>,
    /// The fields of the service definition ECS reports, in the [`ServiceConfig`] JSON shape.
    pub observed: Value,
}

/// A stopped task and why it stopped.
#[derive(Debug, Clone, Serialize)]
pub struct StoppedTask {
    /// The task's ARN.
    pub arn: String,
    /// The task definition it ran.
    pub task_definition: String,
    /// Why it stopped.
    pub stopped_reason: Option<String>,
    /// Why its containers stopped.
    pub container_reasons: Vec<String>,
}

/// The fields `CreateService` and `UpdateService` share, set the same way on either request.
macro_rules! service_fields {
    ($req:expr, $c:expr) => {
        $req.cluster(&$c.cluster)
            .task_definition(&$c.task_definition)
            .set_capacity_provider_strategy(Some(Ecs::strategy($c)))
            .deployment_configuration(Ecs::deployment_configuration($c))
            .health_check_grace_period_seconds($c.health_check_grace_period_seconds)
            .set_placement_strategy(Some(Ecs::placement()))
            .set_load_balancers(Some(Ecs::load_balancers($c)))
            .network_configuration(Ecs::network($c)?)
            .propagate_tags(PropagateTags::Service)
            .enable_ecs_managed_tags(true)
            .enable_execute_command($c.enable_execute_command)
    };
}

/// A container instance of a cluster, as ECS counts it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContainerInstance {
    /// Its EC2 instance.
    pub ec2_instance: String,
    /// ACTIVE, DRAINING, ...
    pub status: String,
    /// The GPUs the agent registered.
    pub gpus: usize,
    /// Those no task holds.
    pub gpus_free: usize,
    /// Tasks running on it.
    pub running_tasks: i32,
}

/// ECS.
pub struct Ecs {
    client: Client,
}

impl Ecs {
    /// A client from the SDK configuration.
    pub fn new(config: &aws_config::SdkConfig) -> Self {
        Ecs {
            client: Client::new(config),
        }
    }

    /// The newest ACTIVE revision of `family`, or `None`.
    pub async fn latest_task_definition(
        &self,
        family: &str,
    ) -> Result<Option<TaskDefinition>, ApiError> {
        match self.describe_task_definition(family).await {
            Ok(t) => Ok(Some(t)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// A task definition by family, `family:revision` or ARN.
    pub async fn describe_task_definition(&self, id: &str) -> Result<TaskDefinition, ApiError> {
        let out = self
            .client
            .describe_task_definition()
            .task_definition(id)
            .include(TaskDefinitionField::Tags)
            .send()
            .await
            .map_err(api(SVC, "DescribeTaskDefinition"))?;
        let td = out.task_definition().ok_or_else(|| {
            ApiError::local(
                SVC,
                "DescribeTaskDefinition",
                format!("no task definition {id}"),
            )
        })?;
        let mut def = json!({
            "family": td.family(),
            "requiresCompatibilities": td.requires_compatibilities().iter().map(|c| c.as_str()).collect::<Vec<_>>(),
            "networkMode": td.network_mode().map(|m| m.as_str()),
            "executionRoleArn": td.execution_role_arn(),
            "taskRoleArn": td.task_role_arn(),
            "containerDefinitions": td.container_definitions().iter().map(container_to_json).collect::<Vec<_>>(),
            "volumes": td.volumes().iter().map(volume_to_json).collect::<Vec<_>>(),
        });
        if !out.tags().is_empty() {
            def["tags"] = out
                .tags()
                .iter()
                .map(|t| json!({"key": t.key(), "value": t.value()}))
                .collect();
        }
        Ok(TaskDefinition {
            arn: td.task_definition_arn().unwrap_or_default().to_string(),
            revision: td.revision(),
            status: td
                .status()
                .map(|s| s.as_str().to_string())
                .unwrap_or_default(),
            definition: def,
        })
    }

    /// Registers `def` (the ECS API's JSON shape) as a new revision.
    pub async fn register_task_definition(&self, def: &Value) -> Result<TaskDefinition, ApiError> {
        let containers = list(def, "containerDefinitions")
            .iter()
            .map(container_from_json)
            .collect::<Result<Vec<_>, _>>()?;
        let volumes = list(def, "volumes")
            .iter()
            .map(volume_from_json)
            .collect::<Result<Vec<_>, _>>()?;
        let tags: Vec<Tag> = list(def, "tags")
            .iter()
            .map(|t| {
                Tag::builder()
                    .set_key(s(t, "key").map(str::to_string))
                    .set_value(s(t, "value").map(str::to_string))
                    .build()
            })
            .collect();
        let mut req = self
            .client
            .register_task_definition()
            .family(s(def, "family").unwrap_or_default())
            .set_network_mode(s(def, "networkMode").map(NetworkMode::from))
            .set_execution_role_arn(s(def, "executionRoleArn").map(str::to_string))
            .set_task_role_arn(s(def, "taskRoleArn").map(str::to_string))
            .set_container_definitions(Some(containers))
            .set_volumes(Some(volumes))
            .set_tags((!tags.is_empty()).then_some(tags));
        for c in strings(def, "requiresCompatibilities").unwrap_or_default() {
            req = req.requires_compatibilities(c.as_str().into());
        }
        let out = req
            .send()
            .await
            .map_err(api(SVC, "RegisterTaskDefinition"))?;
        let td = out.task_definition().ok_or_else(|| {
            ApiError::local(
                SVC,
                "RegisterTaskDefinition",
                "no task definition in the answer",
            )
        })?;
        Ok(TaskDefinition {
            arn: td.task_definition_arn().unwrap_or_default().to_string(),
            revision: td.revision(),
            status: "ACTIVE".into(),
            definition: def.clone(),
        })
    }

    /// ACTIVE revisions of `family`, newest first.
    pub async fn revisions(&self, family: &str) -> Result<Vec<String>, ApiError> {
        let mut arns = Vec::new();
        let mut next = None;
        loop {
            let out = self
                .client
                .list_task_definitions()
                .family_prefix(family)
                .sort(aws_sdk_ecs::types::SortOrder::Desc)
                .set_next_token(next)
                .send()
                .await
                .map_err(api(SVC, "ListTaskDefinitions"))?;
            arns.extend(
                out.task_definition_arns()
                    .iter()
                    // family_prefix matches prefixes: keep this family only.
                    .filter(|a| {
                        a.rsplit('/')
                            .next()
                            .and_then(|x| x.rsplit_once(':'))
                            .is_some_and(|(f, _)| f == family)
                    })
                    .cloned(),
            );
            next = out.next_token().map(str::to_string);
            if next.is_none() {
                return Ok(arns);
            }
        }
    }

    /// The cluster's container instances (none when the cluster does not exist).
    pub async fn container_instances(
        &self,
        cluster: &str,
    ) -> Result<Vec<ContainerInstance>, ApiError> {
        let mut arns = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let out = match self
                .client
                .list_container_instances()
                .cluster(cluster)
                .set_next_token(token.clone())
                .send()
                .await
            {
                Ok(o) => o,
                Err(e) => {
                    let e = api(SVC, "ListContainerInstances")(e);
                    if e.has_code("ClusterNotFoundException") {
                        return Ok(Vec::new());
                    }
                    return Err(e);
                }
            };
            arns.extend(out.container_instance_arns().iter().cloned());
            token = out.next_token().map(str::to_string);
            if token.is_none() {
                break;
            }
        }
        let gpus = |r: &[aws_sdk_ecs::types::Resource]| {
            r.iter()
                .filter(|x| x.name() == Some("GPU"))
                .map(|x| x.string_set_value().len())
                .sum::<usize>()
        };
        let mut found = Vec::new();
        // DescribeContainerInstances takes up to 100 at a time.
        for chunk in arns.chunks(100) {
            let out = self
                .client
                .describe_container_instances()
                .cluster(cluster)
                .set_container_instances(Some(chunk.to_vec()))
                .send()
                .await
                .map_err(api(SVC, "DescribeContainerInstances"))?;
            for c in out.container_instances() {
                found.push(ContainerInstance {
                    ec2_instance: c.ec2_instance_id().unwrap_or_default().to_string(),
                    status: c.status().unwrap_or_default().to_string(),
                    gpus: gpus(c.registered_resources()),
                    gpus_free: gpus(c.remaining_resources()),
                    running_tasks: c.running_tasks_count(),
                });
            }
        }
        Ok(found)
    }

    /// The service, or `None` when it does not exist or is INACTIVE (deleted).
    pub async fn describe_service(
        &self,
        cluster: &str,
        name: &str,
    ) -> Result<Option<ServiceState>, ApiError> {
        let out = match self
            .client
            .describe_services()
            .cluster(cluster)
            .services(name)
            .include(aws_sdk_ecs::types::ServiceField::Tags)
            .send()
            .await
        {
            Ok(o) => o,
            Err(e) => {
                let e = api(SVC, "DescribeServices")(e);
                if e.has_code("ClusterNotFoundException") {
                    return Ok(None);
                }
                return Err(e);
            }
        };
        let Some(svc) = out.services().first() else {
            return Ok(None);
        };
        let status = svc.status().unwrap_or_default().to_string();
        if status == "INACTIVE" {
            return Ok(None);
        }
        let mut observed = Map::new();
        let strategy: Vec<Value> = svc
            .capacity_provider_strategy()
            .iter()
            .map(|c| json!([c.capacity_provider(), c.weight(), c.base()]))
            .collect();
        if !strategy.is_empty() {
            observed.insert("capacityProviderStrategy".into(), Value::Array(strategy));
        }
        if let Some(d) = svc.deployment_configuration() {
            put(
                &mut observed,
                "minimumHealthyPercent",
                d.minimum_healthy_percent().map(|x| json!(x)),
            );
            put(
                &mut observed,
                "maximumPercent",
                d.maximum_percent().map(|x| json!(x)),
            );
            put(
                &mut observed,
                "circuitBreakerRollback",
                d.deployment_circuit_breaker()
                    .map(|c| json!(c.enable() && c.rollback())),
            );
        }
        put(
            &mut observed,
            "healthCheckGracePeriodSeconds",
            svc.health_check_grace_period_seconds().map(|x| json!(x)),
        );
        if let Some(lb) = svc
            .load_balancers()
            .iter()
            .find(|lb| lb.container_port() == Some(GRPC_PORT))
        {
            put(
                &mut observed,
                "grpcTargetGroupArn",
                lb.target_group_arn().map(|x| json!(x)),
            );
        }
        if let Some(lb) = svc
            .load_balancers()
            .iter()
            .find(|lb| lb.container_port() != Some(GRPC_PORT))
        {
            put(
                &mut observed,
                "targetGroupArn",
                lb.target_group_arn().map(|x| json!(x)),
            );
            put(
                &mut observed,
                "containerName",
                lb.container_name().map(|x| json!(x)),
            );
            put(
                &mut observed,
                "containerPort",
                lb.container_port().map(|x| json!(x)),
            );
        }
        if let Some(v) = svc
            .network_configuration()
            .and_then(|n| n.awsvpc_configuration())
        {
            observed.insert("subnets".into(), json!(v.subnets()));
            observed.insert("securityGroups".into(), json!(v.security_groups()));
        }
        // The SDK reads an absent `enableExecuteCommand` as false, and emulators leave it out:
        // only `true` is known to be what the service says; otherwise the configuration hash
        // judges it.
        if svc.enable_execute_command() {
            observed.insert("enableExecuteCommand".into(), json!(true));
        }
        Ok(Some(ServiceState {
            arn: svc.service_arn().unwrap_or_default().to_string(),
            status,
            task_definition: svc.task_definition().unwrap_or_default().to_string(),
            desired: svc.desired_count(),
            running: svc.running_count(),
            pending: svc.pending_count(),
            deployments: svc
                .deployments()
                .iter()
                .map(|d| Deployment {
                    id: d.id().unwrap_or_default().to_string(),
                    status: d.status().unwrap_or_default().to_string(),
                    task_definition: d.task_definition().unwrap_or_default().to_string(),
                    desired: d.desired_count(),
                    running: d.running_count(),
                    pending: d.pending_count(),
                    failed: d.failed_tasks(),
                    rollout_state: d.rollout_state().map(|r| r.as_str().to_string()),
                    rollout_state_reason: d.rollout_state_reason().map(str::to_string),
                })
                .collect(),
            events: svc
                .events()
                .iter()
                .map(|e| ServiceEvent {
                    id: e.id().unwrap_or_default().to_string(),
                    at: e.created_at().map(|t| t.to_string()),
                    message: e.message().unwrap_or_default().to_string(),
                })
                .collect(),
            tags: svc
                .tags()
                .iter()
                .map(|t| {
                    (
                        t.key().unwrap_or_default().to_string(),
                        t.value().unwrap_or_default().to_string(),
                    )
                })
                .collect(),
            observed: Value::Object(observed),
        }))
    }

    fn deployment_configuration(c: &ServiceConfig) -> DeploymentConfiguration {
        DeploymentConfiguration::builder()
            .deployment_circuit_breaker(
                DeploymentCircuitBreaker::builder()
                    .enable(true)
                    .rollback(c.circuit_breaker_rollback)
                    .build(),
            )
            .minimum_healthy_percent(c.minimum_healthy_percent)
            .maximum_percent(c.maximum_percent)
            .build()
    }

    /// The service's target groups: HTTP on the container port, and gRPC on 8001 when it has one.
    fn load_balancers(c: &ServiceConfig) -> Vec<LoadBalancer> {
        let lb = |arn: &str, port: i32| {
            LoadBalancer::builder()
                .target_group_arn(arn)
                .container_name(&c.container_name)
                .container_port(port)
                .build()
        };
        let mut out = vec![lb(&c.target_group_arn, c.container_port)];
        if let Some(arn) = &c.grpc_target_group_arn {
            out.push(lb(arn, GRPC_PORT));
        }
        out
    }

    fn strategy(c: &ServiceConfig) -> Vec<CapacityProviderStrategyItem> {
        c.capacity_provider_strategy
            .iter()
            .filter_map(|(cp, w, b)| {
                CapacityProviderStrategyItem::builder()
                    .capacity_provider(cp)
                    .weight(*w)
                    .base(*b)
                    .build()
                    .ok()
            })
            .collect()
    }

    fn network(c: &ServiceConfig) -> Result<NetworkConfiguration, ApiError> {
        Ok(NetworkConfiguration::builder()
            .awsvpc_configuration(
                AwsVpcConfiguration::builder()
                    .set_subnets(Some(c.subnets.clone()))
                    .set_security_groups(Some(c.security_groups.clone()))
                    .build()
                    .map_err(|e| ApiError::local(SVC, "CreateService", e.to_string()))?,
            )
            .build())
    }

    fn placement() -> Vec<PlacementStrategy> {
        vec![
            PlacementStrategy::builder()
                .r#type(PlacementStrategyType::Spread)
                .field("attribute:ecs.availability-zone")
                .build(),
            PlacementStrategy::builder()
                .r#type(PlacementStrategyType::Binpack)
                .field("memory")
                .build(),
        ]
    }

    /// Creates the service; its ARN.
    pub async fn create_service(&self, c: &ServiceConfig) -> Result<String, ApiError> {
        let req = self
            .client
            .create_service()
            .service_name(&c.service_name)
            .desired_count(c.desired_count.unwrap_or(1))
            .set_tags(Some(
                c.tags
                    .iter()
                    .map(|(k, v)| Tag::builder().key(k).value(v).build())
                    .collect(),
            ));
        let out = service_fields!(req, c)
            .send()
            .await
            .map_err(api(SVC, "CreateService"))?;
        Ok(out
            .service()
            .and_then(|s| s.service_arn())
            .unwrap_or_default()
            .to_string())
    }

    /// Updates the service to `c`. The desired count is only sent when `c` has one (autoscaling
    /// owns it otherwise).
    pub async fn update_service(&self, c: &ServiceConfig, force: bool) -> Result<(), ApiError> {
        let req = self
            .client
            .update_service()
            .service(&c.service_name)
            .set_desired_count(c.desired_count)
            .force_new_deployment(force);
        service_fields!(req, c)
            .send()
            .await
            .map_err(api(SVC, "UpdateService"))?;
        Ok(())
    }

    /// Points the service at another revision (rollback), nothing else.
    pub async fn set_task_definition(
        &self,
        cluster: &str,
        service: &str,
        task_definition: &str,
    ) -> Result<(), ApiError> {
        self.client
            .update_service()
            .cluster(cluster)
            .service(service)
            .task_definition(task_definition)
            .send()
            .await
            .map_err(api(SVC, "UpdateService"))?;
        Ok(())
    }

    /// Sets the service's desired task count.
    pub async fn set_desired_count(
        &self,
        cluster: &str,
        service: &str,
        count: i32,
    ) -> Result<(), ApiError> {
        self.client
            .update_service()
            .cluster(cluster)
            .service(service)
            .desired_count(count)
            .send()
            .await
            .map_err(api(SVC, "UpdateService"))?;
        Ok(())
    }

    /// Tags the resource `arn`.
    pub async fn tag(&self, arn: &str, tags: &[(String, String)]) -> Result<(), ApiError> {
        self.client
            .tag_resource()
            .resource_arn(arn)
            .set_tags(Some(
                tags.iter()
                    .map(|(k, v)| Tag::builder().key(k).value(v).build())
                    .collect(),
            ))
            .send()
            .await
            .map_err(api(SVC, "TagResource"))?;
        Ok(())
    }

    /// Deletes the service (forced: its tasks stop).
    pub async fn delete_service(&self, cluster: &str, service: &str) -> Result<(), ApiError> {
        self.client
            .delete_service()
            .cluster(cluster)
            .service(service)
            .send()
            .await
            .map_err(api(SVC, "DeleteService"))?;
        Ok(())
    }

    /// Deregisters `arns` and deletes them (ECS keeps INACTIVE revisions otherwise). Used by
    /// `destroy` only; a rollout never deregisters a revision.
    pub async fn delete_task_definitions(&self, arns: &[String]) -> Result<(), ApiError> {
        for a in arns {
            self.client
                .deregister_task_definition()
                .task_definition(a)
                .send()
                .await
                .map_err(api(SVC, "DeregisterTaskDefinition"))?;
        }
        for chunk in arns.chunks(10) {
            self.client
                .delete_task_definitions()
                .set_task_definitions(Some(chunk.to_vec()))
                .send()
                .await
                .map_err(api(SVC, "DeleteTaskDefinitions"))?;
        }
        Ok(())
    }

    /// The service's most recently stopped tasks (up to 5) with their reasons.
    pub async fn stopped_tasks(
        &self,
        cluster: &str,
        service: &str,
    ) -> Result<Vec<StoppedTask>, ApiError> {
        let list = self
            .client
            .list_tasks()
            .cluster(cluster)
            .service_name(service)
            .desired_status(DesiredStatus::Stopped)
            .max_results(5)
            .send()
            .await
            .map_err(api(SVC, "ListTasks"))?;
        if list.task_arns().is_empty() {
            return Ok(Vec::new());
        }
        let out = self
            .client
            .describe_tasks()
            .cluster(cluster)
            .set_tasks(Some(list.task_arns().to_vec()))
            .send()
            .await
            .map_err(api(SVC, "DescribeTasks"))?;
        Ok(out
            .tasks()
            .iter()
            .map(|t| StoppedTask {
                arn: t.task_arn().unwrap_or_default().to_string(),
                task_definition: t.task_definition_arn().unwrap_or_default().to_string(),
                stopped_reason: t.stopped_reason().map(str::to_string),
                container_reasons: t
                    .containers()
                    .iter()
                    .filter_map(|c| {
                        c.reason()
                            .map(|r| format!("{}: {r}", c.name().unwrap_or("container")))
                    })
                    .collect(),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_definitions_round_trip_through_the_sdk_types() {
        let c = json!({
            "name": "triton", "image": "r/m@sha256:ab", "essential": true, "cpu": 3072, "memory": 14000,
            "command": ["tritonserver", "--model-repository=/models"],
            "resourceRequirements": [{"type": "GPU", "value": "1"}],
            "portMappings": [{"containerPort": 8001, "protocol": "tcp", "name": "grpc", "appProtocol": "grpc"}],
            "healthCheck": {"command": ["CMD-SHELL", "true"], "interval": 15, "timeout": 5, "retries": 3, "startPeriod": 300},
            "linuxParameters": {"sharedMemorySize": 1024, "initProcessEnabled": true},
            "ulimits": [{"name": "memlock", "softLimit": -1, "hardLimit": -1}],
            "stopTimeout": 30,
            "logConfiguration": {"logDriver": "awslogs", "options": {"awslogs-group": "/g"}},
            "mountPoints": [{"sourceVolume": "efs", "containerPath": "/cache", "readOnly": false}],
            "environment": [{"name": "A", "value": "b"}]
        });
        assert_eq!(container_to_json(&container_from_json(&c).unwrap()), c);
        let v = json!({"name": "efs", "efsVolumeConfiguration": {"fileSystemId": "fs-1", "rootDirectory": "/",
            "transitEncryption": "ENABLED", "authorizationConfig": {"accessPointId": "fsap-1", "iam": "ENABLED"}}});
        assert_eq!(volume_to_json(&volume_from_json(&v).unwrap()), v);
    }
}
