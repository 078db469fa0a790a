//! Running Packer, the one place it runs: which Packer is installed (and so which [`Dialect`] of
//! the template it reads), `packer init` where it has it, `packer build` with its output streamed
//! as progress. Ctrl-C is passed on to Packer, which terminates its build instance before exiting.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};

use super::template::Dialect;
use crate::output::progress::Progress;

/// What to do where Packer is missing or too old.
pub const INSTALL_HINT: &str = "install Packer 1.7 or newer (HashiCorp's releases), or Debian's `packer` package (1.6.6), and put it on PATH or pass --packer";

/// How a Packer run ended badly.
#[derive(Debug, thiserror::Error)]
pub enum PackerError {
    /// Packer is not there, or is too old to read the template.
    #[error("{0}")]
    Unusable(String),
    /// Packer ran and failed; the last lines it printed say why.
    #[error("packer {step} failed ({status}):\n{tail}")]
    Failed {
        step: &'static str,
        status: String,
        tail: String,
    },
    /// Ctrl-C: Packer was told to stop and clean up.
    #[error("interrupted: Packer was stopped (it terminates its build instance)")]
    Interrupted,
}

/// An installed Packer.
#[derive(Debug, Clone)]
pub struct Packer {
    pub path: PathBuf,
    /// (major, minor, patch)
    pub version: (u32, u32, u32),
}

/// The version `packer version` prints first: `Packer v1.6.6`, `Packer v1.11.2`.
pub fn parse_version(text: &str) -> Option<(u32, u32, u32)> {
    let first = text.lines().next()?.trim();
    let v = first.strip_prefix("Packer v")?;
    let v = v
        .split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .next()?;
    let mut parts = v.split('.').map(|p| p.parse::<u32>().ok());
    Some((
        parts.next()??,
        parts.next()??,
        parts.next().flatten().unwrap_or(0),
    ))
}

