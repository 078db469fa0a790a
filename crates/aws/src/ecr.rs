//! ECR control plane: make sure a repository exists with the settings we want, and get registry
//! credentials. The registry data plane (blobs, manifests) is the CLI's registry client.

use aws_sdk_ecr::Client;
use aws_sdk_ecr::types::{
    EncryptionConfiguration, EncryptionType, ImageScanningConfiguration, ImageTagMutability, Tag,
};
use base64::Engine;

use crate::{Secret, describe_sdk_error};

/// What went wrong with ECR.
#[derive(Debug, thiserror::Error)]
pub enum EcrError {
    /// An API call failed.
    #[error("ECR {action} failed: {detail}")]
    Api {
        /// The call.
        action: &'static str,
        /// What AWS said.
        detail: String,
    },
    /// A name or setting ECR would refuse.
    #[error("{0}")]
    Invalid(String),
}

/// How a repository is created when it does not exist yet.
#[derive(Debug, Clone)]
pub struct RepositorySettings {
    /// Scan images when pushed.
    pub scan_on_push: bool,
    /// Tags cannot be moved once pushed.
    pub immutable_tags: bool,
    /// `AES256`, or a KMS key ARN/alias for `KMS` encryption.
    pub kms_key: Option<String>,
    /// Lifecycle policy: keep this many images (0: no policy).
    pub keep_images: u32,
    /// Tags on the repository.
    pub tags: Vec<(String, String)>,
}

impl Default for RepositorySettings {
    fn default() -> Self {
        RepositorySettings {
            scan_on_push: true,
            immutable_tags: true,
            kms_key: None,
            keep_images: 30,
            tags: vec![("managed-by".into(), "triton-deploy".into())],
        }
    }
}

/// An ECR repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repository {
    /// Its name.
    pub name: String,
    /// `<account>.dkr.ecr.<region>.amazonaws.com/<name>`
    pub uri: String,
    /// The account that owns it.
    pub registry_id: String,
    /// Whether its tags are immutable.
    pub immutable_tags: bool,
    /// Whether this call created it.
    pub created: bool,
    /// Settings of an existing repository that differed from the ones asked for.
    pub drift: Vec<SettingDrift>,
}

/// A repository setting that is compared with the one asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Setting {
    /// Scan on push.
    ScanOnPush,
    /// Tag mutability.
    TagMutability,
    /// The lifecycle policy.
    LifecyclePolicy,
    /// The encryption (which ECR cannot change).
    Encryption,
}

impl Setting {
    /// Its name in words.
    pub fn name(self) -> &'static str {
        match self {
            Setting::ScanOnPush => "scan on push",
            Setting::TagMutability => "tag mutability",
            Setting::LifecyclePolicy => "lifecycle policy",
            Setting::Encryption => "encryption",
        }
    }
}

/// One setting of an existing repository that is not what was asked for.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SettingDrift {
    /// Which setting.
    pub setting: Setting,
    /// What the repository has.
    pub live: String,
    /// What was asked for.
    pub wanted: String,
    /// Whether it was set back to `wanted`: only on repositories triton-deploy created (tagged
    /// `managed-by=triton-deploy`), and never the encryption, which ECR cannot change.
    pub repaired: bool,
}

/// The settings of an existing repository, as ECR reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveSettings {
    /// Scan images when pushed.
    pub scan_on_push: bool,
    /// Tags cannot be moved once pushed.
    pub immutable_tags: bool,
    /// `AES256`, or `KMS` with its key.
    pub encryption: String,
    /// The lifecycle policy's text, if there is one.
    pub lifecycle_policy: Option<String>,
}

