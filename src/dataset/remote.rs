//! Datasets on object storage: any dataset path may be `s3://bucket/prefix` (or `gs://`, `az://`), read
//! and written through `object_store`. A remote directory has a local mirror under the cache
//! (`$FORGE_CACHE`, else `~/.cache/forge`: `remote/s3/bucket/prefix`), where stages read and write as on
//! any disk, with every local guarantee (atomic shards, resume, one writer per shard-run); the mirror and
//! the bucket are brought level before and after:
//!
//! - an input is fetched: the mirror becomes what the bucket holds;
//! - an output is pulled before the stage (what the bucket has and the mirror lacks: a run that
//!   another machine started resumes here) and pushed after it: every new or changed file uploaded
//!   whole (one PUT, or a multipart upload for big files, which S3 makes visible only when complete),
//!   the manifests last, so a shard counts only once every file it lists is there; files the stage
//!   removed are deleted from the bucket.
//!
//! What was transferred is recorded per remote directory (`remote/.sync/<hash>.json`: each file's size and
//! mtime here and its size and ETag there), so an unchanged file is never sent twice. Credentials come
//! from the standard variables (`AWS_ACCESS_KEY_ID`, `AWS_ENDPOINT_URL`, `GOOGLE_APPLICATION_CREDENTIALS`,
//! `AZURE_STORAGE_ACCOUNT_NAME`, ...) and, for S3, from `~/.aws/credentials` and `~/.aws/config`
//! (`AWS_PROFILE`, else `default`).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures_util::StreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, PutPayload, WriteMultipart};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The URL schemes taken as object storage.
const SCHEMES: &[&str] = &["s3", "gs", "az", "abfs"];

/// Files at or above this size go up as multipart uploads, in parts of this size.
const PART: usize = 16 << 20;

/// Does `path` name a directory on object storage (`s3://…`)?
pub fn is_remote(path: &str) -> bool {
    path.split_once("://").is_some_and(|(scheme, rest)| SCHEMES.contains(&scheme) && !rest.is_empty())
}

/// A directory on object storage and its mirror here.
pub struct Remote {
    url: String,
    store: Arc<dyn ObjectStore>,
    prefix: ObjectPath,
    /// The mirror: where stages read and write.
    pub local: PathBuf,
    record: PathBuf,
}

/// What is known of one file on both sides since it was last transferred.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
struct Stamp {
    size: u64,
    mtime_ns: i128,
    remote_size: u64,
    e_tag: Option<String>,
}

/// The files of a remote directory seen by a pull: what the stage may have removed since.
pub struct Pulled(BTreeSet<String>);

impl Remote {
    /// The remote directory `url` (`s3://bucket/prefix`).
    pub fn open(url: &str) -> Result<Remote> {
        let url = url.trim_end_matches('/').to_string();
        let parsed = url::Url::parse(&url).map_err(|e| Error::usage(format!("`{url}` is not a URL: {e}")))?;
        let store: Arc<dyn ObjectStore> = match parsed.scheme() {
            "s3" => Arc::new(s3(&url)?.build().map_err(|e| storage_error(&url, &e))?),
            "gs" => Arc::new(
                object_store::gcp::GoogleCloudStorageBuilder::from_env()
                    .with_url(&url)
                    .build()
                    .map_err(|e| storage_error(&url, &e))?,
            ),
            _ => Arc::new(
                object_store::azure::MicrosoftAzureBuilder::from_env()
                    .with_url(&url)
                    .build()
                    .map_err(|e| storage_error(&url, &e))?,
            ),
        };
        let prefix = ObjectPath::from_url_path(parsed.path()).map_err(|e| storage_error(&url, &e))?;
        let root = cache_root()?.join("remote");
        let host = parsed.host_str().unwrap_or_default();
        let local = root.join(parsed.scheme()).join(host).join(prefix.as_ref());
        let hash = xxhash_rust::xxh3::xxh3_64(url.as_bytes());
        Ok(Remote { record: root.join(".sync").join(format!("{hash:016x}.json")), url, store, prefix, local })
    }

