//! The boot-time pre-read of a baked image. An AMI's EBS snapshot is loaded lazily: each block is
//! fetched from S3 the first time it is read, so a host launched from a baked AMI would spend
//! many minutes on the first task's read of a 15 GB image. Reading the image's files once, many
//! at a time, before the ECS agent starts (the ECS-optimized AMIs order the agent after cloud-init)
//! fetches those blocks at the volume's full rate; Fast Snapshot Restore is the paid alternative.

/// Where Docker keeps its images on the ECS-optimized AMIs.
pub const DOCKER_ROOT: &str = "/var/lib/docker";

/// How many files are read at once: EBS serves lazy loads best at a deep queue.
const READERS: u32 = 32;

/// Single-quotes `s` for a POSIX shell.
pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The bash fragment of the user data that reads every file under `root` once, `READERS` at a
/// time, for at most `timeout_seconds`; it always succeeds (a host that could not read everything
/// in time still starts, reading the rest on demand) and says how it went on the console log.
pub fn script(root: &str, timeout_seconds: u32) -> String {
    format!(
        r#"# Read the baked Triton image once before the ECS agent starts: the AMI's snapshot loads
# lazily, and the first task would otherwise wait on each block's first read.
td_preread() {{
  local root={root} start=$SECONDS rc=0
  [ -d "$root" ] || return 0
  find "$root" -xdev -type f -size +0c -print0 2>/dev/null \
    | timeout -k 5 {timeout_seconds} xargs -0 -r -P {READERS} -n 64 cat >/dev/null 2>&1 || rc=$?
  if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
    echo "triton-deploy: pre-read of $root stopped at its limit ({timeout_seconds} s); the rest loads on first read"
  else
    echo "triton-deploy: pre-read $root in $((SECONDS - start)) s"
  fi
}}
td_preread
"#,
        root = sh_quote(root)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;
    use std::time::{Duration, Instant};

    fn run(root: &std::path::Path, timeout: u32) -> (String, Duration) {
        let started = Instant::now();
        let out = Command::new("bash")
            .arg("-c")
            .arg(format!(
                "set -euo pipefail\n{}echo done",
                script(root.to_str().unwrap(), timeout)
            ))
            .output()
            .expect("bash runs");
        assert!(out.status.success(), "{out:?}");
        (String::from_utf8(out.stdout).unwrap(), started.elapsed())
    }

    #[test]
    fn the_pre_read_reads_the_files_and_lets_the_boot_go_on() {
        let dir = tempfile::tempdir().unwrap();
        let layer = dir.path().join("overlay2/abc/diff");
        std::fs::create_dir_all(&layer).unwrap();
        for i in 0..200 {
            std::fs::write(layer.join(format!("w{i}")), vec![7u8; 4096]).unwrap();
        }
        let (out, _) = run(dir.path(), 60);
        assert!(out.contains("pre-read ") && out.contains(" s\n"), "{out}");
        assert!(out.ends_with("done\n"), "{out}");
        // A missing root (an AMI baked elsewhere) is no error either.
        let (out, _) = run(&dir.path().join("absent"), 60);
        assert_eq!(out, "done\n");
    }

    #[test]
    fn a_read_longer_than_the_limit_stops_there_and_the_boot_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        // A sparse terabyte: minutes of reading, as a cold snapshot's layers would be.
        let f = std::fs::File::create(dir.path().join("huge")).unwrap();
        f.set_len(1 << 40).unwrap();
        let (out, took) = run(dir.path(), 1);
        assert!(out.contains("stopped at its limit (1 s)"), "{out}");
        assert!(out.ends_with("done\n"), "{out}");
        assert!(took < Duration::from_secs(15), "{took:?}");
    }

    #[test]
    fn the_root_is_quoted_for_the_shell() {
        assert_eq!(sh_quote("/a b/it's"), r"'/a b/it'\''s'");
        assert!(script("/var/lib/docker", 900).contains("local root='/var/lib/docker'"));
    }
}
