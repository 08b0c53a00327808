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
//!
//! A step may be cut into `shards` slices of its input (`shards = 4`): its work becomes phases of
//! independent tasks (one per slice; filter's four map/reduce steps are four phases), run one after
//! another here or as Slurm job arrays with `--executor slurm` ([`slurm`]). Each finished task leaves a
//! record in `<dir>/.forge-run/done/` with the hash of its plan (settings, shards, and the plans of the
//! steps it reads): `--status` and the Slurm executor read them to tell what is left.

pub mod registry;
pub mod slurm;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::Context;
use crate::error::{Error, Location, Result};
use crate::stage::{Done, Phase};
use registry::Planned;

/// Where a pipeline keeps its own state inside `dir`: task records, Slurm scripts and logs.
pub const STATE_DIR: &str = ".forge-run";

/// A pipeline file, read: where the stages write, and the stages in order.
pub struct Pipeline {
    /// The pipeline file.
    pub file: PathBuf,
    /// Where the stages write (`<dir>/<name>`), relative to the current directory.
    pub dir: PathBuf,
    /// The stages, in the file's order.
    pub stages: Vec<Step>,
}

/// One stage of a pipeline: its name, its kind (the registry's key) and the stage ready to run.
pub struct Step {
    /// The stage's name in the file (`[name]`), also its output directory's.
    pub name: String,
    /// Which stage it is (the registry's key: `generate`, `filter`, ...).
    pub kind: String,
    /// The stage, its inputs resolved.
    pub stage: Box<dyn Planned>,
    /// Slices of the input its work is cut into (`shards`, default 1).
    pub shards: u64,
    /// Its work in `shards` slices: phases run one after another, each of independent tasks.
    pub phases: Vec<Phase>,
    /// The earlier steps whose outputs it reads (`@name`), by index.
    pub needs: Vec<usize>,
    /// What its Slurm jobs ask for: the pipeline's `[slurm]` table with the step's own `slurm` over it.
    pub slurm: slurm::Resources,
    /// Hash of its settings, shards and the plans of the steps it reads: a task record of another
    /// plan is stale.
    pub plan: String,
}

/// What one stage did (a row of `pipeline-summary.json` and of the closing table).
#[derive(Debug, Clone, Serialize)]
pub struct StageSummary {
    /// The stage's name in the file.
    pub name: String,
    /// Which stage it is.
    pub kind: String,
    /// `ran` or `skipped` (up to date).
    pub status: String,
    /// Wall-clock seconds (a skipped stage: the time to find it up to date).
    pub seconds: f64,
    /// Rows in and out, and the accuracy or losses of evaluation and training stages.
    #[serde(flatten)]
    pub done: Done,
}