    /// The directory's URL, as given.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Make the mirror what the bucket holds (an input): download what changed, remove what is gone.
    /// An error if nothing is there.
    pub fn fetch(&self) -> Result<PathBuf> {
        let rt = runtime()?;
        if let Ok(meta) = rt.block_on(self.store.head(&self.prefix)) {
            // one object (`s3://bucket/data/train.jsonl`): a file, downloaded each time
            if self.local.is_dir() {
                fs_err::remove_dir_all(&self.local)?;
            }
            rt.block_on(self.download(&meta.location, &self.local))?;
            return Ok(self.local.clone());
        }
        let pulled = self.level(true)?;
        if pulled.0.is_empty() {
            return Err(Error::usage(format!("`{}` holds nothing", self.url))
                .with_hint("check the bucket and prefix: a dataset there has a manifest and Parquet shards"));
        }
        for (rel, path) in local_files(&self.local)? {
            if !pulled.0.contains(&rel) {
                fs_err::remove_file(&path)?;
            }
        }
        Ok(self.local.clone())
    }

    /// Download what the bucket has and the mirror lacks or holds an older copy of; a file changed here
    /// since it was last transferred (a shard a stage here wrote, not pushed yet) is kept.
    pub fn pull(&self) -> Result<Pulled> {
        self.level(false)
    }

    /// Bring the mirror level with the bucket: download each object the mirror lacks, or whose copy
    /// here is older (the bucket's changed since the last transfer); with `exact`, also each whose copy
    /// here changed since (an input: the mirror must be what the bucket holds).
    fn level(&self, exact: bool) -> Result<Pulled> {
        let rt = runtime()?;
        let objects = rt.block_on(self.list())?;
        fs_err::create_dir_all(&self.local)?;
        let mut seen = BTreeSet::new();
        let stamps = self.stamps()?;
        for meta in objects {
            let Some(rel) = self.relative(&meta.location) else { continue };
            if skipped(&rel) {
                continue;
            }
            seen.insert(rel.clone());
            let path = self.local.join(&rel);
            let download = match (stamp_of(&path), stamps.get(&rel)) {
                (None, _) => true,
                (Some(_), None) => exact,
                (Some((size, mtime_ns)), Some(s)) => {
                    let changed_here = size != s.size || mtime_ns != s.mtime_ns;
                    let changed_there = meta.size != s.remote_size || meta.e_tag != s.e_tag;
                    if changed_here { exact } else { changed_there }
                }
            };
            if !download {
                continue;
            }
            rt.block_on(self.download(&meta.location, &path))?;
            let (size, mtime_ns) = stamp_of(&path).unwrap_or_default();
            self.note(&rel, Some(Stamp { size, mtime_ns, remote_size: meta.size, e_tag: meta.e_tag.clone() }))?;
        }
        Ok(Pulled(seen))
    }

    /// Upload what the mirror holds new or changed, manifests last; delete from the bucket what the
    /// stage removed since `pulled`.
    pub fn push(&self, pulled: &Pulled, quiet: bool) -> Result<()> {
        let files = local_files(&self.local)?;
        let stamps = self.stamps()?;
        let changed: Vec<&(String, PathBuf)> = files
            .iter()
            .filter(|(rel, path)| {
                let known = stamps.get(rel);
                !known.is_some_and(|s| stamp_of(path).is_some_and(|(n, t)| n == s.size && t == s.mtime_ns))
            })
            .collect();
        let (manifests, rest): (Vec<_>, Vec<_>) = changed.into_iter().partition(|(rel, _)| is_manifest(rel));
        let rt = runtime()?;
        let mut bytes = 0u64;
        for (rel, path) in rest.into_iter().chain(manifests) {
            let (size, mtime_ns) = stamp_of(path).unwrap_or_default();
            let e_tag = rt.block_on(self.upload(path, &self.object(rel)))?;
            bytes += size;
            self.note(rel, Some(Stamp { size, mtime_ns, remote_size: size, e_tag }))?;
        }
        let here: BTreeSet<&String> = files.iter().map(|(rel, _)| rel).collect();
        // what a stage here removed (not what another task here is about to write again)
        for rel in pulled.0.iter().filter(|rel| !here.contains(rel) && !self.local.join(rel).exists()) {
            rt.block_on(self.store.delete(&self.object(rel))).map_err(|e| storage_error(&self.url, &e))?;
            self.note(rel, None)?;
        }
        if !quiet && bytes > 0 {
            eprintln!("uploaded {:.1} MB to `{}`", bytes as f64 / 1e6, self.url);
        }
        Ok(())
    }

