//! Model repository → image layers: one content-addressed layer per model, holding exactly the files
//! of `<repo>/<model>/` under `/models/<model>/`. Layers are deterministic tars (sorted entries, fixed
//! mtime and owner, normalized modes, no host metadata) compressed in one streaming pass that computes
//! both the diffID (of the tar) and the digest (of the blob). Layers are remembered in a local cache
//! keyed by the files' (path, size, mtime, inode), so an unchanged model is neither re-tarred nor
//! re-compressed. A compressed blob is kept in the cache; an uncompressed one is not: its tar is
//! generated again from the model's files whenever its bytes are needed (no second copy of the
//! weights on disk, and its upload can start before its digest is known).

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::Stream;
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

/// Where a layer's blob comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A compressed blob, kept in the cache at this path.
    Blob(PathBuf),
    /// An uncompressed layer: the tar of this model directory, generated again when needed.
    Files(PathBuf),
}

impl Default for Source {
    fn default() -> Self {
        Source::Blob(PathBuf::new())
    }
}

/// One built layer: its blob's digest, size and where its bytes come from.
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
    pub source: Source,
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

/// Writes the deterministic tar of `model`'s entries to `w`; returns the number of files. Without
/// `data`, regular files are written as empty entries (what [`tar_size`] measures the rest with).
fn write_tar<W: Write>(w: W, model: &str, entries: &[Entry], data: bool) -> io::Result<(W, u64)> {
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
            let mode = normalized_mode(&e.meta);
            if data {
                let f = File::open(&e.path)?;
                let size = f.metadata()?.len();
                let mut h = header(tar::EntryType::Regular, mode, size);
                // Read exactly `size` bytes: a file that grows while we read must not corrupt
                // the tar.
                b.append_data(&mut h, &name, io::Read::take(f, size))?;
            } else {
                let mut h = header(tar::EntryType::Regular, mode, 0);
                b.append_data(&mut h, &name, io::empty())?;
            }
            files += 1;
        }
        // Sockets, FIFOs and devices are not model files: skipped.
    }
    Ok((b.into_inner()?, files))
}