/// How `live` differs from `wanted`, setting by setting (a pure comparison; nothing repaired yet).
/// Lifecycle policies are compared as JSON values; `keep_images = 0` leaves any policy alone.
pub fn setting_drift(live: &LiveSettings, wanted: &RepositorySettings) -> Vec<SettingDrift> {
    let mut out = Vec::new();
    let on_off = |b: bool| if b { "on" } else { "off" }.to_string();
    let mutability = |immutable: bool| if immutable { "IMMUTABLE" } else { "MUTABLE" }.to_string();
    let mut push = |setting, live: String, wanted: String| {
        if live != wanted {
            out.push(SettingDrift {
                setting,
                live,
                wanted,
                repaired: false,
            });
        }
    };
    push(
        Setting::ScanOnPush,
        on_off(live.scan_on_push),
        on_off(wanted.scan_on_push),
    );
    push(
        Setting::TagMutability,
        mutability(live.immutable_tags),
        mutability(wanted.immutable_tags),
    );
    if wanted.keep_images > 0 {
        let want = lifecycle_policy(wanted.keep_images);
        let same = live.lifecycle_policy.as_deref().is_some_and(|l| {
            serde_json::from_str::<serde_json::Value>(l).ok()
                == serde_json::from_str::<serde_json::Value>(&want).ok()
        });
        if !same {
            let describe = |p: Option<&str>| match p {
                None => "none".to_string(),
                Some(p) => keeps(p)
                    .map(|n| format!("keep the newest {n} images"))
                    .unwrap_or_else(|| "another policy".into()),
            };
            out.push(SettingDrift {
                setting: Setting::LifecyclePolicy,
                live: describe(live.lifecycle_policy.as_deref()),
                wanted: describe(Some(&want)),
                repaired: false,
            });
        }
    }
    let want_encryption = match &wanted.kms_key {
        None => "AES256".to_string(),
        Some(k) => format!("KMS {k}"),
    };
    // A KMS key asked for by alias is reported by ARN: only the kind is compared then.
    let same_encryption = live.encryption == want_encryption
        || (wanted
            .kms_key
            .as_deref()
            .is_some_and(|k| k.starts_with("alias/"))
            && live.encryption.starts_with("KMS"));
    if !same_encryption {
        out.push(SettingDrift {
            setting: Setting::Encryption,
            live: live.encryption.clone(),
            wanted: want_encryption,
            repaired: false,
        });
    }
    out
}

/// The image count a lifecycle policy of ours keeps, when it is one of ours in shape.
fn keeps(policy: &str) -> Option<u64> {
    let v: serde_json::Value = serde_json::from_str(policy).ok()?;
    let rules = v.get("rules")?.as_array()?;
    match rules.as_slice() {
        [r] if r.pointer("/selection/countType")?.as_str()? == "imageCountMoreThan" => {
            r.pointer("/selection/countNumber")?.as_u64()
        }
        _ => None,
    }
}

/// The tag in which `push` records, on a repository it created, the settings it asked for, so
/// that a rollout's plan can compare the live settings with them (the API has no other place
/// for what was wanted).
pub const SETTINGS_TAG: &str = "triton-deploy:settings";

/// `settings` as [`SETTINGS_TAG`]'s value: words of `key=value`, in the characters ECR's tags
/// allow (letters, digits, spaces and `_.:/=+-@`; KMS ARNs and aliases fit).
pub fn settings_tag(s: &RepositorySettings) -> String {
    format!(
        "scan_on_push={} immutable_tags={} keep_images={} kms_key={}",
        s.scan_on_push,
        s.immutable_tags,
        s.keep_images,
        s.kms_key.as_deref().unwrap_or("none")
    )
}

/// The settings a [`SETTINGS_TAG`] value records; `None` when it is not one of ours in shape.
pub fn parse_settings_tag(value: &str) -> Option<RepositorySettings> {
    let mut s = RepositorySettings::default();
    let mut seen = 0;
    for word in value.split_whitespace() {
        let (k, v) = word.split_once('=')?;
        match k {
            "scan_on_push" => s.scan_on_push = v.parse().ok()?,
            "immutable_tags" => s.immutable_tags = v.parse().ok()?,
            "keep_images" => s.keep_images = v.parse().ok()?,
            "kms_key" => s.kms_key = (v != "none").then(|| v.to_string()),
            _ => return None,
        }
        seen += 1;
    }
    (seen == 4).then_some(s)
}

/// A repository's settings as `push` recorded them, and how the live ones differ.
#[derive(Debug, Clone)]
pub struct RecordedDrift {
    /// What push asked for (from [`SETTINGS_TAG`]).
    pub wanted: RepositorySettings,
    /// Where the live settings differ (`repaired` once set back).
    pub drift: Vec<SettingDrift>,
}

/// Registry credentials from `GetAuthorizationToken`.
#[derive(Debug, Clone)]
pub struct RegistryAuth {
    /// The registry user (`AWS`).
    pub username: String,
    /// The registry password (a token, redacted in output).
    pub password: Secret,
    /// `https://<account>.dkr.ecr.<region>.amazonaws.com`
    pub proxy_endpoint: String,
}