    fn object(&self, rel: &str) -> ObjectPath {
        rel.split('/').fold(self.prefix.clone(), |p, part| p.child(part))
    }

    fn relative(&self, location: &ObjectPath) -> Option<String> {
        let parts: Vec<String> = location.prefix_match(&self.prefix)?.map(|p| p.as_ref().to_string()).collect();
        (!parts.is_empty()).then(|| parts.join("/"))
    }

    async fn list(&self) -> Result<Vec<object_store::ObjectMeta>> {
        let mut out = Vec::new();
        let mut stream = self.store.list(Some(&self.prefix));
        while let Some(meta) = stream.next().await {
            out.push(meta.map_err(|e| storage_error(&self.url, &e))?);
        }
        Ok(out)
    }

    /// Download `location` to `path` under a temporary name, renamed when whole.
    async fn download(&self, location: &ObjectPath, path: &Path) -> Result<()> {
        let bad = |e: object_store::Error| storage_error(&self.url, &e);
        if let Some(dir) = path.parent() {
            fs_err::create_dir_all(dir)?;
        }
        let temp = path.with_file_name(format!(".{}.download", path.file_name().unwrap_or_default().to_string_lossy()));
        let mut file = fs_err::File::create(&temp)?;
        let mut stream = self.store.get(location).await.map_err(bad)?.into_stream();
        while let Some(chunk) = stream.next().await {
            file.write_all(&chunk.map_err(bad)?)?;
        }
        file.sync_all()?;
        fs_err::rename(&temp, path)?;
        Ok(())
    }

    /// Upload `path` whole to `location`: one PUT, or a multipart upload completed only at the end.
    async fn upload(&self, path: &Path, location: &ObjectPath) -> Result<Option<String>> {
        let bad = |e: object_store::Error| storage_error(&self.url, &e);
        let mut file = fs_err::File::open(path)?;
        let size = file.metadata()?.len();
        if size < PART as u64 {
            let mut bytes = Vec::with_capacity(size as usize);
            file.read_to_end(&mut bytes)?;
            return Ok(self.store.put(location, PutPayload::from(bytes)).await.map_err(bad)?.e_tag);
        }
        let upload = self.store.put_multipart(location).await.map_err(bad)?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART);
        let mut buf = vec![0u8; PART];
        let sent: Result<()> = async {
            loop {
                let n = file.read(&mut buf)?;
                if n == 0 {
                    return Ok(());
                }
                writer.wait_for_capacity(4).await.map_err(bad)?;
                writer.write(&buf[..n]);
            }
        }
        .await;
        if let Err(e) = sent {
            // an unfinished multipart upload is invisible but billed: abort it
            let _ = writer.abort().await;
            return Err(e);
        }
        Ok(writer.finish().await.map_err(bad)?.e_tag)
    }

    /// The transfer record, read under its lock.
    fn stamps(&self) -> Result<BTreeMap<String, Stamp>> {
        let (_lock, stamps) = self.locked()?;
        Ok(stamps)
    }

    /// Record `rel`'s stamp (`None`: forget it), read-modify-write under the record's lock (tasks on one
    /// machine share a mirror).
    fn note(&self, rel: &str, stamp: Option<Stamp>) -> Result<()> {
        let (_lock, mut stamps) = self.locked()?;
        match stamp {
            Some(s) => stamps.insert(rel.to_string(), s),
            None => stamps.remove(rel),
        };
        super::write_atomic(&self.record, &serde_json::to_vec(&stamps).expect("serialisable"))
    }

    fn locked(&self) -> Result<(fs_err::File, BTreeMap<String, Stamp>)> {
        let dir = self.record.parent().expect("the record is in a directory");
        fs_err::create_dir_all(dir)?;
        let lock = fs_err::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.record.with_extension("lock"))?;
        // SAFETY: `flock` on a descriptor this function owns; it touches no memory.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(Error::Io(std::io::Error::last_os_error()));
        }
        let stamps = match fs_err::read(&self.record) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_default(),
            Err(_) => BTreeMap::new(),
        };
        Ok((lock, stamps))
    }
}

