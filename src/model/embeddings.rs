//! Sentence embeddings kept between runs. [`CachedEncoder`] answers a text from the cache when any earlier
//! run embedded the same text with the same model (a rerun with another threshold, another shard's task,
//! another dataset or evaluation set holding that text), and embeds the rest.
//!
//! The cache is content-addressed: `<forge cache>/embeddings/<model key>/`, the key a hash of the model's
//! files (weights, config, tokenizer, `sentence_bert_config.json`) and of [`VERSION`], so a changed model
//! starts a directory of its own; a text's key is the xxh3-128 of its bytes. New vectors are written as
//! segment files of at most [`SEGMENT`] vectors, each written whole under a temporary name and then
//! renamed, so a killed run leaves only whole segments (and the vectors of the segments it finished), and
//! processes running side by side never write the same file. Segment layout, little-endian: `FORGEEMB`,
//! u32 [`VERSION`], u32 dimension, u64 count, the texts' keys (u128 each), then their vectors (f32 each).
//! Opening reads the keys only (16 bytes a text); a vector is read when asked for. Delete the directory to
//! clear the cache.

use std::collections::HashMap;
use std::io::Write as _;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use xxhash_rust::xxh3::{Xxh3, xxh3_128};

use super::encoder::SentenceEncoder;
use crate::error::{Error, Location, Result};

/// The segment format and the encoder's arithmetic: bump it when either changes.
const VERSION: u32 = 1;
const MAGIC: &[u8; 8] = b"FORGEEMB";
const HEADER: u64 = 24;
/// Vectors per segment file.
const SEGMENT: usize = 16_384;

/// A sentence encoder with the embeddings cache (or without, when there is no cache directory).
pub struct CachedEncoder {
    encoder: SentenceEncoder,
    store: Option<Mutex<Store>>,
    cached: AtomicU64,
    computed: AtomicU64,
}

/// The cache's segments for one model, and the vectors embedded but not yet written.
struct Store {
    dir: PathBuf,
    dim: usize,
    /// Each segment's file and count of vectors.
    segments: Vec<(fs_err::File, u64)>,
    /// Where each cached text's vector is: (segment, row).
    index: HashMap<u128, (u32, u64)>,
    pending: Vec<(u128, Vec<f32>)>,
    pending_index: HashMap<u128, usize>,
}

impl CachedEncoder {
    /// Load the encoder at `model`, with the cache under `cache` (`None`: no cache).
    pub fn load(model: &Path, cache: Option<&Path>) -> Result<CachedEncoder> {
        let encoder = SentenceEncoder::load(model)?;
        let store = match cache {
            Some(root) => Some(Mutex::new(Store::open(&root.join("embeddings").join(model_key(model)?), encoder.dim)?)),
            None => None,
        };
        Ok(CachedEncoder { encoder, store, cached: AtomicU64::new(0), computed: AtomicU64::new(0) })
    }

    /// Width of the embeddings.
    pub fn dim(&self) -> usize {
        self.encoder.dim
    }

    /// Texts answered from the cache and texts embedded so far.
    pub fn counts(&self) -> (u64, u64) {
        (self.cached.load(Ordering::Relaxed), self.computed.load(Ordering::Relaxed))
    }

    /// The embeddings of `texts`, in order, as [`SentenceEncoder::embed`] gives them.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let Some(store) = &self.store else {
            self.computed.fetch_add(texts.len() as u64, Ordering::Relaxed);
            return self.encoder.embed(texts);
        };
        let mut store = store.lock().expect("not poisoned");
        let keys: Vec<u128> = texts.iter().map(|t| xxh3_128(t.as_bytes())).collect();
        let mut out: Vec<Option<Vec<f32>>> = keys.iter().map(|&k| store.get(k)).collect::<Result<_>>()?;
        // the missing texts, each distinct one once
        let mut missing: Vec<usize> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (i, v) in out.iter().enumerate() {
            if v.is_none() && seen.insert(keys[i]) {
                missing.push(i);
            }
        }
        self.cached.fetch_add((texts.len() - missing.len()) as u64, Ordering::Relaxed);
        self.computed.fetch_add(missing.len() as u64, Ordering::Relaxed);
        let fresh = self.encoder.embed(&missing.iter().map(|&i| texts[i]).collect::<Vec<_>>())?;
        for (&i, v) in missing.iter().zip(fresh) {
            store.put(keys[i], v)?;
        }
        for (i, v) in out.iter_mut().enumerate() {
            if v.is_none() {
                *v = store.get(keys[i])?;
            }
        }
        Ok(out.into_iter().map(|v| v.expect("embedded above")).collect())
    }

    /// Write the vectors embedded since the last segment (also done when dropped).
    pub fn flush(&self) -> Result<()> {
        match &self.store {
            Some(store) => store.lock().expect("not poisoned").flush(),
            None => Ok(()),
        }
    }
}