/// ECR.
pub struct Ecr {
    client: Client,
}

/// ECR's repository name rules: 2–256 characters of lowercase letters, digits and `._-/`,
/// starting with a letter or digit, no `//`, no trailing separator.
pub fn check_repository_name(name: &str) -> Result<(), EcrError> {
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-/".contains(&b));
    let first_ok = name
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    let last_ok = name
        .bytes()
        .last()
        .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if !(2..=256).contains(&name.len()) || !ok_chars || !first_ok || !last_ok || name.contains("//")
    {
        return Err(EcrError::Invalid(format!(
            "'{name}' is not a valid ECR repository name: use 2-256 lowercase letters, digits, '.', '_', '-' or '/', starting and ending with a letter or digit"
        )));
    }
    Ok(())
}

impl Ecr {
    /// A client from the SDK configuration.
    pub fn new(config: &aws_config::SdkConfig) -> Self {
        Ecr {
            client: Client::new(config),
        }
    }

    /// Returns the repository, creating it (with `settings`) when missing.
    pub async fn ensure_repository(
        &self,
        name: &str,
        settings: &RepositorySettings,
    ) -> Result<Repository, EcrError> {
        check_repository_name(name)?;
        if let Some(raw) = self.describe_raw(name).await? {
            return self
                .reconcile(repository_of(name, &raw), &raw, settings)
                .await;
        }
        let encryption = match &settings.kms_key {
            None => EncryptionConfiguration::builder()
                .encryption_type(EncryptionType::Aes256)
                .build(),
            Some(key) => EncryptionConfiguration::builder()
                .encryption_type(EncryptionType::Kms)
                .kms_key(key)
                .build(),
        }
        .map_err(|e| EcrError::Invalid(e.to_string()))?;
        let mut req = self
            .client
            .create_repository()
            .repository_name(name)
            .image_scanning_configuration(
                ImageScanningConfiguration::builder()
                    .scan_on_push(settings.scan_on_push)
                    .build(),
            )
            .image_tag_mutability(if settings.immutable_tags {
                ImageTagMutability::Immutable
            } else {
                ImageTagMutability::Mutable
            })
            .encryption_configuration(encryption);
        let mut tags = settings.tags.clone();
        if managed(&tags) {
            tags.push((SETTINGS_TAG.to_string(), settings_tag(settings)));
        }
        for (k, v) in &tags {
            req = req.tags(
                Tag::builder()
                    .key(k)
                    .value(v)
                    .build()
                    .map_err(|e| EcrError::Invalid(e.to_string()))?,
            );
        }
        let repo = match req.send().await {
            Ok(out) => {
                let r = out.repository.ok_or_else(|| EcrError::Api {
                    action: "CreateRepository",
                    detail: "no repository in the response".into(),
                })?;
                Repository {
                    name: name.to_string(),
                    uri: r.repository_uri.unwrap_or_default(),
                    registry_id: r.registry_id.unwrap_or_default(),
                    immutable_tags: settings.immutable_tags,
                    created: true,
                    drift: Vec::new(),
                }
            }
            Err(e) => {
                // Created concurrently by someone else: use theirs.
                if let Some(aws_sdk_ecr::operation::create_repository::CreateRepositoryError::RepositoryAlreadyExistsException(_)) = e.as_service_error() {
                    return self.describe(name).await?.ok_or_else(|| EcrError::Api {
                        action: "DescribeRepositories",
                        detail: format!("repository {name} exists but cannot be described"),
                    });
                }
                return Err(EcrError::Api {
                    action: "CreateRepository",
                    detail: describe_sdk_error(&e),
                });
            }
        };
        if settings.keep_images > 0 {
            self.client
                .put_lifecycle_policy()
                .repository_name(name)
                .lifecycle_policy_text(lifecycle_policy(settings.keep_images))
                .send()
                .await
                .map_err(|e| EcrError::Api {
                    action: "PutLifecyclePolicy",
                    detail: describe_sdk_error(&e),
                })?;
        }
        tracing::info!(repository = name, "created ECR repository");
        Ok(repo)
    }

    /// The repository `name`, if it exists.
    pub async fn describe(&self, name: &str) -> Result<Option<Repository>, EcrError> {
        Ok(self
            .describe_raw(name)
            .await?
            .map(|r| repository_of(name, &r)))
    }

