//! Two services on one cluster against moto: one cluster stack, a stack per service, each service
//! behind its own target group and listener rules (priorities apart, conditions per model), a
//! second rollout of each making no mutating call, a cluster-level change naming the other service, one service rolled forward and back while the
//! other stays as it is, a model routed twice refused, and destroy
//! removing one service while the other and the cluster stay, then the cluster with the last one.

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::{Value, json};

use crate::support::*;

/// A spec of service `name` on `cluster`, serving the example repository `repo`.
fn spec(dir: &Path, name: &str, cluster: &str, repo: &str, extra: &str) -> PathBuf {
    let p = dir.join(format!("{name}.toml"));
    let repo = root().join("model-repos").join(repo);
    std::fs::write(
        &p,
        format!(
            "[service]\nname = \"{name}\"\ncluster = \"{cluster}\"\nregion = \"us-east-1\"\n[image]\nuri = \"registry.example.com/team/triton:1\"\nmodel_repository = \"{}\"\n[storage]\nefs = true\n{extra}",
            repo.display()
        ),
    )
    .unwrap();
    p
}

async fn cli(args: &[&str], spec: &Path) -> Output {
    cli_via(&env("TD_MOTO_URL"), args, spec).await
}

/// `cli` through another endpoint (a proxy in front of moto).
async fn cli_via(endpoint: &str, args: &[&str], spec: &Path) -> Output {
    let (a, s, endpoint) = (
        args.iter().map(|x| x.to_string()).collect::<Vec<_>>(),
        spec.to_path_buf(),
        endpoint.to_string(),
    );
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_triton-deploy"))
            .args(&a)
            .arg("-f")
            .arg(&s)
            .env("AWS_ENDPOINT_URL", &endpoint)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env_remove("AWS_REGION")
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

/// A query-protocol call to moto (CloudFormation, ELB), its XML answer as text.
async fn moto_query(service: &str, version: &str, params: &[(&str, &str)]) -> String {
    let mut form = url::form_urlencoded::Serializer::new(String::new());
    form.append_pair("Version", version);
    for (k, v) in params {
        form.append_pair(k, v);
    }
    reqwest::Client::new()
        .post(env("TD_MOTO_URL"))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .header("Authorization", format!("AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/{service}/aws4_request, SignedHeaders=host, Signature=0"))
        .body(form.finish())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Every `<tag>…</tag>` value of an XML text, in order.
fn values(xml: &str, tag: &str) -> Vec<String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    xml.split(&open)
        .skip(1)
        .filter_map(|s| s.split(&close).next())
        .map(str::to_string)
        .collect()
}

async fn stack_status(name: &str) -> Option<String> {
    let xml = moto_query(
        "cloudformation",
        "2010-05-15",
        &[("Action", "DescribeStacks"), ("StackName", name)],
    )
    .await;
    values(&xml, "StackStatus").into_iter().next()
}

/// The listener's rules as moto holds them: (priority, path values, target group), the default
/// rule left out. The XML is read by nesting: each `<member>` right under `<Rules>` is a rule.
async fn rules(listener: &str) -> Vec<(String, Vec<String>, String)> {
    let xml = moto_query(
        "elasticloadbalancing",
        "2015-12-01",
        &[("Action", "DescribeRules"), ("ListenerArn", listener)],
    )
    .await;
    let mut out: Vec<(String, Vec<String>, String)> = Vec::new();
    let mut path: Vec<String> = Vec::new();
    let mut rest = xml.as_str();
    while let Some(open) = rest.find('<') {
        let text = rest[..open].trim();
        let close = open + rest[open..].find('>').unwrap();
        let tag = &rest[open + 1..close];
        rest = &rest[close + 1..];
        if !text.is_empty()
            && let Some(rule) = out.last_mut()
        {
            let names: Vec<&str> = path.iter().map(String::as_str).collect();
            match names.as_slice() {
                [.., "Rules", "member", "Priority"] => rule.0 = text.to_string(),
                [
                    ..,
                    "Rules",
                    "member",
                    "Conditions",
                    "member",
                    "PathPatternConfig",
                    "Values",
                    "member",
                ] => rule.1.push(text.to_string()),
                [.., "Rules", "member", "Actions", "member", "TargetGroupArn"] => {
                    rule.2 = text.to_string()
                }
                _ => {}
            }
        }
        if tag.starts_with('?') || tag.ends_with('/') {
            continue;
        }
        if let Some(name) = tag.strip_prefix('/') {
            assert_eq!(path.pop().as_deref(), Some(name), "{xml}");
            continue;
        }
        let name = tag.split_whitespace().next().unwrap().to_string();
        if name == "member" && path.last().map(String::as_str) == Some("Rules") {
            out.push(Default::default());
        }
        path.push(name);
    }
    out.retain(|(p, _, _)| p != "default");
    out
}

async fn ecs_service(cluster: &str, service: &str) -> Value {
    moto_json(
        "ecs",
        "AmazonEC2ContainerServiceV20141113.DescribeServices",
        json!({"cluster": cluster, "services": [service]}),
    )
    .await["services"][0]
        .clone()
}

#[tokio::test]
#[ignore = "needs the local stack: run ./scripts/test.sh"]
async fn two_services_share_one_cluster_each_behind_its_own_rules() {
    let dir = tempfile::tempdir().unwrap();
    let tag = unique("c")
        .replace('-', "")
        .chars()
        .take(10)
        .collect::<String>();
    let cluster = format!("shared{tag}");
    let (a, b) = (format!("text{tag}"), format!("onnx{tag}"));
    let spec_a = spec(dir.path(), &a, &cluster, "python-backend", "");
    let spec_b = spec(dir.path(), &b, &cluster, "simple-onnx", "");
    let cluster_stack = format!("triton-deploy-{cluster}");

    let out = cli(&["rollout", "--yes", "--timeout", "5"], &spec_a).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        stack_status(&cluster_stack).await.as_deref(),
        Some("CREATE_COMPLETE")
    );
    assert_eq!(
        stack_status(&format!("{cluster_stack}-{a}"))
            .await
            .as_deref(),
        Some("CREATE_COMPLETE")
    );

    // The second service: the cluster stack is as it is (no change), its own stack is added.
    let out = cli(&["rollout", "--plan", "--format", "json"], &spec_b).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let plan = json_of(&out);
    assert_eq!(
        plan["changes"],
        json!([]),
        "the cluster is shared as it is: {plan}"
    );
    assert!(plan.get("affects").is_none(), "{plan}");
    let added: Vec<&str> = plan["service_stack"]["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["logical_id"].as_str().unwrap())
        .collect();
    for r in [
        "TargetGroup",
        "TaskRole",
        "TaskSecurityGroup",
        "AccessPoint",
        "EfsIngress",
        "Dashboard",
    ] {
        assert!(added.contains(&r), "{r}: {added:?}");
    }
    assert_eq!(plan["service_stack"]["route"]["by"], "models");
    assert_eq!(plan["service_stack"]["route"]["models"], json!(["add_sub"]));
    let out = cli(&["rollout", "--yes", "--timeout", "5"], &spec_b).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    // Both services ACTIVE, each behind its own target group, each model behind its own rule.
    let resources = |stack: String| async move {
        let xml = moto_query(
            "cloudformation",
            "2010-05-15",
            &[("Action", "DescribeStackResources"), ("StackName", &stack)],
        )
        .await;
        // One <member> per resource; an emulator may leave a physical ID out.
        xml.split("<member>")
            .filter_map(|m| {
                let logical = values(m, "LogicalResourceId").into_iter().next()?;
                let physical = values(m, "PhysicalResourceId").into_iter().next()?;
                Some((logical, physical))
            })
            .collect::<std::collections::BTreeMap<String, String>>()
    };
    let c = resources(cluster_stack.clone()).await;
    let ra = resources(format!("{cluster_stack}-{a}")).await;
    let rb = resources(format!("{cluster_stack}-{b}")).await;
    assert!(
        !c.contains_key("TargetGroup"),
        "the cluster holds no service's parts: {c:?}"
    );
    let (tg_a, tg_b) = (&ra["TargetGroup"], &rb["TargetGroup"]);
    assert_ne!(tg_a, tg_b);
    for (svc, tg) in [(&a, tg_a), (&b, tg_b)] {
        let s = ecs_service(&cluster, svc).await;
        assert_eq!(s["status"], "ACTIVE", "{s}");
        assert_eq!(s["loadBalancers"][0]["targetGroupArn"], tg.as_str(), "{s}");
    }
    let listener_rules = rules(&c["Listener"]).await;
    let find = |model: &str| {
        listener_rules
            .iter()
            .find(|(_, paths, _)| paths.contains(&format!("/v2/models/{model}")))
            .cloned()
            .unwrap_or_else(|| panic!("no rule for {model}: {listener_rules:?}"))
    };
    let (pa, paths_a, to_a) = find("text_stats");
    let (pb, _, to_b) = find("add_sub");
    assert_eq!(
        paths_a,
        ["/v2/models/text_stats", "/v2/models/text_stats/*"]
    );
    assert_ne!(pa, pb);
    let (pa, pb): (u32, u32) = (pa.parse().unwrap(), pb.parse().unwrap());
    assert_ne!(
        (pa - 1) / 100,
        (pb - 1) / 100,
        "each service in its own block"
    );
    assert_eq!((&to_a, &to_b), (tg_a, tg_b));

    // The cluster at a glance: both services with their models.
    let out = cli(&["status", "--cluster", "--format", "json"], &spec_a).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let st = json_of(&out);
    assert_eq!(st["stack_status"], "CREATE_COMPLETE", "{st}");
    let services = st["services"].as_array().unwrap();
    let by_name = |n: &str| {
        services
            .iter()
            .find(|s| s["name"] == n)
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(services.len(), 2, "{st}");
    assert_eq!(by_name(&a)["models"], json!(["text_stats"]), "{st}");
    assert_eq!(by_name(&b)["models"], json!(["add_sub"]), "{st}");
    for s in services {
        assert_eq!(
            (s["route"].as_str(), s["status"].as_str()),
            (Some("models"), Some("ACTIVE")),
            "{st}"
        );
        assert_eq!(s["running"], s["desired"], "{st}");
    }
    assert!(st["instances"]["desired"].is_number(), "{st}");
    let out = cli(&["status", "--cluster"], &spec_a).await;
    assert!(
        text(&out).contains("add_sub") && text(&out).contains("GPUs"),
        "{}",
        text(&out)
    );

    // A second rollout of each plans nothing and, run, makes no mutating call.
    for s in [&spec_a, &spec_b] {
        let out = cli(&["rollout", "--plan"], s).await;
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        let p = proxy::start(&env("TD_MOTO_URL"), proxy::Mode::Pass).await;
        let out = cli_via(&p.url, &["rollout", "--yes", "--timeout", "5"], s).await;
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        assert_eq!(p.mutations(), Vec::<String>::new(), "{:?}", p.actions());
        assert!(
            p.actions().iter().any(|a| a == "DescribeServices"),
            "the calls went through the proxy: {:?}",
            p.actions()
        );
    }

    // One service rolled forward and back: the other's task definition and service stay as
    // they are, and each service's revisions are its own family's.
    let td = |svc: String| {
        let cluster = cluster.clone();
        async move {
            ecs_service(&cluster, &svc).await["taskDefinition"]
                .as_str()
                .unwrap()
                .to_string()
        }
    };
    let (a1, b1) = (td(a.clone()).await, td(b.clone()).await);
    let a_bigger = spec(
        dir.path(),
        &a,
        &cluster,
        "python-backend",
        "[task]\nshm_size_mib = 2048\n",
    );
    // (moto starts no new deployment on UpdateService: the proxy answers as ECS would.)
    let moto = env("TD_MOTO_URL");
    let p = proxy::start_with(&moto, proxy::Mode::Pass, proxy::progressing(1)).await;
    let out = cli_via(&p.url, &["rollout", "--yes", "--timeout", "5"], &a_bigger).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let a2 = td(a.clone()).await;
    assert_ne!(a2, a1);
    assert_eq!(td(b.clone()).await, b1, "the other service is not touched");
    let p = proxy::start_with(&moto, proxy::Mode::Pass, proxy::progressing(1)).await;
    let out = cli_via(
        &p.url,
        &["rollback", "--poll", "1", "--format", "json"],
        &a_bigger,
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let r = json_of(&out);
    assert_eq!(
        (r["from"].as_str(), r["to"].as_str()),
        (Some(a2.as_str()), Some(a1.as_str())),
        "{r}"
    );
    assert_eq!(td(a.clone()).await, a1);
    assert_eq!(td(b.clone()).await, b1, "the other service is not touched");
    // Rolling back the other one has no earlier revision of its own to go to.
    let p = proxy::start_with(&moto, proxy::Mode::Pass, proxy::progressing(1)).await;
    let out = cli_via(&p.url, &["rollback", "--poll", "1"], &spec_b).await;
    assert_eq!(out.status.code(), Some(64), "{}", text(&out));
    assert!(
        text(&out).contains("no active revision older than 1"),
        "{}",
        text(&out)
    );
    assert!(
        !p.actions().iter().any(|a| a == "UpdateService"),
        "{:?}",
        p.actions()
    );
    assert_eq!(td(b.clone()).await, b1);
    // (The first spec back as it was.)
    assert_eq!(spec(dir.path(), &a, &cluster, "python-backend", ""), spec_a);

    // A cluster-level change in one spec names the other service.
    let bigger = spec(
        dir.path(),
        &b,
        &cluster,
        "simple-onnx",
        "[compute]\nmax_instances = 3\n",
    );
    let out = cli(&["rollout", "--plan", "--format", "json"], &bigger).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let plan = json_of(&out);
    assert_eq!(plan["affects"], json!([a]), "{plan}");
    assert!(!plan["changes"].as_array().unwrap().is_empty());
    // (The same file: the spec back as it was.)
    assert_eq!(spec(dir.path(), &b, &cluster, "simple-onnx", ""), spec_b);

    // A third service that routes a model the first has: refused, naming the first.
    let c3 = format!("dup{tag}");
    let dup = spec(dir.path(), &c3, &cluster, "python-backend", "");
    let out = cli(&["rollout", "--plan"], &dup).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("/v2/models/text_stats is routed to {a} already")),
        "{}",
        text(&out)
    );
    assert_eq!(stack_status(&format!("{cluster_stack}-{c3}")).await, None);

    // Destroying one service leaves the other's service, target group and rules, and the cluster.
    let out = cli(&["destroy", "--yes", "--format", "json"], &spec_a).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let d = json_of(&out);
    assert!(d["kept"].to_string().contains(&b), "{d}");
    assert_eq!(stack_status(&format!("{cluster_stack}-{a}")).await, None);
    assert_eq!(
        stack_status(&cluster_stack).await.as_deref(),
        Some("CREATE_COMPLETE")
    );
    assert_eq!(ecs_service(&cluster, &b).await["status"], "ACTIVE");
    // (moto keeps a deleted stack's listener rules — CloudFormation deletes them — so only the
    // remaining service's are asserted: still there, still to its target group.)
    let left = rules(&c["Listener"]).await;
    assert!(
        left.iter()
            .any(|(_, p, tg)| p.contains(&"/v2/models/add_sub".to_string()) && tg == tg_b),
        "{left:?}"
    );
    let out = cli(&["rollout", "--plan"], &spec_b).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    // The cluster alone is not removed while a service runs on it.
    let out = cli(&["destroy", "--cluster", "--yes"], &spec_b).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("still runs services {b}")),
        "{}",
        text(&out)
    );
    assert_eq!(
        stack_status(&cluster_stack).await.as_deref(),
        Some("CREATE_COMPLETE")
    );

    // The last service takes the cluster with it.
    let out = cli(&["destroy", "--yes"], &spec_b).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(stack_status(&format!("{cluster_stack}-{b}")).await, None);
    assert_eq!(stack_status(&cluster_stack).await, None, "{}", text(&out));
    let out = cli(&["destroy", "--cluster", "--yes"], &spec_b).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("nothing to destroy"), "{}", text(&out));
}

