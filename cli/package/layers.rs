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

/// What `push --compression` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
#[allow(missing_docs)]
pub enum Compression {
    // (Plain comments: a doc comment on a value would turn clap's help into its long form.)
    // Each layer as it pays: gzip when a sample of its bytes shrinks by at least
    // AUTO_MIN_GAIN_PERCENT, uncompressed otherwise (model weights barely compress).
    Auto,
    // gzip at level 6, on every core.
    Gzip,
    // zstd at level 3, on every core (Docker 23 or containerd 1.5 pull it).
    Zstd,
    None,
}

/// How one layer's blob is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    Gzip,
    Zstd,
    None,
}

/// Under this gain, `auto` leaves a layer uncompressed. Measured on real fp32 and fp16 weights
/// (`scripts/bench/compression.sh`): gzip gains 7–8% on them, and a 7% smaller download does not
/// pay for the single-threaded gunzip a host does on pull, nor for compressing at push. bf16
/// weights gain about 20% and are compressed.
pub const AUTO_MIN_GAIN_PERCENT: f64 = 10.0;
/// Above this size a layer `auto` compresses gets gzip level 2, below it level 6: on weights
/// level 6 gains a tenth of a point more in a fifth more time. Not level 1: this deflate's level 1
/// (zlib-rs, like zlib-ng) codes with fixed Huffman tables only, and it grows fp16 and bf16
/// weights by about 5% where level 2 shrinks them by 8% and 21%.
const AUTO_FAST_ABOVE: u64 = 64 << 20;
/// The gzip level a sample is judged at, and large layers compressed at.
const AUTO_SAMPLE_LEVEL: u32 = 2;
/// The sample `auto` judges a layer by: this many slices of [`SAMPLE_SLICE`] bytes, spread evenly
/// over the layer's file contents (all of them when they are smaller).
const SAMPLE_SLICES: u64 = 8;
const SAMPLE_SLICE: u64 = 1 << 20;

impl Encoding {
    /// The OCI media type of a layer encoded this way.
    pub fn oci_media_type(self) -> &'static str {
        match self {
            Encoding::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            Encoding::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
            Encoding::None => "application/vnd.oci.image.layer.v1.tar",
        }
    }

    /// The Docker v2.2 media type, where Docker has one (it has none for zstd).
    pub fn docker_media_type(self) -> Option<&'static str> {
        match self {
            Encoding::Gzip => Some("application/vnd.docker.image.rootfs.diff.tar.gzip"),
            Encoding::None => Some("application/vnd.docker.image.rootfs.diff.tar"),
            Encoding::Zstd => None,
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
    pub compression: Encoding,
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

/// How a layer is written: the codec and, for gzip, the level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plan {
    Gzip(u32),
    Zstd,
    None,
}

fn plan(compression: Compression, entries: &[Entry]) -> io::Result<Plan> {
    Ok(match compression {
        Compression::Gzip => Plan::Gzip(6),
        Compression::Zstd => Plan::Zstd,
        Compression::None => Plan::None,
        Compression::Auto => {
            let files: Vec<&Entry> = files_of(entries).collect();
            let total: u64 = files.iter().map(|e| e.meta.len()).sum();
            if sample_gain_percent(&files, total)? < AUTO_MIN_GAIN_PERCENT {
                Plan::None
            } else if total > AUTO_FAST_ABOVE {
                Plan::Gzip(AUTO_SAMPLE_LEVEL)
            } else {
                Plan::Gzip(6)
            }
        }
    })
}

fn files_of(entries: &[Entry]) -> impl Iterator<Item = &Entry> {
    entries.iter().filter(|e| e.meta.file_type().is_file())
}

/// How much gzip (level [`AUTO_SAMPLE_LEVEL`]) shrinks a sample of the `files`' bytes (`total`
/// of them), in percent: up to [`SAMPLE_SLICES`] slices spread evenly over their contents in
/// layer order (all of them when they are small). No bytes at all count as compressible (the tar
/// headers are what is left).
fn sample_gain_percent(files: &[&Entry], total: u64) -> io::Result<f64> {
    if total == 0 {
        return Ok(100.0);
    }
    let starts: Vec<u64> = if total <= SAMPLE_SLICES * SAMPLE_SLICE {
        (0..total.div_ceil(SAMPLE_SLICE))
            .map(|i| i * SAMPLE_SLICE)
            .collect()
    } else {
        let last = total - SAMPLE_SLICE;
        (0..SAMPLE_SLICES)
            .map(|i| i * last / (SAMPLE_SLICES - 1))
            .collect()
    };
    let (mut read, mut written) = (0u64, 0u64);
    let mut buf = Vec::with_capacity(SAMPLE_SLICE as usize);
    for start in starts {
        buf.clear();
        read_at(files, start, SAMPLE_SLICE, &mut buf)?;
        let mut z = flate2::write::DeflateEncoder::new(
            Counter(0),
            flate2::Compression::new(AUTO_SAMPLE_LEVEL),
        );
        z.write_all(&buf)?;
        written += z.finish()?.0;
        read += buf.len() as u64;
    }
    if read == 0 {
        // The files shrank since they were listed: judge them as compressible (small).
        return Ok(100.0);
    }
    Ok(100.0 * (1.0 - written as f64 / read as f64))
}

