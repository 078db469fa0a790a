//! DeploymentSpec + image + infra outputs → the ECS task definition `rollout` registers: the `triton`
//! container on the GPU, Triton's command, shm and ulimits, named ports (gRPC on 8001), a readiness
//! health check, awslogs, and the EFS volume through its access point with IAM and TLS.

use serde_json::{Value, json};

use crate::deploy::spec::DeploymentSpec;

/// Values that come from the infra stack's outputs. Offline rendering uses placeholders.
#[derive(Debug, Clone)]
pub struct InfraOutputs {
    pub task_execution_role_arn: String,
    pub task_role_arn: String,
    pub log_group: String,
    pub file_system_id: Option<String>,
    pub access_point_id: Option<String>,
    pub region: String,
}

impl InfraOutputs {
    /// Placeholders naming the stack output each value comes from.
    pub fn placeholders(spec: &DeploymentSpec) -> InfraOutputs {
        use crate::deploy::render::cloudformation::{cluster_stack_name, service_stack_name};
        let (cluster, service) = (cluster_stack_name(spec), service_stack_name(spec));
        let c = |o: &str| format!("<{cluster}:{o}>");
        let s = |o: &str| format!("<{service}:{o}>");
        InfraOutputs {
            task_execution_role_arn: c("TaskExecutionRoleArn"),
            task_role_arn: s("TaskRoleArn"),
            log_group: format!("/triton-deploy/{}/{}", spec.cluster, spec.service),
            file_system_id: spec.efs.then(|| c("FileSystemId")),
            access_point_id: spec.efs.then(|| s("AccessPointId")),
            region: spec.region.clone().unwrap_or_else(|| "<region>".into()),
        }
    }
}

/// The task definition family of a service.
pub fn family(spec: &DeploymentSpec) -> String {
    format!("triton-{}", spec.service)
}

pub fn task_definition(spec: &DeploymentSpec, image: &str, out: &InfraOutputs) -> Value {
    let mut command = vec![
        "tritonserver".to_string(),
        "--model-repository=/models".to_string(),
    ];
    command.extend(spec.triton_args.iter().cloned());
    let mut container = json!({
        "name": "triton",
        "image": image,
        "essential": true,
        "cpu": spec.cpu,
        "memory": spec.memory_mib,
        "command": command,
        "resourceRequirements": [{"type": "GPU", "value": spec.gpus.to_string()}],
        "portMappings": [
            {"containerPort": 8000, "protocol": "tcp", "name": "http", "appProtocol": "http"},
            {"containerPort": 8001, "protocol": "tcp", "name": "grpc", "appProtocol": "grpc"},
            {"containerPort": 8002, "protocol": "tcp", "name": "metrics", "appProtocol": "http"}
        ],
        "healthCheck": {
            "command": ["CMD-SHELL", "curl -sf http://localhost:8000/v2/health/ready || exit 1"],
            "interval": 15,
            "timeout": 5,
            "retries": 3,
            "startPeriod": spec.health_check_grace_seconds.min(300)
        },
        "linuxParameters": {"sharedMemorySize": spec.shm_size_mib, "initProcessEnabled": true},
        "ulimits": [
            {"name": "memlock", "softLimit": -1, "hardLimit": -1},
            {"name": "stack", "softLimit": 67108864, "hardLimit": 67108864}
        ],
        "stopTimeout": spec.stop_timeout_seconds,
        "logConfiguration": {
            "logDriver": "awslogs",
            "options": {
                "awslogs-group": out.log_group,
                "awslogs-region": out.region,
                "awslogs-stream-prefix": spec.service
            }
        }
    });
    let mut td = json!({
        "family": family(spec),
        "requiresCompatibilities": ["EC2"],
        "networkMode": "awsvpc",
        "executionRoleArn": out.task_execution_role_arn,
        "taskRoleArn": out.task_role_arn,
        "containerDefinitions": [],
        "volumes": [],
        "tags": crate::deploy::render::cloudformation::tags(spec).into_iter().map(|(k, v)| json!({"key": k, "value": v})).collect::<Vec<_>>()
    });
    if let (true, Some(fs), Some(ap)) = (spec.efs, &out.file_system_id, &out.access_point_id) {
        container["mountPoints"] = json!([{"sourceVolume": "efs", "containerPath": spec.efs_mount_path, "readOnly": false}]);
        if spec.efs_holds == "cache" {
            // Engine caches shared by every task: ONNX Runtime's TensorRT engine cache, Python envs.
            container["environment"] = json!([
                {"name": "TRITON_CACHE_DIR", "value": spec.efs_mount_path},
                {"name": "ORT_TENSORRT_ENGINE_CACHE_PATH", "value": format!("{}/ort-trt", spec.efs_mount_path)}
            ]);
        }
        td["volumes"] = json!([{
            "name": "efs",
            "efsVolumeConfiguration": {
                "fileSystemId": fs,
                "rootDirectory": "/",
                "transitEncryption": "ENABLED",
                "authorizationConfig": {"accessPointId": ap, "iam": "ENABLED"}
            }
        }]);
    }
    td["containerDefinitions"] = json!([container]);
    td
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_task_definition_has_what_triton_needs() {
        let spec = crate::deploy::spec::parse(std::path::Path::new("t.toml"), "[service]\nname = \"clf\"\nregion = \"us-east-1\"\n[compute]\ninstance_type = \"g5.12xlarge\"\n[task]\ngpus = 2\nshm_size_mib = 2048\n", None).unwrap();
        let td = task_definition(
            &spec,
            "x.dkr.ecr.us-east-1.amazonaws.com/m@sha256:ab",
            &InfraOutputs::placeholders(&spec),
        );
        let c = &td["containerDefinitions"][0];
        assert_eq!(
            c["resourceRequirements"][0],
            json!({"type": "GPU", "value": "2"})
        );
        assert_eq!(c["linuxParameters"]["sharedMemorySize"], 2048);
        assert_eq!(c["ulimits"][0]["softLimit"], -1);
        assert_eq!(c["portMappings"][1]["appProtocol"], "grpc");
        assert_eq!(c["command"][1], "--model-repository=/models");
        assert_eq!(
            td["volumes"][0]["efsVolumeConfiguration"]["transitEncryption"],
            "ENABLED"
        );
        assert_eq!(c["mountPoints"][0]["containerPath"], "/cache");
        assert_eq!(td["family"], "triton-clf");
    }
}
