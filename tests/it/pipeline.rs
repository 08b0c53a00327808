use std::path::Path;

use forge::model::Arch;
use forge::model::tiny::{Size, write};
use serde_json::Value;

use crate::util::{Scratch, run};

fn summary(dir: &Path) -> Vec<(String, String)> {
    let v: Value = serde_json::from_slice(&std::fs::read(dir.join("pipeline-summary.json")).unwrap()).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap().to_string(), s["status"].as_str().unwrap().to_string()))
        .collect()
}

fn pipeline(teacher: &Path, dir: &Path, error_rate: &str) -> String {
    format!(
        r#"
dir = "{dir}"

[[stage]]
name = "problems"
synth = {{ task = "arith", n = 24, seed = 3 }}

[[stage]]
name = "traces"
generate = {{ teacher = "local:{teacher}", problems = "@problems", n = 2, sampling = {{ max_new_tokens = 12 }} }}

[[stage]]
name = "curated"
filter = {{ input = "@traces", keep_incorrect = true }}

[[stage]]
name = "journey"
journey = {{ input = "@problems", error_rate = {error_rate} }}

[[stage]]
name = "init"
init_model = {{ family = "llama", hidden = 32, intermediate = 64, layers = 1, heads = 2, kv_heads = 1, tokenizer_data = ["@journey"], vocab_size = 300 }}

[[stage]]
name = "student"
train_sft = {{ model = "@init", data = ["@journey"], epochs = 1, lr = 1e-3, batch_tokens = 2048, max_length = 256 }}

[[stage]]
name = "eval"
eval = {{ model = "@student", problems = "@problems", max_new_tokens = 8 }}
"#,
        dir = dir.display(),
        teacher = teacher.display()
    )
}

