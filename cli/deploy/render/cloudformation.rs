//! DeploymentSpec → two layers of CloudFormation stacks. The cluster stack, shared by the services
//! of a cluster: the GPU hosts (launch template on the ECS GPU AMI, Auto Scaling group across >= 2
//! AZs, capacity provider with managed scaling, termination protection and draining), the ALB and
//! its listener, the EFS file system, the execution role. A stack per service: its target group
//! and listener rules, task role and security group, EFS access point, log group and dashboard.
//! CloudFormation orders, rolls back and deletes them; we only render them.

use serde_json::{Value, json};

use crate::deploy::render::checks::{self, Skip};
use crate::deploy::route::{Routing, Target};

/// The gRPC target group's health check: Triton's `ServerReady` method.
pub const GRPC_HEALTH_CHECK: &str = "/inference.GRPCInferenceService/ServerReady";
use crate::deploy::ami::preread;
use crate::deploy::spec::{Ami, DeploymentSpec};

/// Tags on every resource of the cluster stack (shared by the cluster's services).
pub fn cluster_tags(spec: &DeploymentSpec) -> Vec<(String, String)> {
    vec![
        ("triton-deploy:cluster".into(), spec.cluster.clone()),
        ("managed-by".into(), "triton-deploy".into()),
    ]
}

fn cfn_cluster_tags(spec: &DeploymentSpec) -> Value {
    Value::Array(
        cluster_tags(spec)
            .into_iter()
            .map(|(k, v)| json!({"Key": k, "Value": v}))
            .collect(),
    )
}

/// Tags on every resource of a service stack.
pub fn tags(spec: &DeploymentSpec) -> Vec<(String, String)> {
    vec![
        ("triton-deploy:cluster".into(), spec.cluster.clone()),
        ("triton-deploy:service".into(), spec.service.clone()),
        ("managed-by".into(), "triton-deploy".into()),
    ]
}

fn cfn_tags(spec: &DeploymentSpec) -> Value {
    Value::Array(
        tags(spec)
            .into_iter()
            .map(|(k, v)| json!({"Key": k, "Value": v}))
            .collect(),
    )
}

/// The cluster stack's name.
pub fn cluster_stack_name(spec: &DeploymentSpec) -> String {
    format!("triton-deploy-{}", spec.cluster)
}

/// The service stack's name.
pub fn service_stack_name(spec: &DeploymentSpec) -> String {
    format!("triton-deploy-{}-{}", spec.cluster, spec.service)
}

/// The capacity provider's name (fixed, so that the service names it without a lookup).
pub fn capacity_provider_name(spec: &DeploymentSpec) -> String {
    format!("td-{}", spec.cluster)
}

/// `app/<name>/<id>` from the load balancer's ARN (what `LoadBalancerFullName` returns).
fn lb_full_name() -> Value {
    json!({"Fn::Select": [1, {"Fn::Split": [":loadbalancer/", {"Ref": "LoadBalancer"}]}]})
}

/// `targetgroup/<name>/<id>` from the target group's ARN (what `TargetGroupFullName` returns).
fn tg_full_name() -> Value {
    json!({"Fn::Select": [5, {"Fn::Split": [":", {"Ref": "TargetGroup"}]}]})
}

/// The root directory of a service's EFS access point: its own on the cluster's file system.
pub fn access_point_root(spec: &DeploymentSpec) -> String {
    format!("/triton-deploy/{}/{}", spec.service, spec.efs_holds)
}

/// The service's CloudWatch dashboard's name.
pub fn dashboard_name(spec: &DeploymentSpec) -> String {
    format!("triton-deploy-{}-{}", spec.cluster, spec.service)
}

/// The dashboard body (ALB requests, target response time p50/p99, 5xx, healthy targets, ECS
/// CPU/memory reservation, the capacity provider's reservation), with the given expressions for
/// the load balancer's and target group's full names, the cluster, the capacity provider and the
/// region (CloudFormation `Fn::Sub` or Terraform references).
pub fn dashboard_body(
    spec: &DeploymentSpec,
    lb: &str,
    tg: &str,
    cluster: &str,
    capacity_provider: &str,
    region: &str,
) -> String {
    let alb = |metric: &str, stat: &str| json!(["AWS/ApplicationELB", metric, "LoadBalancer", lb, "TargetGroup", tg, {"stat": stat}]);
    let widget = |x: u32, y: u32, title: &str, metrics: Vec<Value>| {
        json!({"type": "metric", "x": x, "y": y, "width": 12, "height": 6,
               "properties": {"title": title, "region": region, "view": "timeSeries", "period": 60, "metrics": metrics}})
    };
    let body = json!({"widgets": [
        widget(0, 0, "Requests", vec![alb("RequestCount", "Sum"), alb("RequestCountPerTarget", "Sum")]),
        widget(12, 0, "Target response time", vec![alb("TargetResponseTime", "p50"), alb("TargetResponseTime", "p99")]),
        widget(0, 6, "Errors", vec![alb("HTTPCode_Target_5XX_Count", "Sum"), json!(["AWS/ApplicationELB", "HTTPCode_ELB_5XX_Count", "LoadBalancer", lb, {"stat": "Sum"}])]),
        widget(12, 6, "Healthy targets", vec![alb("HealthyHostCount", "Minimum"), alb("UnHealthyHostCount", "Maximum")]),
        widget(0, 12, "ECS reservation and service CPU", vec![
            json!(["AWS/ECS", "CPUReservation", "ClusterName", cluster, {"stat": "Average"}]),
            json!(["AWS/ECS", "MemoryReservation", "ClusterName", cluster, {"stat": "Average"}]),
            json!(["AWS/ECS", "CPUUtilization", "ClusterName", cluster, "ServiceName", spec.service, {"stat": "Average"}])
        ]),
        widget(12, 12, "Capacity provider reservation", vec![
            json!(["AWS/ECS/ManagedScaling", "CapacityProviderReservation", "ClusterName", cluster, "CapacityProviderName", capacity_provider, {"stat": "Average"}])
        ])
    ]});
    serde_json::to_string(&body).expect("json")
}

