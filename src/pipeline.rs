//! `forge run PIPELINE.toml`: a declared chain of stages, each a table with the same settings as its
//! subcommand's flags, writing into `<dir>/<stage name>`. A path or model written `@name` is the output
//! of stage `name`.
//!
//! ```toml
//! dir = "runs/quickstart"
//!
//! [[stage]]
//! name = "problems"
//! synth = { task = "arith", n = 200, seed = 1 }
//!
//! [[stage]]
//! name = "traces"
//! generate = { teacher = "local:samples/tiny-teacher", problems = "@problems", n = 4 }
//! ```
//!
//! A stage whose output holds the result of the same settings and inputs (content hashes in the
//! manifests) is skipped, so rerunning a pipeline with nothing changed does nothing, and changing one
//! stage reruns it and whatever its new output changes downstream. `--from NAME` reruns from a stage on. A
//! failing stage stops the run and leaves the earlier outputs as they are.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::dataset::{Input, Manifest, Shard, WriteOptions};
use crate::error::{Error, Location, Result};
use crate::{Context, Outcome, OutputArgs};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pipeline {
    /// Where the stages write (`<dir>/<name>`), relative to the current directory.
    pub dir: PathBuf,
    #[serde(rename = "stage")]
    pub stages: Vec<Stage>,
}

/// One stage: a name and exactly one stage table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stage {
    pub name: String,
    pub synth: Option<crate::synth::SynthConfig>,
    pub import: Option<crate::import::ImportConfig>,
    pub generate: Option<crate::generate::GenerateConfig>,
    pub filter: Option<crate::filter::FilterConfig>,
    pub journey: Option<crate::journey::JourneyConfig>,
    pub init_model: Option<crate::model::tiny::InitConfig>,
    pub train_sft: Option<crate::train::TrainConfig>,
    pub eval: Option<crate::eval::EvalConfig>,
}

impl Stage {
    fn kind(&self) -> Vec<&'static str> {
        [
            (self.synth.is_some(), "synth"),
            (self.import.is_some(), "import"),
            (self.generate.is_some(), "generate"),
            (self.filter.is_some(), "filter"),
            (self.journey.is_some(), "journey"),
            (self.init_model.is_some(), "init_model"),
            (self.train_sft.is_some(), "train_sft"),
            (self.eval.is_some(), "eval"),
        ]
        .into_iter()
        .filter_map(|(set, k)| set.then_some(k))
        .collect()
    }
}

/// What one stage did.
#[derive(Debug, Clone, Serialize)]
pub struct StageSummary {
    pub name: String,
    pub kind: String,
    /// `ran` or `skipped` (up to date).
    pub status: String,
    pub rows_in: Option<u64>,
    pub rows_out: Option<u64>,
    pub seconds: f64,
    /// Eval stages: pass@1.
    pub accuracy: Option<f64>,
    /// Training stages: the final training and held-out losses.
    pub loss: Option<f64>,
    pub eval_loss: Option<f64>,
}

/// Replace `@name` references to stage outputs in every string of `value`.
fn resolve(value: &mut toml::Value, outputs: &[(String, PathBuf)]) {
    match value {
        toml::Value::String(s) => {
            for (name, path) in outputs {
                let reference = format!("@{name}");
                if let Some(at) = s.find(&reference)
                    && !s[at + reference.len()..].starts_with(|c: char| c.is_alphanumeric() || c == '_' || c == '-')
                {
                    s.replace_range(at..at + reference.len(), &path.display().to_string());
                }
            }
        }
        toml::Value::Array(items) => items.iter_mut().for_each(|v| resolve(v, outputs)),
        toml::Value::Table(t) => t.iter_mut().for_each(|(_, v)| resolve(v, outputs)),
        _ => {}
    }
}

