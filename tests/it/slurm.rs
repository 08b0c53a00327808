use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::util::{Scratch, run};

/// synth -> generate with the tiny teacher in 4 shards -> filter with near-dup in 4 shards (its four
/// map/reduce steps) -> a student tokenizer and model -> train-sft.
fn pipeline() -> String {
    let teacher = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/tiny-teacher");
    format!(
        r#"
dir = "unused"

[slurm]
cpus = 1
mem = "2G"
time = "00:20:00"

[[stage]]
name = "problems"
synth = {{ task = "arith", n = 32, seed = 3 }}

[[stage]]
name = "traces"
shards = 4
generate = {{ teacher = "local:{teacher}", problems = "@problems", n = 8, sampling = {{ max_new_tokens = 160 }} }}

[[stage]]
name = "curated"
shards = 4
filter = {{ input = "@traces", near_dup = true, keep_incorrect = true }}

[[stage]]
name = "init"
init_model = {{ family = "llama", hidden = 32, intermediate = 64, layers = 1, heads = 2, kv_heads = 1, vocab_size = 300, tokenizer_data = ["@curated"] }}

[[stage]]
name = "student"
train_sft = {{ model = "@init", data = ["@curated"], epochs = 1, lr = 1e-3, batch_tokens = 2048, max_length = 256 }}
"#,
        teacher = teacher.display()
    )
}

fn assert_same_outputs(a: &Path, b: &Path) {
    let files = crate::util::same_outputs(a, b);
    assert!(files.iter().any(|p| p.ends_with("student/model.safetensors")), "{files:?}");
    assert!(
        files.iter().filter(|p| p.starts_with("curated") && p.extension().is_some_and(|e| e == "parquet")).count() >= 4
    );
}

/// `squeue` lines (`id state name`) of the tasks whose job name contains `part`.
fn queued(part: &str) -> Vec<(String, String)> {
    let out = Command::new("squeue").args(["-h", "-r", "-o", "%i %T %j"]).output().expect("squeue");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(part))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[0].to_string(), f[1].to_string())
        })
        .collect()
}

/// On a real one-node Slurm: the pipeline through `--executor slurm` (job arrays, afterok chains, the
/// filter's map/reduce steps as arrays) ends with the same bytes as `--executor local`; a rerun has
/// nothing to submit; a generate task cancelled mid-run with `scancel` cancels what depends on it, and
/// the rerun submits only that task and what follows, and ends with the same bytes again.
#[test]
#[ignore = "needs a running Slurm (scripts/servers/start-slurm.sh)"]
fn slurm_runs_equal_local_runs_and_resume_after_scancel() {
    let s = Scratch::new();
    let file = s.write("p.toml", pipeline());
    let (local, slurm, killed) = (s.path("local"), s.path("slurm"), s.path("killed"));

    let (code, _, stderr) = run(&[&"run", &file, &"--dir", &local, &"-q"]);
    assert_eq!(code, 0, "{stderr}");
    let (code, _, stderr) = run(&[&"run", &file, &"--dir", &slurm, &"--executor", &"slurm", &"--wait"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("submitted `curated` (clusters)"), "{stderr}");
    assert_same_outputs(&local, &slurm);
    let (code, _, stderr) = run(&[&"run", &file, &"--dir", &slurm, &"--executor", &"slurm"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("nothing to submit"), "{stderr}");

    // cancel a generate task while it runs
    let (code, _, stderr) = run(&[&"run", &file, &"--dir", &killed, &"--executor", &"slurm", &"-q"]);
    assert_eq!(code, 0, "{stderr}");
    let started = Instant::now();
    let task = loop {
        if let Some((id, _)) = queued(".traces.").into_iter().find(|(_, state)| state == "RUNNING") {
            break id;
        }
        assert!(started.elapsed() < Duration::from_secs(300), "no traces task started");
        std::thread::sleep(Duration::from_millis(200));
    };
    // a task runs for a few seconds (8 problems × 8 samples): cancel it well inside that
    std::thread::sleep(Duration::from_millis(500));
    let index: u64 = task.rsplit('_').next().unwrap().parse().unwrap();
    assert!(Command::new("scancel").arg(&task).status().unwrap().success());
    let (code, _, stderr) = run(&[&"run", &file, &"--dir", &killed, &"--executor", &"slurm"]);
    assert_eq!(code, 2, "a rerun while the run's jobs are queued is refused: {stderr}");
    assert!(stderr.contains("still in Slurm's queue"), "{stderr}");

    let (code, _, stderr) = run(&[&"run", &file, &"--dir", &killed, &"--executor", &"slurm", &"--wait"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("submitted `traces`: job") && stderr.contains(", 1 task(s)") && !stderr.contains("`problems`"),
        "only the cancelled task and what depends on it are submitted again: {stderr}"
    );
    let log = std::fs::read_to_string(killed.join(format!(".forge-run/logs/traces.0.{index}.log"))).unwrap();
    assert!(log.contains("wrote"), "the log of the task run again: {log}");
    assert_same_outputs(&local, &killed);
    let (code, status, _) = run(&[&"run", &file, &"--dir", &killed, &"--status"]);
    assert_eq!(code, 0);
    assert_eq!(status.lines().filter(|l| l.contains("finished")).count(), 6, "{status}");
}
