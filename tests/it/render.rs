//! `triton-deploy render`: both stacks' CloudFormation templates pass AWS's cfn-lint, the Terraform module
//! parses as HCL, the task definition has the GPU shape, and bad specs fail with file:line:key.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `render <what> --stack <layer>` (`None`: the default, the cluster's).
fn render_stack(
    what: &str,
    layer: Option<&str>,
    spec: &Path,
    env: Option<&str>,
) -> std::process::Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_triton-deploy"));
    c.args(["render", what, "-f"]).arg(spec);
    if let Some(l) = layer {
        c.args(["--stack", l]);
    }
    if let Some(e) = env {
        c.args(["--env", e]);
    }
    c.output().unwrap()
}

const VARIANTS: &[&str] = &[
    "",
    "[compute]\nspot = true\ninstance_types = [\"g5.xlarge\", \"g6.xlarge\", \"g4dn.xlarge\"]\nami = \"ami-0123456789abcdef0\"\n[network]\ninternet_facing = true\ncertificate_arn = \"arn:aws:acm:us-east-1:123456789012:certificate/abc\"\n",
    "[storage]\nefs = false\n[compute]\nami = \"al2-gpu\"\ninstance_type = \"g5.12xlarge\"\ninstance_types = [\"g6.12xlarge\"]\n[task]\ngpus = 4\n",
    "[network]\nvpc_id = \"vpc-0abc\"\nsubnets = [\"subnet-a\", \"subnet-b\", \"subnet-c\"]\nallowed_cidrs = [\"10.1.0.0/16\", \"192.168.0.0/24\"]\n[storage]\nholds = \"models\"\n",
    // Routed by host, gRPC behind the HTTPS listener, :80 redirected.
    "[network]\ncertificate_arn = \"arn:aws:acm:us-east-1:123456789012:certificate/abc\"\nhostname = \"svc4.models.example.com\"\nroute = \"host\"\ngrpc = true\n",
    // Routed by path prefix, rewritten for Triton.
    "[network]\nroute = \"path\"\npath_prefix = \"/text\"\n",
    // On the AMI `ami build` baked: the launch template resolves the cluster's parameter and the
    // hosts pre-read the image at boot.
    "[compute]\nami = \"baked\"\nfast_snapshot_restore = [\"us-east-1a\", \"us-east-1b\"]\n[ami]\npreread_timeout_seconds = 600\n",
];

fn variant_specs(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![root().join("examples/triton-deploy.toml")];
    for (i, v) in VARIANTS.iter().enumerate() {
        let p = dir.join(format!("variant{i}.toml"));
        std::fs::write(&p, format!("[service]\nname = \"svc{i}\"\n{v}")).unwrap();
        out.push(p);
    }
    out
}

#[test]
#[ignore = "needs cfn-lint: run ./scripts/test.sh"]
fn every_rendered_template_passes_cfn_lint() {
    let lint = std::env::var("TD_CFN_LINT").expect("TD_CFN_LINT is not set: run ./scripts/test.sh");
    let dir = tempfile::tempdir().unwrap();
    for (i, spec) in variant_specs(dir.path()).iter().enumerate() {
        for (env, layer) in [None, Some("prod")]
            .into_iter()
            .flat_map(|e| [(e, "cluster"), (e, "service")])
        {
            if env.is_some() && i > 0 {
                continue;
            }
            let out = render_stack("cloudformation", Some(layer), spec, env);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let file = dir
                .path()
                .join(format!("t{i}-{}-{layer}.json", env.unwrap_or("base")));
            std::fs::write(&file, &out.stdout).unwrap();
            let l = Command::new(&lint).arg(&file).output().unwrap();
            // cfn-lint's exit code is a bit mask: 2 = errors, 4 = warnings, 8 = informational.
            let code = l.status.code().unwrap_or(-1);
            assert!(
                code >= 0 && code & 2 == 0 && code & 1 == 0,
                "{} ({layer}):\n{}",
                spec.display(),
                String::from_utf8_lossy(&l.stdout)
            );
            assert!(
                code == 0,
                "warnings are worth fixing too ({}, {layer}):\n{}",
                spec.display(),
                String::from_utf8_lossy(&l.stdout)
            );
        }
    }
}