/// Files in the mirror that are never transferred: locks, temporary and partial files.
fn skipped(rel: &str) -> bool {
    let name = rel.rsplit('/').next().unwrap_or(rel);
    name.starts_with(".forge-lock") || name.ends_with(".tmp") || name.ends_with(".download")
}

fn is_manifest(rel: &str) -> bool {
    let name = rel.rsplit('/').next().unwrap_or(rel);
    name.starts_with("manifest") && name.ends_with(".json")
}

/// Every file under `dir` but the skipped ones: (path relative to `dir` with `/`, path).
fn local_files(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = fs_err::read_dir(&d) else { continue };
        for entry in entries {
            let path = entry?.path();
            if path.is_dir() {
                todo.push(path);
                continue;
            }
            let rel: Vec<String> = path
                .strip_prefix(dir)
                .expect("under dir")
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            let rel = rel.join("/");
            if !skipped(&rel) {
                out.push((rel, path));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// A local file's size and modification time (ns), or `None` if it is not there.
fn stamp_of(path: &Path) -> Option<(u64, i128)> {
    use std::os::unix::fs::MetadataExt;
    let m = fs_err::metadata(path).ok()?;
    Some((m.len(), i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec())))
}

/// Where mirrors live: forge's cache directory.
fn cache_root() -> Result<PathBuf> {
    crate::cache::dir().ok_or_else(|| Error::usage("no cache directory for object storage: set FORGE_CACHE"))
}

/// The S3 client: the `AWS_*` variables, then what `~/.aws/credentials` and `~/.aws/config` say for
/// `AWS_PROFILE` (else `default`); a plain-HTTP endpoint (a local server) is allowed as given.
fn s3(url: &str) -> Result<object_store::aws::AmazonS3Builder> {
    use object_store::aws::AmazonS3ConfigKey as Key;
    let mut builder = object_store::aws::AmazonS3Builder::from_env().with_url(url);
    let profile = std::env::var("AWS_PROFILE").unwrap_or_else(|_| "default".into());
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default();
    let file =
        |var: &str, default: &str| std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| home.join(default));
    let credentials = ini_section(&file("AWS_SHARED_CREDENTIALS_FILE", ".aws/credentials"), &profile);
    let config = ini_section(&file("AWS_CONFIG_FILE", ".aws/config"), &format!("profile {profile}"))
        .into_iter()
        .chain(ini_section(&file("AWS_CONFIG_FILE", ".aws/config"), &profile))
        .collect::<BTreeMap<_, _>>();
    for (key, value) in credentials.into_iter().chain(config) {
        let key = match key.as_str() {
            "aws_access_key_id" => Key::AccessKeyId,
            "aws_secret_access_key" => Key::SecretAccessKey,
            "aws_session_token" => Key::Token,
            "region" => Key::Region,
            "endpoint_url" => Key::Endpoint,
            _ => continue,
        };
        if builder.get_config_value(&key).is_none() {
            builder = builder.with_config(key, value);
        }
    }
    let endpoint = builder.get_config_value(&Key::Endpoint);
    let other =
        ["AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI"];
    if endpoint.is_some()
        && builder.get_config_value(&Key::AccessKeyId).is_none()
        && builder.get_config_value(&Key::SkipSignature).is_none_or(|v| v != "true")
        && !other.iter().any(|v| std::env::var_os(v).is_some())
    {
        // off AWS, the instance metadata service the client would ask next is not there: say so now
        return Err(Error::usage(format!(
            "`{url}`: no credentials for the S3 endpoint `{}`",
            endpoint.unwrap_or_default()
        ))
        .with_hint(format!(
            "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or add them to ~/.aws/credentials under [{profile}]"
        )));
    }
    if endpoint.is_some_and(|e| e.starts_with("http://")) {
        builder = builder.with_allow_http(true);
    }
    if builder.get_config_value(&Key::Region).is_none() {
        builder = builder.with_region("us-east-1");
    }
    Ok(builder)
}

/// `key = value` lines of `[section]` in an INI file (empty if the file or section is not there).
fn ini_section(path: &Path, section: &str) -> BTreeMap<String, String> {
    let Ok(text) = fs_err::read_to_string(path) else { return BTreeMap::new() };
    let mut inside = false;
    let mut out = BTreeMap::new();
    for line in text.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            inside = name.trim() == section;
        } else if inside && let Some((k, v)) = line.split_once('=') {
            out.insert(k.trim().to_lowercase(), v.trim().to_string());
        }
    }
    out
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread().enable_all().build()?)
}

