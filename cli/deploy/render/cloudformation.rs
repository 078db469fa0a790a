//! DeploymentSpec → the infra stack: one CloudFormation template per cluster with the GPU hosts
//! (launch template on the ECS GPU AMI, Auto Scaling group across >= 2 AZs, capacity provider with
//! managed scaling, termination protection and draining), the ALB, the EFS cache, IAM roles, security
//! groups and the log group. CloudFormation orders, rolls back and deletes it; we only render it.

use serde_json::{Value, json};

use crate::deploy::spec::{Ami, DeploymentSpec};

/// Tags on every resource.
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

/// The stack's name.
pub fn stack_name(spec: &DeploymentSpec) -> String {
    format!("triton-deploy-{}", spec.cluster)
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
pub fn user_data(spec: &DeploymentSpec) -> String {
    let spot = if spec.spot {
        "ECS_ENABLE_SPOT_INSTANCE_DRAINING=true\n"
    } else {
        ""
    };
    format!(
        "#!/bin/bash\nset -euo pipefail\ncat >> /etc/ecs/ecs.config <<'EOF'\nECS_CLUSTER={}\nECS_ENABLE_GPU_SUPPORT=true\nECS_ENABLE_CONTAINER_METADATA=true\nECS_CONTAINER_STOP_TIMEOUT=120s\n{spot}EOF\n# The GPU AMI has IPv6 on, which breaks yum.\necho 'ip_resolve=4' >> /etc/yum.conf\n",
        spec.cluster
    )
}

/// Renders the infra stack template.
pub fn template(spec: &DeploymentSpec) -> Value {
    let t = cfn_tags(spec);
    let n_subnets = spec.subnets.len().max(2);
    let ami_param = match &spec.ami {
        Ami::SsmParameter(p) => json!({
            "Type": "AWS::SSM::Parameter::Value<AWS::EC2::Image::Id>",
            "Default": p,
            "Description": "SSM parameter holding the GPU AMI (the ECS-optimized GPU AMI by default)"
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
                    "Resource": {"Fn::Sub": "arn:${AWS::Partition}:elasticfilesystem:${AWS::Region}:${AWS::AccountId}:file-system/${FileSystem}"},
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

    let listener_ingress: Vec<Value> = spec
        .allowed_cidrs
        .iter()
        .map(|c| json!({"IpProtocol": "tcp", "FromPort": spec.listener_port, "ToPort": spec.listener_port, "CidrIp": c, "Description": "listener"}))
        .collect();
    r(
        "AlbSecurityGroup",
        json!({
            "Type": "AWS::EC2::SecurityGroup",
            "Properties": {
                "GroupDescription": format!("{} load balancer", spec.service),
                "VpcId": {"Ref": "VpcId"},
                "SecurityGroupIngress": listener_ingress,
                "Tags": t
            }
        }),
    );
    r(
        "TaskSecurityGroup",
        json!({
            "Type": "AWS::EC2::SecurityGroup",
            "Properties": {
                "GroupDescription": format!("{} Triton tasks", spec.service),
                "VpcId": {"Ref": "VpcId"},
                "SecurityGroupIngress": [
                    {"IpProtocol": "tcp", "FromPort": 8000, "ToPort": 8001, "SourceSecurityGroupId": {"Ref": "AlbSecurityGroup"}, "Description": "HTTP and gRPC from the load balancer"},
                    {"IpProtocol": "tcp", "FromPort": 8002, "ToPort": 8002, "CidrIp": {"Ref": "VpcCidr"}, "Description": "metrics from inside the VPC"}
                ],
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
                    "MetadataOptions": {"HttpTokens": "required", "HttpPutResponseHopLimit": 2, "HttpEndpoint": "enabled"},
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
    let mut asg_tags: Vec<Value> = tags(spec)
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
    if spec.spot {
        // A Spot host at elevated risk of interruption is replaced before it is taken.
        asg["CapacityRebalance"] = json!(true);
        asg["MixedInstancesPolicy"] = json!({
            "LaunchTemplate": {"LaunchTemplateSpecification": lt},
            "InstancesDistribution": {"OnDemandBaseCapacity": spec.on_demand_base, "OnDemandPercentageAboveBaseCapacity": 0, "SpotAllocationStrategy": "price-capacity-optimized"}
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
                "LoadBalancerAttributes": [{"Key": "idle_timeout.timeout_seconds", "Value": "120"}],
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
    let mut listener = json!({
        "LoadBalancerArn": {"Ref": "LoadBalancer"},
        "Port": spec.listener_port,
        "Protocol": if spec.certificate_arn.is_some() { "HTTPS" } else { "HTTP" },
        "DefaultActions": [{"Type": "forward", "TargetGroupArn": {"Ref": "TargetGroup"}}]
    });
    if let Some(cert) = &spec.certificate_arn {
        listener["Certificates"] = json!([{"CertificateArn": cert}]);
        listener["SslPolicy"] = json!("ELBSecurityPolicy-TLS13-1-2-2021-06");
    }
    r(
        "Listener",
        json!({"Type": "AWS::ElasticLoadBalancingV2::Listener", "Properties": listener}),
    );
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
            "EfsSecurityGroup",
            json!({
                "Type": "AWS::EC2::SecurityGroup",
                "Properties": {
                    "GroupDescription": format!("{} EFS (NFS from the tasks only)", spec.service),
                    "VpcId": {"Ref": "VpcId"},
                    "SecurityGroupIngress": [{"IpProtocol": "tcp", "FromPort": 2049, "ToPort": 2049, "SourceSecurityGroupId": {"Ref": "TaskSecurityGroup"}, "Description": "NFS from Triton tasks"}],
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
        r(
            "AccessPoint",
            json!({
                "Type": "AWS::EFS::AccessPoint",
                "Properties": {
                    "FileSystemId": {"Ref": "FileSystem"},
                    // Numbers, not strings: CloudFormation takes either, and EFS reports them as numbers.
                    "PosixUser": {"Uid": spec.efs_uid, "Gid": spec.efs_gid},
                    "RootDirectory": {
                        "Path": format!("/triton-deploy/{}", spec.efs_holds),
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
                    dashboard_body(spec, "${LbName}", "${TgName}", "${Cluster}", "${CapacityProvider}", "${AWS::Region}"),
                    {"LbName": lb_full_name(), "TgName": tg_full_name()}
                ]}
            }
        }),
    );
    let mut outputs = json!({
        "ClusterName": {"Value": {"Ref": "Cluster"}},
        "CapacityProviderName": {"Value": {"Ref": "CapacityProvider"}},
        "AutoScalingGroupName": {"Value": {"Ref": "AutoScalingGroup"}},
        "LoadBalancerArn": {"Value": {"Ref": "LoadBalancer"}},
        "LoadBalancerDns": {"Value": {"Fn::GetAtt": ["LoadBalancer", "DNSName"]}},
        "LoadBalancerFullName": {"Value": lb_full_name()},
        "TargetGroupArn": {"Value": {"Ref": "TargetGroup"}},
        "TargetGroupFullName": {"Value": tg_full_name()},
        "TaskSecurityGroupId": {"Value": {"Ref": "TaskSecurityGroup"}},
        "TaskExecutionRoleArn": {"Value": {"Fn::GetAtt": ["TaskExecutionRole", "Arn"]}},
        "TaskRoleArn": {"Value": {"Fn::GetAtt": ["TaskRole", "Arn"]}},
        "LogGroupName": {"Value": {"Ref": "LogGroup"}}
    });
    if spec.efs {
        outputs["FileSystemId"] = json!({"Value": {"Ref": "FileSystem"}});
        outputs["AccessPointId"] = json!({"Value": {"Ref": "AccessPoint"}});
    }
    json!({
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": format!("triton-deploy infra for cluster {} (service {}): GPU hosts, capacity provider, ALB, EFS", spec.cluster, spec.service),
        "Parameters": {
            "AmiId": ami_param,
            "VpcId": {"Type": "AWS::EC2::VPC::Id", "Description": "The VPC (the default VPC unless the spec names one)"},
            "VpcCidr": {"Type": "String", "Description": "The VPC's CIDR, for the metrics port", "AllowedPattern": "^[0-9./]+$"},
            "Subnets": {"Type": "List<AWS::EC2::Subnet::Id>", "Description": format!("{n_subnets} subnets in different availability zones")}
        },
        "Resources": resources,
        "Outputs": outputs
    })
}

/// Parameter values for the template, given the resolved network.
pub fn parameters(vpc_id: &str, vpc_cidr: &str, subnets: &[String]) -> Vec<(String, String)> {
    vec![
        ("VpcId".into(), vpc_id.into()),
        ("VpcCidr".into(), vpc_cidr.into()),
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

    #[test]
    fn every_taggable_resource_is_tagged_and_the_template_is_small_enough() {
        let t = template(&spec(""));
        let resources = t["Resources"].as_object().unwrap();
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
            ]
            .contains(&name.as_str())
                || name.starts_with("MountTarget");
            if !untaggable && r["Type"] != "AWS::EC2::LaunchTemplate" {
                let tags = tags.unwrap_or_else(|| panic!("{name} has no tags"));
                assert!(tags.to_string().contains("triton-deploy:cluster"), "{name}");
            }
        }
        assert!(
            serde_json::to_vec(&t).unwrap().len() < 51_200,
            "fits TemplateBody"
        );
        assert_eq!(t["Parameters"]["AmiId"]["Default"], Ami::AL2023_GPU);
        let ud = t["Resources"]["LaunchTemplate"]["Properties"]["LaunchTemplateData"]["UserData"]["Fn::Base64"].as_str().unwrap();
        assert!(ud.contains("ECS_CLUSTER=ml\n") && ud.contains("ECS_ENABLE_GPU_SUPPORT=true"));
    }

    #[test]
    fn hosts_are_replaced_by_the_refresh_not_an_update_policy_and_spot_drains_and_rebalances() {
        let t = template(&spec("[compute]\nmin_instances = 2\nmax_instances = 2\n"));
        assert!(
            t["Resources"]["AutoScalingGroup"]
                .get("UpdatePolicy")
                .is_none()
        );
        let t = template(&spec(
            "[compute]\nspot = true\non_demand_base = 1\n[network]\nderegistration_delay_seconds = 20\n",
        ));
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
            t.to_string()
                .contains(r#"{"Key":"deregistration_delay.timeout_seconds","Value":"20"}"#)
        );
        let plain = template(&spec(""));
        assert!(!plain.to_string().contains("SPOT_INSTANCE_DRAINING"));
    }

    #[test]
    fn ecs_exec_adds_the_ssm_channels_to_the_task_role_only_when_asked() {
        let off = template(&spec(""));
        assert!(!off.to_string().contains("ssmmessages"));
        let on = template(&spec("[task]\nenable_exec = true\n"));
        let policies = on["Resources"]["TaskRole"]["Properties"]["Policies"].to_string();
        assert!(
            policies.contains("ssmmessages:OpenDataChannel")
                && policies.contains("efs-access-point")
        );
    }

    #[test]
    fn the_dashboard_charts_the_load_balancer_ecs_and_the_capacity_provider() {
        let t = template(&spec(""));
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
            "${Cluster}",
            "${CapacityProvider}",
            "${AWS::Region}",
        ] {
            assert!(text.contains(var), "{var}");
        }
        assert!(sub[1].get("LbName").is_some() && sub[1].get("TgName").is_some());
    }

    #[test]
    fn options_change_the_template() {
        let plain = template(&spec(""));
        assert_eq!(
            plain["Resources"]["Listener"]["Properties"]["Protocol"],
            "HTTP"
        );
        assert!(
            plain["Resources"]["AutoScalingGroup"]["Properties"]
                .get("LaunchTemplate")
                .is_some()
        );
        let t = template(&spec(
            "[compute]\nspot = true\nami = \"ami-0123abcd\"\n[storage]\nefs = false\n[network]\ncertificate_arn = \"arn:aws:acm:us-east-1:1:certificate/x\"\ninternet_facing = true\n",
        ));
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
        assert!(
            t["Resources"]["TaskRole"]["Properties"]
                .get("Policies")
                .is_none()
        );
    }
}