/// A pipeline runs every stage; run again with nothing changed, it skips every stage; with one stage's
/// settings changed, that stage and those its output feeds rerun (a model whose tokenizer is trained on
/// it included), the others are skipped; `--from` reruns
/// from a stage on; a stage that fails stops the run and leaves the earlier outputs in place.
#[test]
fn pipelines_run_skip_and_rerun_what_changed() {
    let s = Scratch::new();
    let teacher = s.path("teacher");
    write(&teacher, Arch::Qwen2, Size::default(), 1).unwrap();
    let dir = s.path("run");
    let file = s.write("p.toml", pipeline(&teacher, &dir, "0.3"));
    let (code, _, stderr) = run(&[&"run", &file]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("accuracy"), "the summary shows the eval: {stderr}");
    let all = |status: &str| summary(&dir).iter().all(|(_, s)| s == status);
    assert!(all("ran"), "{:?}", summary(&dir));

    let (code, _, stderr) = run(&[&"run", &file, &"-q"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(all("skipped"), "{:?}", summary(&dir));

    std::fs::write(&file, pipeline(&teacher, &dir, "0.6")).unwrap();
    let (code, _, stderr) = run(&[&"run", &file, &"-q"]);
    assert_eq!(code, 0, "{stderr}");
    let status: Vec<(String, String)> = summary(&dir);
    let ran: Vec<&str> = status.iter().filter(|(_, s)| s == "ran").map(|(n, _)| n.as_str()).collect();
    // the model's tokenizer is trained on the journey rows: a changed input, so it is made again
    assert_eq!(ran, ["journey", "init", "student", "eval"], "{status:?}");

    let (code, _, stderr) = run(&[&"run", &file, &"--from", &"curated", &"-q"]);
    assert_eq!(code, 0, "{stderr}");
    let ran: Vec<String> = summary(&dir).into_iter().filter(|(_, s)| s == "ran").map(|(n, _)| n).collect();
    assert_eq!(ran, ["curated", "journey", "init", "student", "eval"]);

    let broken = pipeline(&teacher, &dir, "0.6").replace("data = [\"@journey\"]", "data = [\"@nowhere\"]");
    std::fs::write(&file, broken).unwrap();
    let before = std::fs::read(dir.join("journey/manifest.json")).unwrap();
    let (code, _, stderr) = run(&[&"run", &file, &"-q"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("@nowhere"), "{stderr}");
    assert_eq!(std::fs::read(dir.join("journey/manifest.json")).unwrap(), before);
    assert!(dir.join("eval/eval-report.json").exists(), "outputs of earlier runs stay");

    std::fs::write(
        &file,
        "dir = \"x\"\n[[stage]]\nname = \"a\"\nsynth = { task = \"arith\" }\nfilter = { input = \"y\" }\n",
    )
    .unwrap();
    let (code, _, stderr) = run(&[&"run", &file]);
    assert_eq!(code, 2);
    assert!(stderr.contains("exactly one stage table"), "{stderr}");
    std::fs::write(&file, "dir = \"x\"\n[[stage]]\nname = \"a\"\nsynth = { task = \"arith\", bogus = 1 }\n").unwrap();
    let (code, _, stderr) = run(&[&"run", &file]);
    assert_eq!(code, 2);
    assert!(stderr.contains("p.toml") && stderr.contains("bogus"), "{stderr}");
}

/// A stage in `shards` runs as tasks (filter's as its four map/reduce steps) with the rows of one
/// process; `--dry-run` shows the Slurm job arrays and their afterok chain without Slurm; `--status`
/// reads the task records; a stage that cannot shard, a reference to a later stage and unknown Slurm
/// settings are errors naming the file.
#[test]
fn sharded_stages_run_as_tasks_and_plan_as_slurm_arrays() {
    let s = Scratch::new();
    let dir = s.path("run");
    let text = format!(
        "dir = \"{}\"\n[slurm]\npartition = \"cpu\"\n\n[[stage]]\nname = \"problems\"\nsynth = {{ task = \"arith\", n = 30, seed = 1 }}\n\n\
         [[stage]]\nname = \"clean\"\nshards = 3\nslurm = {{ mem = \"1G\" }}\nfilter = {{ input = \"@problems\" }}\n",
        dir.display()
    );
    let file = s.write("p.toml", &text);
    let (code, scripts, stderr) = run(&[&"run", &file, &"--executor", &"slurm", &"--dry-run"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(scripts.matches("#!/bin/bash").count(), 5, "synth, then filter's four steps: {scripts}");
    assert_eq!(scripts.matches("#SBATCH --array=0,1,2\n").count(), 3, "{scripts}");
    assert_eq!(scripts.matches("#SBATCH --partition=cpu\n").count(), 5, "{scripts}");
    assert_eq!(scripts.matches("#SBATCH --mem=1G\n").count(), 4, "{scripts}");
    assert!(scripts.contains("# sbatch --dependency=afterok:problems.0\n"), "{scripts}");
    assert!(scripts.contains("# sbatch --dependency=afterok:clean.buckets\n"), "{scripts}");
    assert!(!dir.exists(), "a dry run writes nothing");

    let (code, _, stderr) = run(&[&"run", &file, &"-q"]);
    assert_eq!(code, 0, "{stderr}");
    let (_, stats, _) = run(&[&"stats", &dir.join("clean"), &"--json"]);
    let stats: Value = serde_json::from_str(&stats).unwrap();
    assert_eq!(stats["rows"], 30, "{stats}");
    assert_eq!(
        std::fs::read_dir(dir.join("clean"))
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with("manifest-"))
            .count(),
        3
    );
    let (code, status, _) = run(&[&"run", &file, &"--status"]);
    assert_eq!(code, 0);
    assert!(status.lines().any(|l| l.starts_with("clean") && l.contains(" 10 ") && l.contains("finished")), "{status}");
    let (_, scripts, _) = run(&[&"run", &file, &"--executor", &"slurm", &"--dry-run"]);
    assert!(scripts.is_empty(), "every task has finished: {scripts}");

    for (bad, says) in [
        (text.replace("shards = 3", "shards = 0"), "whole number >= 1"),
        (text.replace("@problems", "@clean"), "does not run before it"),
        (text.replace("mem = ", "memory = "), "memory"),
        (
            text.clone() + "[[stage]]\nname = \"m\"\nshards = 2\ninit_model = { family = \"llama\" }\n",
            "does not take `shards`",
        ),
    ] {
        std::fs::write(&file, &bad).unwrap();
        let (code, _, stderr) = run(&[&"run", &file, &"-q"]);
        assert_eq!(code, 2, "{bad}");
        assert!(stderr.contains("p.toml") && stderr.contains(says), "{says}: {stderr}");
    }
}

/// Every pipeline in `pipelines/` parses into stages with one stage table each and known settings.
#[test]
fn committed_pipelines_parse() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let p = forge::pipeline::load(&path, None).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(p.stages.len() >= 5, "{}", path.display());
            seen += 1;
        }
    }
    assert!(seen >= 2);
}

/// `forge --help` lists each subcommand with its own line (the registry sets it after the flags, whose
/// structs' doc comments clap would otherwise show).
#[test]
fn help_lists_each_stage_with_its_own_line() {
    let help = crate::util::ok(&[&"--help"]).split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(help.contains("import Turn JSONL, Parquet or CSV into a problems dataset"), "{help}");
    assert!(help.contains("stats Summarise a dataset"), "{help}");
    assert!(!help.contains("Where and how a stage writes"), "{help}");
    let run = crate::util::ok(&[&"run", &"--help"]);
    assert!(run.starts_with("Run a pipeline"), "{run}");
}
