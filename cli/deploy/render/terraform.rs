//! DeploymentSpec → Terraform modules (HCL) equivalent to the two stacks, for teams that keep their
//! infrastructure in Terraform: a cluster module and a service module on its outputs. Same
//! resources, same settings, same tags as [`crate::deploy::render::cloudformation`].

use std::fmt::Write as _;

use crate::deploy::render::checks;
use crate::deploy::render::cloudformation::{self, user_data};
use crate::deploy::render::cloudformation::{GRPC_HEALTH_CHECK, redirects_http};
use crate::deploy::render::hcl::{Body, V, block, e, quote, s};
use crate::deploy::route::{Route, Routing, Target};
use crate::deploy::spec::{Ami, DeploymentSpec};

fn tag_map(tags: Vec<(String, String)>) -> V {
    V::M(tags.into_iter().map(|(k, v)| (k, s(v))).collect())
}

fn assume(svc: &str) -> V {
    e(format!(
        "jsonencode({{ Version = \"2012-10-17\", Statement = [{{ Effect = \"Allow\", Principal = {{ Service = \"{svc}\" }}, Action = \"sts:AssumeRole\" }}] }})"
    ))
}

/// The shared listener's answer where no service routes (the same as the CloudFormation one).
const NOT_ROUTED: &str = r#"{"error":"no service of this cluster routes this path: each model is under /v2/models/<name>"}"#;

/// A security group's egress anywhere (its checkov skip says why where it is used).
fn egress() -> Body {
    Body::default()
        .a("description", s("outbound"))
        .a("protocol", s("-1"))
        .a("from_port", V::N(0))
        .a("to_port", V::N(0))
        .a("cidr_blocks", V::L(vec![s("0.0.0.0/0")]))
}

fn variable(o: &mut String, name: &str, ty: &str) {
    block(o, "variable", &[name], Body::default().a("type", e(ty)));
}

fn outputs(o: &mut String, values: &[(&str, &str)]) {
    for (name, v) in values {
        block(o, "output", &[name], Body::default().a("value", e(*v)));
    }
}