#[test]
#[ignore = "needs checkov: run ./scripts/test.sh"]
fn every_rendered_template_passes_checkov_or_says_why_not() {
    let checkov =
        std::env::var("TD_CHECKOV").expect("TD_CHECKOV is not set: run ./scripts/test.sh");
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("rendered");
    for (i, spec) in variant_specs(dir.path()).iter().enumerate() {
        for layer in ["cluster", "service"] {
            let cfn = render_stack("cloudformation", Some(layer), spec, None);
            let tf = render_stack("terraform", Some(layer), spec, None);
            assert!(cfn.status.success() && tf.status.success());
            let d = out_dir.join(format!("v{i}")).join(layer);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("template.json"), &cfn.stdout).unwrap();
            std::fs::write(d.join("main.tf"), &tf.stdout).unwrap();
        }
    }
    let run = Command::new(&checkov)
        .arg("-d")
        .arg(&out_dir)
        .args(["-o", "json", "--framework", "cloudformation", "terraform"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap_or_else(|e| {
        panic!(
            "checkov: {e}: {}{}",
            String::from_utf8_lossy(&run.stdout),
            String::from_utf8_lossy(&run.stderr)
        )
    });
    let reports = v.as_array().cloned().unwrap_or_else(|| vec![v.clone()]);
    let frameworks: Vec<&str> = reports
        .iter()
        .filter_map(|r| r["check_type"].as_str())
        .collect();
    assert_eq!(
        frameworks.len(),
        2,
        "both frameworks scanned: {frameworks:?}"
    );
    for r in &reports {
        let failed: Vec<String> = r["results"]["failed_checks"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| format!("{} {} ({})", c["check_id"], c["resource"], c["file_path"]))
            .collect();
        assert!(failed.is_empty(), "{}: {failed:#?}", r["check_type"]);
        assert_eq!(r["summary"]["parsing_errors"], 0, "{}", r["summary"]);
        assert!(
            r["summary"]["passed"].as_u64().unwrap() > 50,
            "{}",
            r["summary"]
        );
        // Every check not passed is skipped with its reason, in the template.
        for c in r["results"]["skipped_checks"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let why = c["check_result"]["suppress_comment"]
                .as_str()
                .unwrap_or_default();
            assert!(
                why.len() > 20,
                "{} on {}: no reason",
                c["check_id"],
                c["resource"]
            );
        }
    }
}

#[test]
fn the_terraform_modules_parse_as_hcl_and_name_the_same_resources_as_the_stacks() {
    let dir = tempfile::tempdir().unwrap();
    for spec in variant_specs(dir.path()) {
        for layer in ["cluster", "service"] {
            let out = render_stack("terraform", Some(layer), &spec, None);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let text = String::from_utf8(out.stdout).unwrap();
            let body =
                hcl::parse(&text).unwrap_or_else(|e| panic!("{}: {e}\n{text}", spec.display()));
            let cfn: serde_json::Value = serde_json::from_slice(
                &render_stack("cloudformation", Some(layer), &spec, None).stdout,
            )
            .unwrap();
            let n_tf = body
                .blocks()
                .filter(|b| {
                    b.identifier() == "resource"
                        && !b.labels()[0].as_str().starts_with("aws_iam_role_policy")
                })
                .count();
            let n_cfn = cfn["Resources"].as_object().unwrap().len();
            // CloudFormation has one MountTarget per subnet (Terraform uses count) and an extra
            // association resource per attachment style; the sets must still be about the same size.
            assert!(
                n_tf.abs_diff(n_cfn) <= 3,
                "{} ({layer}): terraform {n_tf} vs cloudformation {n_cfn}",
                spec.display()
            );
        }
    }
}

#[test]
fn the_task_definition_renders_with_the_image_and_placeholders() {
    let out = Command::new(env!("CARGO_BIN_EXE_triton-deploy"))
        .args([
            "render",
            "taskdef",
            "--image",
            "1.dkr.ecr.us-east-1.amazonaws.com/m@sha256:abc",
            "-f",
        ])
        .arg(root().join("examples/triton-deploy.toml"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let td: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(td["family"], "triton-text-classifier");
    assert_eq!(
        td["containerDefinitions"][0]["image"],
        "1.dkr.ecr.us-east-1.amazonaws.com/m@sha256:abc"
    );
    assert_eq!(
        td["executionRoleArn"],
        "<triton-deploy-ml-gpu:TaskExecutionRoleArn>"
    );
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_triton-deploy"))
        .args(["render", "terraform", "--out"])
        .arg(dir.path())
        .arg("-f")
        .arg(root().join("examples/triton-deploy.toml"))
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(dir.path().join("cluster/main.tf").is_file());
}

#[test]
fn bad_specs_fail_with_file_line_and_key_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "[service]\nname = \"x\"\n[compute]\ninstance = \"g5.xlarge\"\n",
            ":4:1: instance: unknown field `instance`",
        ),
        ("[service]\nname = \"x\"\n[task]\ngpus = \"1\"\n", ":4:8: "),
        (
            "[service]\nname = \"x\"\n[network]\nvpc_id = \"vpc-1\"\nsubnets = [\"subnet-1\"]\n",
            ":5:11: network.subnets: 1 subnet(s)",
        ),
        (
            "[service]\nname = \"x\"\n[compute]\ninstance_type = \"g5.2xlarge\"\n[task]\ngpus = 4\n",
            ":6:8: task.gpus: 4 GPUs per task, but a g5.2xlarge has 1",
        ),
        ("[service]\nname = \"has space\"\n", ":2:8: service.name"),
        (
            "[servic]\nname = \"x\"\n",
            ":1:2: servic: unknown field `servic`",
        ),
        (
            "[service]\nname = \"x\"\n[network]\nhostname = \"x.example.com\"\ngrpc = true\n",
            ":5:8: network.grpc: gRPC through the load balancer needs HTTPS (network.certificate_arn)",
        ),
        (
            "[service]\nname = \"x\"\n[network]\nroute = \"host\"\n",
            ":4:9: network.route: \"host\" routes the requests for network.hostname, and the spec sets none",
        ),
        (
            "[service]\nname = \"x\"\n[network]\nroute = \"path\"\npath_prefix = \"/v2/x\"\n",
            ":5:15: network.path_prefix: '/v2/x': Triton's own paths start with /v2",
        ),
        (
            "[service]\nname = \"x\"\n[network]\nhostname = \"*.example.com\"\n",
            ":4:12: network.hostname: '*.example.com' is not a DNS name",
        ),
    ];
    for (i, (text, want)) in cases.iter().enumerate() {
        let spec = dir.path().join(format!("bad{i}.toml"));
        std::fs::write(&spec, text).unwrap();
        let out_dir = dir.path().join(format!("out{i}"));
        let out = Command::new(env!("CARGO_BIN_EXE_triton-deploy"))
            .args(["render", "cloudformation", "--out"])
            .arg(&out_dir)
            .arg("-f")
            .arg(&spec)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "case {i}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("{}{want}", spec.display())),
            "case {i}: expected '{want}' in {err}"
        );
        assert!(!out_dir.exists(), "nothing is written for a bad spec");
    }
}

