//! Reading a Triton model repository from disk into a [`ModelRepo`]: its model directories, their
//! version directories (named the way Triton interprets them) and their parsed configurations.
//! No judgement happens here; `validate` applies the rules.

use std::path::{Path, PathBuf};

use crate::triton::model_config::{self, ParsedConfig};
use crate::triton::pbtxt::ParseError;

/// A model repository as found on disk.
#[derive(Debug)]
pub struct ModelRepo {
    /// The repository's directory.
    pub root: PathBuf,
    /// Model directories, sorted by name (Triton polls them in directory order).
    pub models: Vec<ModelDir>,
    /// Root entries that are files (Triton ignores them).
    pub files: Vec<String>,
}

/// How Triton reads the name of a subdirectory of a model (`model_lifecycle.cc` `VersionsToLoad`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionName {
    /// `warmup`, `initial_state` and `configs` are not versions.
    Reserved,
    /// A multi-character name with a leading `0` is ignored.
    LeadingZero,
    /// `std::stoll` fails: ignored.
    NotNumeric,
    /// `std::stoll` succeeds on a prefix (`1_old`, `2.0`, ` 3`, `+4`): read as this version.
    Prefix(i64),
    /// A plain version number.
    Number(i64),
}

impl VersionName {
    /// What a directory name inside a model is: a version number or not.
    pub fn of(dir: &str) -> VersionName {
        if matches!(dir, "warmup" | "initial_state" | "configs") {
            return VersionName::Reserved;
        }
        if dir.len() > 1 && dir.starts_with('0') {
            return VersionName::LeadingZero;
        }
        // std::stoll: leading whitespace, an optional sign, then at least one digit.
        let t = dir.trim_start_matches([' ', '\t', '\n', '\r', '\x0b', '\x0c']);
        let (sign, rest) = match t.as_bytes().first() {
            Some(b'+') => (1i64, &t[1..]),
            Some(b'-') => (-1i64, &t[1..]),
            _ => (1i64, t),
        };
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return VersionName::NotNumeric;
        }
        let Ok(v) = rest[..digits].parse::<i64>() else {
            // out_of_range: Triton does not catch it; treat as not numeric but report it.
            return VersionName::NotNumeric;
        };
        let v = sign * v;
        if digits == dir.len() {
            VersionName::Number(v)
        } else {
            VersionName::Prefix(v)
        }
    }
}

/// A subdirectory (or file) inside a model directory.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The entry's file name.
    pub name: String,
    /// Whether it is a directory.
    pub is_dir: bool,
}

/// One model directory.
#[derive(Debug)]
pub struct ModelDir {
    /// The directory name (the model's name as far as Triton is concerned).
    pub name: String,
    /// The model's directory.
    pub dir: PathBuf,
    /// Entries of the model directory, sorted by byte order (Triton's autofill looks at the first).
    pub entries: Vec<Entry>,
    /// The configuration file that Triton would read (`configs/<name>.pbtxt` when selected and present).
    pub config_file: PathBuf,
    /// Its text, when it exists and could be read.
    pub config_source: Option<String>,
    /// Its parse result, when it exists.
    pub config: Option<Result<ParsedConfig, ParseError>>,
    /// Why the config could not be read (I/O, not UTF-8), when it exists but was unreadable.
    pub config_read_error: Option<String>,
}

impl ModelDir {
    /// The parsed config, when present and valid text format.
    pub fn parsed(&self) -> Option<&ParsedConfig> {
        self.config.as_ref().and_then(|r| r.as_ref().ok())
    }

    /// Subdirectories that Triton reads as versions: (number, directory name).
    pub fn versions(&self) -> Vec<(i64, &str)> {
        let mut v: Vec<(i64, &str)> = self
            .entries
            .iter()
            .filter(|e| e.is_dir)
            .filter_map(|e| match VersionName::of(&e.name) {
                VersionName::Number(n) | VersionName::Prefix(n) => Some((n, e.name.as_str())),
                _ => None,
            })
            .collect();
        v.sort();
        v
    }

    /// Whether the model directory has a file or folder `name`.
    pub fn has_entry(&self, name: &str) -> bool {
        self.entries.iter().any(|e| e.name == name)
    }
}

/// Lists a directory's entries sorted by name. Symlinks are followed (like Triton's `stat`);
/// a dangling one is reported as a file entry and found again by the symlink rule.
pub fn list_dir(dir: &Path) -> std::io::Result<Vec<Entry>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        let is_dir = std::fs::metadata(e.path())
            .map(|m| m.is_dir())
            .unwrap_or(false);
        out.push(Entry { name, is_dir });
    }
    out.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
    Ok(out)
}

/// Reads one model directory, selecting `configs/<config_name>.pbtxt` when given and present.
pub fn read_model(dir: &Path, config_name: Option<&str>) -> std::io::Result<ModelDir> {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let entries = list_dir(dir)?;
    let mut config_file = dir.join("config.pbtxt");
    if let Some(cn) = config_name {
        let candidate = dir.join("configs").join(format!("{cn}.pbtxt"));
        if candidate.is_file() {
            config_file = candidate;
        }
    }
    let (mut config_source, mut config, mut config_read_error) = (None, None, None);
    if config_file.is_file() {
        match std::fs::read(&config_file) {
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(text) => {
                    config = Some(model_config::parse(&text));
                    config_source = Some(text);
                }
                Err(e) => {
                    config_read_error = Some(format!(
                        "the file is not UTF-8 text (invalid byte at offset {})",
                        e.utf8_error().valid_up_to()
                    ))
                }
            },
            Err(e) => config_read_error = Some(e.to_string()),
        }
    }
    Ok(ModelDir {
        name,
        dir: dir.to_path_buf(),
        entries,
        config_file,
        config_source,
        config,
        config_read_error,
    })
}

impl ModelRepo {
    /// Reads every model directory under `root`.
    pub fn read(root: &Path, config_name: Option<&str>) -> std::io::Result<ModelRepo> {
        let mut models = Vec::new();
        let mut files = Vec::new();
        for e in list_dir(root)? {
            if e.is_dir {
                models.push(read_model(&root.join(&e.name), config_name)?);
            } else {
                files.push(e.name);
            }
        }
        Ok(ModelRepo {
            root: root.to_path_buf(),
            models,
            files,
        })
    }

    /// The model called `name`, if the repository has it.
    pub fn model(&self, name: &str) -> Option<&ModelDir> {
        self.models.iter().find(|m| m.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::VersionName::{self, *};

    #[test]
    fn version_names_follow_stoll() {
        assert_eq!(VersionName::of("1"), Number(1));
        assert_eq!(VersionName::of("0"), Number(0));
        assert_eq!(VersionName::of("42"), Number(42));
        assert_eq!(VersionName::of("003"), LeadingZero);
        assert_eq!(VersionName::of("abc"), NotNumeric);
        assert_eq!(VersionName::of("1_old"), Prefix(1));
        assert_eq!(VersionName::of("2.0"), Prefix(2));
        assert_eq!(VersionName::of("+4"), Prefix(4));
        assert_eq!(VersionName::of(" 3"), Prefix(3));
        assert_eq!(VersionName::of("warmup"), Reserved);
        assert_eq!(VersionName::of(".ipynb_checkpoints"), NotNumeric);
        assert_eq!(VersionName::of("99999999999999999999"), NotNumeric);
    }
}
