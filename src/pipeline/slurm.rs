//! `forge run PIPELINE --executor slurm`: each phase of each stage becomes a Slurm job array of its tasks
//! (`--array` over the shards), chained with `afterok` dependencies on the jobs of the stages it reads
//! and on its own previous phase. The jobs run `forge run <snapshot> --task STAGE:PHASE:$SLURM_ARRAY_TASK_ID`
//! in the directory the pipeline was submitted from; each finished task leaves its record, so a rerun
//! submits only what did not finish (or whose plan changed), and `--status` reads where a run stands.
//!
//! Everything the jobs need lives under `<dir>/.forge-run/`: `pipeline.toml` (the pipeline as
//! submitted, so editing the file does not change queued jobs), `slurm/<stage>.<phase>.sbatch`,
//! `logs/<stage>.<phase>.<task>.log` (the phase by its step's name where it has one), and `done/` (the task records).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

use super::{Pipeline, STATE_DIR, Step};
use crate::Context;
use crate::error::{Error, Result};

/// What a stage's Slurm jobs ask for: the pipeline's `[slurm]` table, a stage's `slurm = { ... }` over
/// it; what is left out is the cluster's default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// `--partition`
    pub partition: Option<String>,
    /// `--time` per task (`HH:MM:SS`, `D-HH`)
    pub time: Option<String>,
    /// `--cpus-per-task`
    pub cpus: Option<u32>,
    /// `--mem` per task (`16G`)
    pub mem: Option<String>,
    /// GPUs per task (`--gres=gpu:N`)
    pub gpus: Option<u32>,
    /// More sbatch options, one per `#SBATCH` line (`--account=lab`, `--qos=high`)
    #[serde(default)]
    pub options: Vec<String>,
    /// Shell lines run before the task (`module load cuda`, starting a vLLM server on the node)
    pub setup: Option<String>,
}

impl Resources {
    /// These settings, with those left out taken from `base`.
    pub fn over(&self, base: &Resources) -> Resources {
        let options = if self.options.is_empty() { base.options.clone() } else { self.options.clone() };
        Resources {
            partition: self.partition.clone().or_else(|| base.partition.clone()),
            time: self.time.clone().or_else(|| base.time.clone()),
            cpus: self.cpus.or(base.cpus),
            mem: self.mem.clone().or_else(|| base.mem.clone()),
            gpus: self.gpus.or(base.gpus),
            options,
            setup: self.setup.clone().or_else(|| base.setup.clone()),
        }
    }

    fn lines(&self) -> Vec<String> {
        let mut lines = Vec::new();
        let mut add = |flag: &str, value: Option<String>| {
            if let Some(v) = value {
                lines.push(format!("--{flag}={v}"));
            }
        };
        add("partition", self.partition.clone());
        add("time", self.time.clone());
        add("cpus-per-task", self.cpus.map(|c| c.to_string()));
        add("mem", self.mem.clone());
        add("gres", self.gpus.filter(|&g| g > 0).map(|g| format!("gpu:{g}")));
        lines.extend(self.options.iter().cloned());
        lines
    }
}

/// One job array submitted (or, in a dry run, that would be).
#[derive(Debug, Clone, Serialize)]
pub struct Job {
    /// The stage's name.
    pub stage: String,
    /// The phase's index within the stage.
    pub phase: usize,
    /// The step the phase runs (`--step`), where the stage has several.
    pub step: Option<&'static str>,
    /// The array's task indices.
    pub tasks: Vec<u64>,
    /// Slurm's job id (`<stage>.<phase>` in a dry run).
    pub id: String,
    /// The batch script submitted.
    pub script: String,
}

/// The prefix of this run's job names: `forge-<hash of the run directory>.`, so a rerun finds its
/// jobs in the queue and two runs' jobs are told apart.
fn job_prefix(pipeline: &Pipeline) -> Result<String> {
    let dir = std::path::absolute(&pipeline.dir)?;
    let hash = xxhash_rust::xxh3::xxh3_64(dir.to_string_lossy().as_bytes());
    Ok(format!("forge-{:08x}.", hash as u32))
}

/// `'text'` for the shell.
fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// This run's tasks in Slurm's queue, by stage: `2 running, 6 pending`. An error where Slurm's
/// commands are not installed.
pub fn queued(pipeline: &Pipeline) -> Result<BTreeMap<String, String>> {
    Ok(queue(pipeline)?
        .into_iter()
        .map(|(stage, states)| {
            let mut counts = BTreeMap::<String, usize>::new();
            for (_, state) in states {
                *counts.entry(state.to_lowercase()).or_default() += 1;
            }
            let text = counts.iter().map(|(s, n)| format!("{n} {s}")).collect::<Vec<_>>().join(", ");
            (stage, text)
        })
        .collect())
}