/// Every command's errors: one JSON document on stdout under `--format json`, the documented
/// exit code, and no panic on absurd values (bounded parsing).
#[test]
fn errors_are_one_json_document_with_the_documented_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[service]\nname = \"has space\"\n").unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(&good, "[service]\nname = \"svc\"\n").unwrap();
    let (bad, good) = (bad.to_str().unwrap(), good.to_str().unwrap());
    let url = "http://127.0.0.1:9";
    let bench = |extra: &[&'static str]| {
        let mut a = vec!["bench", "--url", url, "--model", "m"];
        a.extend_from_slice(extra);
        a
    };
    let cases: Vec<(Vec<&str>, i32, &str)> = vec![
        (vec!["render", "cloudformation", "-f", bad], 1, "invalid"),
        (vec!["status", "-f", bad], 1, "invalid"),
        // No terminal to confirm on: a usage error naming --yes, before any AWS call.
        (vec!["rollout", "-f", good], 64, "usage"),
        (vec!["destroy", "-f", good], 64, "usage"),
        (
            bench(&["--duration", "100000000000000000000s"]),
            64,
            "usage",
        ),
        (bench(&["--warmup", "1441m"]), 64, "usage"),
        (bench(&["--timeout", "86401s"]), 64, "usage"),
        (bench(&["--latency-budget", "99999999999m"]), 64, "usage"),
        (bench(&["--shape", "x:99999999,99999999"]), 64, "usage"),
        (bench(&["--percentile", "101"]), 64, "usage"),
        (bench(&["--safety-margin", "0"]), 64, "usage"),
        (bench(&["--header", "no-colon"]), 64, "usage"),
        (bench(&["--threads", "0"]), 64, "usage"),
        (
            vec!["rollout", "-f", good, "--timeout", "99999999999999"],
            64,
            "usage",
        ),
        (
            vec!["logs", "-f", good, "--since", "99999999999999999999d"],
            64,
            "usage",
        ),
        (
            vec!["validate", "--model-config-name", "", "."],
            64,
            "usage",
        ),
    ];
    for (args, code, kind) in cases {
        let out = Command::new(env!("CARGO_BIN_EXE_triton-deploy"))
            .args(["--format", "json"])
            .args(&args)
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {stdout}");
        let doc: serde_json::Value = serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("{args:?}: not one JSON document ({e}): {stdout}"));
        assert_eq!(doc["error"]["kind"], kind, "{args:?}: {doc}");
        assert!(
            doc["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
    // A spec error names its file, line and column in the document.
    let out = Command::new(env!("CARGO_BIN_EXE_triton-deploy"))
        .args(["--format", "json", "render", "taskdef", "-f", bad])
        .output()
        .unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["error"]["file"], bad);
    assert_eq!(
        (
            doc["error"]["line"].as_u64(),
            doc["error"]["column"].as_u64()
        ),
        (Some(2), Some(8))
    );
    // CSV is bench's alone.
    let out = Command::new(env!("CARGO_BIN_EXE_triton-deploy"))
        .args(["--format", "csv", "render", "taskdef", "-f", good])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
}