/// The size of the tar [`write_tar`] writes of `entries` as they were listed, without reading
/// them: the headers (and long-name entries) as written, plus each file's bytes padded to a block.
fn tar_size(model: &str, entries: &[Entry]) -> io::Result<u64> {
    let (headers, _) = write_tar(Counter(0), model, entries, false)?;
    Ok(headers.0
        + files_of(entries)
            .map(|e| e.meta.len().div_ceil(512) * 512)
            .sum::<u64>())
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
#[cfg(test)]
pub fn build_layer(
    cache: &Cache,
    model: &str,
    dir: &Path,
    compression: Compression,
) -> io::Result<Layer> {
    prepare(cache, model, dir, compression)?.build(cache)
}

/// A model's layer before it is built: listed, looked up in the cache and, when it is not there,
/// planned. [`build_layer`] in two steps, so that an uncompressed layer, whose size is known
/// from the listing, can be streamed while [`Prepared::build`] hashes it.
pub struct Prepared {
    model: String,
    dir: PathBuf,
    entries: Vec<Entry>,
    key: String,
    found: Found,
}

/// What [`prepare`] found: the layer in the cache, or how to build it.
enum Found {
    Cached(Layer),
    Planned(Plan),
}

/// Lists `dir`, looks its layer up in the cache and, when it is not there, plans its encoding
/// (for `auto`: gzips a sample).
pub fn prepare(
    cache: &Cache,
    model: &str,
    dir: &Path,
    compression: Compression,
) -> io::Result<Prepared> {
    let entries = walk(dir)?;
    let key = cache_key(model, compression, &entries)?;
    let cached = std::fs::read_to_string(cache.entry_path(&key))
        .ok()
        .and_then(|text| serde_json::from_str::<Layer>(&text).ok())
        .and_then(|mut layer| {
            layer.source = match layer.compression {
                Encoding::None => Source::Files(dir.to_path_buf()),
                _ => {
                    let path = cache.blob_path(&layer.digest);
                    // A compressed blob must still be in the cache, whole.
                    if !std::fs::metadata(&path).is_ok_and(|m| m.len() == layer.size) {
                        return None;
                    }
                    Source::Blob(path)
                }
            };
            layer.cached = true;
            Some(layer)
        });
    let found = match cached {
        Some(layer) => Found::Cached(layer),
        None => Found::Planned(plan(compression, &entries)?),
    };
    Ok(Prepared {
        model: model.to_string(),
        dir: dir.to_path_buf(),
        entries,
        key,
        found,
    })
}

impl Prepared {
    /// The blob's size before it is built: known for an uncompressed layer (the tar's), `None`
    /// for a compressed or cached one.
    pub fn uncompressed_size(&self) -> io::Result<Option<u64>> {
        if !matches!(self.found, Found::Planned(Plan::None)) {
            return Ok(None);
        }
        tar_size(&self.model, &self.entries).map(Some)
    }

    /// The bytes of the uncompressed tar this layer will have (see [`tar_stream`]).
    pub fn tar_stream(&self, size: u64) -> impl Stream<Item = io::Result<Bytes>> + Send + use<> {
        tar_stream(&self.model, &self.dir, size)
    }

    /// Builds the layer (tars, compresses and hashes it; the cached one as it is) and records it
    /// in the cache.
    pub fn build(self, cache: &Cache) -> io::Result<Layer> {
        let Prepared {
            model,
            dir,
            entries,
            key,
            found,
        } = self;
        let plan = match found {
            Found::Cached(layer) => return Ok(layer),
            Found::Planned(plan) => plan,
        };
        let model = model.as_str();
        std::fs::create_dir_all(cache.root.join("layers"))?;
        let blob_state = Arc::new(Mutex::new((Sha256::new(), 0u64)));
        let tar_state = Arc::new(Mutex::new((Sha256::new(), 0u64)));
        let (encoding, files, tmp) = match plan {
            Plan::None => {
                // The blob is the tar: one hash gives both the digest and the diffID, and
                // nothing is written (the tar is generated again from the files when needed).
                let blob = HashingWriter {
                    inner: io::sink(),
                    state: blob_state.clone(),
                };
                let (_, files) = write_tar(blob, model, entries.as_slice(), true)?;
                *tar_state.lock().expect("hash state") =
                    blob_state.lock().expect("hash state").clone();
                (Encoding::None, files, None)
            }
            Plan::Gzip(level) => {
                use gzp::ZWriter;
                std::fs::create_dir_all(cache.root.join("blobs/sha256"))?;
                let tmp = tempfile::NamedTempFile::new_in(cache.root.join("blobs"))?;
                let blob = HashingWriter {
                    inner: BufWriter::with_capacity(1 << 20, tmp.reopen()?),
                    state: blob_state.clone(),
                };
                let gz = gzp::par::compress::ParCompressBuilder::<gzp::deflate::Gzip>::new()
                    .num_threads(threads())
                    .map_err(io::Error::other)?
                    .compression_level(flate2::Compression::new(level))
                    .from_writer(blob);
                let tar = HashingWriter {
                    inner: gz,
                    state: tar_state.clone(),
                };
                let (mut w, files) = write_tar(tar, model, entries.as_slice(), true)?;
                let mut inner = w.inner.finish().map_err(io::Error::other)?;
                inner.flush()?;
                (Encoding::Gzip, files, Some(tmp))
            }
            Plan::Zstd => {
                std::fs::create_dir_all(cache.root.join("blobs/sha256"))?;
                let tmp = tempfile::NamedTempFile::new_in(cache.root.join("blobs"))?;
                let blob = HashingWriter {
                    inner: BufWriter::with_capacity(1 << 20, tmp.reopen()?),
                    state: blob_state.clone(),
                };
                let mut z = zstd::Encoder::new(blob, 3)?;
                // Output is identical for any worker count >= 1 (never 0, which is
                // single-threaded mode).
                z.multithread(threads() as u32)?;
                let tar = HashingWriter {
                    inner: z,
                    state: tar_state.clone(),
                };
                let (w, files) = write_tar(tar, model, entries.as_slice(), true)?;
                let mut inner = w.inner.finish()?;
                inner.flush()?;
                (Encoding::Zstd, files, Some(tmp))
            }
        };
        let (diff_id, _) = digest_of(&tar_state);
        let (digest, size) = digest_of(&blob_state);
        let source = match tmp {
            Some(tmp) => {
                let path = cache.blob_path(&digest);
                tmp.persist(&path).map_err(|e| e.error)?;
                Source::Blob(path)
            }
            None => Source::Files(dir),
        };
        let layer = Layer {
            model: model.to_string(),
            digest,
            diff_id,
            size,
            compression: encoding,
            files,
            source,
            cached: false,
        };
        let entry = tempfile::NamedTempFile::new_in(cache.root.join("layers"))?;
        serde_json::to_writer(&entry, &layer)?;
        entry.persist(cache.entry_path(&key)).map_err(|e| e.error)?;
        Ok(layer)
    }
}

impl Layer {
    /// The blob's bytes, `size` of them, as a stream of chunks: the cached file, or the tar
    /// generated again from the model's files. A tar that is not `size` bytes long (the files
    /// changed since the layer was built) ends the stream with an error.
    pub fn stream(&self) -> impl Stream<Item = io::Result<Bytes>> + Send + use<> {
        blob_stream(&self.model, self.source.clone(), self.size)
    }

    /// Writes the blob to `w`: the cached file, or the tar generated again from the model's
    /// files, checked against the digest (an error when the files changed since the layer was
    /// built).
    pub fn write_to(&self, w: &mut impl Write) -> io::Result<()> {
        match &self.source {
            Source::Blob(path) => {
                io::copy(&mut File::open(path)?, w)?;
            }
            Source::Files(dir) => {
                let state = Arc::new(Mutex::new((Sha256::new(), 0u64)));
                let hashing = HashingWriter {
                    inner: w,
                    state: state.clone(),
                };
                write_tar(hashing, &self.model, &walk(dir)?, true)?;
                let (digest, size) = digest_of(&state);
                if digest != self.digest || size != self.size {
                    return Err(changed(&self.model));
                }
            }
        }
        Ok(())
    }
}

/// Chunks a blob stream is cut into, and how many may wait unsent.
const STREAM_CHUNK: usize = 256 << 10;
const STREAM_CHUNKS: usize = 8;

fn changed(model: &str) -> io::Error {
    io::Error::other(format!(
        "the files of model '{model}' changed while it was being pushed; push again"
    ))
}

/// The uncompressed tar of the model in `dir` (as [`write_tar`] writes it), expected to be `size`
/// bytes long, as a stream of chunks generated on a blocking thread.
pub fn tar_stream(
    model: &str,
    dir: &Path,
    size: u64,
) -> impl Stream<Item = io::Result<Bytes>> + Send + use<> {
    blob_stream(model, Source::Files(dir.to_path_buf()), size)
}

/// `size` bytes of blob from `source` (model `model`'s), as chunks sent from a blocking thread;
/// a blob of another length ends the stream with an error.
fn blob_stream(
    model: &str,
    source: Source,
    size: u64,
) -> impl Stream<Item = io::Result<Bytes>> + Send + use<> {
    let model = model.to_string();
    let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(STREAM_CHUNKS);
    tokio::task::spawn_blocking(move || {
        let mut w = ChunkSender::new(tx.clone());
        let written = match &source {
            Source::Blob(path) => File::open(path)
                .and_then(|f| io::copy(&mut io::Read::take(f, size), &mut w))
                .map(|_| ()),
            Source::Files(dir) => {
                walk(dir).and_then(|entries| write_tar(&mut w, &model, &entries, true).map(|_| ()))
            }
        };
        finish_stream(&tx, w, written, size, &model);
    });
    let mut rx = rx;
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// Ends a blob stream: flushes the last chunk, or sends the error, or an error when the blob was
/// not `size` bytes long. Nothing is sent when the receiver has gone.
fn finish_stream(
    tx: &tokio::sync::mpsc::Sender<io::Result<Bytes>>,
    mut w: ChunkSender,
    written: io::Result<()>,
    size: u64,
    model: &str,
) {
    let result = written.and_then(|()| w.flush());
    let outcome = match result {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return,
        Err(e) => Err(e),
        Ok(()) if w.sent != size => Err(changed(model)),
        Ok(()) => return,
    };
    let _ = tx.blocking_send(outcome);
}

/// A writer that sends what it is given as [`STREAM_CHUNK`]-byte chunks down a channel (from a
/// blocking thread); a closed channel is a broken pipe.
struct ChunkSender {
    tx: tokio::sync::mpsc::Sender<io::Result<Bytes>>,
    buf: Vec<u8>,
    sent: u64,
}

impl ChunkSender {
    fn new(tx: tokio::sync::mpsc::Sender<io::Result<Bytes>>) -> Self {
        ChunkSender {
            tx,
            buf: Vec::with_capacity(STREAM_CHUNK),
            sent: 0,
        }
    }
}

impl Write for ChunkSender {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(STREAM_CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == STREAM_CHUNK {
            self.flush()?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(STREAM_CHUNK));
        self.sent += chunk.len() as u64;
        self.tx
            .blocking_send(Ok(Bytes::from(chunk)))
            .map_err(|_| io::Error::from(io::ErrorKind::BrokenPipe))
    }
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

    fn blob(layer: &Layer) -> Vec<u8> {
        let mut bytes = Vec::new();
        layer.write_to(&mut bytes).unwrap();
        bytes
    }

    fn tar_listing(layer: &Layer) -> Vec<(String, u32, u64, u64)> {
        let f = io::Cursor::new(blob(layer));
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
            // The blob's bytes hash to its digest; only compressed blobs are kept in the cache.
            let bytes = blob(&l1);
            assert_eq!(bytes.len() as u64, l1.size);
            match &l1.source {
                Source::Blob(p) => assert_eq!(std::fs::read(p).unwrap(), bytes),
                Source::Files(dir) => {
                    assert_eq!(dir, &a.path().join("m"));
                    assert!(!c1.blob_path(&l1.digest).exists(), "{c:?}");
                }
            }
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

    /// A model with what the tar format makes awkward: names over 100 bytes (GNU long-name
    /// entries), a long symlink target, empty files, sizes on and off the 512-byte blocks.
    fn awkward_model(dir: &Path) {
        let deep = dir.join("1").join("d".repeat(60)).join("e".repeat(60));
        std::fs::create_dir_all(&deep).unwrap();
        std::fs::write(
            deep.join(format!("{}.bin", "w".repeat(90))),
            random_bytes(5000, 9),
        )
        .unwrap();
        std::fs::write(dir.join("config.pbtxt"), "backend: \"python\"\n").unwrap();
        std::fs::write(dir.join("1/empty"), b"").unwrap();
        std::fs::write(dir.join("1/block.bin"), vec![1u8; 1024]).unwrap();
        std::os::unix::fs::symlink(
            format!("{}/{}", "t".repeat(80), "u".repeat(40)),
            dir.join("1/link"),
        )
        .unwrap();
    }

    #[test]
    fn the_tar_size_known_before_building_is_the_built_tars() {
        let d = tempfile::tempdir().unwrap();
        let m = d.path().join("m");
        awkward_model(&m);
        let cache = Cache {
            root: d.path().join("cache"),
        };
        let p = prepare(&cache, "m", &m, Compression::None).unwrap();
        let size = p.uncompressed_size().unwrap().expect("uncompressed: known");
        let layer = p.build(&cache).unwrap();
        assert_eq!(layer.size, size);
        assert_eq!(blob(&layer).len() as u64, size);
        assert_eq!(layer.source, Source::Files(m.clone()));
        assert!(
            tar_listing(&layer)
                .iter()
                .any(|e| e.0.ends_with(&format!("{}.bin", "w".repeat(90)))),
            "the long name survives"
        );
        // Compressed and cached layers: no size before building.
        let p = prepare(&cache, "m", &m, Compression::Gzip).unwrap();
        assert_eq!(p.uncompressed_size().unwrap(), None);
        let p = prepare(&cache, "m", &m, Compression::None).unwrap();
        assert_eq!(p.uncompressed_size().unwrap(), None, "cached");
    }

    async fn collect(s: impl Stream<Item = io::Result<Bytes>>) -> io::Result<Vec<u8>> {
        use futures_util::StreamExt;
        let mut out = Vec::new();
        let mut s = std::pin::pin!(s);
        while let Some(chunk) = s.next().await {
            out.extend_from_slice(&chunk?);
        }
        Ok(out)
    }

    #[tokio::test]
    async fn streams_give_the_blob_and_files_changed_since_are_an_error() {
        let d = tempfile::tempdir().unwrap();
        let m = d.path().join("m");
        awkward_model(&m);
        std::fs::write(m.join("1/big.bin"), random_bytes(700_000, 4)).unwrap();
        let cache = Cache {
            root: d.path().join("cache"),
        };
        for c in [Compression::None, Compression::Gzip] {
            let layer = build_layer(&cache, "m", &m, c).unwrap();
            let bytes = collect(layer.stream()).await.unwrap();
            assert_eq!(bytes, blob(&layer), "{c:?}");
            assert_eq!(
                format!("sha256:{}", hex::encode(Sha256::digest(&bytes))),
                layer.digest
            );
        }
        let p = prepare(&cache, "m", &m, Compression::None).unwrap();
        let layer = p.build(&cache).unwrap();
        // The same bytes come from the stream made before the layer was built.
        let cold = tempfile::tempdir().unwrap();
        let fresh = Cache {
            root: cold.path().to_path_buf(),
        };
        let p = prepare(&fresh, "m", &m, Compression::None).unwrap();
        let size = p.uncompressed_size().unwrap().unwrap();
        let early = collect(p.tar_stream(size)).await.unwrap();
        assert_eq!(early, blob(&layer));
        // A file that grows afterwards: the stream and the writer both refuse (the stream by its
        // length; the registry checks the digest).
        std::fs::write(m.join("1/big.bin"), random_bytes(710_000, 4)).unwrap();
        let e = match collect(layer.stream()).await {
            Ok(bytes) => panic!("{} bytes streamed", bytes.len()),
            Err(e) => e,
        };
        assert!(e.to_string().contains("model 'm' changed"), "{e}");
        let mut sink = Vec::new();
        let e = layer.write_to(&mut sink).unwrap_err();
        assert!(e.to_string().contains("model 'm' changed"), "{e}");
        // Same size, other bytes: only the digest tells, and the writer checks it.
        std::fs::write(m.join("1/big.bin"), random_bytes(700_000, 8)).unwrap();
        let e = layer.write_to(&mut Vec::new()).unwrap_err();
        assert!(e.to_string().contains("changed"), "{e}");
    }
}