/// Renders the cluster module, the Terraform equivalent of the cluster stack: what the services of
/// a cluster share. Its outputs are the service module's inputs.
pub fn cluster_module(spec: &DeploymentSpec) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "# triton-deploy cluster {}, the Terraform equivalent of\n# `triton-deploy render cloudformation --stack cluster`. Inputs: vpc_id, subnets (>= 2 AZs).\n# Its outputs feed the module of each service (`render terraform --stack service`).\n",
        spec.cluster
    );
    block(
        &mut o,
        "terraform",
        &[],
        Body::default().b(
            "required_providers",
            Body::default().a(
                "aws",
                V::M(vec![
                    ("source".into(), s("hashicorp/aws")),
                    ("version".into(), s(">= 5.60")),
                ]),
            ),
        ),
    );
    variable(&mut o, "vpc_id", "string");
    variable(&mut o, "subnets", "list(string)");
    let ami = match &spec.ami {
        // A baked AMI is the parameter `ami build` publishes: a new bake is a new value.
        Ami::SsmParameter(p) | Ami::Baked(p) => {
            block(
                &mut o,
                "data",
                &["aws_ssm_parameter", "ami"],
                Body::default().a("name", s(p.clone())),
            );
            e("data.aws_ssm_parameter.ami.value")
        }
        Ami::Id(id) => s(id.clone()),
    };
    block(&mut o, "data", &["aws_region", "current"], Body::default());
    block(
        &mut o,
        "locals",
        &[],
        Body::default().a("tags", tag_map(cloudformation::cluster_tags(spec))),
    );
    let tags = || e("local.tags");
    block(
        &mut o,
        "resource",
        &["aws_ecs_cluster", "this"],
        Body::default()
            .a("name", s(&spec.cluster))
            .b(
                "setting",
                Body::default()
                    .a("name", s("containerInsights"))
                    .a("value", s("enabled")),
            )
            .a("tags", tags()),
    );
    block(
        &mut o,
        "resource",
        &["aws_iam_role", "instance"],
        Body::default()
            .a("assume_role_policy", assume("ec2.amazonaws.com"))
            .a("tags", tags()),
    );
    for (name, arn) in [
        ("ecs", "service-role/AmazonEC2ContainerServiceforEC2Role"),
        ("ssm", "AmazonSSMManagedInstanceCore"),
    ] {
        block(
            &mut o,
            "resource",
            &[
                "aws_iam_role_policy_attachment",
                &format!("instance_{name}"),
            ],
            Body::default()
                .a("role", e("aws_iam_role.instance.name"))
                .a("policy_arn", s(format!("arn:aws:iam::aws:policy/{arn}"))),
        );
    }
    block(
        &mut o,
        "resource",
        &["aws_iam_instance_profile", "instance"],
        Body::default().a("role", e("aws_iam_role.instance.name")),
    );
    block(
        &mut o,
        "resource",
        &["aws_iam_role", "task_execution"],
        Body::default()
            .a("assume_role_policy", assume("ecs-tasks.amazonaws.com"))
            .a("tags", tags()),
    );
    block(
        &mut o,
        "resource",
        &["aws_iam_role_policy_attachment", "task_execution"],
        Body::default()
            .a("role", e("aws_iam_role.task_execution.name"))
            .a(
                "policy_arn",
                s("arn:aws:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy"),
            ),
    );
    let mut alb_sg = Body::default()
        .a("name_prefix", s(format!("{}-alb-", spec.cluster)))
        .a("description", s(format!("{} load balancer", spec.cluster)))
        .a("vpc_id", e("var.vpc_id"));
    let mut ports = vec![spec.listener_port];
    if redirects_http(spec) {
        ports.push(80);
    }
    for c in &spec.allowed_cidrs {
        for port in &ports {
            alb_sg = alb_sg.b(
                "ingress",
                Body::default()
                    .a("description", s(format!("clients on :{port}")))
                    .a("protocol", s("tcp"))
                    .a("from_port", V::N((*port).into()))
                    .a("to_port", V::N((*port).into()))
                    .a("cidr_blocks", V::L(vec![s(c.clone())])),
            );
        }
    }
    block(
        &mut o,
        "resource",
        &["aws_security_group", "alb"],
        alb_sg
            .b("egress", egress())
            .a("tags", tags())
            .skip(&[checks::ALB_EGRESS]),
    );
    block(
        &mut o,
        "resource",
        &["aws_security_group", "instance"],
        Body::default()
            .a("name_prefix", s(format!("{}-hosts-", spec.cluster)))
            .a(
                "description",
                s(format!(
                    "{} GPU hosts (egress only; tasks have their own interfaces)",
                    spec.cluster
                )),
            )
            .a("vpc_id", e("var.vpc_id"))
            .b("egress", egress())
            .a("tags", tags())
            .skip(&[checks::EGRESS_ANY]),
    );
    block(
        &mut o,
        "resource",
        &["aws_launch_template", "gpu"],
        Body::default()
            .a("name_prefix", s(format!("{}-gpu-", spec.cluster)))
            .a("image_id", ami)
            .a("instance_type", s(&spec.instance_type))
            .a(
                "vpc_security_group_ids",
                V::L(vec![e("aws_security_group.instance.id")]),
            )
            .a(
                "user_data",
                e(format!("base64encode({})", quote(&user_data(spec)))),
            )
            .b(
                "iam_instance_profile",
                Body::default().a("arn", e("aws_iam_instance_profile.instance.arn")),
            )
            .b(
                "metadata_options",
                Body::default()
                    .a("http_tokens", s("required"))
                    .a("http_put_response_hop_limit", V::N(1))
                    .a("http_endpoint", s("enabled")),
            )
            .b(
                "block_device_mappings",
                Body::default().a("device_name", s("/dev/xvda")).b(
                    "ebs",
                    Body::default()
                        .a("volume_size", V::N(spec.root_volume_gib.into()))
                        .a("volume_type", s("gp3"))
                        .a("encrypted", V::B(true))
                        .a("delete_on_termination", V::B(true)),
                ),
            )
            .b(
                "tag_specifications",
                Body::default()
                    .a("resource_type", s("instance"))
                    .a("tags", tags()),
            )
            .a("tags", tags()),
    );
    let mut asg = Body::default()
        .a("name_prefix", s(format!("{}-gpu-", spec.cluster)))
        .a("min_size", V::N(spec.min_instances.into()))
        .a("max_size", V::N(spec.max_instances.into()))
        .a("vpc_zone_identifier", e("var.subnets"))
        .a("protect_from_scale_in", V::B(true));
    let lt = || {
        Body::default()
            .a("id", e("aws_launch_template.gpu.id"))
            .a("version", e("aws_launch_template.gpu.latest_version"))
    };
    if spec.spot || spec.instance_types.len() > 1 {
        let mut template = Body::default().b(
            "launch_template_specification",
            Body::default()
                .a("launch_template_id", e("aws_launch_template.gpu.id"))
                .a("version", e("aws_launch_template.gpu.latest_version")),
        );
        for t in &spec.instance_types {
            template = template.b("override", Body::default().a("instance_type", s(t)));
        }
        let distribution = if spec.spot {
            // A Spot host at elevated risk of interruption is replaced before it is taken.
            asg = asg.a("capacity_rebalance", V::B(true));
            Body::default()
                .a("on_demand_base_capacity", V::N(spec.on_demand_base.into()))
                .a("on_demand_percentage_above_base_capacity", V::N(0))
                .a("spot_allocation_strategy", s("price-capacity-optimized"))
        } else {
            Body::default()
                .a("on_demand_allocation_strategy", s("prioritized"))
                .a("on_demand_percentage_above_base_capacity", V::N(100))
        };
        asg = asg.b(
            "mixed_instances_policy",
            Body::default()
                .b("launch_template", template)
                .b("instances_distribution", distribution),
        );
    } else {
        asg = asg.b("launch_template", lt());
    }
    asg = asg.b(
        "tag",
        Body::default()
            .a("key", s("AmazonECSManaged"))
            .a("value", s("true"))
            .a("propagate_at_launch", V::B(true)),
    );
    for (k, v) in cloudformation::cluster_tags(spec) {
        asg = asg.b(
            "tag",
            Body::default()
                .a("key", s(k))
                .a("value", s(v))
                .a("propagate_at_launch", V::B(true)),
        );
    }
    block(&mut o, "resource", &["aws_autoscaling_group", "gpu"], asg);
    block(
        &mut o,
        "resource",
        &["aws_ecs_capacity_provider", "gpu"],
        Body::default()
            .a(
                "name",
                s(crate::deploy::render::cloudformation::capacity_provider_name(spec)),
            )
            .b(
                "auto_scaling_group_provider",
                Body::default()
                    .a("auto_scaling_group_arn", e("aws_autoscaling_group.gpu.arn"))
                    .a("managed_termination_protection", s("ENABLED"))
                    .a("managed_draining", s("ENABLED"))
                    .b(
                        "managed_scaling",
                        Body::default()
                            .a("status", s("ENABLED"))
                            .a("target_capacity", V::N(spec.target_capacity.into()))
                            .a("minimum_scaling_step_size", V::N(1))
                            .a(
                                "maximum_scaling_step_size",
                                V::N(spec.max_scaling_step.into()),
                            )
                            .a(
                                "instance_warmup_period",
                                V::N(spec.instance_warmup_seconds.into()),
                            ),
                    ),
            )
            .a("tags", tags()),
    );
    block(
        &mut o,
        "resource",
        &["aws_ecs_cluster_capacity_providers", "this"],
        Body::default()
            .a("cluster_name", e("aws_ecs_cluster.this.name"))
            .a(
                "capacity_providers",
                V::L(vec![e("aws_ecs_capacity_provider.gpu.name")]),
            )
            .b(
                "default_capacity_provider_strategy",
                Body::default()
                    .a("capacity_provider", e("aws_ecs_capacity_provider.gpu.name"))
                    .a("weight", V::N(1))
                    .a("base", V::N(1)),
            ),
    );
    let mut lb_skips = vec![checks::ALB_ACCESS_LOGS, checks::ALB_DELETION_PROTECTION];
    if spec.internet_facing {
        lb_skips.push(checks::ALB_WAF);
    }
    if spec.certificate_arn.is_none() {
        lb_skips.push(checks::HTTP_NO_REDIRECT);
    }
    block(
        &mut o,
        "resource",
        &["aws_lb", "this"],
        Body::default()
            .a("name_prefix", s("td-"))
            .a("load_balancer_type", s("application"))
            .a("internal", V::B(!spec.internet_facing))
            .a("subnets", e("var.subnets"))
            .a(
                "security_groups",
                V::L(vec![e("aws_security_group.alb.id")]),
            )
            .a("idle_timeout", V::N(120))
            .a("drop_invalid_header_fields", V::B(true))
            .a("tags", tags())
            .skip(&lb_skips),
    );
    let mut listener = Body::default()
        .skip(&checks::listener_skips(spec.certificate_arn.is_some()))
        .a("load_balancer_arn", e("aws_lb.this.arn"))
        .a("port", V::N(spec.listener_port.into()))
        .a(
            "protocol",
            s(if spec.certificate_arn.is_some() {
                "HTTPS"
            } else {
                "HTTP"
            }),
        );
    if let Some(c) = &spec.certificate_arn {
        listener = listener
            .a("certificate_arn", s(c.clone()))
            .a("ssl_policy", s("ELBSecurityPolicy-TLS13-1-2-2021-06"));
    }
    block(
        &mut o,
        "resource",
        &["aws_lb_listener", "this"],
        listener.b(
            "default_action",
            Body::default().a("type", s("fixed-response")).b(
                "fixed_response",
                Body::default()
                    .a("status_code", s("404"))
                    .a("content_type", s("application/json"))
                    .a("message_body", s(NOT_ROUTED)),
            ),
        ),
    );
    if redirects_http(spec) {
        block(
            &mut o,
            "resource",
            &["aws_lb_listener", "redirect"],
            Body::default()
                .a("load_balancer_arn", e("aws_lb.this.arn"))
                .a("port", V::N(80))
                .a("protocol", s("HTTP"))
                .b(
                    "default_action",
                    Body::default().a("type", s("redirect")).b(
                        "redirect",
                        Body::default()
                            .a("protocol", s("HTTPS"))
                            .a("port", s(spec.listener_port.to_string()))
                            .a("status_code", s("HTTP_301")),
                    ),
                ),
        );
    }
    if spec.efs {
        block(
            &mut o,
            "resource",
            &["aws_security_group", "efs"],
            Body::default()
                .a("name_prefix", s(format!("{}-efs-", spec.cluster)))
                .a(
                    "description",
                    s(format!(
                        "{} EFS (NFS from the tasks of each service, let in by its module)",
                        spec.cluster
                    )),
                )
                .a("vpc_id", e("var.vpc_id"))
                .a("tags", tags()),
        );
        block(
            &mut o,
            "resource",
            &["aws_efs_file_system", "cache"],
            Body::default()
                .skip(&[checks::EFS_CMK])
                .a("encrypted", V::B(true))
                .a("performance_mode", s("generalPurpose"))
                .a("throughput_mode", s("elastic"))
                .a("tags", tags()),
        );
        block(
            &mut o,
            "resource",
            &["aws_efs_mount_target", "cache"],
            Body::default()
                .a("count", e("length(var.subnets)"))
                .a("file_system_id", e("aws_efs_file_system.cache.id"))
                .a("subnet_id", e("var.subnets[count.index]"))
                .a(
                    "security_groups",
                    V::L(vec![e("aws_security_group.efs.id")]),
                ),
        );
    }
    outputs(
        &mut o,
        &[
            ("cluster_name", "aws_ecs_cluster.this.name"),
            (
                "capacity_provider_name",
                "aws_ecs_capacity_provider.gpu.name",
            ),
            ("auto_scaling_group_name", "aws_autoscaling_group.gpu.name"),
            ("load_balancer_arn", "aws_lb.this.arn"),
            ("load_balancer_arn_suffix", "aws_lb.this.arn_suffix"),
            ("load_balancer_dns", "aws_lb.this.dns_name"),
            ("listener_arn", "aws_lb_listener.this.arn"),
            ("alb_security_group_id", "aws_security_group.alb.id"),
            ("task_execution_role_arn", "aws_iam_role.task_execution.arn"),
        ],
    );
    if spec.efs {
        outputs(
            &mut o,
            &[
                ("file_system_id", "aws_efs_file_system.cache.id"),
                ("file_system_arn", "aws_efs_file_system.cache.arn"),
                ("efs_security_group_id", "aws_security_group.efs.id"),
            ],
        );
    }
    o
}

