//! EFS: the access points of a file system (read when a stack does not report its access point's
//! ID, as some emulators do not).

use aws_sdk_efs::Client;

use crate::{ApiError, api};

/// EFS.
pub struct Efs {
    client: Client,
}

impl Efs {
    /// A client from the SDK configuration.
    pub fn new(config: &aws_config::SdkConfig) -> Self {
        Efs {
            client: Client::new(config),
        }
    }

    /// The access points of `file_system_id`: (ID, root directory path).
    pub async fn access_points(
        &self,
        file_system_id: &str,
    ) -> Result<Vec<(String, String)>, ApiError> {
        let out = self
            .client
            .describe_access_points()
            .file_system_id(file_system_id)
            .into_paginator()
            .send()
            .try_collect()
            .await
            .map_err(api("EFS", "DescribeAccessPoints"))?;
        Ok(out
            .iter()
            .flat_map(|p| p.access_points())
            .filter_map(|a| {
                let path = a
                    .root_directory()
                    .and_then(|r| r.path())
                    .unwrap_or_default();
                Some((a.access_point_id()?.to_string(), path.to_string()))
            })
            .collect())
    }
}
