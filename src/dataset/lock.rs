//! One writer per output: a shard-run holds `flock` on its lock file (`.forge-lock.json`, or
//! `.forge-lock-I-of-N.json` under `--shard`) for as long as it writes, so a second process writing the
//! same output (a mistyped Slurm array, a second terminal) stops at once and is told who holds it. The
//! kernel releases the lock when its holder dies, so a killed run leaves nothing to clean up.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// A held lock; released (and its file removed) when dropped.
#[derive(Debug)]
pub struct Lock {
    path: PathBuf,
    _file: fs_err::File,
}

impl Lock {
    /// Lock `dir/name`, or say which process holds it.
    pub fn take(dir: &Path, name: &str) -> Result<Lock> {
        let path = dir.join(name);
        let mut file = fs_err::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path)?;
        // SAFETY: `flock` on a descriptor this function owns; it touches no memory.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() != std::io::ErrorKind::WouldBlock {
                return Err(Error::Io(std::io::Error::new(err.kind(), format!("locking `{}`: {err}", path.display()))));
            }
            let holder = fs_err::read_to_string(&path).unwrap_or_default();
            let holder: serde_json::Value = serde_json::from_str(&holder).unwrap_or_default();
            let who = match (holder["pid"].as_u64(), holder["host"].as_str()) {
                (Some(pid), Some(host)) => format!("process {pid} on host `{host}`"),
                _ => "another process".to_string(),
            };
            return Err(Error::usage(format!("`{}` is being written by {who}", dir.display()))
                .with_hint("two processes never write one output: wait for that one, stop it, or write elsewhere"));
        }
        let me = serde_json::json!({ "pid": std::process::id(), "host": host() });
        file.set_len(0)?;
        file.write_all(me.to_string().as_bytes())?;
        Ok(Lock { path, _file: file })
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        #[allow(clippy::disallowed_methods)] // cleanup on drop: an error is ignored, its path never shown
        let _ = std::fs::remove_file(&self.path);
    }
}

/// This machine's host name.
fn host() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: `gethostname` writes at most `buf.len()` bytes into `buf`.
    if unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } != 0 {
        return "?".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}
