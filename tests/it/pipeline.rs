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
