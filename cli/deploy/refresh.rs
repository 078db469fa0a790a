//! Replacing the GPU hosts: an Auto Scaling instance refresh that keeps capacity while ECS drains
//! the tasks, followed to its end.

use triton_deploy_aws::autoscaling::{AutoScaling, InstanceRefresh};

use super::Timing;
use super::error::DeployError;
use super::plan::Infra;
use super::spec::DeploymentSpec;
use crate::output::Progress;

/// Starts an instance refresh of the GPU hosts and follows it to the end.
pub async fn refresh_instances(
    spec: &DeploymentSpec,
    infra: &Infra,
    config: &triton_deploy_aws::SdkConfig,
    timing: Timing,
    progress: &Progress,
) -> Result<InstanceRefresh, DeployError> {
    let asg = AutoScaling::new(config);
    // Keep every host in service while its replacement starts when the service cannot lose one.
    let min_healthy = if spec.minimum_healthy_percent >= 100 {
        100
    } else {
        90
    };
    let id = match asg
        .refreshes(&infra.auto_scaling_group)
        .await?
        .into_iter()
        .find(|r| !r.is_done())
    {
        Some(running) => {
            progress.line(format!(
                "instance refresh {} is already running: following it",
                running.id
            ));
            running.id
        }
        None => {
            asg.start_refresh(
                &infra.auto_scaling_group,
                min_healthy,
                spec.instance_warmup_seconds as i32,
            )
            .await?
        }
    };
    let started = std::time::Instant::now();
    let mut last = String::new();
    loop {
        let r = asg
            .refreshes(&infra.auto_scaling_group)
            .await?
            .into_iter()
            .find(|r| r.id == id)
            .ok_or_else(|| DeployError::Failed(format!("instance refresh {id} disappeared")))?;
        let line = format!(
            "instance refresh {}: {} {}%",
            r.id, r.status, r.percentage_complete
        );
        if line != last {
            progress.line(format!("  {line}"));
            last = line;
        }
        if r.is_done() {
            if r.status != "Successful" {
                return Err(DeployError::Failed(format!(
                    "instance refresh {} ended {}: {}",
                    r.id,
                    r.status,
                    r.status_reason.unwrap_or_default()
                )));
            }
            return Ok(r);
        }
        if started.elapsed() > timing.timeout {
            return Err(DeployError::Failed(format!(
                "instance refresh {id} still {} after {} min: it goes on; follow it with `triton-deploy status`",
                r.status,
                timing.timeout.as_secs() / 60
            )));
        }
        tokio::time::sleep(timing.poll).await;
    }
}