    /// Compares an existing repository's settings with `wanted` and, when triton-deploy created
    /// it, sets back what differs (scan on push, tag mutability, the lifecycle policy). A
    /// repository made by someone else is only reported on: its settings are theirs.
    async fn reconcile(
        &self,
        mut repo: Repository,
        raw: &aws_sdk_ecr::types::Repository,
        wanted: &RepositorySettings,
    ) -> Result<Repository, EcrError> {
        let name = repo.name.clone();
        let live = self.live_settings(&name, raw).await?;
        let mut drift = setting_drift(&live, wanted);
        let tags = self.tags(raw).await?;
        if managed(&tags) {
            for d in drift.iter_mut() {
                d.repaired = self.repair(&name, d.setting, wanted).await?;
                if d.repaired && d.setting == Setting::TagMutability {
                    repo.immutable_tags = wanted.immutable_tags;
                }
            }
            // What this push asked for is what a rollout's plan compares with from now on.
            let want = settings_tag(wanted);
            let recorded = tags.iter().find(|(k, _)| k == SETTINGS_TAG).map(|(_, v)| v);
            if recorded != Some(&want)
                && let Some(arn) = raw.repository_arn()
            {
                self.client
                    .tag_resource()
                    .resource_arn(arn)
                    .tags(
                        Tag::builder()
                            .key(SETTINGS_TAG)
                            .value(want)
                            .build()
                            .map_err(|e| EcrError::Invalid(e.to_string()))?,
                    )
                    .send()
                    .await
                    .map_err(|e| EcrError::Api {
                        action: "TagResource",
                        detail: describe_sdk_error(&e),
                    })?;
            }
        }
        for d in &drift {
            tracing::warn!(repository = %name, setting = d.setting.name(), live = %d.live, wanted = %d.wanted, repaired = d.repaired, "repository setting differs");
        }
        repo.drift = drift;
        Ok(repo)
    }

    /// The settings of repository `name` (described as `raw`) as ECR reports them.
    async fn live_settings(
        &self,
        name: &str,
        raw: &aws_sdk_ecr::types::Repository,
    ) -> Result<LiveSettings, EcrError> {
        let encryption = match raw.encryption_configuration() {
            Some(e) if e.encryption_type() == &EncryptionType::Kms => {
                format!("KMS {}", e.kms_key().unwrap_or_default())
            }
            Some(e) => e.encryption_type().as_str().to_string(),
            None => "AES256".to_string(),
        };
        let lifecycle_policy = match self
            .client
            .get_lifecycle_policy()
            .repository_name(name)
            .send()
            .await
        {
            Ok(out) => out.lifecycle_policy_text,
            Err(e) => match e.as_service_error() {
                Some(aws_sdk_ecr::operation::get_lifecycle_policy::GetLifecyclePolicyError::LifecyclePolicyNotFoundException(_)) => None,
                _ => {
                    return Err(EcrError::Api {
                        action: "GetLifecyclePolicy",
                        detail: describe_sdk_error(&e),
                    });
                }
            },
        };
        Ok(LiveSettings {
            scan_on_push: raw
                .image_scanning_configuration()
                .is_some_and(|c| c.scan_on_push()),
            immutable_tags: raw.image_tag_mutability == Some(ImageTagMutability::Immutable),
            encryption,
            lifecycle_policy,
        })
    }

    /// The repository's tags.
    async fn tags(
        &self,
        raw: &aws_sdk_ecr::types::Repository,
    ) -> Result<Vec<(String, String)>, EcrError> {
        let Some(arn) = raw.repository_arn() else {
            return Ok(Vec::new());
        };
        Ok(self
            .client
            .list_tags_for_resource()
            .resource_arn(arn)
            .send()
            .await
            .map_err(|e| EcrError::Api {
                action: "ListTagsForResource",
                detail: describe_sdk_error(&e),
            })?
            .tags()
            .iter()
            .map(|t| (t.key().to_string(), t.value().to_string()))
            .collect())
    }

