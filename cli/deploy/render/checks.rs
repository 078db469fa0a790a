//! The IaC scanner's checks (checkov's IDs) that the rendered infrastructure does not pass, each
//! with the reason, written into the templates where the scanner reads them: a resource's
//! `Metadata.checkov.skip` in CloudFormation, a `#checkov:skip=<id>:<reason>` comment in Terraform.
//! Everything else the scanner checks passes; the tests run it on every rendered variant.

use serde_json::{Value, json};

/// A check a resource does not pass, and why.
#[derive(Debug, Clone, Copy)]
pub struct Skip {
    /// The check's ID.
    pub id: &'static str,
    /// Why the resource is as it is.
    pub reason: &'static str,
}

const fn skip(id: &'static str, reason: &'static str) -> Skip {
    Skip { id, reason }
}

/// Access logs need an S3 bucket.
pub const ALB_ACCESS_LOGS: Skip = skip(
    "CKV_AWS_91",
    "access logs need an S3 bucket whose policy lets the region's load-balancer account write to it; the cluster does not own one (turn them on with your bucket)",
);
/// `destroy` removes the load balancer.
pub const ALB_DELETION_PROTECTION: Skip = skip(
    "CKV_AWS_150",
    "triton-deploy destroy removes the load balancer with the cluster's last service; deletion protection would make it fail",
);
/// A public load balancer without a WAF web ACL.
pub const ALB_WAF: Skip = skip(
    "CKV2_AWS_28",
    "a WAF web ACL's rules and cost are the account's policy; associate one with the load balancer (network.allowed_cidrs limits who connects)",
);
/// The checks an HTTP listener fails, when the spec has no certificate.
pub const HTTP_LISTENER: [Skip; 2] = [
    skip(
        "CKV_AWS_2",
        "no network.certificate_arn: the listener is HTTP (internal unless network.internet_facing); with a certificate it is HTTPS",
    ),
    skip(
        "CKV_AWS_103",
        "no network.certificate_arn: the listener is HTTP; with a certificate it takes TLS 1.2 and 1.3 only",
    ),
];
/// The load balancer's check for an HTTP → HTTPS redirect, when the spec has no certificate.
pub const HTTP_NO_REDIRECT: Skip = skip(
    "CKV2_AWS_20",
    "no network.certificate_arn: nothing to redirect HTTP to; with a certificate :80 redirects to HTTPS",
);
/// Plain HTTP from the load balancer to the tasks.
pub const PLAIN_TARGETS: Skip = skip(
    "CKV_AWS_378",
    "Triton serves plain HTTP and gRPC; TLS ends at the load balancer, and only its security group reaches the tasks' ports",
);
/// Log groups with the service's default encryption.
pub const LOGS_KMS: Skip = skip(
    "CKV_AWS_158",
    "CloudWatch Logs encrypts log groups at rest by default; a customer-managed key needs a key policy for the Logs service, which the spec does not name",
);
/// Log retention below a year.
pub const LOGS_RETENTION: Skip = skip(
    "CKV_AWS_338",
    "Triton's server logs are kept 30 days, for debugging; longer retention is a compliance choice",
);
/// EFS with the AWS-managed key.
pub const EFS_CMK: Skip = skip(
    "CKV_AWS_184",
    "encrypted at rest with the AWS-managed key for EFS; the spec names no customer-managed key",
);
/// Egress anywhere from the hosts and tasks.
pub const EGRESS_ANY: Skip = skip(
    "CKV_AWS_382",
    "hosts and tasks reach ECR, S3, ECS, CloudWatch and SSM over HTTPS, whose addresses are not fixed without VPC endpoints",
);
/// Egress anywhere from the load balancer.
pub const ALB_EGRESS: Skip = skip(
    "CKV_AWS_382",
    "the load balancer's only targets are the tasks, whose security groups let in the load balancer's group alone",
);
/// The task security group is attached by the ECS service, which `rollout` makes.
pub const TASK_SG_ATTACHED: Skip = skip(
    "CKV2_AWS_5",
    "the ECS service triton-deploy rollout makes attaches this group to the tasks' interfaces",
);

/// The checks the load balancer's listener fails for `spec`'s protocol.
pub fn listener_skips(https: bool) -> Vec<Skip> {
    if https {
        Vec::new()
    } else {
        HTTP_LISTENER.to_vec()
    }
}

/// CloudFormation's form: the `Metadata` of a resource the scanner reads.
pub fn cfn_metadata(skips: &[Skip]) -> Value {
    json!({"checkov": {"skip": skips.iter().map(|s| json!({"id": s.id, "comment": s.reason})).collect::<Vec<_>>()}})
}