/// Read a pipeline file, with `@name` references resolved; `dir` replaces the file's `dir`.
pub fn load(path: &Path, dir: Option<&Path>) -> Result<Pipeline> {
    let text = fs_err::read_to_string(path)?;
    let bad = |e: toml::de::Error| {
        let line = e.span().map(|s| text[..s.start].lines().count().max(1) as u64);
        let location = match line {
            Some(l) => Location::line(path, l),
            None => Location::file(path),
        };
        Error::data(location, e.message().to_string())
    };
    let mut value: toml::Value = toml::from_str(&text).map_err(bad)?;
    if let (Some(d), Some(table)) = (dir, value.as_table_mut()) {
        table.insert("dir".into(), toml::Value::String(d.display().to_string()));
    }
    let dir = PathBuf::from(value.get("dir").and_then(|d| d.as_str()).unwrap_or("."));
    let names: Vec<(String, PathBuf)> = value
        .get("stage")
        .and_then(|s| s.as_array())
        .map(|stages| {
            stages
                .iter()
                .filter_map(|s| s.get("name").and_then(|n| n.as_str()))
                .map(|n| (n.to_string(), dir.join(n)))
                .collect()
        })
        .unwrap_or_default();
    // longest names first, so `@teacher-eval` is not read as `@teacher` + `-eval`
    let mut sorted = names.clone();
    sorted.sort_by_key(|(n, _)| std::cmp::Reverse(n.len()));
    resolve(&mut value, &sorted);
    let pipeline: Pipeline =
        value.try_into().map_err(|e: toml::de::Error| Error::data(Location::file(path), e.message().to_string()))?;
    for (i, stage) in pipeline.stages.iter().enumerate() {
        let kinds = stage.kind();
        if kinds.len() != 1 {
            return Err(Error::data(
                Location::file(path).column(format!("stage[{i}]")),
                format!("stage `{}` needs exactly one stage table, found {kinds:?}", stage.name),
            )
            .with_hint("one of: synth, import, generate, filter, journey, init_model, train_sft, eval"));
        }
        if pipeline.stages[..i].iter().any(|s| s.name == stage.name) {
            return Err(Error::data(Location::file(path), format!("two stages are named `{}`", stage.name)));
        }
    }
    Ok(pipeline)
}

fn rows(m: &Manifest) -> (Option<u64>, Option<u64>) {
    (Some(m.report.rows_in), Some(m.report.rows_out))
}