    /// How repository `name`'s live settings differ from those `push` recorded on it. `None`
    /// when there is no such repository, triton-deploy did not create it, or no push has
    /// recorded its settings yet: then there is nothing to compare with.
    pub async fn recorded_drift(&self, name: &str) -> Result<Option<RecordedDrift>, EcrError> {
        let Some(raw) = self.describe_raw(name).await? else {
            return Ok(None);
        };
        let tags = self.tags(&raw).await?;
        if !managed(&tags) {
            return Ok(None);
        }
        let Some(wanted) = tags
            .iter()
            .find(|(k, _)| k == SETTINGS_TAG)
            .and_then(|(_, v)| parse_settings_tag(v))
        else {
            return Ok(None);
        };
        let live = self.live_settings(name, &raw).await?;
        Ok(Some(RecordedDrift {
            drift: setting_drift(&live, &wanted),
            wanted,
        }))
    }

    /// Sets back each setting of `recorded.drift` that ECR can change (marking it repaired).
    pub async fn repair_drift(
        &self,
        name: &str,
        recorded: &mut RecordedDrift,
    ) -> Result<(), EcrError> {
        for d in recorded.drift.iter_mut() {
            d.repaired = self.repair(name, d.setting, &recorded.wanted).await?;
        }
        Ok(())
    }

    /// Sets one setting back to `wanted`; false for the one ECR cannot change (the encryption).
    async fn repair(
        &self,
        name: &str,
        setting: Setting,
        wanted: &RepositorySettings,
    ) -> Result<bool, EcrError> {
        let (action, sent) = match setting {
            Setting::ScanOnPush => (
                "PutImageScanningConfiguration",
                self.client
                    .put_image_scanning_configuration()
                    .repository_name(name)
                    .image_scanning_configuration(
                        ImageScanningConfiguration::builder()
                            .scan_on_push(wanted.scan_on_push)
                            .build(),
                    )
                    .send()
                    .await
                    .map(drop)
                    .map_err(|e| describe_sdk_error(&e)),
            ),
            Setting::TagMutability => (
                "PutImageTagMutability",
                self.client
                    .put_image_tag_mutability()
                    .repository_name(name)
                    .image_tag_mutability(if wanted.immutable_tags {
                        ImageTagMutability::Immutable
                    } else {
                        ImageTagMutability::Mutable
                    })
                    .send()
                    .await
                    .map(drop)
                    .map_err(|e| describe_sdk_error(&e)),
            ),
            Setting::LifecyclePolicy => (
                "PutLifecyclePolicy",
                self.client
                    .put_lifecycle_policy()
                    .repository_name(name)
                    .lifecycle_policy_text(lifecycle_policy(wanted.keep_images))
                    .send()
                    .await
                    .map(drop)
                    .map_err(|e| describe_sdk_error(&e)),
            ),
            Setting::Encryption => return Ok(false),
        };
        sent.map_err(|detail| EcrError::Api { action, detail })?;
        Ok(true)
    }

    async fn describe_raw(
        &self,
        name: &str,
    ) -> Result<Option<aws_sdk_ecr::types::Repository>, EcrError> {
        match self.client.describe_repositories().repository_names(name).send().await {
            Ok(out) => Ok(out.repositories.unwrap_or_default().into_iter().next()),
            Err(e) => {
                if let Some(aws_sdk_ecr::operation::describe_repositories::DescribeRepositoriesError::RepositoryNotFoundException(_)) = e.as_service_error() {
                    Ok(None)
                } else {
                    Err(EcrError::Api {
                        action: "DescribeRepositories",
                        detail: describe_sdk_error(&e),
                    })
                }
            }
        }
    }

    /// Registry credentials for `registry_id` (the account). The password is a [`Secret`].
    pub async fn registry_auth(&self, registry_id: &str) -> Result<RegistryAuth, EcrError> {
        let mut req = self.client.get_authorization_token();
        if !registry_id.is_empty() {
            #[allow(deprecated)]
            {
                req = req.registry_ids(registry_id);
            }
        }
        let out = req.send().await.map_err(|e| EcrError::Api {
            action: "GetAuthorizationToken",
            detail: describe_sdk_error(&e),
        })?;
        let data = out
            .authorization_data
            .unwrap_or_default()
            .into_iter()
            .next()
            .ok_or_else(|| EcrError::Api {
                action: "GetAuthorizationToken",
                detail: "no authorization data in the response".into(),
            })?;
        let token = data.authorization_token.unwrap_or_default();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(token.as_bytes())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| EcrError::Api {
                action: "GetAuthorizationToken",
                detail: "the authorization token is not base64 'user:password'".into(),
            })?;
        let (user, pass) = decoded.split_once(':').ok_or_else(|| EcrError::Api {
            action: "GetAuthorizationToken",
            detail: "the authorization token is not 'user:password'".into(),
        })?;
        Ok(RegistryAuth {
            username: user.to_string(),
            password: Secret::new(pass),
            proxy_endpoint: data.proxy_endpoint.unwrap_or_default(),
        })
    }
}

