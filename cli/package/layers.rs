//! Model repository → image layers: one content-addressed layer per model, holding exactly the files
//! of `<repo>/<model>/` under `/models/<model>/`. Layers are deterministic tars (sorted entries, fixed
//! mtime and owner, normalized modes, no host metadata) compressed in one streaming pass that computes
//! both the diffID (of the tar) and the digest (of the blob). Blobs live in a local cache keyed by the
//! files' (path, size, mtime, inode), so an unchanged model is neither re-tarred nor re-compressed.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Bumped whenever the tar layout changes, so that cached layers are rebuilt.
const LAYOUT_VERSION: &str = "td-layer-v1";
/// The fixed modification time of every entry (1970-01-01T00:00:00Z).
const MTIME: u64 = 0;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    Gzip,
    Zstd,
    None,
}

impl Compression {
    /// The OCI media type of a layer compressed this way.
    pub fn oci_media_type(self) -> &'static str {
        match self {
            Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
            Compression::None => "application/vnd.oci.image.layer.v1.tar",
        }
    }

    /// The Docker v2.2 media type, where Docker has one (it has none for zstd).
    pub fn docker_media_type(self) -> Option<&'static str> {
        match self {
            Compression::Gzip => Some("application/vnd.docker.image.rootfs.diff.tar.gzip"),
            Compression::None => Some("application/vnd.docker.image.rootfs.diff.tar"),
            Compression::Zstd => None,
        }
    }
}

/// One built layer: its blob is at `path` in the cache.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layer {
    pub model: String,
    /// `sha256:<hex>` of the compressed blob.
    pub digest: String,
    /// `sha256:<hex>` of the uncompressed tar.
    pub diff_id: String,
    pub size: u64,
    pub compression: Compression,
    /// Files in the layer (not counting directories).
    pub files: u64,
    #[serde(skip)]
    pub path: PathBuf,
    /// Whether the layer came from the cache without re-tarring.
    #[serde(skip)]
    pub cached: bool,
}

/// The local layer cache: `blobs/sha256/<hex>` and `layers/<key>.json`.
#[derive(Debug, Clone)]
pub struct Cache {
    pub root: PathBuf,
}

impl Cache {
    /// `$TRITON_DEPLOY_CACHE_DIR`, else `$XDG_CACHE_HOME/triton-deploy`, else `~/.cache/triton-deploy`.
    pub fn default_location() -> Cache {
        let root = std::env::var_os("TRITON_DEPLOY_CACHE_DIR")
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("triton-deploy"))
            })
            .or_else(|| {
                std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/triton-deploy"))
            })
            .unwrap_or_else(|| std::env::temp_dir().join("triton-deploy-cache"));
        Cache { root }
    }

    pub fn blob_path(&self, digest: &str) -> PathBuf {
        self.root
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"))
    }

    fn entry_path(&self, key: &str) -> PathBuf {
        self.root.join("layers").join(format!("{key}.json"))
    }
}

/// A file or directory of a model, in layer order.
struct Entry {
    rel: String,
    path: PathBuf,
    meta: std::fs::Metadata,
}