/// Replace `@name` references to stage outputs in every string of `value`; the indices of the stages
/// referenced go into `used`.
fn resolve(value: &mut toml::Value, outputs: &[(usize, String, PathBuf)], used: &mut BTreeSet<usize>) {
    match value {
        toml::Value::String(s) => {
            for (index, name, path) in outputs {
                let reference = format!("@{name}");
                if let Some(at) = s.find(&reference)
                    && !s[at + reference.len()..].starts_with(|c: char| c.is_alphanumeric() || c == '_' || c == '-')
                {
                    s.replace_range(at..at + reference.len(), &path.display().to_string());
                    used.insert(*index);
                }
            }
        }
        toml::Value::Array(items) => items.iter_mut().for_each(|v| resolve(v, outputs, used)),
        toml::Value::Table(t) => t.iter_mut().for_each(|(_, v)| resolve(v, outputs, used)),
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
    if crate::dataset::remote::is_remote(&dir.to_string_lossy()) {
        return Err(Error::data(
            Location::file(path),
            format!(
                "`dir = \"{}\"`: a pipeline's directory is local (its task records and logs live there)",
                dir.display()
            ),
        )
        .with_hint(
            "stages may read `s3://…` datasets; a stage's own command writes one (`forge filter … -o s3://…`)",
        ));
    }
    if let Some(key) =
        value.as_table().and_then(|t| t.keys().find(|k| !["dir", "stage", "slurm"].contains(&k.as_str())))
    {
        return Err(Error::data(
            Location::file(path),
            format!("unknown key `{key}`: a pipeline has `dir`, `[slurm]` and `[[stage]]` tables"),
        ));
    }
    let resources = |v: Option<toml::Value>, at: Location| -> Result<slurm::Resources> {
        v.map(|v| v.try_into::<slurm::Resources>().map_err(|e| Error::data(at, e.message().to_string())))
            .transpose()
            .map(Option::unwrap_or_default)
    };
    let defaults =
        resources(value.as_table_mut().and_then(|t| t.remove("slurm")), Location::file(path).column("slurm"))?;
    let Some(tables) = value.get_mut("stage").and_then(|s| s.as_array_mut()).map(std::mem::take) else {
        return Err(Error::data(Location::file(path), "no `[[stage]]` tables".to_string()));
    };
    let names: Vec<Option<String>> =
        tables.iter().map(|s| s.get("name").and_then(|n| n.as_str()).map(String::from)).collect();
    // longest names first, so `@teacher-eval` is not read as `@teacher` + `-eval`
    let mut outputs: Vec<(usize, String, PathBuf)> =
        names.iter().enumerate().filter_map(|(i, n)| n.as_ref().map(|n| (i, n.clone(), dir.join(n)))).collect();
    outputs.sort_by_key(|(_, n, _)| std::cmp::Reverse(n.len()));
    let mut stages: Vec<Step> = Vec::new();
    for (i, table) in tables.into_iter().enumerate() {
        let at = || Location::file(path).column(format!("stage[{i}]"));
        let toml::Value::Table(mut table) = table else {
            return Err(Error::data(at(), "a stage is a table".to_string()));
        };
        let Some(toml::Value::String(name)) = table.remove("name") else {
            return Err(Error::data(at(), "a stage needs a `name`".to_string()));
        };
        let shards = match table.remove("shards") {
            None => 1,
            Some(toml::Value::Integer(n)) if n >= 1 => n as u64,
            Some(other) => {
                return Err(Error::data(at(), format!("stage `{name}`: `shards` is a whole number >= 1, not {other}")));
            }
        };
        let slurm = resources(table.remove("slurm"), at())?.over(&defaults);
        let keys: Vec<String> = table.keys().cloned().collect();
        let kinds = registry::STAGES.iter().filter_map(|s| s.pipeline_key()).collect::<Vec<_>>().join(", ");
        let [kind] = keys.as_slice() else {
            return Err(Error::data(at(), format!("stage `{name}` needs exactly one stage table, found {keys:?}"))
                .with_hint(format!("one of: {kinds}; besides it a stage may have `shards` and `slurm`")));
        };
        let entry = registry::find(kind).filter(|e| e.pipeline_key().is_some()).ok_or_else(|| {
            Error::data(at(), format!("stage `{name}`: `{kind}` is not a pipeline stage"))
                .with_hint(format!("one of: {kinds}"))
        })?;
        if stages.iter().any(|s| s.name == name) {
            return Err(Error::data(Location::file(path), format!("two stages are named `{name}`")));
        }
        let mut table = table.remove(kind).expect("the key just listed");
        let mut used = BTreeSet::new();
        resolve(&mut table, &outputs, &mut used);
        if let Some(&later) = used.iter().find(|&&j| j >= i) {
            let other = names[later].as_deref().unwrap_or_default();
            return Err(Error::data(at(), format!("stage `{name}` reads `@{other}`, which does not run before it"))
                .with_hint("a stage reads the outputs of the stages above it"));
        }
        let stage = entry.plan_from_table(table, &dir.join(&name), path).expect("a pipeline stage")?;
        let phases = stage.phases(shards).map_err(|e| Error::data(at(), format!("stage `{name}` ({kind}) {e}")))?;
        let needs: Vec<usize> = used.into_iter().collect();
        let key = serde_json::json!({
            "kind": kind,
            "settings": stage.show(),
            "shards": shards,
            "needs": needs.iter().map(|&j| &stages[j].plan).collect::<Vec<_>>(),
        });
        let plan = format!("{:032x}", xxhash_rust::xxh3::xxh3_128(key.to_string().as_bytes()));
        stages.push(Step { name, kind: kind.clone(), stage, shards, phases, needs, slurm, plan });
    }
    Ok(Pipeline { file: path.to_path_buf(), dir, stages })
}

/// What a finished task leaves in `<dir>/.forge-run/done/<stage>/`.
#[derive(Debug, Serialize, Deserialize)]
struct Record {
    plan: String,
    seconds: f64,
    done: Done,
}

impl Pipeline {
    /// The index of the stage named `name`.
    pub fn position(&self, name: &str) -> Result<usize> {
        self.stages.iter().position(|s| s.name == name).ok_or_else(|| {
            let names: Vec<&str> = self.stages.iter().map(|s| s.name.as_str()).collect();
            Error::usage(format!("no stage named `{name}`")).with_hint(format!("the stages are {names:?}"))
        })
    }

    fn records(&self, step: &Step) -> PathBuf {
        self.dir.join(STATE_DIR).join("done").join(&step.name)
    }

    fn record(&self, step: &Step, phase: usize, task: u64) -> PathBuf {
        self.records(step).join(format!("{phase}-{task}.json"))
    }

    /// Which tasks of `step` have finished under its current plan, phase by phase (none where its
    /// output is gone).
    pub fn finished(&self, step: &Step) -> Vec<Vec<bool>> {
        let out = self.dir.join(&step.name).exists();
        let finished = |p: usize, t: u64| {
            out && fs_err::read(self.record(step, p, t))
                .ok()
                .and_then(|b| serde_json::from_slice::<Record>(&b).ok())
                .is_some_and(|r| r.plan == step.plan)
        };
        step.phases.iter().enumerate().map(|(p, phase)| (0..phase.tasks).map(|t| finished(p, t)).collect()).collect()
    }

    /// Before `step` runs: task records of another plan (other settings, shards or plans of the steps
    /// it reads) are removed, and so is an output written in another shard layout. With `replace`, an
    /// output with stale records goes too, so that tasks running at once (on Slurm) each find a clean
    /// directory rather than replacing it under one another; run here, the stage replaces it itself.
    pub fn prepare(&self, step: &Step, replace: bool) -> Result<()> {
        let out = self.dir.join(&step.name);
        if crate::dataset::shard_counts(&out)?.into_iter().any(|n| n != step.shards) {
            return self.clear(step);
        }
        let mut stale = false;
        if let Ok(entries) = fs_err::read_dir(self.records(step)) {
            for entry in entries {
                let record = fs_err::read(entry?.path()).ok().and_then(|b| serde_json::from_slice::<Record>(&b).ok());
                stale |= record.is_none_or(|r| r.plan != step.plan);
            }
        }
        match stale {
            true if replace => self.clear(step),
            true => Ok(fs_err::remove_dir_all(self.records(step))?),
            false => Ok(()),
        }
    }

    /// Remove `step`'s output and its task records.
    fn clear(&self, step: &Step) -> Result<()> {
        for dir in [self.dir.join(&step.name), self.records(step)] {
            if dir.exists() {
                fs_err::remove_dir_all(&dir)?;
            }
        }
        Ok(())
    }

    /// Run task `task` of phase `phase` of stage `index` and record it as finished.
    pub fn run_task(&self, index: usize, phase: usize, task: u64, ctx: &Context) -> Result<Done> {
        let step = &self.stages[index];
        let tasks = step.phases.get(phase).map_or(0, |p| p.tasks);
        if task >= tasks {
            return Err(Error::usage(format!("stage `{}` has no task {phase}:{task}", step.name)));
        }
        let started = Instant::now();
        let done = step.stage.run_task(step.shards, phase, task, ctx).map_err(|e| match e {
            Error::Usage { message, hint } => {
                Error::Usage { message: format!("stage `{}`: {message}", step.name), hint }
            }
            other => other,
        })?;
        let record = Record { plan: step.plan.clone(), seconds: started.elapsed().as_secs_f64(), done: done.clone() };
        fs_err::create_dir_all(self.records(step))?;
        crate::dataset::write_atomic(
            &self.record(step, phase, task),
            &serde_json::to_vec_pretty(&record).expect("serialisable"),
        )?;
        Ok(done)
    }

    /// The stage's figures from its last phase's task records (rows summed over the shards).
    fn summary(&self, step: &Step) -> Option<(f64, Done)> {
        let last = step.phases.len() - 1;
        let mut seconds = 0.0;
        let mut dones = Vec::new();
        for (p, phase) in step.phases.iter().enumerate() {
            for t in 0..phase.tasks {
                let r: Record = serde_json::from_slice(&fs_err::read(self.record(step, p, t)).ok()?).ok()?;
                seconds += r.seconds;
                if p == last {
                    dones.push(r.done);
                }
            }
        }
        Some((seconds, combine(dones)))
    }
}

/// The figures of a stage run as several tasks: rows and rejections summed.
fn combine(mut dones: Vec<Done>) -> Done {
    if dones.len() == 1 {
        return dones.pop().expect("one");
    }
    let sum = |f: fn(&Done) -> Option<u64>, dones: &[Done]| dones.iter().map(f).sum::<Option<u64>>();
    let mut rejected = BTreeMap::new();
    for d in &dones {
        for (reason, n) in &d.rejected {
            *rejected.entry(reason.clone()).or_insert(0) += n;
        }
    }
    Done {
        up_to_date: dones.iter().all(|d| d.up_to_date),
        rows_in: sum(|d| d.rows_in, &dones),
        rows_out: sum(|d| d.rows_out, &dones),
        rejected,
        summary: dones.iter().map(|d| d.summary.as_str()).filter(|s| !s.is_empty()).collect::<Vec<_>>().join("\n"),
        ..Done::default()
    }
}

/// Run `pipeline` here, stage by stage and task by task; with `from`, the stages from that one on are
/// rerun from scratch.
pub fn run(pipeline: &Pipeline, from: Option<&str>, ctx: &Context) -> Result<Vec<StageSummary>> {
    let start = from.map(|name| pipeline.position(name)).transpose()?.unwrap_or(pipeline.stages.len());
    let mut done = Vec::new();
    for (i, step) in pipeline.stages.iter().enumerate() {
        if i >= start {
            pipeline.clear(step)?;
        }
        pipeline.prepare(step, false)?;
        if !ctx.quiet {
            eprintln!("== stage {}/{}: {} ({})", i + 1, pipeline.stages.len(), step.name, step.kind);
        }
        let started = Instant::now();
        let mut last = Vec::new();
        for (p, phase) in step.phases.iter().enumerate() {
            last.clear();
            for task in 0..phase.tasks {
                if !ctx.quiet && (phase.tasks > 1 || phase.step.is_some()) {
                    eprintln!("-- {} {}/{}", phase.step.unwrap_or("shard"), task + 1, phase.tasks);
                }
                last.push(pipeline.run_task(i, p, task, ctx)?);
            }
        }
        let d = combine(last);
        done.push(StageSummary {
            name: step.name.clone(),
            kind: step.kind.clone(),
            status: if d.up_to_date { "skipped" } else { "ran" }.into(),
            seconds: started.elapsed().as_secs_f64(),
            done: d,
        });
    }
    let json = serde_json::to_vec_pretty(&done).expect("json");
    fs_err::create_dir_all(&pipeline.dir)?;
    crate::dataset::write_atomic(&pipeline.dir.join("pipeline-summary.json"), &json)?;
    Ok(done)
}

/// Where each stage stands, from the task records (and, for a run on Slurm, its queue): a table.
pub fn status(pipeline: &Pipeline) -> Result<String> {
    let queue = slurm::queued(pipeline).unwrap_or_default();
    let mut out =
        format!("{:<16} {:<13} {:>6} {:>9} {:>8}  {}\n", "stage", "kind", "tasks", "finished", "seconds", "state");
    for step in &pipeline.stages {
        let finished = pipeline.finished(step);
        let total: u64 = step.phases.iter().map(|p| p.tasks).sum();
        let done = finished.iter().flatten().filter(|f| **f).count();
        let (seconds, figures) = match pipeline.summary(step) {
            Some((s, d)) if done as u64 == total => (format!("{s:.1}"), result(&d)),
            _ => ("-".into(), String::new()),
        };
        let state = match queue.get(&step.name) {
            Some(q) => q.clone(),
            None if done as u64 == total => format!("finished {figures}").trim_end().to_string(),
            None if done == 0 => "not run".into(),
            None => "unfinished".into(),
        };
        out += &format!("{:<16} {:<13} {:>6} {:>9} {:>8}  {state}\n", step.name, step.kind, total, done, seconds);
    }
    Ok(out)
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
        let result = result(&s.done);
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

/// A stage's result in a few words: its accuracy, losses, or the rows it dropped.
fn result(done: &Done) -> String {
    match (done.accuracy, done.loss, done.eval_loss) {
        (Some(a), _, _) => format!("accuracy {:.1}%", 100.0 * a),
        (_, Some(l), Some(e)) => format!("loss {l:.3}, held-out {e:.3}"),
        (_, Some(l), None) => format!("loss {l:.3}"),
        _ => dropped(&done.rejected),
    }
}