/// Appends up to `len` bytes from offset `start` of the files' contents laid end to end.
fn read_at(files: &[&Entry], mut start: u64, len: u64, out: &mut Vec<u8>) -> io::Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    let mut want = len;
    for e in files {
        let size = e.meta.len();
        if start >= size {
            start -= size;
            continue;
        }
        let mut f = File::open(&e.path)?;
        f.seek(SeekFrom::Start(start))?;
        let n = f.take(want.min(size - start)).read_to_end(out)? as u64;
        want -= n.min(want);
        start = 0;
        if want == 0 {
            break;
        }
    }
    Ok(())
}

/// A sink that only counts what is written to it.
struct Counter(u64);

impl Write for Counter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
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
    let (encoding, files) = match plan(compression, &entries)? {
        Plan::None => {
            // The blob is the tar: one hash gives both the digest and the diffID.
            let (mut w, files) = write_tar(blob, model, entries.as_slice())?;
            w.flush()?;
            *tar_state.lock().expect("hash state") = blob_state.lock().expect("hash state").clone();
            (Encoding::None, files)
        }
        Plan::Gzip(level) => {
            use gzp::ZWriter;
            let gz = gzp::par::compress::ParCompressBuilder::<gzp::deflate::Gzip>::new()
                .num_threads(threads())
                .map_err(io::Error::other)?
                .compression_level(flate2::Compression::new(level))
                .from_writer(blob);
            let tar = HashingWriter {
                inner: gz,
                state: tar_state.clone(),
            };
            let (mut w, files) = write_tar(tar, model, entries.as_slice())?;
            let mut inner = w.inner.finish().map_err(io::Error::other)?;
            inner.flush()?;
            (Encoding::Gzip, files)
        }
        Plan::Zstd => {
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
            (Encoding::Zstd, files)
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
        compression: encoding,
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
            Encoding::Gzip => Box::new(flate2::read::MultiGzDecoder::new(f)),
            Encoding::Zstd => Box::new(zstd::Decoder::new(f).unwrap()),
            Encoding::None => Box::new(f),
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
        for c in [
            Compression::Gzip,
            Compression::Zstd,
            Compression::None,
            Compression::Auto,
        ] {
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
            let want = match c {
                Compression::Gzip => Encoding::Gzip,
                Compression::Zstd => Encoding::Zstd,
                // A sample of 300,000 sevens and some text compresses well.
                Compression::Auto => Encoding::Gzip,
                Compression::None => Encoding::None,
            };
            assert_eq!(l1.compression, want, "{c:?}");
            if want == Encoding::None {
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

    fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
        // xorshift64*: incompressible enough for deflate, and repeatable.
        let mut x = seed | 1;
        (0..n)
            .map(|_| {
                x ^= x >> 12;
                x ^= x << 25;
                x ^= x >> 27;
                (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
            })
            .collect()
    }

    #[test]
    fn auto_leaves_incompressible_weights_uncompressed_and_compresses_the_rest() {
        let d = tempfile::tempdir().unwrap();
        let cache = Cache {
            root: d.path().join("cache"),
        };
        // Weights-like: 20 MiB of noise behind a little text, sampled in slices across files.
        let w = d.path().join("weights");
        std::fs::create_dir_all(w.join("1")).unwrap();
        std::fs::write(w.join("config.pbtxt"), "backend: \"python\"\n").unwrap();
        std::fs::write(w.join("1/a.bin"), random_bytes(12 << 20, 1)).unwrap();
        std::fs::write(w.join("1/b.bin"), random_bytes(8 << 20, 2)).unwrap();
        let entries = walk(&w).unwrap();
        let gain = sample_gain(&entries);
        assert!(gain < 1.0, "noise gains nothing: {gain}");
        let l = build_layer(&cache, "weights", &w, Compression::Auto).unwrap();
        assert_eq!(l.compression, Encoding::None);
        assert_eq!(l.digest, l.diff_id);
        assert_eq!(tar_listing(&l).len(), 6);
        // Text: compressed, at level 6 (small).
        let t = d.path().join("text");
        std::fs::create_dir_all(t.join("1")).unwrap();
        let text = "def execute(self, requests):\n    return []\n".repeat(4000);
        std::fs::write(t.join("1/model.py"), &text).unwrap();
        let entries = walk(&t).unwrap();
        assert!(sample_gain(&entries) > 90.0);
        assert_eq!(plan(Compression::Auto, &entries).unwrap(), Plan::Gzip(6));
        let l = build_layer(&cache, "text", &t, Compression::Auto).unwrap();
        assert_eq!(l.compression, Encoding::Gzip);
        assert!(l.size < text.len() as u64 / 10);
        // Half noise, half zeros: a 50% gain is found by the evenly spread slices.
        let h = d.path().join("half");
        std::fs::create_dir_all(&h).unwrap();
        std::fs::write(h.join("noise.bin"), random_bytes(40 << 20, 3)).unwrap();
        std::fs::write(h.join("zeros.bin"), vec![0u8; 40 << 20]).unwrap();
        let entries = walk(&h).unwrap();
        let gain = sample_gain(&entries);
        assert!((40.0..60.0).contains(&gain), "{gain}");
        // Over 64 MiB: the faster level.
        assert_eq!(plan(Compression::Auto, &entries).unwrap(), Plan::Gzip(2));
        // No file bytes at all: compressed (only tar headers are left).
        let e = d.path().join("empty");
        std::fs::create_dir_all(e.join("1")).unwrap();
        assert_eq!(
            plan(Compression::Auto, &walk(&e).unwrap()).unwrap(),
            Plan::Gzip(6)
        );
    }

    #[test]
    fn samples_read_across_file_boundaries() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("a"), b"0123").unwrap();
        std::fs::write(d.path().join("b"), b"").unwrap();
        std::fs::write(d.path().join("c"), b"456789").unwrap();
        let entries = walk(d.path()).unwrap();
        let files: Vec<&Entry> = files_of(&entries).collect();
        let mut out = Vec::new();
        read_at(&files, 2, 5, &mut out).unwrap();
        assert_eq!(out, b"23456");
        out.clear();
        read_at(&files, 8, 100, &mut out).unwrap();
        assert_eq!(out, b"89");
        out.clear();
        read_at(&files, 10, 3, &mut out).unwrap();
        assert!(out.is_empty());
    }

    fn sample_gain(entries: &[Entry]) -> f64 {
        let files: Vec<&Entry> = files_of(entries).collect();
        let total = files.iter().map(|e| e.meta.len()).sum();
        sample_gain_percent(&files, total).unwrap()
    }

    /// Trained-weights-like bytes: normally distributed values (std 0.02, as trained layers have)
    /// as IEEE half floats, or as bfloat16 (the top half of the float32).
    fn weights(n: usize, bf16: bool) -> Vec<u8> {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut uniform = move || {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            ((x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        };
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let (u, v) = (uniform(), uniform());
            let z = (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos() * 0.02;
            let f = z as f32;
            let half = if bf16 {
                (f.to_bits() >> 16) as u16
            } else {
                f16_bits(f)
            };
            out.extend_from_slice(&half.to_le_bytes());
        }
        out.truncate(n);
        out
    }

    /// IEEE 754 binary16 of a small float32 (normal range and subnormals, truncated).
    fn f16_bits(f: f32) -> u16 {
        let b = f.to_bits();
        let sign = ((b >> 16) & 0x8000) as u16;
        let exp = ((b >> 23) & 0xff) as i32 - 127 + 15;
        let mant = b & 0x7f_ffff;
        if exp <= 0 {
            if exp < -10 {
                return sign;
            }
            let m = (mant | 0x80_0000) >> (14 - exp);
            return sign | m as u16;
        }
        sign | ((exp as u16) << 10) | (mant >> 13) as u16
    }

    #[test]
    fn the_sample_sees_what_gzip_gains_on_weights_fp16_stays_uncompressed_and_bf16_is_gzipped() {
        let d = tempfile::tempdir().unwrap();
        let mut gains = Vec::new();
        for (name, bf16) in [("fp16", false), ("bf16", true)] {
            let m = d.path().join(name);
            std::fs::create_dir_all(m.join("1")).unwrap();
            std::fs::write(m.join("1/model.bin"), weights(12 << 20, bf16)).unwrap();
            let entries = walk(&m).unwrap();
            gains.push(sample_gain(&entries));
        }
        let (fp16, bf16) = (gains[0], gains[1]);
        // (A fixed-Huffman level 1 would see a loss on both.)
        assert!((3.0..AUTO_MIN_GAIN_PERCENT).contains(&fp16), "fp16: {fp16}");
        assert!(bf16 >= 15.0, "bf16: {bf16}");
        let entries = walk(&d.path().join("bf16")).unwrap();
        assert_eq!(plan(Compression::Auto, &entries).unwrap(), Plan::Gzip(6));
        let entries = walk(&d.path().join("fp16")).unwrap();
        assert_eq!(plan(Compression::Auto, &entries).unwrap(), Plan::None);
    }
}