/// Run `stage` into `out`; returns its summary (status, rows, metrics).
fn run_stage(stage: &Stage, out: &Path, ctx: &Context) -> Result<StageSummary> {
    let started = Instant::now();
    let output = OutputArgs {
        output: out.to_path_buf(),
        shard: Shard::default(),
        write: WriteOptions { overwrite: true, ..Default::default() },
    };
    let mut summary = StageSummary {
        name: stage.name.clone(),
        kind: stage.kind()[0].to_string(),
        status: "ran".into(),
        rows_in: None,
        rows_out: None,
        seconds: 0.0,
        accuracy: None,
        loss: None,
        eval_loss: None,
    };
    let outcome = if let Some(c) = &stage.synth {
        Some(crate::synth::run(c, &output, ctx)?)
    } else if let Some(c) = &stage.import {
        Some(crate::import::run(c, &output, ctx)?)
    } else if let Some(c) = &stage.generate {
        Some(crate::generate::run(c, &output, ctx)?)
    } else if let Some(c) = &stage.filter {
        crate::filter::run(c, &output, None, ctx)?
    } else if let Some(c) = &stage.journey {
        Some(crate::journey::run(c, &output, ctx)?)
    } else if let Some(c) = &stage.init_model {
        let marker = out.join(".forge-init.json");
        // the settings, and the content of the datasets a tokenizer is trained on
        let inputs: Vec<_> = c.tokenizer_data.iter().map(|d| Input::open(d)?.reference()).collect::<Result<_>>()?;
        let wanted = serde_json::to_string(&(c, inputs)).expect("json");
        if marker.exists() && fs_err::read_to_string(&marker)? == wanted {
            summary.status = "skipped".into();
        } else {
            if out.exists() {
                fs_err::remove_dir_all(out)?;
            }
            crate::model::tiny::init(c, out)?;
            crate::dataset::write_atomic(&marker, wanted.as_bytes())?;
        }
        None
    } else if let Some(c) = &stage.train_sft {
        let target = crate::train::TrainOutput { output: out.to_path_buf(), resume: false, overwrite: true };
        let (report, ran) = crate::train::run(c, &target, ctx)?;
        summary.status = if ran { "ran" } else { "skipped" }.into();
        summary.rows_in = Some(report.examples as u64);
        summary.loss = Some(report.final_loss);
        summary.eval_loss = report.final_eval_loss;
        None
    } else if let Some(c) = &stage.eval {
        let (report, ran) = crate::eval::run(c, Some(out), ctx)?;
        summary.status = if ran { "ran" } else { "skipped" }.into();
        summary.rows_in = Some(report.overall.problems);
        summary.rows_out = Some(report.overall.samples);
        summary.accuracy = Some(report.accuracy);
        None
    } else {
        unreachable!("checked in `load`")
    };
    if let Some(o) = outcome {
        (summary.rows_in, summary.rows_out) = rows(o.manifest());
        if matches!(o, Outcome::UpToDate(_)) {
            summary.status = "skipped".into();
        }
    }
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

/// Run `pipeline`; with `from`, the stages from that one on are rerun from scratch.
pub fn run(pipeline: &Pipeline, from: Option<&str>, ctx: &Context) -> Result<Vec<StageSummary>> {
    let start = match from {
        None => pipeline.stages.len(),
        Some(name) => pipeline.stages.iter().position(|s| s.name == name).ok_or_else(|| {
            let names: Vec<&str> = pipeline.stages.iter().map(|s| s.name.as_str()).collect();
            Error::usage(format!("no stage named `{name}`")).with_hint(format!("the stages are {names:?}"))
        })?,
    };
    let mut done = Vec::new();
    for (i, stage) in pipeline.stages.iter().enumerate() {
        let out = pipeline.dir.join(&stage.name);
        if i >= start && out.exists() {
            fs_err::remove_dir_all(&out)?;
        }
        if !ctx.quiet {
            eprintln!("== stage {}/{}: {} ({})", i + 1, pipeline.stages.len(), stage.name, stage.kind()[0]);
        }
        let summary = run_stage(stage, &out, ctx).map_err(|e| match e {
            Error::Usage { message, hint } => {
                Error::Usage { message: format!("stage `{}`: {message}", stage.name), hint }
            }
            other => other,
        })?;
        done.push(summary);
    }
    let json = serde_json::to_vec_pretty(&done).expect("json");
    fs_err::create_dir_all(&pipeline.dir)?;
    crate::dataset::write_atomic(&pipeline.dir.join("pipeline-summary.json"), &json)?;
    Ok(done)
}

/// The summary as a table.
pub fn table(summaries: &[StageSummary]) -> String {
    let mut out = format!(
        "{:<16} {:<10} {:<8} {:>9} {:>9} {:>8}  {}\n",
        "stage", "kind", "status", "rows in", "rows out", "seconds", "result"
    );
    let n = |x: Option<u64>| x.map(|v| v.to_string()).unwrap_or_else(|| "-".into());
    for s in summaries {
        let result = match (s.accuracy, s.loss, s.eval_loss) {
            (Some(a), _, _) => format!("accuracy {:.1}%", 100.0 * a),
            (_, Some(l), Some(e)) => format!("loss {l:.3}, held-out {e:.3}"),
            (_, Some(l), None) => format!("loss {l:.3}"),
            _ => String::new(),
        };
        out += &format!(
            "{:<16} {:<10} {:<8} {:>9} {:>9} {:>8.1}  {result}\n",
            s.name,
            s.kind,
            s.status,
            n(s.rows_in),
            n(s.rows_out),
            s.seconds
        );
    }
    out
}
