//! Helpers: a scratch directory per test, running the `forge` binary, reading datasets back.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub struct Scratch(tempfile::TempDir);

impl Scratch {
    pub fn new() -> Self {
        Scratch(tempfile::Builder::new().prefix("forge-it-").tempdir().expect("temp dir"))
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.path().join(name)
    }
    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, contents).expect("write fixture");
        path
    }
}

pub fn forge() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_forge"));
    cmd.env("NO_COLOR", "1").env("FORGE_CACHE", cache());
    cmd
}

/// forge's cache directory for the tests' runs (embeddings, the request journal's default): one per test
/// process, emptied when the process first asks for it, so no run reads what a user's or an earlier test
/// run left there.
pub fn cache() -> &'static Path {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("forge-cache");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("cache dir");
        dir
    })
}

/// Run forge with `args`; returns (exit code, stdout, stderr).
pub fn run(args: &[&dyn AsRef<std::ffi::OsStr>]) -> (i32, String, String) {
    let out: Output = forge().args(args.iter().map(std::convert::AsRef::as_ref)).output().expect("run forge");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// Start forge with `args`, wait (up to two minutes) until `file` exists, and kill it (SIGKILL).
pub fn kill_when(args: &[std::ffi::OsString], file: &Path) {
    let mut child = forge().args(args).stderr(std::process::Stdio::null()).spawn().expect("start forge");
    let started = std::time::Instant::now();
    while !file.exists() {
        assert!(started.elapsed() < std::time::Duration::from_secs(120), "`{}` did not appear", file.display());
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().expect("kill forge");
    child.wait().expect("reap forge");
}

/// Rerun a killed training command (`args`, shown without `-q`): it must say it resumes and end with the same
/// weights as `straight`, the run that was never killed.
pub fn resumes_to_the_same_weights(args: &[std::ffi::OsString], straight: &Path, killed: &Path) {
    let again = forge().args(args.iter().filter(|a| *a != "-q")).output().expect("run forge");
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(again.status.success(), "{stderr}");
    assert!(stderr.contains("resuming from step"), "{stderr}");
    assert_eq!(
        std::fs::read(straight.join("model.safetensors")).unwrap(),
        std::fs::read(killed.join("model.safetensors")).unwrap(),
        "resumed weights differ"
    );
}

/// Run forge and insist on success.
pub fn ok(args: &[&dyn AsRef<std::ffi::OsStr>]) -> String {
    let (code, stdout, stderr) = run(args);
    assert_eq!(code, 0, "forge failed:\n{stderr}");
    stdout
}

pub fn problems(dir: &Path) -> Vec<forge::dataset::Problem> {
    let input = forge::dataset::Input::open(dir).expect("open dataset");
    input
        .rows_of::<forge::dataset::Problem>(forge::dataset::TableKind::Problems, 0..input.rows())
        .flat_map(|b| b.expect("readable"))
        .collect()
}

/// Bytes of every `part-*` file, in name order.
pub fn shard_bytes(dir: &Path) -> Vec<(String, Vec<u8>)> {
    part_files(dir).into_iter().map(|name| (name.clone(), std::fs::read(dir.join(&name)).unwrap())).collect()
}

/// Names of the `part-*` files in `dir`, sorted (none when `dir` does not exist yet).
pub fn part_files(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut names: Vec<String> = entries
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("part-"))
        .collect();
    names.sort();
    names
}

pub fn shared_data(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data").join(rel)
}

/// One `traces` row as JSON (the columns a teacher would fill; sampling fixed).
pub fn trace(problem: &str, sample: u32, prompt: &str, gold: Option<&str>, completion: &str) -> serde_json::Value {
    serde_json::json!({
        "id": format!("{problem}#{sample}"), "problem_id": problem, "source": "test", "domain": "math",
        "prompt": prompt, "gold": gold, "teacher": "local:test", "sample_index": sample,
        "sampling": {"temperature": 0.7, "top_p": 1.0, "top_k": null, "max_new_tokens": 256, "seed": sample},
        "completion": completion, "reasoning": null, "solution": completion,
        "prompt_tokens": 10, "completion_tokens": completion.split_whitespace().count(),
        "finish_reason": "stop", "metadata": "{}",
    })
}

pub fn jsonl(rows: &[serde_json::Value]) -> String {
    rows.iter().map(|r| r.to_string() + "\n").collect()
}

/// Every row of a dataset (directory, Parquet or JSONL) as JSON objects, in order.
pub fn records(path: &Path) -> Vec<serde_json::Map<String, serde_json::Value>> {
    let input = forge::dataset::Input::open(path).expect("open dataset");
    input.records(0..input.rows()).map(|r| r.expect("readable").fields).collect()
}

/// `id -> (reject_reason, reject_detail)` of a filter output's `rejected/` table.
pub fn rejected(out: &Path) -> std::collections::BTreeMap<String, (String, serde_json::Value)> {
    records(&out.join("rejected"))
        .into_iter()
        .map(|r| {
            let detail = r["reject_detail"].as_str().and_then(|d| serde_json::from_str(d).ok()).unwrap_or_default();
            (r["id"].as_str().unwrap().to_string(), (r["reject_reason"].as_str().unwrap().to_string(), detail))
        })
        .collect()
}

/// forge's verifier on a kept trace row (a `records` map): right or not, and the answer it found.
pub fn verdict(t: &serde_json::Map<String, serde_json::Value>) -> (bool, Option<String>) {
    let trace = forge::verify::TraceRef {
        domain: forge::formats::domain::Domain::of(t["domain"].as_str().unwrap()),
        gold: t["gold"].as_str(),
        output: t["completion"].as_str().unwrap(),
        prompt: None,
        metadata: t["metadata"].as_str(),
        tests: None,
        finish_reason: t["finish_reason"].as_str(),
    };
    let v = forge::verify::verify_trace(&trace, &Default::default()).unwrap();
    (v.correct, v.extracted)
}

/// Every file of every stage's output, by path under `dir` (forge's `.forge-*` state left out), with
/// manifests without their provenance (times, command, input paths) and timings, and the training
/// log and report (wall-clock times) and an export's README (the commands that made it) left out.
pub fn outputs(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if name.starts_with(".forge-") {
                continue; // forge's own state: task records, locks, working files, what made a model
            }
            if path.is_dir() {
                todo.push(path);
                continue;
            }
            if ["metrics.csv", "train-report.json", "pipeline-summary.json", "README.md"].contains(&name.as_str()) {
                continue;
            }
            let mut bytes = std::fs::read(&path).unwrap();
            if name.starts_with("manifest") {
                let mut m: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
                m.as_object_mut().unwrap().remove("provenance");
                for timing in ["seconds", "rows_per_second"] {
                    m["report"].as_object_mut().unwrap().remove(timing);
                }
                bytes = serde_json::to_vec(&m).unwrap();
            }
            files.push((path.strip_prefix(dir).unwrap().to_path_buf(), bytes));
        }
    }
    files.sort();
    files
}

/// `a` and `b` hold the same outputs ([`outputs`]): the same files with the same bytes. Returns the
/// files' paths.
pub fn same_outputs(a: &Path, b: &Path) -> Vec<PathBuf> {
    let (x, y) = (outputs(a), outputs(b));
    let names = |f: &[(PathBuf, Vec<u8>)]| f.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>();
    assert_eq!(names(&x), names(&y));
    for ((path, x), (_, y)) in x.iter().zip(&y) {
        assert!(x == y, "`{}` differs", path.display());
    }
    names(&x)
}