/// Every entry below `dir`, sorted by relative path (bytewise), symlinks not followed.
fn walk(dir: &Path) -> io::Result<Vec<Entry>> {
    fn rec(base: &Path, dir: &Path, out: &mut Vec<Entry>) -> io::Result<()> {
        let mut names: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<Vec<_>, _>>()?;
        names.sort_by_key(|e| e.file_name());
        for e in names {
            let path = e.path();
            let meta = std::fs::symlink_metadata(&path)?;
            let rel = path
                .strip_prefix(base)
                .expect("walked below base")
                .to_string_lossy()
                .replace('\\', "/");
            let is_dir = meta.is_dir();
            out.push(Entry {
                rel,
                path: path.clone(),
                meta,
            });
            if is_dir {
                rec(base, &path, out)?;
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    rec(dir, dir, &mut out)?;
    out.sort_by(|a, b| a.rel.as_bytes().cmp(b.rel.as_bytes()));
    Ok(out)
}

/// The cache key of a model directory: its files' identity on disk, not their content.
fn cache_key(model: &str, compression: Compression, entries: &[Entry]) -> io::Result<String> {
    let mut h = Sha256::new();
    h.update(format!("{LAYOUT_VERSION}\0{model}\0{compression:?}\0"));
    for e in entries {
        let m = &e.meta;
        let link = if m.file_type().is_symlink() {
            std::fs::read_link(&e.path)?.to_string_lossy().into_owned()
        } else {
            String::new()
        };
        h.update(format!(
            "{}\0{}\0{}\0{}\0{}\0{}\0{}\0{link}\n",
            e.rel,
            m.mode(),
            m.len(),
            m.mtime(),
            m.mtime_nsec(),
            m.ino(),
            m.dev()
        ));
    }
    Ok(hex::encode(h.finalize()))
}

/// Writes through to `inner` while hashing and counting the bytes.
struct HashingWriter<W> {
    inner: W,
    state: Arc<Mutex<(Sha256, u64)>>,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        let mut s = self.state.lock().expect("hash state");
        s.0.update(&buf[..n]);
        s.1 += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn digest_of(state: &Arc<Mutex<(Sha256, u64)>>) -> (String, u64) {
    let s = state.lock().expect("hash state");
    (
        format!("sha256:{}", hex::encode(s.0.clone().finalize())),
        s.1,
    )
}

fn normalized_mode(meta: &std::fs::Metadata) -> u32 {
    if meta.is_dir() || meta.permissions().mode() & 0o111 != 0 {
        0o755
    } else {
        0o644
    }
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(MTIME);
    h.set_size(size);
    h
}

/// Writes the deterministic tar of `model`'s entries to `w`; returns the number of files.
fn write_tar<W: Write>(w: W, model: &str, entries: &[Entry]) -> io::Result<(W, u64)> {
    let mut b = tar::Builder::new(w);
    b.mode(tar::HeaderMode::Deterministic);
    b.follow_symlinks(false);
    b.sparse(false);
    for dir in ["models/".to_string(), format!("models/{model}/")] {
        let mut h = header(tar::EntryType::Directory, 0o755, 0);
        b.append_data(&mut h, &dir, io::empty())?;
    }
    let mut files = 0;
    for e in entries {
        let name = format!("models/{model}/{}", e.rel);
        let ft = e.meta.file_type();
        if ft.is_dir() {
            let mut h = header(tar::EntryType::Directory, 0o755, 0);
            b.append_data(&mut h, format!("{name}/"), io::empty())?;
        } else if ft.is_symlink() {
            let target = std::fs::read_link(&e.path)?;
            let mut h = header(tar::EntryType::Symlink, 0o777, 0);
            b.append_link(&mut h, &name, &target)?;
        } else if ft.is_file() {
            let f = File::open(&e.path)?;
            let size = f.metadata()?.len();
            let mut h = header(tar::EntryType::Regular, normalized_mode(&e.meta), size);
            // Read exactly `size` bytes: a file that grows while we read must not corrupt the tar.
            b.append_data(&mut h, &name, io::Read::take(f, size))?;
            files += 1;
        }
        // Sockets, FIFOs and devices are not model files: skipped.
    }
    Ok((b.into_inner()?, files))
}

fn threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// Builds (or takes from the cache) the layer of one model directory.
pub fn build_layer(
    cache: &Cache,
    model: &str,
    dir: &Path,
    compression: Compression,
) -> io::Result<Layer> {
    let entries = walk(dir)?;
    let key = cache_key(model, compression, &entries)?;
    if let Ok(text) = std::fs::read_to_string(cache.entry_path(&key))
        && let Ok(mut layer) = serde_json::from_str::<Layer>(&text)
    {
        layer.path = cache.blob_path(&layer.digest);
        if std::fs::metadata(&layer.path).is_ok_and(|m| m.len() == layer.size) {
            layer.cached = true;
            return Ok(layer);
        }
    }
    std::fs::create_dir_all(cache.root.join("blobs/sha256"))?;
    std::fs::create_dir_all(cache.root.join("layers"))?;
    let tmp = tempfile::NamedTempFile::new_in(cache.root.join("blobs"))?;
    let blob_state = Arc::new(Mutex::new((Sha256::new(), 0u64)));
    let tar_state = Arc::new(Mutex::new((Sha256::new(), 0u64)));
    let blob = HashingWriter {
        inner: BufWriter::with_capacity(1 << 20, tmp.reopen()?),
        state: blob_state.clone(),
    };
    let files = match compression {
        Compression::None => {
            let tar = HashingWriter {
                inner: blob,
                state: tar_state.clone(),
            };
            let (mut w, files) = write_tar(tar, model, entries.as_slice())?;
            w.flush()?;
            files
        }
        Compression::Gzip => {
            use gzp::ZWriter;
            let gz = gzp::par::compress::ParCompressBuilder::<gzp::deflate::Gzip>::new()
                .num_threads(threads())
                .map_err(io::Error::other)?
                .compression_level(flate2::Compression::new(6))
                .from_writer(blob);
            let tar = HashingWriter {
                inner: gz,
                state: tar_state.clone(),
            };
            let (mut w, files) = write_tar(tar, model, entries.as_slice())?;
            let mut inner = w.inner.finish().map_err(io::Error::other)?;
            inner.flush()?;
            files
        }
        Compression::Zstd => {
            let mut z = zstd::Encoder::new(blob, 3)?;
            // Output is identical for any worker count >= 1 (never 0, which is single-threaded mode).
            z.multithread(threads() as u32)?;
            let tar = HashingWriter {
                inner: z,
                state: tar_state.clone(),
            };
            let (w, files) = write_tar(tar, model, entries.as_slice())?;
            let mut inner = w.inner.finish()?;
            inner.flush()?;
            files
        }
    };
    let (diff_id, _) = digest_of(&tar_state);
    let (digest, size) = digest_of(&blob_state);
    let path = cache.blob_path(&digest);
    tmp.persist(&path).map_err(|e| e.error)?;
    let layer = Layer {
        model: model.to_string(),
        digest,
        diff_id,
        size,
        compression,
        files,
        path,
        cached: false,
    };
    let entry = tempfile::NamedTempFile::new_in(cache.root.join("layers"))?;
    serde_json::to_writer(&entry, &layer)?;
    entry.persist(cache.entry_path(&key)).map_err(|e| e.error)?;
    Ok(layer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(dir: &Path) {
        std::fs::create_dir_all(dir.join("1")).unwrap();
        std::fs::write(dir.join("config.pbtxt"), "backend: \"python\"\n").unwrap();
        std::fs::write(dir.join("1/model.py"), "class TritonPythonModel: pass\n").unwrap();
        std::fs::write(dir.join("1/weights.bin"), vec![7u8; 300_000]).unwrap();
    }

    fn tar_listing(layer: &Layer) -> Vec<(String, u32, u64, u64)> {
        let f = File::open(&layer.path).unwrap();
        let r: Box<dyn io::Read> = match layer.compression {
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(f)),
            Compression::Zstd => Box::new(zstd::Decoder::new(f).unwrap()),
            Compression::None => Box::new(f),
        };
        let mut a = tar::Archive::new(r);
        a.entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let h = e.header();
                (
                    e.path().unwrap().display().to_string(),
                    h.mode().unwrap(),
                    h.mtime().unwrap(),
                    h.uid().unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn same_content_in_different_places_gives_the_same_digest_for_every_compression() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        model(&a.path().join("m"));
        std::thread::sleep(std::time::Duration::from_millis(20));
        model(&b.path().join("elsewhere/m"));
        for c in [Compression::Gzip, Compression::Zstd, Compression::None] {
            let c1 = Cache {
                root: tempfile::tempdir().unwrap().keep(),
            };
            let c2 = Cache {
                root: tempfile::tempdir().unwrap().keep(),
            };
            let l1 = build_layer(&c1, "m", &a.path().join("m"), c).unwrap();
            let l2 = build_layer(&c2, "m", &b.path().join("elsewhere/m"), c).unwrap();
            assert_eq!(
                (l1.digest.clone(), l1.diff_id.clone()),
                (l2.digest, l2.diff_id),
                "{c:?}"
            );
            assert_eq!(l1.files, 3);
            if c == Compression::None {
                assert_eq!(l1.digest, l1.diff_id);
            }
            // The blob's bytes hash to its digest.
            let bytes = std::fs::read(&l1.path).unwrap();
            assert_eq!(
                format!("sha256:{}", hex::encode(Sha256::digest(&bytes))),
                l1.digest
            );
            let listing = tar_listing(&l1);
            let names: Vec<&str> = listing.iter().map(|e| e.0.as_str()).collect();
            assert_eq!(
                names,
                [
                    "models/",
                    "models/m/",
                    "models/m/1/",
                    "models/m/1/model.py",
                    "models/m/1/weights.bin",
                    "models/m/config.pbtxt"
                ]
            );
            assert!(
                listing.iter().all(|e| e.2 == 0 && e.3 == 0),
                "fixed mtime and owner"
            );
        }
    }

    #[test]
    fn an_unchanged_model_comes_from_the_cache_and_a_changed_one_does_not() {
        let d = tempfile::tempdir().unwrap();
        let m = d.path().join("m");
        model(&m);
        let cache = Cache {
            root: d.path().join("cache"),
        };
        let l1 = build_layer(&cache, "m", &m, Compression::Gzip).unwrap();
        assert!(!l1.cached);
        let l2 = build_layer(&cache, "m", &m, Compression::Gzip).unwrap();
        assert!(l2.cached);
        assert_eq!(
            l1,
            Layer {
                cached: false,
                ..l2
            }
        );
        std::fs::write(m.join("1/model.py"), "class TritonPythonModel:\n    pass\n").unwrap();
        let l3 = build_layer(&cache, "m", &m, Compression::Gzip).unwrap();
        assert!(!l3.cached);
        assert_ne!(l3.digest, l1.digest);
        // Executable bits survive as 0755, everything else is 0644.
        std::fs::set_permissions(m.join("1/model.py"), std::fs::Permissions::from_mode(0o700))
            .unwrap();
        let l4 = build_layer(&cache, "m", &m, Compression::None).unwrap();
        let modes: Vec<u32> = tar_listing(&l4).iter().map(|e| e.1).collect();
        assert_eq!(modes, [0o755, 0o755, 0o755, 0o755, 0o644, 0o644]);
    }
}