/// The user data of the GPU hosts: join the cluster with GPU support on. The agent's stop timeout
/// is ECS's maximum (each task definition sets its own, below it); on Spot the agent drains a host
/// as soon as its interruption notice comes, so its tasks stop in order within the two minutes.
/// On a baked AMI the host first reads the baked image's files once (see [`preread::script`]).
pub fn user_data(spec: &DeploymentSpec) -> String {
    let preread = match spec.ami {
        Ami::Baked(_) if spec.bake.preread_timeout_seconds > 0 => {
            preread::script(preread::DOCKER_ROOT, spec.bake.preread_timeout_seconds)
        }
        _ => String::new(),
    };
    let spot = if spec.spot {
        "ECS_ENABLE_SPOT_INSTANCE_DRAINING=true\n"
    } else {
        ""
    };
    format!(
        "#!/bin/bash\nset -euo pipefail\ncat >> /etc/ecs/ecs.config <<'EOF'\nECS_CLUSTER={}\nECS_ENABLE_GPU_SUPPORT=true\nECS_ENABLE_CONTAINER_METADATA=true\nECS_CONTAINER_STOP_TIMEOUT=120s\nECS_AWSVPC_BLOCK_IMDS=true\n{spot}EOF\n# The GPU AMI has IPv6 on, which breaks yum.\necho 'ip_resolve=4' >> /etc/yum.conf\n{preread}",
        spec.cluster
    )
}

/// The default answer of the shared listener: what no service routes.
const NOT_ROUTED: &str = r#"{"error":"no service of this cluster routes this path: each model is under /v2/models/<name>"}"#;