impl Drop for CachedEncoder {
    fn drop(&mut self) {
        if let Err(e) = self.flush() {
            eprintln!("warning: the embeddings cache was not updated: {e}");
        }
    }
}

/// The cache key of a model directory: its files' bytes and [`VERSION`].
fn model_key(model: &Path) -> Result<String> {
    let mut h = Xxh3::new();
    h.update(&VERSION.to_le_bytes());
    for name in ["config.json", "model.safetensors", "tokenizer.json", "sentence_bert_config.json"] {
        match fs_err::read(model.join(name)) {
            Ok(bytes) => {
                h.update(name.as_bytes());
                h.update(&(bytes.len() as u64).to_le_bytes());
                h.update(&bytes);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => h.update(b"-"),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(format!("{:032x}", h.digest128()))
}

impl Store {
    fn open(dir: &Path, dim: usize) -> Result<Store> {
        let names = crate::cache::files(dir, "seg")?;
        let mut store = Store {
            dir: dir.to_path_buf(),
            dim,
            segments: Vec::new(),
            index: HashMap::new(),
            pending: Vec::new(),
            pending_index: HashMap::new(),
        };
        for path in names {
            match store.add_segment(&path) {
                Ok(()) => {}
                // a cache that cannot be read costs time, not correctness: skip the file, say so
                Err(e) => eprintln!("warning: skipping embeddings cache file: {e}"),
            }
        }
        Ok(store)
    }

    fn add_segment(&mut self, path: &Path) -> Result<()> {
        let file = fs_err::File::open(path)?;
        let mut header = [0u8; HEADER as usize];
        file.file().read_exact_at(&mut header, 0)?;
        let word = |at: usize| u32::from_le_bytes(header[at..at + 4].try_into().expect("4 bytes"));
        let count = u64::from_le_bytes(header[16..24].try_into().expect("8 bytes"));
        let size = file.metadata()?.len();
        if &header[..8] != MAGIC
            || word(8) != VERSION
            || word(12) as usize != self.dim
            || size != HEADER + count * (16 + 4 * self.dim as u64)
        {
            return Err(Error::data(Location::file(path), "not an embeddings segment of this model and version"));
        }
        let mut keys = vec![0u8; count as usize * 16];
        file.file().read_exact_at(&mut keys, HEADER)?;
        let segment = self.segments.len() as u32;
        for (row, key) in keys.chunks_exact(16).enumerate() {
            let key = u128::from_le_bytes(key.try_into().expect("16 bytes"));
            self.index.entry(key).or_insert((segment, row as u64));
        }
        self.segments.push((file, count));
        Ok(())
    }

    fn get(&self, key: u128) -> Result<Option<Vec<f32>>> {
        if let Some(&i) = self.pending_index.get(&key) {
            return Ok(Some(self.pending[i].1.clone()));
        }
        let Some(&(segment, row)) = self.index.get(&key) else { return Ok(None) };
        let (file, count) = &self.segments[segment as usize];
        let bytes = 4 * self.dim as u64;
        let mut buf = vec![0u8; bytes as usize];
        file.file()
            .read_exact_at(&mut buf, HEADER + count * 16 + row * bytes)
            .map_err(|e| Error::data(Location::file(file.path()), format!("reading a cached embedding: {e}")))?;
        Ok(Some(buf.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes"))).collect()))
    }

    fn put(&mut self, key: u128, vector: Vec<f32>) -> Result<()> {
        if self.index.contains_key(&key) || self.pending_index.contains_key(&key) {
            return Ok(());
        }
        self.pending_index.insert(key, self.pending.len());
        self.pending.push((key, vector));
        if self.pending.len() >= SEGMENT { self.flush() } else { Ok(()) }
    }

    /// Write the pending vectors as a new segment.
    fn flush(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let mut bytes = Vec::with_capacity(HEADER as usize + self.pending.len() * (16 + 4 * self.dim));
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&VERSION.to_le_bytes());
        bytes.extend_from_slice(&(self.dim as u32).to_le_bytes());
        bytes.extend_from_slice(&(self.pending.len() as u64).to_le_bytes());
        for (key, _) in &self.pending {
            bytes.extend_from_slice(&key.to_le_bytes());
        }
        for (_, v) in &self.pending {
            bytes.extend(v.iter().flat_map(|x| x.to_le_bytes()));
        }
        let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let name = format!("{:020}-{}-{}.seg", stamp.as_nanos(), std::process::id(), self.segments.len());
        let path = self.dir.join(&name);
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let mut file = fs_err::File::create(&tmp)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        fs_err::rename(&tmp, &path)?;
        self.pending.clear();
        self.pending_index.clear();
        self.add_segment(&path)
    }
}