/// This run's tasks in the queue: stage -> (job id, state) per task.
fn queue(pipeline: &Pipeline) -> Result<BTreeMap<String, Vec<(String, String)>>> {
    let prefix = job_prefix(pipeline)?;
    let out = slurm(Command::new("squeue").args(["-h", "-r", "--me", "-o", "%j|%T|%A"]))?;
    let mut by_stage = BTreeMap::<String, Vec<(String, String)>>::new();
    for line in out.lines() {
        let mut fields = line.split('|');
        let (Some(name), Some(state), Some(id)) = (fields.next(), fields.next(), fields.next()) else { continue };
        if let Some((stage, _phase)) = name.strip_prefix(&prefix).and_then(|n| n.rsplit_once('.')) {
            by_stage.entry(stage.to_string()).or_default().push((id.to_string(), state.to_string()));
        }
    }
    Ok(by_stage)
}

/// Run a Slurm command; its stdout, or an error with its stderr.
fn slurm(cmd: &mut Command) -> Result<String> {
    let name = cmd.get_program().to_string_lossy().into_owned();
    let out = cmd.output().map_err(|e| {
        Error::usage(format!("cannot run Slurm's `{name}`: {e}"))
            .with_hint("`--executor slurm` runs where Slurm's commands are (a cluster's login node)")
    })?;
    if !out.status.success() {
        return Err(Error::usage(format!("`{name}` failed: {}", String::from_utf8_lossy(&out.stderr).trim())));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Submit what of `pipeline` has not finished (from stage `from` on: everything) as job arrays; with
/// `dry_run`, submit nothing, change nothing, and return the scripts.
pub fn submit(pipeline: &Pipeline, from: Option<&str>, dry_run: bool, ctx: &Context) -> Result<Vec<Job>> {
    let start = from.map(|name| pipeline.position(name)).transpose()?.unwrap_or(pipeline.stages.len());
    let prefix = job_prefix(pipeline)?;
    let state = std::path::absolute(pipeline.dir.join(STATE_DIR))?;
    if !dry_run {
        let queued = queue(pipeline)?;
        if !queued.is_empty() {
            let ids: BTreeSet<&str> = queued.values().flatten().map(|(id, _)| id.as_str()).collect();
            return Err(Error::usage(format!(
                "{} task(s) of this run are still in Slurm's queue (jobs {})",
                queued.values().map(Vec::len).sum::<usize>(),
                ids.into_iter().collect::<Vec<_>>().join(", ")
            ))
            .with_hint(
                "wait for them (`forge run PIPELINE --status`), or cancel them with `scancel`, then run again",
            ));
        }
        fs_err::create_dir_all(state.join("slurm"))?;
        fs_err::create_dir_all(state.join("logs"))?;
        fs_err::copy(&pipeline.file, state.join("pipeline.toml"))?;
    }
    let forge = std::env::current_exe()?;
    let cwd = std::env::current_dir()?;
    let mut jobs: Vec<Job> = Vec::new();
    // the last job of each stage submitted now: what the stages reading it wait for
    let mut last: Vec<Option<String>> = vec![None; pipeline.stages.len()];
    for (i, step) in pipeline.stages.iter().enumerate() {
        let upstream: Vec<&String> = step.needs.iter().filter_map(|&j| last[j].as_ref()).collect();
        let all = i >= start || !upstream.is_empty();
        if !dry_run {
            if i >= start {
                pipeline.clear(step)?;
            }
            pipeline.prepare(step, true)?;
        }
        let finished = if all { Vec::new() } else { pipeline.finished(step) };
        let mut previous: Option<String> = None;
        for (p, phase) in step.phases.iter().enumerate() {
            // a phase after one that runs reruns whole: it reads everything that one writes
            let tasks: Vec<u64> = (0..phase.tasks)
                .filter(|&t| previous.is_some() || !finished.get(p).is_some_and(|f| f[t as usize]))
                .collect();
            if tasks.is_empty() {
                continue;
            }
            // the first phase waits for the stages it reads, each later one for the one before it
            let after: Vec<&str> = match &previous {
                Some(id) => vec![id.as_str()],
                None => upstream.iter().map(|s| s.as_str()).collect(),
            };
            let dependency = (!after.is_empty()).then(|| format!("--dependency=afterok:{}", after.join(":")));
            let script =
                script(pipeline, step, p, &tasks, &Paths { prefix: &prefix, state: &state, forge: &forge, cwd: &cwd });
            let (id, script) = if dry_run {
                let shown = match &dependency {
                    Some(d) => format!("# sbatch {d}\n{script}"),
                    None => script,
                };
                (label(step, p), shown)
            } else {
                let path = state.join("slurm").join(format!("{}.sbatch", label(step, p)));
                fs_err::write(&path, &script)?;
                let out = slurm(Command::new("sbatch").arg("--parsable").args(&dependency).arg(&path))?;
                let id = out.trim().split(';').next().unwrap_or_default().to_string();
                if !ctx.quiet {
                    let what = phase.step.map(|s| format!(" ({s})")).unwrap_or_default();
                    eprintln!("submitted `{}`{what}: job {id}, {} task(s)", step.name, tasks.len());
                }
                (id, script)
            };
            jobs.push(Job { stage: step.name.clone(), phase: p, step: phase.step, tasks, id: id.clone(), script });
            previous = Some(id);
        }
        last[i] = previous;
    }
    Ok(jobs)
}

/// Where a job's script points: its name prefix, the run's state directory, the forge binary, and the
/// directory the pipeline's relative paths are relative to.
struct Paths<'a> {
    prefix: &'a str,
    state: &'a Path,
    forge: &'a Path,
    cwd: &'a Path,
}

/// `<stage>.<phase>` (`curated.signatures` for a named step): the job's name after the run's prefix,
/// and its script's and logs' names.
fn label(step: &Step, phase: usize) -> String {
    match step.phases[phase].step {
        Some(name) => format!("{}.{name}", step.name),
        None => format!("{}.{phase}", step.name),
    }
}

/// The sbatch script of phase `phase` of `step`, an array over `tasks`.
fn script(pipeline: &Pipeline, step: &Step, phase: usize, tasks: &[u64], at: &Paths) -> String {
    let array: Vec<String> = tasks.iter().map(u64::to_string).collect();
    let label = label(step, phase);
    let log = at.state.join("logs").join(format!("{label}.%a.log"));
    let mut lines = vec![
        "#!/bin/bash".to_string(),
        format!("#SBATCH --job-name={}{label}", at.prefix),
        format!("#SBATCH --array={}", array.join(",")),
        format!("#SBATCH --output={}", log.display()),
        format!("#SBATCH --chdir={}", at.cwd.display()),
        "#SBATCH --kill-on-invalid-dep=yes".to_string(),
    ];
    lines.extend(step.slurm.lines().into_iter().map(|l| format!("#SBATCH {l}")));
    lines.push("set -euo pipefail".into());
    // as many threads as CPUs given (the node may have more), unless the environment says otherwise
    lines.push(
        "if [ -n \"${SLURM_CPUS_PER_TASK:-}\" ]; then export RAYON_NUM_THREADS=\"${RAYON_NUM_THREADS:-$SLURM_CPUS_PER_TASK}\"; fi"
            .into(),
    );
    if let Some(setup) = &step.slurm.setup {
        lines.push(setup.trim_end().to_string());
    }
    let snapshot: PathBuf = at.state.join("pipeline.toml");
    lines.push(format!(
        "exec {} run {} --dir {} --task {}\"$SLURM_ARRAY_TASK_ID\"",
        quote(&at.forge.display().to_string()),
        quote(&snapshot.display().to_string()),
        quote(&pipeline.dir.display().to_string()),
        quote(&format!("{}:{phase}:", step.name)),
    ));
    lines.join("\n") + "\n"
}

/// Wait until none of this run's tasks is queued or running, showing each change; then an error if a
/// stage did not finish, naming its logs.
pub fn wait(pipeline: &Pipeline, ctx: &Context) -> Result<()> {
    drain(pipeline, ctx)?;
    for step in &pipeline.stages {
        if pipeline.finished(step).iter().flatten().any(|f| !f) {
            let logs = pipeline.dir.join(STATE_DIR).join("logs");
            return Err(Error::usage(format!("stage `{}` did not finish on Slurm", step.name)).with_hint(format!(
                "its logs are `{}/{}.*.log`; `forge run PIPELINE --executor slurm` again submits what is left",
                logs.display(),
                step.name
            )));
        }
    }
    Ok(())
}

/// Wait until none of this run's tasks is queued or running, showing each change.
pub fn drain(pipeline: &Pipeline, ctx: &Context) -> Result<()> {
    let mut shown = String::new();
    loop {
        let queued = queued(pipeline)?;
        if queued.is_empty() {
            break;
        }
        let now = queued.iter().map(|(s, q)| format!("{s}: {q}")).collect::<Vec<_>>().join("; ");
        if now != shown && !ctx.quiet {
            eprintln!("{now}");
            shown = now;
        }
        std::thread::sleep(std::time::Duration::from_secs(2));
    }
    Ok(())
}