/// An object storage error as forge says it: the URL, what went wrong, and what to check.
fn storage_error(url: &str, e: &dyn std::fmt::Display) -> Error {
    let text = e.to_string();
    let hint = if text.contains("NoSuchBucket") || text.contains("bucket does not exist") {
        "the bucket does not exist: create it, or check the URL"
    } else if text.contains("credential")
        || text.contains("InvalidAccessKeyId")
        || text.contains("SignatureDoesNotMatch")
        || text.contains("AccessDenied")
        || text.contains("403")
    {
        "check the credentials: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or ~/.aws/credentials), \
         GOOGLE_APPLICATION_CREDENTIALS, AZURE_STORAGE_ACCOUNT_NAME and AZURE_STORAGE_ACCOUNT_KEY"
    } else {
        "check the URL, the endpoint (AWS_ENDPOINT_URL for an S3-compatible server) and the network"
    };
    Error::usage(format!("object storage `{url}`: {text}")).with_hint(hint)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_paths_are_urls_of_known_schemes() {
        assert!(is_remote("s3://bucket/prefix"));
        assert!(is_remote("gs://b"));
        assert!(is_remote("az://container/x"));
        assert!(!is_remote("s3://"));
        assert!(!is_remote("runs/s3/x"));
        assert!(!is_remote("http://example.com/x"));
    }

    #[test]
    fn locks_and_partial_files_never_travel_and_manifests_are_known() {
        assert!(skipped(".forge-lock-00000-of-00004.json"));
        assert!(skipped("rejected/.part-00000.parquet.tmp"));
        assert!(skipped(".manifest.json.download"));
        assert!(!skipped(".forge-progress.json"));
        assert!(is_manifest("rejected/manifest-00001-of-00004.json"));
        assert!(!is_manifest("part-00000.parquet"));
    }

    #[test]
    fn credentials_files_are_read_by_section() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("credentials");
        fs_err::write(&path, "[default]\naws_access_key_id = A\n[lab]\nAWS_Access_Key_Id=B\nregion = eu-west-1\n")
            .unwrap();
        assert_eq!(ini_section(&path, "lab").get("aws_access_key_id").map(String::as_str), Some("B"));
        assert_eq!(ini_section(&path, "default").len(), 1);
        assert!(ini_section(&path, "none").is_empty());
        assert!(ini_section(&dir.path().join("missing"), "default").is_empty());
    }
}