/// Renders the cluster stack's template: what the services of a cluster share — the ECS cluster,
/// the GPU hosts and their capacity provider, the load balancer and its listener (answering 404
/// where no service routes), the execution role, the EFS file system.
pub fn cluster_template(spec: &DeploymentSpec) -> Value {
    let t = cfn_cluster_tags(spec);
    let n_subnets = spec.subnets.len().max(2);
    let ami_param = match &spec.ami {
        Ami::SsmParameter(p) => json!({
            "Type": "AWS::SSM::Parameter::Value<AWS::EC2::Image::Id>",
            "Default": p,
            "Description": "SSM parameter holding the GPU AMI (the ECS-optimized GPU AMI by default)"
        }),
        Ami::Baked(p) => json!({
            "Type": "AWS::SSM::Parameter::Value<AWS::EC2::Image::Id>",
            "Default": p,
            "Description": "SSM parameter holding the GPU AMI `triton-deploy ami build` baked the Triton image into"
        }),
        Ami::Id(id) => {
            json!({"Type": "AWS::EC2::Image::Id", "Default": id, "Description": "The GPU AMI"})
        }
    };
    let mut resources = serde_json::Map::new();
    let mut r = |name: &str, v: Value| {
        resources.insert(name.to_string(), v);
    };

    r(
        "Cluster",
        json!({
            "Type": "AWS::ECS::Cluster",
            "Properties": {
                "ClusterName": spec.cluster,
                "ClusterSettings": [{"Name": "containerInsights", "Value": "enabled"}],
                "Tags": t
            }
        }),
    );
    let assume = |svc: &str| {
        json!({
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Principal": {"Service": svc}, "Action": "sts:AssumeRole"}]
        })
    };
    r(
        "InstanceRole",
        json!({
            "Type": "AWS::IAM::Role",
            "Properties": {
                "AssumeRolePolicyDocument": assume("ec2.amazonaws.com"),
                "ManagedPolicyArns": [
                    {"Fn::Sub": "arn:${AWS::Partition}:iam::aws:policy/service-role/AmazonEC2ContainerServiceforEC2Role"},
                    {"Fn::Sub": "arn:${AWS::Partition}:iam::aws:policy/AmazonSSMManagedInstanceCore"}
                ],
                "Tags": t
            }
        }),
    );
    r(
        "InstanceProfile",
        json!({
            "Type": "AWS::IAM::InstanceProfile",
            "Properties": {"Roles": [{"Ref": "InstanceRole"}]}
        }),
    );
    r(
        "TaskExecutionRole",
        json!({
            "Type": "AWS::IAM::Role",
            "Properties": {
                "AssumeRolePolicyDocument": assume("ecs-tasks.amazonaws.com"),
                "ManagedPolicyArns": [{"Fn::Sub": "arn:${AWS::Partition}:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy"}],
                "Tags": t
            }
        }),
    );
    let mut listener_ingress: Vec<Value> = spec
        .allowed_cidrs
        .iter()
        .map(|c| json!({"IpProtocol": "tcp", "FromPort": spec.listener_port, "ToPort": spec.listener_port, "CidrIp": c, "Description": "listener"}))
        .collect();
    if redirects_http(spec) {
        listener_ingress.extend(spec.allowed_cidrs.iter().map(|c| json!({"IpProtocol": "tcp", "FromPort": 80, "ToPort": 80, "CidrIp": c, "Description": "HTTP, redirected to HTTPS"})));
    }
    r(
        "AlbSecurityGroup",
        json!({
            "Type": "AWS::EC2::SecurityGroup",
            "Properties": {
                "GroupDescription": format!("{} load balancer", spec.cluster),
                "VpcId": {"Ref": "VpcId"},
                "SecurityGroupIngress": listener_ingress,
                "Tags": t
            }
        }),
    );
    r(
        "InstanceSecurityGroup",
        json!({
            "Type": "AWS::EC2::SecurityGroup",
            "Properties": {
                "GroupDescription": format!("{} GPU hosts (egress only; tasks have their own interfaces)", spec.cluster),
                "VpcId": {"Ref": "VpcId"},
                "Tags": t
            }
        }),
    );
    r(
        "LaunchTemplate",
        json!({
            "Type": "AWS::EC2::LaunchTemplate",
            "Properties": {
                "LaunchTemplateData": {
                    "ImageId": {"Ref": "AmiId"},
                    "InstanceType": spec.instance_type,
                    "IamInstanceProfile": {"Arn": {"Fn::GetAtt": ["InstanceProfile", "Arn"]}},
                    "SecurityGroupIds": [{"Ref": "InstanceSecurityGroup"}],
                    "UserData": {"Fn::Base64": user_data(spec)},
                    // One hop: the host (and the ECS agent on its network) reaches the instance
                    // metadata, containers do not; tasks get their role's credentials from ECS.
                    "MetadataOptions": {"HttpTokens": "required", "HttpPutResponseHopLimit": 1, "HttpEndpoint": "enabled"},
                    "BlockDeviceMappings": [{
                        "DeviceName": "/dev/xvda",
                        "Ebs": {"VolumeSize": spec.root_volume_gib, "VolumeType": "gp3", "Encrypted": true, "DeleteOnTermination": true}
                    }],
                    "TagSpecifications": [
                        {"ResourceType": "instance", "Tags": t},
                        {"ResourceType": "volume", "Tags": t}
                    ]
                },
                "TagSpecifications": [{"ResourceType": "launch-template", "Tags": t}]
            }
        }),
    );
    let lt = json!({"LaunchTemplateId": {"Ref": "LaunchTemplate"}, "Version": {"Fn::GetAtt": ["LaunchTemplate", "LatestVersionNumber"]}});
    let mut asg_tags: Vec<Value> = cluster_tags(spec)
        .into_iter()
        .map(|(k, v)| json!({"Key": k, "Value": v, "PropagateAtLaunch": true}))
        .collect();
    asg_tags.push(json!({"Key": "AmazonECSManaged", "Value": "true", "PropagateAtLaunch": true}));
    let mut asg = json!({
        "MinSize": spec.min_instances.to_string(),
        "MaxSize": spec.max_instances.to_string(),
        "VPCZoneIdentifier": {"Ref": "Subnets"},
        "NewInstancesProtectedFromScaleIn": true,
        "HealthCheckType": "EC2",
        "Tags": asg_tags
    });
    let overrides: Vec<Value> = spec
        .instance_types
        .iter()
        .map(|t| json!({"InstanceType": t}))
        .collect();
    if spec.spot {
        // A Spot host at elevated risk of interruption is replaced before it is taken.
        asg["CapacityRebalance"] = json!(true);
        asg["MixedInstancesPolicy"] = json!({
            "LaunchTemplate": {"LaunchTemplateSpecification": lt, "Overrides": overrides},
            "InstancesDistribution": {"OnDemandBaseCapacity": spec.on_demand_base, "OnDemandPercentageAboveBaseCapacity": 0, "SpotAllocationStrategy": "price-capacity-optimized"}
        });
    } else if spec.instance_types.len() > 1 {
        // On demand, several types: the first that has capacity, in the spec's order.
        asg["MixedInstancesPolicy"] = json!({
            "LaunchTemplate": {"LaunchTemplateSpecification": lt, "Overrides": overrides},
            "InstancesDistribution": {"OnDemandAllocationStrategy": "prioritized", "OnDemandPercentageAboveBaseCapacity": 100}
        });
    } else {
        asg["LaunchTemplate"] = lt;
    }
    r(
        "AutoScalingGroup",
        json!({
            "Type": "AWS::AutoScaling::AutoScalingGroup",
            // No UpdatePolicy: an AMI change updates the launch template only, and hosts are
            // replaced by `rollout --refresh-instances` (or as the capacity provider scales), with
            // managed draining moving the tasks. A rolling update would fight that, and fails when
            // min_instances == max_instances.
            "Properties": asg
        }),
    );
    r(
        "CapacityProvider",
        json!({
            "Type": "AWS::ECS::CapacityProvider",
            "Properties": {
                "Name": capacity_provider_name(spec),
                "AutoScalingGroupProvider": {
                    "AutoScalingGroupArn": {"Ref": "AutoScalingGroup"},
                    "ManagedScaling": {
                        "Status": "ENABLED",
                        "TargetCapacity": spec.target_capacity,
                        "MinimumScalingStepSize": 1,
                        "MaximumScalingStepSize": spec.max_scaling_step,
                        "InstanceWarmupPeriod": spec.instance_warmup_seconds
                    },
                    "ManagedTerminationProtection": "ENABLED",
                    "ManagedDraining": "ENABLED"
                },
                "Tags": t
            }
        }),
    );
    r(
        "ClusterCapacityProviders",
        json!({
            "Type": "AWS::ECS::ClusterCapacityProviderAssociations",
            "Properties": {
                "Cluster": {"Ref": "Cluster"},
                "CapacityProviders": [{"Ref": "CapacityProvider"}],
                "DefaultCapacityProviderStrategy": [{"CapacityProvider": {"Ref": "CapacityProvider"}, "Weight": 1, "Base": 1}]
            }
        }),
    );
    r(
        "LoadBalancer",
        json!({
            "Type": "AWS::ElasticLoadBalancingV2::LoadBalancer",
            "Properties": {
                "Type": "application",
                "Scheme": if spec.internet_facing { "internet-facing" } else { "internal" },
                "Subnets": {"Ref": "Subnets"},
                "SecurityGroups": [{"Ref": "AlbSecurityGroup"}],
                "LoadBalancerAttributes": [
                    {"Key": "idle_timeout.timeout_seconds", "Value": "120"},
                    // Requests with header names HTTP does not allow are dropped, not passed on.
                    {"Key": "routing.http.drop_invalid_header_fields.enabled", "Value": "true"}
                ],
                "Tags": t
            }
        }),
    );
    let mut listener = json!({
        "LoadBalancerArn": {"Ref": "LoadBalancer"},
        "Port": spec.listener_port,
        "Protocol": if spec.certificate_arn.is_some() { "HTTPS" } else { "HTTP" },
        // No service answers a path it does not route: a KServe-style JSON error, not a 503.
        "DefaultActions": [{"Type": "fixed-response", "FixedResponseConfig": {
            "StatusCode": "404",
            "ContentType": "application/json",
            "MessageBody": NOT_ROUTED
        }}]
    });
    if let Some(cert) = &spec.certificate_arn {
        listener["Certificates"] = json!([{"CertificateArn": cert}]);
        listener["SslPolicy"] = json!("ELBSecurityPolicy-TLS13-1-2-2021-06");
    }
    r(
        "Listener",
        json!({"Type": "AWS::ElasticLoadBalancingV2::Listener", "Properties": listener}),
    );
    if redirects_http(spec) {
        r(
            "RedirectListener",
            json!({
                "Type": "AWS::ElasticLoadBalancingV2::Listener",
                "Properties": {
                    "LoadBalancerArn": {"Ref": "LoadBalancer"},
                    "Port": 80,
                    "Protocol": "HTTP",
                    "DefaultActions": [{"Type": "redirect", "RedirectConfig": {
                        "Protocol": "HTTPS",
                        "Port": spec.listener_port.to_string(),
                        "StatusCode": "HTTP_301"
                    }}]
                }
            }),
        );
    }
    if spec.efs {
        r(
            "EfsSecurityGroup",
            json!({
                "Type": "AWS::EC2::SecurityGroup",
                "Properties": {
                    "GroupDescription": format!("{} EFS (NFS from the tasks of each service, let in by its stack)", spec.cluster),
                    "VpcId": {"Ref": "VpcId"},
                    "Tags": t
                }
            }),
        );
        r(
            "FileSystem",
            json!({
                "Type": "AWS::EFS::FileSystem",
                "Properties": {
                    "Encrypted": true,
                    "PerformanceMode": "generalPurpose",
                    "ThroughputMode": "elastic",
                    "FileSystemTags": t
                }
            }),
        );
        for i in 0..n_subnets {
            r(
                &format!("MountTarget{i}"),
                json!({
                    "Type": "AWS::EFS::MountTarget",
                    "Properties": {
                        "FileSystemId": {"Ref": "FileSystem"},
                        "SubnetId": {"Fn::Select": [i, {"Ref": "Subnets"}]},
                        "SecurityGroups": [{"Ref": "EfsSecurityGroup"}]
                    }
                }),
            );
        }
    }
    let mut outputs = json!({
        "ClusterName": {"Value": {"Ref": "Cluster"}},
        "CapacityProviderName": {"Value": {"Ref": "CapacityProvider"}},
        "AutoScalingGroupName": {"Value": {"Ref": "AutoScalingGroup"}},
        "LoadBalancerArn": {"Value": {"Ref": "LoadBalancer"}},
        "LoadBalancerDns": {"Value": {"Fn::GetAtt": ["LoadBalancer", "DNSName"]}},
        "LoadBalancerFullName": {"Value": lb_full_name()},
        "ListenerArn": {"Value": {"Ref": "Listener"}},
        "AlbSecurityGroupId": {"Value": {"Ref": "AlbSecurityGroup"}},
        "TaskExecutionRoleArn": {"Value": {"Fn::GetAtt": ["TaskExecutionRole", "Arn"]}}
    });
    if spec.efs {
        outputs["FileSystemId"] = json!({"Value": {"Ref": "FileSystem"}});
        outputs["EfsSecurityGroupId"] = json!({"Value": {"Ref": "EfsSecurityGroup"}});
    }
    annotate(&mut resources, "LoadBalancer", &[checks::ALB_ACCESS_LOGS]);
    annotate(
        &mut resources,
        "Listener",
        &checks::listener_skips(spec.certificate_arn.is_some()),
    );
    json!({
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": format!("triton-deploy cluster {}: GPU hosts, capacity provider, shared ALB, EFS", spec.cluster),
        "Parameters": {
            "AmiId": ami_param,
            "VpcId": {"Type": "AWS::EC2::VPC::Id", "Description": "The VPC (the default VPC unless the spec names one)"},
            "Subnets": {"Type": "List<AWS::EC2::Subnet::Id>", "Description": format!("{n_subnets} subnets in different availability zones")}
        },
        "Resources": resources,
        "Outputs": outputs
    })
}

