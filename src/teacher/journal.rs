//! The request journal of the HTTP teacher: every response is appended here, and fsynced, before it
//! counts. A killed run, rerun, finds its finished requests here and sends none of them again; another run
//! asking the same thing (an eval after a generate) is answered from here too, unless told not to.
//!
//! A journal is a directory of JSON Lines segments, one per process that wrote (`<pid>-<nanos>.jsonl`),
//! so concurrent shards never interleave a line. A line is `{"key", "run", "latency_s", "response"}`:
//! `key` is the request's content key (model, messages, sampling, seed, samples: never the endpoint),
//! `run` the fingerprint of the run that paid for it. A line cut by a kill has no newline and is ignored,
//! so its request is sent again: it was never counted. Appends are group-committed: one writer thread
//! writes whatever responses are waiting, fsyncs once, then lets them all count.
//!
//! Lives in `--journal DIR`, by default `$FORGE_CACHE/requests`, `$XDG_CACHE_HOME/forge/requests` or
//! `~/.cache/forge/requests`. Deleting the directory clears it (no run may be writing it then).

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Where one response lies.
#[derive(Debug, Clone, Copy)]
struct Entry {
    segment: u32,
    offset: u64,
    len: u32,
    run: u64,
}

/// A journaled response.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// The server's response body.
    pub response: serde_json::Value,
    /// Seconds the request took when it was sent.
    pub latency_s: f64,
}

#[derive(Serialize)]
struct LineOut<'a> {
    key: String,
    run: String,
    latency_s: f64,
    response: &'a serde_json::Value,
}

#[derive(Deserialize)]
struct LineIn {
    latency_s: f64,
    response: serde_json::Value,
}

type Ack = tokio::sync::oneshot::Sender<std::result::Result<(), String>>;

/// An open journal: the index of every response in its directory, and the writer of this process's
/// segment.
pub struct Journal {
    dir: PathBuf,
    segments: Vec<std::fs::File>,
    index: HashMap<u128, Entry>,
    run: u64,
    cache: bool,
    writer: Option<mpsc::Sender<(String, Ack)>>,
}

/// The default journal directory.
pub fn default_dir() -> PathBuf {
    crate::cache::dir().unwrap_or_else(|| PathBuf::from(".forge-cache")).join("requests")
}

fn parse_key(hex: &str) -> Option<u128> {
    u128::from_str_radix(hex, 16).ok()
}

impl Journal {
    /// Open (creating) the journal at `dir` for run `run`. With `cache`, responses of other runs answer
    /// too; without, only this run's own (what a resumed run needs to stay exactly-once).
    pub fn open(dir: &Path, run: u64, cache: bool) -> Result<Journal> {
        let names = crate::cache::files(dir, "jsonl")?;
        let mut journal =
            Journal { dir: dir.to_path_buf(), segments: Vec::new(), index: HashMap::new(), run, cache, writer: None };
        for path in names {
            journal.scan(&path)?;
        }
        Ok(journal)
    }

    /// Index the complete lines of one segment.
    fn scan(&mut self, path: &Path) -> Result<()> {
        let file = fs_err::File::open(path)?;
        let segment = self.segments.len() as u32;
        let mut reader = std::io::BufReader::new(fs_err::File::open(path)?);
        let (mut offset, mut line) = (0u64, Vec::new());
        loop {
            line.clear();
            let read = reader.read_until(b'\n', &mut line);
            let read = read?;
            if read == 0 || line.last() != Some(&b'\n') {
                break; // the end, or a line a kill cut short: its request never counted
            }
            if let Some((key, run)) = head(&line) {
                self.index.insert(key, Entry { segment, offset, len: read as u32, run });
            }
            offset += read as u64;
        }
        self.segments.push(file.into_parts().0);
        Ok(())
    }

    /// The response recorded for `key`, if this run may use it.
    pub fn get(&self, key: u128) -> Result<Option<Recorded>> {
        let Some(e) = self.index.get(&key) else { return Ok(None) };
        if !self.cache && e.run != self.run {
            return Ok(None);
        }
        let mut buf = vec![0; e.len as usize];
        let file = &self.segments[e.segment as usize];
        file.read_exact_at(&mut buf, e.offset)
            .map_err(|err| Error::usage(format!("journal `{}`: {err}", self.dir.display())))?;
        let line: LineIn = serde_json::from_slice(&buf)
            .map_err(|err| Error::usage(format!("journal `{}`: a damaged line: {err}", self.dir.display())))?;
        Ok(Some(Recorded { response: line.response, latency_s: line.latency_s }))
    }