impl Packer {
    /// The Packer at `given` (default: `packer` on PATH), checked to be 1.6 or newer.
    pub fn find(given: Option<&Path>) -> Result<Packer, PackerError> {
        let path = given
            .map(Path::to_path_buf)
            .unwrap_or_else(|| "packer".into());
        let out = std::process::Command::new(&path)
            .arg("version")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| {
                PackerError::Unusable(format!(
                    "cannot run {} ({e}): {INSTALL_HINT}",
                    path.display()
                ))
            })?;
        let text = String::from_utf8_lossy(&out.stdout);
        let version = parse_version(&text).ok_or_else(|| {
            PackerError::Unusable(format!(
                "{} is not Packer (`version` printed '{}'): {INSTALL_HINT}",
                path.display(),
                text.lines().next().unwrap_or("").trim()
            ))
        })?;
        if version < (1, 6, 0) {
            return Err(PackerError::Unusable(format!(
                "Packer {}.{}.{} is too old for HCL2 templates: {INSTALL_HINT}",
                version.0, version.1, version.2
            )));
        }
        Ok(Packer { path, version })
    }

    /// `1.6.6`.
    pub fn version_string(&self) -> String {
        format!("{}.{}.{}", self.version.0, self.version.1, self.version.2)
    }

    /// The template this Packer reads.
    pub fn dialect(&self) -> Dialect {
        if self.version >= (1, 7, 0) {
            Dialect::Current
        } else {
            Dialect::Packer16
        }
    }

    /// Installs the template's plugins (Packer 1.7 and newer; 1.6 has the amazon builder built in).
    pub async fn init(&self, dir: &Path, progress: &Progress) -> Result<(), PackerError> {
        if self.dialect() == Dialect::Packer16 {
            return Ok(());
        }
        self.run("init", dir, &["init", "."], &[], progress).await
    }

    /// `packer build` of the template in `dir`, with `vars` as `-var` and `env` added to Packer's
    /// environment (its own AWS credentials chain reads it).
    pub async fn build(
        &self,
        dir: &Path,
        vars: &[(String, String)],
        env: &[(String, String)],
        progress: &Progress,
    ) -> Result<(), PackerError> {
        let mut args = vec!["build".to_string(), "-color=false".into()];
        for (k, v) in vars {
            args.push("-var".into());
            args.push(format!("{k}={v}"));
        }
        args.push(".".into());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.run("build", dir, &args, env, progress).await
    }

    async fn run(
        &self,
        step: &'static str,
        dir: &Path,
        args: &[&str],
        env: &[(String, String)],
        progress: &Progress,
    ) -> Result<(), PackerError> {
        let mut child = tokio::process::Command::new(&self.path)
            .args(args)
            .current_dir(dir)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("CHECKPOINT_DISABLE", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(false)
            .spawn()
            .map_err(|e| {
                PackerError::Unusable(format!(
                    "cannot run {} ({e}): {INSTALL_HINT}",
                    self.path.display()
                ))
            })?;
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        let mut out = BufReader::new(stdout).lines();
        let mut err = BufReader::new(stderr).lines();
        let mut tail: Vec<String> = Vec::new();
        let mut keep = |line: String| {
            progress.line(format!("packer: {line}"));
            tail.push(line);
            if tail.len() > 20 {
                tail.remove(0);
            }
        };
        let ctrl_c = tokio::signal::ctrl_c();
        tokio::pin!(ctrl_c);
        let mut interrupted = false;
        let (mut out_done, mut err_done) = (false, false);
        while !(out_done && err_done) {
            tokio::select! {
                l = out.next_line(), if !out_done => match l {
                    Ok(Some(l)) => keep(l),
                    _ => out_done = true,
                },
                l = err.next_line(), if !err_done => match l {
                    Ok(Some(l)) => keep(l),
                    _ => err_done = true,
                },
                _ = &mut ctrl_c, if !interrupted => {
                    interrupted = true;
                    // Packer cleans up (terminates the instance, deletes the temporary key and
                    // security group) on SIGINT; it is waited for, not killed.
                    if let Some(pid) = child.id() {
                        let _ = std::process::Command::new("kill")
                            .args(["-INT", &pid.to_string()])
                            .status();
                    }
                    progress.line("interrupted: waiting for Packer to clean up its build instance");
                }
            }
        }
        let status = child.wait().await.map_err(|e| PackerError::Failed {
            step,
            status: e.to_string(),
            tail: String::new(),
        })?;
        if interrupted {
            return Err(PackerError::Interrupted);
        }
        if !status.success() {
            // Packer ends with a summary of the errors; those lines say why, the rest was shown.
            let errors: Vec<&String> = tail
                .iter()
                .filter(|l| l.starts_with("--> ") || l.contains("rror"))
                .collect();
            let tail = if errors.is_empty() {
                tail.join("\n")
            } else {
                errors
                    .iter()
                    .map(|l| l.as_str())
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            return Err(PackerError::Failed {
                step,
                status: status.to_string(),
                tail,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_read_from_what_packer_prints() {
        assert_eq!(parse_version("Packer v1.6.6\n"), Some((1, 6, 6)));
        assert_eq!(
            parse_version("Packer v1.11.2\n\nYour version of Packer is out of date!"),
            Some((1, 11, 2))
        );
        assert_eq!(parse_version("Packer v1.9.0-dev"), Some((1, 9, 0)));
        assert_eq!(parse_version("Terraform v1.5.0"), None);
        assert_eq!(parse_version(""), None);
    }

    #[test]
    fn a_missing_or_foreign_packer_is_a_clear_error_with_the_install_hint() {
        let e = Packer::find(Some(Path::new("/nonexistent/packer"))).unwrap_err();
        assert!(
            e.to_string().contains("cannot run /nonexistent/packer")
                && e.to_string().contains("Packer 1.7 or newer"),
            "{e}"
        );
        let e = Packer::find(Some(Path::new("true"))).unwrap_err();
        assert!(e.to_string().contains("is not Packer"), "{e}");
    }
}