/// Writes why `resource` does not pass `skips` where the IaC scanner reads it.
fn annotate(resources: &mut serde_json::Map<String, Value>, resource: &str, skips: &[Skip]) {
    if let Some(r) = resources.get_mut(resource).filter(|_| !skips.is_empty()) {
        r["Metadata"] = checks::cfn_metadata(skips);
    }
}

/// Whether the cluster has an HTTP listener on :80 that redirects to its HTTPS one.
pub fn redirects_http(spec: &DeploymentSpec) -> bool {
    spec.certificate_arn.is_some() && spec.listener_port != 80
}

/// Renders a service stack's template: what one service of the cluster has to itself — its
/// target group and listener rules (`routing`), task role and security group, the EFS access
/// point, the log group and the dashboard. The cluster stack's outputs come in as parameters
/// (not imports, which would pin them).
pub fn service_template(spec: &DeploymentSpec, routing: &Routing) -> Value {
    let t = cfn_tags(spec);
    let assume = |svc: &str| {
        json!({
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Principal": {"Service": svc}, "Action": "sts:AssumeRole"}]
        })
    };
    let mut resources = serde_json::Map::new();
    let mut r = |name: &str, v: Value| {
        resources.insert(name.to_string(), v);
    };
    let mut task_role_props = json!({
        "AssumeRolePolicyDocument": assume("ecs-tasks.amazonaws.com"),
        "Tags": t
    });
    if spec.efs {
        task_role_props["Policies"] = json!([{
            "PolicyName": "efs-access-point",
            "PolicyDocument": {
                "Version": "2012-10-17",
                "Statement": [{
                    "Effect": "Allow",
                    "Action": ["elasticfilesystem:ClientMount", "elasticfilesystem:ClientWrite"],
                    // ARNs built from the IDs (Ref), which every CloudFormation engine resolves.
                    "Resource": {"Fn::Sub": "arn:${AWS::Partition}:elasticfilesystem:${AWS::Region}:${AWS::AccountId}:file-system/${FileSystemId}"},
                    "Condition": {"StringEquals": {"elasticfilesystem:AccessPointArn": {"Fn::Sub": "arn:${AWS::Partition}:elasticfilesystem:${AWS::Region}:${AWS::AccountId}:access-point/${AccessPoint}"}}}
                }]
            }
        }]);
    }
    if spec.enable_exec {
        // ECS Exec: the SSM agent in the task opens its channels.
        let exec = json!({
            "PolicyName": "ecs-exec",
            "PolicyDocument": {
                "Version": "2012-10-17",
                "Statement": [{
                    "Effect": "Allow",
                    "Action": [
                        "ssmmessages:CreateControlChannel",
                        "ssmmessages:CreateDataChannel",
                        "ssmmessages:OpenControlChannel",
                        "ssmmessages:OpenDataChannel"
                    ],
                    "Resource": "*"
                }]
            }
        });
        match task_role_props["Policies"].as_array_mut() {
            Some(p) => p.push(exec),
            None => task_role_props["Policies"] = json!([exec]),
        }
    }
    r(
        "TaskRole",
        json!({"Type": "AWS::IAM::Role", "Properties": task_role_props}),
    );

    r(
        "TaskSecurityGroup",
        json!({
            "Type": "AWS::EC2::SecurityGroup",
            "Properties": {
                "GroupDescription": format!("{} Triton tasks", spec.service),
                "VpcId": {"Ref": "VpcId"},
                "SecurityGroupIngress": [
                    {"IpProtocol": "tcp", "FromPort": 8000, "ToPort": 8001, "SourceSecurityGroupId": {"Ref": "AlbSecurityGroupId"}, "Description": "HTTP and gRPC from the load balancer"},
                    {"IpProtocol": "tcp", "FromPort": 8002, "ToPort": 8002, "CidrIp": {"Ref": "VpcCidr"}, "Description": "metrics from inside the VPC"}
                ],
                "Tags": t
            }
        }),
    );
    r(
        "TargetGroup",
        json!({
            "Type": "AWS::ElasticLoadBalancingV2::TargetGroup",
            "Properties": {
                "TargetType": "ip",
                "Protocol": "HTTP",
                "Port": 8000,
                "VpcId": {"Ref": "VpcId"},
                "HealthCheckProtocol": "HTTP",
                "HealthCheckPath": "/v2/health/ready",
                "HealthCheckPort": "8000",
                "HealthCheckIntervalSeconds": 15,
                "HealthCheckTimeoutSeconds": 5,
                "HealthyThresholdCount": 2,
                "UnhealthyThresholdCount": 3,
                "Matcher": {"HttpCode": "200"},
                "TargetGroupAttributes": [
                    {"Key": "deregistration_delay.timeout_seconds", "Value": spec.deregistration_delay_seconds.to_string()},
                    {"Key": "slow_start.duration_seconds", "Value": "60"}
                ],
                "Tags": t
            }
        }),
    );
    if routing.grpc_host.is_some() {
        r(
            "GrpcTargetGroup",
            json!({
                "Type": "AWS::ElasticLoadBalancingV2::TargetGroup",
                "Properties": {
                    "TargetType": "ip",
                    "Protocol": "HTTP",
                    "ProtocolVersion": "GRPC",
                    "Port": 8001,
                    "VpcId": {"Ref": "VpcId"},
                    "HealthCheckProtocol": "HTTP",
                    "HealthCheckPath": GRPC_HEALTH_CHECK,
                    "HealthCheckPort": "8001",
                    "HealthCheckIntervalSeconds": 15,
                    "HealthCheckTimeoutSeconds": 5,
                    "HealthyThresholdCount": 2,
                    "UnhealthyThresholdCount": 3,
                    "Matcher": {"GrpcCode": "0"},
                    "TargetGroupAttributes": [
                        {"Key": "deregistration_delay.timeout_seconds", "Value": spec.deregistration_delay_seconds.to_string()}
                    ],
                    "Tags": t
                }
            }),
        );
    }
    for rule in routing.rules() {
        let mut conditions = Vec::new();
        if !rule.hosts.is_empty() {
            conditions
                .push(json!({"Field": "host-header", "HostHeaderConfig": {"Values": rule.hosts}}));
        }
        if !rule.paths.is_empty() {
            conditions.push(
                json!({"Field": "path-pattern", "PathPatternConfig": {"Values": rule.paths}}),
            );
        }
        let target = match rule.target {
            Target::Http => "TargetGroup",
            Target::Grpc => "GrpcTargetGroup",
        };
        let mut props = json!({
            "ListenerArn": {"Ref": "ListenerArn"},
            "Priority": rule.priority,
            "Conditions": conditions,
            "Actions": [{"Type": "forward", "TargetGroupArn": {"Ref": target}}]
        });
        if let Some((regex, replace)) = &rule.rewrite {
            props["Transforms"] = json!([{"Type": "url-rewrite", "UrlRewriteConfig": {"Rewrites": [{"Regex": regex, "Replace": replace}]}}]);
        }
        r(
            &format!("Rule{}", rule.priority),
            json!({"Type": "AWS::ElasticLoadBalancingV2::ListenerRule", "Properties": props}),
        );
    }
    r(
        "LogGroup",
        json!({
            "Type": "AWS::Logs::LogGroup",
            "Properties": {
                "LogGroupName": format!("/triton-deploy/{}/{}", spec.cluster, spec.service),
                "RetentionInDays": 30,
                "Tags": t
            }
        }),
    );
    if spec.efs {
        r(
            "EfsIngress",
            json!({
                "Type": "AWS::EC2::SecurityGroupIngress",
                "Properties": {
                    "GroupId": {"Ref": "EfsSecurityGroupId"},
                    "IpProtocol": "tcp",
                    "FromPort": 2049,
                    "ToPort": 2049,
                    "SourceSecurityGroupId": {"Ref": "TaskSecurityGroup"},
                    "Description": format!("NFS from {} tasks", spec.service)
                }
            }),
        );
        r(
            "AccessPoint",
            json!({
                "Type": "AWS::EFS::AccessPoint",
                "Properties": {
                    "FileSystemId": {"Ref": "FileSystemId"},
                    // Numbers, not strings: CloudFormation takes either, and EFS reports them as numbers.
                    "PosixUser": {"Uid": spec.efs_uid, "Gid": spec.efs_gid},
                    "RootDirectory": {
                        "Path": access_point_root(spec),
                        "CreationInfo": {"OwnerUid": spec.efs_uid, "OwnerGid": spec.efs_gid, "Permissions": "0755"}
                    },
                    "AccessPointTags": t
                }
            }),
        );
    }
    r(
        "Dashboard",
        json!({
            "Type": "AWS::CloudWatch::Dashboard",
            "Properties": {
                "DashboardName": dashboard_name(spec),
                "DashboardBody": {"Fn::Sub": [
                    dashboard_body(spec, "${LbName}", "${TgName}", "${ClusterName}", "${CapacityProviderName}", "${AWS::Region}"),
                    {"LbName": {"Ref": "LoadBalancerFullName"}, "TgName": tg_full_name()}
                ]}
            }
        }),
    );
    let mut outputs = json!({
        "TargetGroupArn": {"Value": {"Ref": "TargetGroup"}},
        "TargetGroupFullName": {"Value": tg_full_name()},
        "TaskSecurityGroupId": {"Value": {"Ref": "TaskSecurityGroup"}},
        "TaskRoleArn": {"Value": {"Fn::GetAtt": ["TaskRole", "Arn"]}},
        "LogGroupName": {"Value": {"Ref": "LogGroup"}}
    });
    if spec.efs {
        outputs["AccessPointId"] = json!({"Value": {"Ref": "AccessPoint"}});
    }
    if routing.grpc_host.is_some() {
        outputs["GrpcTargetGroupArn"] = json!({"Value": {"Ref": "GrpcTargetGroup"}});
    }
    let mut parameters = json!({
        "VpcId": {"Type": "AWS::EC2::VPC::Id", "Description": "The cluster's VPC"},
        "VpcCidr": {"Type": "String", "Description": "The VPC's CIDR, for the metrics port", "AllowedPattern": "^[0-9./]+$"},
        "ClusterName": {"Type": "String", "Description": "The cluster stack's ECS cluster"},
        "CapacityProviderName": {"Type": "String", "Description": "The cluster stack's capacity provider"},
        "ListenerArn": {"Type": "String", "Description": "The cluster stack's listener"},
        "LoadBalancerFullName": {"Type": "String", "Description": "The cluster stack's load balancer (app/<name>/<id>)"},
        "AlbSecurityGroupId": {"Type": "AWS::EC2::SecurityGroup::Id", "Description": "The cluster stack's load balancer security group"}
    });
    if spec.efs {
        parameters["FileSystemId"] =
            json!({"Type": "String", "Description": "The cluster stack's EFS file system"});
        parameters["EfsSecurityGroupId"] = json!({"Type": "AWS::EC2::SecurityGroup::Id", "Description": "The cluster stack's EFS security group"});
    }
    annotate(&mut resources, "LogGroup", &[checks::LOGS_KMS]);
    json!({
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": format!("triton-deploy service {} on cluster {}: target group, listener rules, task role and security group, EFS access point, logs, dashboard", spec.service, spec.cluster),
        "Parameters": parameters,
        "Resources": resources,
        "Outputs": outputs
    })
}