    /// A handle that appends responses from async tasks; each append resolves once the line is on disk.
    pub fn appender(&mut self) -> Result<Appender> {
        if self.writer.is_none() {
            let nanos =
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
            let path = self.dir.join(format!("{}-{nanos}.jsonl", std::process::id()));
            let (tx, rx) = mpsc::channel::<(String, Ack)>();
            let segment = path.clone();
            std::thread::Builder::new()
                .name("forge-journal".into())
                .spawn(move || commit_loop(&segment, &rx))
                .map_err(|e| Error::usage(format!("journal `{}`: {e}", path.display())))?;
            self.writer = Some(tx);
        }
        Ok(Appender { tx: self.writer.clone().expect("made above"), run: self.run })
    }
}

/// The key and run of a journal line, read without parsing the response.
fn head(line: &[u8]) -> Option<(u128, u64)> {
    #[derive(Deserialize)]
    struct Head<'a> {
        key: &'a str,
        run: &'a str,
    }
    let h: Head = serde_json::from_slice(line).ok()?;
    Some((parse_key(h.key)?, u64::from_str_radix(h.run, 16).ok()?))
}

/// Write what is waiting, fsync once, acknowledge it all; until every appender is gone. The segment is
/// made with its first line (a run answered from the journal leaves no empty one).
fn commit_loop(path: &Path, rx: &mpsc::Receiver<(String, Ack)>) {
    let mut file: Option<std::io::BufWriter<fs_err::File>> = None;
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        batch.extend(rx.try_iter());
        if file.is_none() {
            match fs_err::OpenOptions::new().create_new(true).append(true).open(path) {
                Ok(f) => file = Some(std::io::BufWriter::new(f)),
                Err(e) => {
                    for (_, ack) in batch {
                        let _ = ack.send(Err(e.to_string()));
                    }
                    continue;
                }
            }
        }
        let file = file.as_mut().expect("opened above");
        let mut result = Ok(());
        for (line, _) in &batch {
            if let Err(e) = file.write_all(line.as_bytes()) {
                result = Err(e.to_string());
                break;
            }
        }
        if result.is_ok() {
            result = file.flush().and_then(|()| file.get_ref().file().sync_data()).map_err(|e| e.to_string());
        }
        for (_, ack) in batch {
            let _ = ack.send(result.clone()); // the task may have been cancelled: nothing to tell it
        }
    }
}

/// A handle that appends responses to this process's segment (group-committed by one writer thread).
#[derive(Clone)]
pub struct Appender {
    tx: mpsc::Sender<(String, Ack)>,
    run: u64,
}

impl Appender {
    /// Record `response` for `key`; resolves once it is on disk.
    pub async fn append(
        &self,
        key: u128,
        response: &serde_json::Value,
        latency_s: f64,
    ) -> std::result::Result<(), String> {
        let line = LineOut { key: format!("{key:032x}"), run: format!("{:016x}", self.run), latency_s, response };
        // compact: a `Value` serializes without newlines, whatever the server sent
        let mut text = serde_json::to_string(&line).map_err(|e| e.to_string())?;
        text.push('\n');
        let (ack, done) = tokio::sync::oneshot::channel();
        self.tx.send((text, ack)).map_err(|_| "the journal writer stopped".to_string())?;
        done.await.map_err(|_| "the journal writer stopped".to_string())?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(s: &str) -> serde_json::Value {
        serde_json::from_str(s).unwrap()
    }

    #[test]
    fn a_response_counts_once_on_disk_and_a_cut_line_never() {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        {
            let mut j = Journal::open(dir.path(), 7, false).unwrap();
            let a = j.appender().unwrap();
            rt.block_on(async {
                a.append(1, &json("{\"x\": 1}"), 0.5).await.unwrap();
                a.append(2, &json("{\n \"y\": [1,\n2]\n}"), 0.25).await.unwrap();
            });
        }
        // a kill in the middle of a third line
        let seg = fs_err::read_dir(dir.path()).unwrap().next().unwrap().unwrap().path();
        let mut f = fs_err::OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(b"{\"key\":\"00000000000000000000000000000003\",\"run\":\"0000000000000007\",\"lat").unwrap();
        let j = Journal::open(dir.path(), 7, false).unwrap();
        assert_eq!(fs_err::read_to_string(&seg).unwrap().lines().count(), 3, "two whole lines, one cut");
        assert_eq!(j.get(1).unwrap().unwrap().response, serde_json::json!({"x": 1}));
        assert_eq!(j.get(2).unwrap().unwrap().response, serde_json::json!({"y": [1, 2]}));
        assert_eq!(j.get(2).unwrap().unwrap().latency_s, 0.25);
        assert!(j.get(3).unwrap().is_none());
        // another run sees them only as a cache
        assert!(Journal::open(dir.path(), 8, false).unwrap().get(1).unwrap().is_none());
        assert!(Journal::open(dir.path(), 8, true).unwrap().get(1).unwrap().is_some());
    }
}