/// A lifecycle policy that expires all but the newest `keep` images.
/// An image in a repository.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ImageInfo {
    /// The image's manifest digest.
    pub digest: String,
    /// Its tags.
    pub tags: Vec<String>,
    /// Seconds since the epoch.
    pub pushed_at: i64,
}

impl Ecr {
    /// Images of `repository` matching `tag_or_digest` (all images when `None`), newest first.
    /// A missing repository or image gives an empty list.
    pub async fn images(
        &self,
        repository: &str,
        tag_or_digest: Option<&str>,
    ) -> Result<Vec<ImageInfo>, crate::ApiError> {
        let mut found = Vec::new();
        let mut next = None;
        loop {
            let mut req = self
                .client
                .describe_images()
                .repository_name(repository)
                .set_next_token(next);
            if let Some(r) = tag_or_digest {
                let id = if r.starts_with("sha256:") {
                    aws_sdk_ecr::types::ImageIdentifier::builder().image_digest(r)
                } else {
                    aws_sdk_ecr::types::ImageIdentifier::builder().image_tag(r)
                };
                req = req.image_ids(id.build());
            }
            let out = match req.send().await {
                Ok(o) => o,
                Err(e) => {
                    let e = crate::api("ECR", "DescribeImages")(e);
                    if e.is_not_found() {
                        return Ok(Vec::new());
                    }
                    return Err(e);
                }
            };
            for d in out.image_details() {
                found.push(ImageInfo {
                    digest: d.image_digest().unwrap_or_default().to_string(),
                    tags: d.image_tags().to_vec(),
                    pushed_at: d.image_pushed_at().map(|t| t.secs()).unwrap_or_default(),
                });
            }
            next = out.next_token().map(str::to_string);
            if next.is_none() || tag_or_digest.is_some() {
                found.sort_by_key(|i| std::cmp::Reverse(i.pushed_at));
                return Ok(found);
            }
        }
    }
}

impl Ecr {
    /// Records a manifest already in the registry under `tag` (ECR `PutImage`). An image ECR
    /// already has is fine.
    pub async fn put_image(
        &self,
        repository: &str,
        tag: &str,
        manifest: &str,
        media_type: &str,
    ) -> Result<(), crate::ApiError> {
        match self
            .client
            .put_image()
            .repository_name(repository)
            .image_tag(tag)
            .image_manifest(manifest)
            .image_manifest_media_type(media_type)
            .send()
            .await
            .map_err(crate::api("ECR", "PutImage"))
        {
            // The emulator answers ImageAlreadyExistsException where AWS answers
            // ImageTagAlreadyExistsException for an immutable tag: either means "already there".
            Err(e)
                if !e
                    .code
                    .as_deref()
                    .is_some_and(|c| c.ends_with("AlreadyExistsException")) =>
            {
                Err(e)
            }
            _ => Ok(()),
        }
    }

    /// Deletes the repository and its images. Absent is fine.
    pub async fn delete_repository(&self, name: &str) -> Result<(), crate::ApiError> {
        match self
            .client
            .delete_repository()
            .repository_name(name)
            .force(true)
            .send()
            .await
            .map_err(crate::api("ECR", "DeleteRepository"))
        {
            Err(e) if !e.is_not_found() => Err(e),
            _ => Ok(()),
        }
    }
}

/// Whether tags say triton-deploy created the repository.
fn managed(tags: &[(String, String)]) -> bool {
    tags.iter()
        .any(|(k, v)| k == "managed-by" && v == "triton-deploy")
}

fn repository_of(name: &str, r: &aws_sdk_ecr::types::Repository) -> Repository {
    Repository {
        name: name.to_string(),
        uri: r.repository_uri.clone().unwrap_or_default(),
        registry_id: r.registry_id.clone().unwrap_or_default(),
        immutable_tags: r.image_tag_mutability == Some(ImageTagMutability::Immutable),
        created: false,
        drift: Vec::new(),
    }
}