#[tokio::test]
#[ignore = "needs the local stack: run ./scripts/test.sh"]
async fn a_service_routed_by_host_has_grpc_through_its_own_target_group() {
    let dir = tempfile::tempdir().unwrap();
    let tag = unique("g")
        .replace('-', "")
        .chars()
        .take(10)
        .collect::<String>();
    let cluster = format!("grpc{tag}");
    let name = format!("text{tag}");
    let host = format!("{name}.models.example.com");
    // An HTTPS listener needs a certificate the load balancer knows.
    let cert = moto_json(
        "acm",
        "CertificateManager.RequestCertificate",
        json!({"DomainName": "*.models.example.com"}),
    )
    .await["CertificateArn"]
        .as_str()
        .expect("moto issues a certificate")
        .to_string();
    let spec = spec(
        dir.path(),
        &name,
        &cluster,
        "python-backend",
        &format!(
            "[network]\ncertificate_arn = \"{cert}\"\nhostname = \"{host}\"\nroute = \"host\"\ngrpc = true\n"
        ),
    );
    let out = cli(&["rollout", "--plan"], &spec).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("route: every request for {host}"))
            && text(&out).contains(&format!("gRPC: {host}")),
        "{}",
        text(&out)
    );
    let out = cli(&["rollout", "--yes", "--timeout", "5"], &spec).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stack = format!("triton-deploy-{cluster}-{name}");

    // The service has both target groups: HTTP on 8000, gRPC on 8001.
    let s = ecs_service(&cluster, &name).await;
    let lbs = s["loadBalancers"].as_array().unwrap();
    let port = |p: i64| {
        lbs.iter()
            .find(|l| l["containerPort"] == p)
            .and_then(|l| l["targetGroupArn"].as_str())
            .unwrap_or_else(|| panic!("no target group on {p}: {s}"))
            .to_string()
    };
    let (http_tg, grpc_tg) = (port(8000), port(8001));
    assert_ne!(http_tg, grpc_tg);

    // The gRPC target group as sent (moto keeps the template as it got it) and as made.
    let template = moto_query(
        "cloudformation",
        "2010-05-15",
        &[("Action", "GetTemplate"), ("StackName", &stack)],
    )
    .await;
    let body = values(&template, "TemplateBody")
        .into_iter()
        .next()
        .unwrap();
    let body = body
        .replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&");
    let t: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    let g = &t["Resources"]["GrpcTargetGroup"]["Properties"];
    assert_eq!(
        (&g["ProtocolVersion"], &g["Port"], &g["Matcher"]),
        (&json!("GRPC"), &json!(8001), &json!({"GrpcCode": "0"})),
        "{g}"
    );
    assert_eq!(
        g["HealthCheckPath"],
        "/inference.GRPCInferenceService/ServerReady"
    );
    let made = moto_query(
        "elasticloadbalancing",
        "2015-12-01",
        &[
            ("Action", "DescribeTargetGroups"),
            ("TargetGroupArns.member.1", &grpc_tg),
        ],
    )
    .await;
    assert_eq!(
        values(&made, "HealthCheckPath"),
        ["/inference.GRPCInferenceService/ServerReady"],
        "{made}"
    );
    assert_eq!(values(&made, "Port"), ["8001"], "{made}");

    // The listener's rules: gRPC by host and path first, then every other request for the host.
    let listener = {
        let xml = moto_query(
            "cloudformation",
            "2010-05-15",
            &[
                ("Action", "DescribeStackResources"),
                ("StackName", &format!("triton-deploy-{cluster}")),
            ],
        )
        .await;
        xml.split("<member>")
            .find(|m| values(m, "LogicalResourceId") == ["Listener"])
            .and_then(|m| values(m, "PhysicalResourceId").into_iter().next())
            .unwrap_or_else(|| panic!("no Listener: {xml}"))
    };
    let listed = rules(&listener).await;
    let grpc_rule = listed
        .iter()
        .find(|(_, paths, _)| paths == &["/inference.GRPCInferenceService/*"])
        .unwrap_or_else(|| panic!("{listed:?}"));
    assert_eq!(grpc_rule.2, grpc_tg);
    let host_rule = listed
        .iter()
        .find(|(_, paths, tg)| paths.is_empty() && tg == &http_tg)
        .unwrap_or_else(|| panic!("{listed:?}"));
    let (pg, ph): (u32, u32) = (grpc_rule.0.parse().unwrap(), host_rule.0.parse().unwrap());
    assert!(pg < ph && ph <= 1000, "before every model rule: {pg} {ph}");
    let xml = moto_query(
        "elasticloadbalancing",
        "2015-12-01",
        &[("Action", "DescribeRules"), ("ListenerArn", &listener)],
    )
    .await;
    assert_eq!(
        xml.matches(&format!("<member>{host}</member>")).count(),
        2,
        "both rules match the host: {xml}"
    );

    // Status shows both endpoints, by the hostname; a re-run changes nothing.
    let out = cli(&["status", "--format", "json"], &spec).await;
    let st = json_of(&out);
    assert_eq!(st["endpoint"], format!("https://{host}"), "{st}");
    assert_eq!(st["grpc_endpoint"], format!("https://{host}"), "{st}");
    assert!(
        st["container_insights"]
            .as_str()
            .is_some_and(|u| u.contains(&cluster)),
        "{st}"
    );
    let out = cli(&["rollout", "--plan"], &spec).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    let out = cli(&["destroy", "--yes"], &spec).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(stack_status(&stack).await, None);
}