/// Renders a service module, the Terraform equivalent of the service stack: the service's target
/// group and listener rules (`routing`), task role and security group, EFS access point, log group
/// and dashboard, on the cluster module's outputs.
pub fn service_module(spec: &DeploymentSpec, routing: &Routing) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "# triton-deploy service {} on cluster {}, the Terraform equivalent of\n# `triton-deploy render cloudformation --stack service`. Inputs: vpc_id, vpc_cidr and the\n# cluster module's outputs.\n",
        spec.service, spec.cluster
    );
    block(
        &mut o,
        "terraform",
        &[],
        Body::default().b(
            "required_providers",
            Body::default().a(
                "aws",
                V::M(vec![
                    ("source".into(), s("hashicorp/aws")),
                    // Listener-rule transforms (a path prefix's rewrite) came in 6.18.
                    (
                        "version".into(),
                        s(if matches!(routing.route, Route::Path { .. }) {
                            ">= 6.18"
                        } else {
                            ">= 5.60"
                        }),
                    ),
                ]),
            ),
        ),
    );
    variable(&mut o, "vpc_id", "string");
    variable(&mut o, "vpc_cidr", "string");
    for name in [
        "cluster_name",
        "capacity_provider_name",
        "listener_arn",
        "load_balancer_arn_suffix",
        "alb_security_group_id",
    ] {
        variable(&mut o, name, "string");
    }
    if spec.efs {
        for name in ["file_system_id", "file_system_arn", "efs_security_group_id"] {
            variable(&mut o, name, "string");
        }
    }
    block(&mut o, "data", &["aws_region", "current"], Body::default());
    block(
        &mut o,
        "locals",
        &[],
        Body::default().a("tags", tag_map(cloudformation::tags(spec))),
    );
    let tags = || e("local.tags");
    block(
        &mut o,
        "resource",
        &["aws_iam_role", "task"],
        Body::default()
            .a("assume_role_policy", assume("ecs-tasks.amazonaws.com"))
            .a("tags", tags()),
    );
    if spec.efs {
        block(&mut o, "resource", &["aws_iam_role_policy", "task_efs"], Body::default()
            .a("role", e("aws_iam_role.task.id"))
            .a("policy", e("jsonencode({ Version = \"2012-10-17\", Statement = [{ Effect = \"Allow\", Action = [\"elasticfilesystem:ClientMount\", \"elasticfilesystem:ClientWrite\"], Resource = var.file_system_arn, Condition = { StringEquals = { \"elasticfilesystem:AccessPointArn\" = aws_efs_access_point.cache.arn } } }] })")));
    }

    block(
        &mut o,
        "resource",
        &["aws_security_group", "task"],
        Body::default()
            .a("name_prefix", s(format!("{}-task-", spec.service)))
            .a("description", s(format!("{} Triton tasks", spec.service)))
            .skip(&[checks::EGRESS_ANY, checks::TASK_SG_ATTACHED])
            .a("vpc_id", e("var.vpc_id"))
            .b(
                "ingress",
                Body::default()
                    .a("description", s("HTTP and gRPC from the load balancer"))
                    .a("protocol", s("tcp"))
                    .a("from_port", V::N(8000))
                    .a("to_port", V::N(8001))
                    .a(
                        "security_groups",
                        V::L(vec![e("var.alb_security_group_id")]),
                    ),
            )
            .b(
                "ingress",
                Body::default()
                    .a("description", s("metrics from inside the VPC"))
                    .a("protocol", s("tcp"))
                    .a("from_port", V::N(8002))
                    .a("to_port", V::N(8002))
                    .a("cidr_blocks", V::L(vec![e("var.vpc_cidr")])),
            )
            .b("egress", egress())
            .a("tags", tags()),
    );
    block(
        &mut o,
        "resource",
        &["aws_lb_target_group", "triton"],
        Body::default()
            .skip(&[checks::PLAIN_TARGETS])
            .a("name_prefix", s("td-"))
            .a("target_type", s("ip"))
            .a("protocol", s("HTTP"))
            .a("port", V::N(8000))
            .a("vpc_id", e("var.vpc_id"))
            .a(
                "deregistration_delay",
                V::N(spec.deregistration_delay_seconds.into()),
            )
            .a("slow_start", V::N(60))
            .b(
                "health_check",
                Body::default()
                    .a("path", s("/v2/health/ready"))
                    .a("port", s("8000"))
                    .a("interval", V::N(15))
                    .a("timeout", V::N(5))
                    .a("healthy_threshold", V::N(2))
                    .a("unhealthy_threshold", V::N(3))
                    .a("matcher", s("200")),
            )
            .a("tags", tags()),
    );
    if routing.grpc_host.is_some() {
        block(
            &mut o,
            "resource",
            &["aws_lb_target_group", "grpc"],
            Body::default()
                .skip(&[checks::PLAIN_TARGETS])
                .a("name_prefix", s("tdg-"))
                .a("target_type", s("ip"))
                .a("protocol", s("HTTP"))
                .a("protocol_version", s("GRPC"))
                .a("port", V::N(8001))
                .a("vpc_id", e("var.vpc_id"))
                .a(
                    "deregistration_delay",
                    V::N(spec.deregistration_delay_seconds.into()),
                )
                .b(
                    "health_check",
                    Body::default()
                        .a("path", s(GRPC_HEALTH_CHECK))
                        .a("port", s("8001"))
                        .a("interval", V::N(15))
                        .a("timeout", V::N(5))
                        .a("healthy_threshold", V::N(2))
                        .a("unhealthy_threshold", V::N(3))
                        .a("matcher", s("0")),
                )
                .a("tags", tags()),
        );
    }
    for rule in routing.rules() {
        let target = match rule.target {
            Target::Http => "aws_lb_target_group.triton.arn",
            Target::Grpc => "aws_lb_target_group.grpc.arn",
        };
        let mut body = Body::default()
            .a("listener_arn", e("var.listener_arn"))
            .a("priority", V::N(rule.priority.into()))
            .b(
                "action",
                Body::default()
                    .a("type", s("forward"))
                    .a("target_group_arn", e(target)),
            );
        if !rule.hosts.is_empty() {
            body = body.b(
                "condition",
                Body::default().b(
                    "host_header",
                    Body::default().a("values", V::L(rule.hosts.into_iter().map(s).collect())),
                ),
            );
        }
        if !rule.paths.is_empty() {
            body = body.b(
                "condition",
                Body::default().b(
                    "path_pattern",
                    Body::default().a("values", V::L(rule.paths.into_iter().map(s).collect())),
                ),
            );
        }
        if let Some((regex, replace)) = rule.rewrite {
            // The AWS provider's `transform` block (6.18 and later).
            body = body.b(
                "transform",
                Body::default().a("type", s("url-rewrite")).b(
                    "url_rewrite_config",
                    Body::default().b(
                        "rewrite",
                        Body::default()
                            .a("regex", s(regex))
                            .a("replace", s(replace)),
                    ),
                ),
            );
        }
        block(
            &mut o,
            "resource",
            &["aws_lb_listener_rule", &format!("p{}", rule.priority)],
            body.a("tags", tags()),
        );
    }
    block(
        &mut o,
        "resource",
        &["aws_cloudwatch_log_group", "triton"],
        Body::default()
            .skip(&[checks::LOGS_KMS, checks::LOGS_RETENTION])
            .a(
                "name",
                s(format!("/triton-deploy/{}/{}", spec.cluster, spec.service)),
            )
            .a("retention_in_days", V::N(30))
            .a("tags", tags()),
    );
    // The dashboard body is JSON with Terraform references interpolated into it.
    let body = crate::deploy::render::cloudformation::dashboard_body(
        spec,
        "@LB@",
        "@TG@",
        "@CLUSTER@",
        "@CP@",
        "@REGION@",
    );
    let mut body = quote(&body);
    for (marker, reference) in [
        ("@LB@", "var.load_balancer_arn_suffix"),
        ("@TG@", "aws_lb_target_group.triton.arn_suffix"),
        ("@CLUSTER@", "var.cluster_name"),
        ("@CP@", "var.capacity_provider_name"),
        ("@REGION@", "data.aws_region.current.name"),
    ] {
        body = body.replace(marker, &format!("${{{reference}}}"));
    }
    block(
        &mut o,
        "resource",
        &["aws_cloudwatch_dashboard", "triton"],
        Body::default()
            .a(
                "dashboard_name",
                s(crate::deploy::render::cloudformation::dashboard_name(spec)),
            )
            .a("dashboard_body", e(body)),
    );
    if spec.efs {
        block(
            &mut o,
            "resource",
            &["aws_vpc_security_group_ingress_rule", "efs"],
            Body::default()
                .a("security_group_id", e("var.efs_security_group_id"))
                .a("description", s(format!("NFS from {} tasks", spec.service)))
                .a("ip_protocol", s("tcp"))
                .a("from_port", V::N(2049))
                .a("to_port", V::N(2049))
                .a(
                    "referenced_security_group_id",
                    e("aws_security_group.task.id"),
                )
                .a("tags", tags()),
        );
        block(
            &mut o,
            "resource",
            &["aws_efs_access_point", "cache"],
            Body::default()
                .a("file_system_id", e("var.file_system_id"))
                .b(
                    "posix_user",
                    Body::default()
                        .a("uid", V::N(spec.efs_uid.into()))
                        .a("gid", V::N(spec.efs_gid.into())),
                )
                .b(
                    "root_directory",
                    Body::default()
                        .a(
                            "path",
                            s(crate::deploy::render::cloudformation::access_point_root(
                                spec,
                            )),
                        )
                        .b(
                            "creation_info",
                            Body::default()
                                .a("owner_uid", V::N(spec.efs_uid.into()))
                                .a("owner_gid", V::N(spec.efs_gid.into()))
                                .a("permissions", s("0755")),
                        ),
                )
                .a("tags", tags()),
        );
    }
    outputs(
        &mut o,
        &[
            ("target_group_arn", "aws_lb_target_group.triton.arn"),
            ("task_security_group_id", "aws_security_group.task.id"),
            ("task_role_arn", "aws_iam_role.task.arn"),
            ("log_group_name", "aws_cloudwatch_log_group.triton.name"),
        ],
    );
    if spec.efs {
        outputs(
            &mut o,
            &[("access_point_id", "aws_efs_access_point.cache.id")],
        );
    }
    if routing.grpc_host.is_some() {
        outputs(
            &mut o,
            &[("grpc_target_group_arn", "aws_lb_target_group.grpc.arn")],
        );
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resources(text: &str) -> Vec<String> {
        let body = hcl::parse(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        body.blocks()
            .filter(|b| b.identifier() == "resource")
            .map(|b| {
                b.labels()
                    .iter()
                    .map(|l| l.as_str().to_string())
                    .collect::<Vec<_>>()
                    .join(".")
            })
            .collect()
    }

    #[test]
    fn the_modules_parse_as_hcl_with_the_expected_resources_split_as_the_stacks() {
        let spec = crate::deploy::spec::parse(std::path::Path::new("t.toml"), "[service]\nname = \"clf\"\n[compute]\nspot = true\n[network]\ncertificate_arn = \"arn:aws:acm:us-east-1:1:certificate/${x}\"\n", None).unwrap();
        let cluster = cluster_module(&spec);
        let routing = Routing {
            route: crate::deploy::route::Route::Models {
                models: vec!["a".into(), "b".into()],
            },
            block: 2,
            grpc_host: None,
        };
        let service = service_module(&spec, &routing);
        let (c, s) = (resources(&cluster), resources(&service));
        for r in [
            "aws_ecs_cluster.this",
            "aws_autoscaling_group.gpu",
            "aws_ecs_capacity_provider.gpu",
            "aws_lb_listener.this",
            "aws_efs_file_system.cache",
            "aws_launch_template.gpu",
        ] {
            assert!(c.contains(&r.to_string()), "{r} in {c:?}");
        }
        for r in [
            "aws_lb_target_group.triton",
            "aws_efs_access_point.cache",
            "aws_iam_role.task",
            "aws_vpc_security_group_ingress_rule.efs",
        ] {
            assert!(s.contains(&r.to_string()), "{r} in {s:?}");
        }
        assert_eq!(
            s.iter()
                .filter(|r| r.starts_with("aws_lb_listener_rule."))
                .count(),
            2
        );
        assert!(cluster.contains("fixed-response") && !cluster.contains("triton-deploy:service"));
        // Every var.<name> the service module uses is declared, and every one is an output of the
        // cluster module (or the network).
        for (i, _) in service.match_indices("var.") {
            let name: String = service[i + 4..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            assert!(
                service.contains(&format!("variable \"{name}\"")),
                "var.{name} declared"
            );
            assert!(
                name.starts_with("vpc_") || cluster.contains(&format!("output \"{name}\"")),
                "var.{name} is a cluster output"
            );
        }
        assert!(
            cluster.contains("$${x}"),
            "template sequences in strings are escaped"
        );
    }
}