/// The lifecycle policy that keeps the newest `keep` images.
pub fn lifecycle_policy(keep: u32) -> String {
    serde_json::json!({
        "rules": [{
            "rulePriority": 1,
            "description": format!("keep the newest {keep} images (set by triton-deploy)"),
            "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": keep},
            "action": {"type": "expire"}
        }]
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ours() -> LiveSettings {
        LiveSettings {
            scan_on_push: true,
            immutable_tags: true,
            encryption: "AES256".into(),
            lifecycle_policy: Some(lifecycle_policy(30)),
        }
    }

    #[test]
    fn a_repository_as_created_has_no_drift_and_each_changed_setting_is_named() {
        let wanted = RepositorySettings::default();
        assert_eq!(setting_drift(&ours(), &wanted), []);
        // The same policy with its keys in another order and other spacing is the same policy.
        let v: serde_json::Value = serde_json::from_str(&lifecycle_policy(30)).unwrap();
        let reordered = serde_json::to_string_pretty(&v).unwrap();
        let live = LiveSettings {
            lifecycle_policy: Some(reordered),
            ..ours()
        };
        assert_eq!(setting_drift(&live, &wanted), []);
        let live = LiveSettings {
            scan_on_push: false,
            immutable_tags: false,
            encryption: "KMS arn:aws:kms:us-east-1:1:key/k".into(),
            lifecycle_policy: Some(lifecycle_policy(5)),
        };
        let d = setting_drift(&live, &wanted);
        let got: Vec<(Setting, &str, &str)> = d
            .iter()
            .map(|d| (d.setting, d.live.as_str(), d.wanted.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (Setting::ScanOnPush, "off", "on"),
                (Setting::TagMutability, "MUTABLE", "IMMUTABLE"),
                (
                    Setting::LifecyclePolicy,
                    "keep the newest 5 images",
                    "keep the newest 30 images"
                ),
                (
                    Setting::Encryption,
                    "KMS arn:aws:kms:us-east-1:1:key/k",
                    "AES256"
                ),
            ]
        );
        assert!(d.iter().all(|d| !d.repaired));
        // No policy at all, or someone else's: named as such.
        let live = LiveSettings {
            lifecycle_policy: None,
            ..ours()
        };
        assert_eq!(setting_drift(&live, &wanted)[0].live, "none");
        let live = LiveSettings {
            lifecycle_policy: Some(r#"{"rules":[]}"#.into()),
            ..ours()
        };
        assert_eq!(setting_drift(&live, &wanted)[0].live, "another policy");
        // keep_images = 0 leaves the policy alone; a KMS alias matches the key ECR reports.
        let wanted = RepositorySettings {
            keep_images: 0,
            kms_key: Some("alias/models".into()),
            ..Default::default()
        };
        let live = LiveSettings {
            lifecycle_policy: None,
            encryption: "KMS arn:aws:kms:us-east-1:1:key/k".into(),
            ..ours()
        };
        assert_eq!(setting_drift(&live, &wanted), []);
    }

    #[test]
    fn repository_names_follow_ecr_rules() {
        for ok in ["models", "team/triton-models", "a1", "x.y_z-w"] {
            assert!(check_repository_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a", "Models", "-x", "x/", "a//b", "x y"] {
            assert!(check_repository_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_settings_tag_reads_back_as_written_and_refuses_other_shapes() {
        let mut s = RepositorySettings::default();
        for kms in [
            None,
            Some("arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"),
            Some("alias/models"),
        ] {
            s.kms_key = kms.map(str::to_string);
            s.keep_images = 7;
            s.immutable_tags = false;
            let v = settings_tag(&s);
            assert!(v.len() <= 256, "{v}");
            assert!(
                v.chars()
                    .all(|c| c.is_alphanumeric() || " _.:/=+-@".contains(c)),
                "{v}"
            );
            let back = parse_settings_tag(&v).unwrap();
            assert_eq!(
                (
                    back.scan_on_push,
                    back.immutable_tags,
                    back.keep_images,
                    back.kms_key
                ),
                (
                    s.scan_on_push,
                    s.immutable_tags,
                    s.keep_images,
                    s.kms_key.clone()
                )
            );
        }
        assert!(parse_settings_tag("scan_on_push=true").is_none());
        assert!(
            parse_settings_tag("scan_on_push=maybe immutable_tags=true keep_images=1 kms_key=none")
                .is_none()
        );
        assert!(
            parse_settings_tag("color=blue immutable_tags=true keep_images=1 kms_key=none")
                .is_none()
        );
    }
}