/// The cluster template's parameter values, given the resolved network.
pub fn cluster_parameters(vpc_id: &str, subnets: &[String]) -> Vec<(String, String)> {
    vec![
        ("VpcId".into(), vpc_id.into()),
        ("Subnets".into(), subnets.join(",")),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn spec(extra: &str) -> DeploymentSpec {
        crate::deploy::spec::parse(
            Path::new("t.toml"),
            &format!("[service]\nname = \"clf\"\ncluster = \"ml\"\n{extra}"),
            None,
        )
        .unwrap()
    }

    fn routing(models: &[&str]) -> Routing {
        Routing {
            route: crate::deploy::route::Route::Models {
                models: models.iter().map(|m| m.to_string()).collect(),
            },
            block: 4,
            grpc_host: None,
        }
    }

    fn service(spec: &DeploymentSpec) -> Value {
        service_template(spec, &routing(&["m"]))
    }

    #[test]
    fn every_taggable_resource_is_tagged_and_the_templates_are_small_enough() {
        let s = spec("");
        let (cluster, svc) = (cluster_template(&s), service(&s));
        let resources = cluster["Resources"]
            .as_object()
            .unwrap()
            .iter()
            .chain(svc["Resources"].as_object().unwrap());
        for (name, r) in resources {
            let p = &r["Properties"];
            let tags = p
                .get("Tags")
                .or(p.get("FileSystemTags"))
                .or(p.get("AccessPointTags"));
            // CloudFormation cannot tag these.
            let untaggable = [
                "InstanceProfile",
                "ClusterCapacityProviders",
                "Listener",
                "Dashboard",
                "EfsIngress",
            ]
            .contains(&name.as_str())
                || name.starts_with("MountTarget")
                || name.starts_with("Rule");
            if !untaggable && r["Type"] != "AWS::EC2::LaunchTemplate" {
                let tags = tags.unwrap_or_else(|| panic!("{name} has no tags"));
                assert!(tags.to_string().contains("triton-deploy:cluster"), "{name}");
            }
        }
        for t in [&cluster, &svc] {
            assert!(
                serde_json::to_vec(t).unwrap().len() < 51_200,
                "fits TemplateBody"
            );
        }
        // The cluster's resources name no service: they are shared.
        assert!(!cluster.to_string().contains("clf"), "{cluster}");
        let t = cluster;
        assert_eq!(t["Parameters"]["AmiId"]["Default"], Ami::AL2023_GPU);
        let ud = t["Resources"]["LaunchTemplate"]["Properties"]["LaunchTemplateData"]["UserData"]["Fn::Base64"].as_str().unwrap();
        assert!(ud.contains("ECS_CLUSTER=ml\n") && ud.contains("ECS_ENABLE_GPU_SUPPORT=true"));
    }

    #[test]
    fn a_baked_cluster_resolves_its_parameter_and_its_hosts_pre_read_the_image() {
        let baked = spec("[compute]\nami = \"baked\"\n[ami]\npreread_timeout_seconds = 300\n");
        let t = cluster_template(&baked);
        let p = &t["Parameters"]["AmiId"];
        assert_eq!(p["Type"], "AWS::SSM::Parameter::Value<AWS::EC2::Image::Id>");
        assert_eq!(
            p["Default"],
            format!("/triton-deploy/{}/ami", baked.cluster)
        );
        let ud = user_data(&baked);
        assert!(
            ud.contains("td_preread\n") && ud.contains("timeout -k 5 300 xargs"),
            "{ud}"
        );
        // The pre-read comes after the agent's configuration, and not on other AMIs.
        assert!(ud.find("ECS_CLUSTER=").unwrap() < ud.find("td_preread").unwrap());
        assert!(!user_data(&spec("")).contains("td_preread"));
        let off = spec("[compute]\nami = \"baked\"\n[ami]\npreread_timeout_seconds = 0\n");
        assert!(!user_data(&off).contains("td_preread"));
        // Terraform reads the same parameter.
        let tf = crate::deploy::render::terraform::cluster_module(&baked);
        assert!(
            tf.contains(&format!("name = \"/triton-deploy/{}/ami\"", baked.cluster)),
            "{tf}"
        );
    }

    #[test]
    fn hosts_are_replaced_by_the_refresh_not_an_update_policy_and_spot_drains_and_rebalances() {
        let t = cluster_template(&spec("[compute]\nmin_instances = 2\nmax_instances = 2\n"));
        assert!(
            t["Resources"]["AutoScalingGroup"]
                .get("UpdatePolicy")
                .is_none()
        );
        let s = spec(
            "[compute]\nspot = true\non_demand_base = 1\n[network]\nderegistration_delay_seconds = 20\n",
        );
        let t = cluster_template(&s);
        let asg = &t["Resources"]["AutoScalingGroup"]["Properties"];
        assert_eq!(asg["CapacityRebalance"], true);
        assert_eq!(
            asg["MixedInstancesPolicy"]["InstancesDistribution"]["OnDemandBaseCapacity"],
            1
        );
        let ud = t["Resources"]["LaunchTemplate"]["Properties"]["LaunchTemplateData"]["UserData"]["Fn::Base64"].as_str().unwrap();
        assert!(
            ud.contains("ECS_ENABLE_SPOT_INSTANCE_DRAINING=true\n"),
            "{ud}"
        );
        assert!(
            service(&s)
                .to_string()
                .contains(r#"{"Key":"deregistration_delay.timeout_seconds","Value":"20"}"#)
        );
        assert_eq!(
            asg["MixedInstancesPolicy"]["LaunchTemplate"]["Overrides"],
            json!([{"InstanceType": "g5.xlarge"}])
        );
        let plain = cluster_template(&spec(""));
        assert!(!plain.to_string().contains("SPOT_INSTANCE_DRAINING"));
        // Several types on demand: a prioritized mixed-instances policy.
        let t = cluster_template(&spec(
            "[compute]\ninstance_types = [\"g5.xlarge\", \"g6.xlarge\"]\n",
        ));
        let m = &t["Resources"]["AutoScalingGroup"]["Properties"]["MixedInstancesPolicy"];
        assert_eq!(
            m["LaunchTemplate"]["Overrides"],
            json!([{"InstanceType": "g5.xlarge"}, {"InstanceType": "g6.xlarge"}])
        );
        assert_eq!(
            m["InstancesDistribution"]["OnDemandAllocationStrategy"],
            "prioritized"
        );
    }

    #[test]
    fn ecs_exec_adds_the_ssm_channels_to_the_task_role_only_when_asked() {
        let off = service(&spec(""));
        assert!(!off.to_string().contains("ssmmessages"));
        let on = service(&spec("[task]\nenable_exec = true\n"));
        let policies = on["Resources"]["TaskRole"]["Properties"]["Policies"].to_string();
        assert!(
            policies.contains("ssmmessages:OpenDataChannel")
                && policies.contains("efs-access-point")
        );
    }

    #[test]
    fn the_dashboard_charts_the_load_balancer_ecs_and_the_capacity_provider() {
        let t = service(&spec(""));
        let d = &t["Resources"]["Dashboard"]["Properties"];
        assert_eq!(d["DashboardName"], "triton-deploy-ml-clf");
        let sub = d["DashboardBody"]["Fn::Sub"].as_array().unwrap();
        let body: Value = serde_json::from_str(sub[0].as_str().unwrap()).unwrap();
        let text = body.to_string();
        for metric in [
            "RequestCount",
            "TargetResponseTime",
            "HTTPCode_Target_5XX_Count",
            "HealthyHostCount",
            "CPUReservation",
            "MemoryReservation",
            "CapacityProviderReservation",
        ] {
            assert!(text.contains(metric), "{metric}");
        }
        assert!(text.contains("\"p99\"") && text.contains("\"p50\""));
        // Every ${...} is a variable of the Fn::Sub or a resource/pseudo parameter.
        for var in [
            "${LbName}",
            "${TgName}",
            "${ClusterName}",
            "${CapacityProviderName}",
            "${AWS::Region}",
        ] {
            assert!(text.contains(var), "{var}");
            let name = var.trim_start_matches("${").trim_end_matches('}');
            assert!(
                name.starts_with("AWS::")
                    || sub[1].get(name).is_some()
                    || t["Parameters"].get(name).is_some(),
                "{var} is defined"
            );
        }
        assert!(sub[1].get("LbName").is_some() && sub[1].get("TgName").is_some());
    }

    #[test]
    fn options_change_the_template() {
        let plain = cluster_template(&spec(""));
        assert_eq!(
            plain["Resources"]["Listener"]["Properties"]["Protocol"],
            "HTTP"
        );
        assert!(
            plain["Resources"]["AutoScalingGroup"]["Properties"]
                .get("LaunchTemplate")
                .is_some()
        );
        let s = spec(
            "[compute]\nspot = true\nami = \"ami-0123abcd\"\n[storage]\nefs = false\n[network]\ncertificate_arn = \"arn:aws:acm:us-east-1:1:certificate/x\"\ninternet_facing = true\n",
        );
        let t = cluster_template(&s);
        assert_eq!(
            t["Resources"]["Listener"]["Properties"]["Protocol"],
            "HTTPS"
        );
        assert_eq!(t["Resources"]["Listener"]["Properties"]["Port"], 443);
        assert_eq!(
            t["Resources"]["LoadBalancer"]["Properties"]["Scheme"],
            "internet-facing"
        );
        assert!(
            t["Resources"]["AutoScalingGroup"]["Properties"]["MixedInstancesPolicy"].is_object()
        );
        assert_eq!(t["Parameters"]["AmiId"]["Type"], "AWS::EC2::Image::Id");
        assert!(
            t["Resources"].get("FileSystem").is_none()
                && t["Outputs"].get("FileSystemId").is_none()
        );
        let svc = service(&s);
        assert!(
            svc["Resources"]["TaskRole"]["Properties"]
                .get("Policies")
                .is_none()
        );
        assert!(
            svc["Resources"].get("AccessPoint").is_none()
                && svc["Resources"].get("EfsIngress").is_none()
                && svc["Parameters"].get("FileSystemId").is_none()
        );
    }

    #[test]
    fn the_listener_answers_404_json_and_each_model_gets_a_rule_to_its_target_group() {
        let s = spec("");
        let c = cluster_template(&s);
        let default = &c["Resources"]["Listener"]["Properties"]["DefaultActions"][0];
        assert_eq!(default["Type"], "fixed-response");
        assert_eq!(default["FixedResponseConfig"]["StatusCode"], "404");
        let body: Value = serde_json::from_str(
            default["FixedResponseConfig"]["MessageBody"]
                .as_str()
                .unwrap(),
        )
        .expect("the 404 body is JSON");
        assert!(body["error"].is_string());
        let svc = service_template(&s, &routing(&["a", "b"]));
        let rules: Vec<(&String, &Value)> = svc["Resources"]
            .as_object()
            .unwrap()
            .iter()
            .filter(|(_, r)| r["Type"] == "AWS::ElasticLoadBalancingV2::ListenerRule")
            .collect();
        assert_eq!(rules.len(), 2);
        for (id, r) in rules {
            let p = &r["Properties"];
            assert_eq!(
                id,
                &format!("Rule{}", p["Priority"]),
                "the ID is the priority"
            );
            assert_eq!(p["ListenerArn"]["Ref"], "ListenerArn");
            assert_eq!(p["Actions"][0]["TargetGroupArn"]["Ref"], "TargetGroup");
            let paths = &p["Conditions"][0]["PathPatternConfig"]["Values"];
            assert!(paths[0].as_str().unwrap().starts_with("/v2/models/"));
        }
        // Every Ref is a parameter or a resource of its own template.
        for t in [&c, &svc] {
            let text = t.to_string();
            for (i, _) in text.match_indices(r#""Ref":""#) {
                let name = text[i + 7..].split('"').next().unwrap();
                assert!(
                    name.starts_with("AWS::")
                        || t["Parameters"].get(name).is_some()
                        || t["Resources"].get(name).is_some(),
                    "Ref {name}"
                );
            }
        }
        // The access point lives on the cluster's file system; the EFS group lets the tasks in.
        let ingress = &svc["Resources"]["EfsIngress"]["Properties"];
        assert_eq!(ingress["GroupId"]["Ref"], "EfsSecurityGroupId");
        assert_eq!(ingress["SourceSecurityGroupId"]["Ref"], "TaskSecurityGroup");
        assert!(
            c["Resources"]["EfsSecurityGroup"]["Properties"]
                .get("SecurityGroupIngress")
                .is_none()
        );
    }

    #[test]
    fn grpc_gets_its_own_target_group_and_host_rule_and_https_redirects_http() {
        let s = spec(
            "[network]\ncertificate_arn = \"arn:aws:acm:us-east-1:1:certificate/x\"\nhostname = \"clf.example.com\"\nroute = \"host\"\ngrpc = true\n",
        );
        let c = cluster_template(&s);
        let redirect = &c["Resources"]["RedirectListener"]["Properties"];
        assert_eq!(redirect["Port"], 80);
        assert_eq!(
            redirect["DefaultActions"][0]["RedirectConfig"]["Protocol"],
            "HTTPS"
        );
        assert_eq!(
            redirect["DefaultActions"][0]["RedirectConfig"]["Port"],
            "443"
        );
        let ingress = c["Resources"]["AlbSecurityGroup"]["Properties"]["SecurityGroupIngress"]
            .as_array()
            .unwrap();
        assert!(ingress.iter().any(|r| r["FromPort"] == 80));
        assert!(ingress.iter().any(|r| r["FromPort"] == 443));
        let by_host = crate::deploy::route::routing(&s, &[], 4).unwrap();
        let svc = service_template(&s, &by_host);
        let tg = &svc["Resources"]["GrpcTargetGroup"]["Properties"];
        assert_eq!(tg["ProtocolVersion"], "GRPC");
        assert_eq!(tg["Port"], 8001);
        assert_eq!(tg["HealthCheckPath"], GRPC_HEALTH_CHECK);
        assert_eq!(tg["Matcher"]["GrpcCode"], "0");
        let grpc = &svc["Resources"]["Rule9"]["Properties"];
        assert_eq!(
            grpc["Actions"][0]["TargetGroupArn"]["Ref"],
            "GrpcTargetGroup"
        );
        assert_eq!(grpc["Conditions"][0]["Field"], "host-header");
        assert_eq!(
            grpc["Conditions"][0]["HostHeaderConfig"]["Values"][0],
            "clf.example.com"
        );
        assert_eq!(
            grpc["Conditions"][1]["PathPatternConfig"]["Values"][0],
            "/inference.GRPCInferenceService/*"
        );
        let http = &svc["Resources"]["Rule10"]["Properties"];
        assert_eq!(http["Actions"][0]["TargetGroupArn"]["Ref"], "TargetGroup");
        assert_eq!(
            http["Conditions"].as_array().unwrap().len(),
            1,
            "every path of the host"
        );
        assert!(svc["Outputs"]["GrpcTargetGroupArn"].is_object());
        // Without HTTPS: one listener, no gRPC.
        let plain = spec("");
        assert!(
            cluster_template(&plain)["Resources"]
                .get("RedirectListener")
                .is_none()
        );
        let svc = service_template(&plain, &routing(&["m"]));
        assert!(svc["Resources"].get("GrpcTargetGroup").is_none());

        let s = spec("[network]\nroute = \"path\"\npath_prefix = \"/text\"\n");
        let svc = service_template(&s, &crate::deploy::route::routing(&s, &[], 4).unwrap());
        let rule = &svc["Resources"]["Rule10"]["Properties"];
        assert_eq!(
            rule["Conditions"][0]["PathPatternConfig"]["Values"][0],
            "/text/*"
        );
        let rw = &rule["Transforms"][0];
        assert_eq!(rw["Type"], "url-rewrite");
        assert_eq!(
            rw["UrlRewriteConfig"]["Rewrites"][0]["Regex"],
            "^/text/(.*)$"
        );
        assert_eq!(rw["UrlRewriteConfig"]["Rewrites"][0]["Replace"], "/$1");
    }
}
