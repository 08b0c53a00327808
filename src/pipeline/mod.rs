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

pub mod registry;

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use crate::Context;
use crate::error::{Error, Location, Result};
use crate::stage::Done;
use registry::Planned;

/// A pipeline file, read: where the stages write, and the stages in order.
pub struct Pipeline {
    /// Where the stages write (`<dir>/<name>`), relative to the current directory.
    pub dir: PathBuf,
    pub stages: Vec<Step>,
}

/// One stage of a pipeline: its name, its kind (the registry's key) and the stage ready to run.
pub struct Step {
    pub name: String,
    pub kind: String,
    pub stage: Box<dyn Planned>,
}

/// What one stage did (a row of `pipeline-summary.json` and of the closing table).
#[derive(Debug, Clone, Serialize)]
pub struct StageSummary {
    pub name: String,
    pub kind: String,
    /// `ran` or `skipped` (up to date).
    pub status: String,
    pub seconds: f64,
    /// Rows in and out, and the accuracy or losses of evaluation and training stages.
    #[serde(flatten)]
    pub done: Done,
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
    if let Some(key) = value.as_table().and_then(|t| t.keys().find(|k| *k != "dir" && *k != "stage")) {
        return Err(Error::data(
            Location::file(path),
            format!("unknown key `{key}`: a pipeline has `dir` and `[[stage]]` tables"),
        ));
    }
    let Some(tables) = value.get_mut("stage").and_then(|s| s.as_array_mut()).map(std::mem::take) else {
        return Err(Error::data(Location::file(path), "no `[[stage]]` tables".to_string()));
    };
    let mut stages: Vec<Step> = Vec::new();
    for (i, table) in tables.into_iter().enumerate() {
        let at = || Location::file(path).column(format!("stage[{i}]"));
        let toml::Value::Table(mut table) = table else {
            return Err(Error::data(at(), "a stage is a table".to_string()));
        };
        let Some(toml::Value::String(name)) = table.remove("name") else {
            return Err(Error::data(at(), "a stage needs a `name`".to_string()));
        };
        let keys: Vec<String> = table.keys().cloned().collect();
        let kinds = registry::STAGES.iter().filter_map(|s| s.pipeline_key()).collect::<Vec<_>>().join(", ");
        let [kind] = keys.as_slice() else {
            return Err(Error::data(at(), format!("stage `{name}` needs exactly one stage table, found {keys:?}"))
                .with_hint(format!("one of: {kinds}")));
        };
        let entry = registry::find(kind).filter(|e| e.pipeline_key().is_some()).ok_or_else(|| {
            Error::data(at(), format!("stage `{name}`: `{kind}` is not a pipeline stage"))
                .with_hint(format!("one of: {kinds}"))
        })?;
        if stages.iter().any(|s| s.name == name) {
            return Err(Error::data(Location::file(path), format!("two stages are named `{name}`")));
        }
        let table = table.remove(kind).expect("the key just listed");
        let stage = entry.plan_from_table(table, &dir.join(&name), path).expect("a pipeline stage")?;
        stages.push(Step { name, kind: kind.clone(), stage });
    }
    Ok(Pipeline { dir, stages })
}

/// Run `step`; returns its summary (status, rows, metrics).
fn run_step(step: &Step, ctx: &Context) -> Result<StageSummary> {
    let started = Instant::now();
    let done = step.stage.run(ctx)?;
    Ok(StageSummary {
        name: step.name.clone(),
        kind: step.kind.clone(),
        status: if done.up_to_date { "skipped" } else { "ran" }.into(),
        seconds: started.elapsed().as_secs_f64(),
        done,
    })
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
            eprintln!("== stage {}/{}: {} ({})", i + 1, pipeline.stages.len(), stage.name, stage.kind);
        }
        let summary = run_step(stage, ctx).map_err(|e| match e {
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

/// Rows a dataset stage left out, most common reasons first: `dropped 812 contaminated, 40 incorrect`.
fn dropped(rejected: &std::collections::BTreeMap<String, u64>) -> String {
    let mut reasons: Vec<(&String, &u64)> = rejected.iter().filter(|(_, n)| **n > 0).collect();
    reasons.sort_by(|a, b| b.1.cmp(a.1));
    let parts: Vec<String> = reasons.iter().take(3).map(|(r, n)| format!("{n} {r}")).collect();
    if parts.is_empty() { String::new() } else { format!("dropped {}", parts.join(", ")) }
}

/// The summary as a table.
pub fn table(summaries: &[StageSummary]) -> String {
    let mut out = format!(
        "{:<16} {:<13} {:<8} {:>9} {:>9} {:>8}  {}\n",
        "stage", "kind", "status", "rows in", "rows out", "seconds", "result"
    );
    let n = |x: Option<u64>| x.map(|v| v.to_string()).unwrap_or_else(|| "-".into());
    for s in summaries {
        let result = match (s.done.accuracy, s.done.loss, s.done.eval_loss) {
            (Some(a), _, _) => format!("accuracy {:.1}%", 100.0 * a),
            (_, Some(l), Some(e)) => format!("loss {l:.3}, held-out {e:.3}"),
            (_, Some(l), None) => format!("loss {l:.3}"),
            _ => dropped(&s.done.rejected),
        };
        out += &format!(
            "{:<16} {:<13} {:<8} {:>9} {:>9} {:>8.1}  {result}\n",
            s.name,
            s.kind,
            s.status,
            n(s.done.rows_in),
            n(s.done.rows_out),
            s.seconds
        );
    }
    out
}
