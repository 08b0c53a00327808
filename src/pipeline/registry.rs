//! Every stage, once: the command line's subcommands and `forge run`'s stage tables are built from
//! [`STAGES`]. Adding a stage is a module with an `impl Stage` and one line here.

use std::marker::PhantomData;
use std::path::Path;

use clap::{Args, FromArgMatches};
use serde_json::Value;

use crate::Context;
use crate::error::{Error, Location, Result};
use crate::stage::{Done, Phase, Stage, Target};

/// The stages in pipeline order: the order of `forge --help`.
pub static STAGES: &[&dyn Entry] = &[
    &Of::<crate::import::Import>(PhantomData),
    &Of::<crate::synth::Synth>(PhantomData),
    &Of::<crate::verify::Verify>(PhantomData),
    &Of::<crate::generate::Generate>(PhantomData),
    &Of::<crate::init_model::InitModel>(PhantomData),
    &Of::<crate::journey::Journey>(PhantomData),
    &Of::<crate::train::TrainSft>(PhantomData),
    &Of::<crate::train::distill::TrainDistill>(PhantomData),
    &Of::<crate::train::rl::TrainRl>(PhantomData),
    &Of::<crate::train::rm::TrainRm>(PhantomData),
    &Of::<crate::eval::Eval>(PhantomData),
    &Of::<crate::merge_lora::MergeLora>(PhantomData),
    &Of::<crate::filter::Filter>(PhantomData),
    &Of::<crate::export::Export>(PhantomData),
    &Of::<crate::stats::Stats>(PhantomData),
];

/// The stage named `name` (a subcommand, or a pipeline key with `_` for `-`).
pub fn find(name: &str) -> Option<&'static dyn Entry> {
    STAGES.iter().copied().find(|s| s.name() == name || s.key() == name)
}

/// A stage ready to run: its settings parsed and its target fixed.
pub trait Planned {
    /// Run the stage.
    fn run(&self, ctx: &Context) -> Result<Done>;
    /// The step's phases when its work is cut into `shards` slices (see [`Target::phases`]).
    fn phases(&self, shards: u64) -> std::result::Result<Vec<Phase>, String>;
    /// Run task `task` of phase `phase` of the step cut into `shards` slices.
    fn run_task(&self, shards: u64, phase: usize, task: u64, ctx: &Context) -> Result<Done>;
    /// The settings and the target as JSON, as `--show-config` prints them.
    fn show(&self) -> Value;
}

/// A registered stage, as the command line and the pipeline use it.
pub trait Entry: Sync {
    /// The subcommand (`train-sft`).
    fn name(&self) -> &'static str;
    /// The pipeline table key and `--show-config` key (`train_sft`).
    fn key(&self) -> String {
        self.name().replace('-', "_")
    }
    /// The key of its `forge run` table, for a stage that can be a pipeline step.
    fn pipeline_key(&self) -> Option<String>;
    /// The subcommand with its flags, description and examples.
    fn command(&self) -> clap::Command;
    /// The stage as the subcommand's matches describe it (a settings file, where the stage takes one,
    /// read first and overridden by the flags given).
    fn plan_from_flags(&self, matches: &clap::ArgMatches) -> Result<Box<dyn Planned>>;
    /// The stage as a pipeline table describes it, writing `dir`; `None` if it cannot be a pipeline step.
    fn plan_from_table(&self, table: toml::Value, dir: &Path, file: &Path) -> Option<Result<Box<dyn Planned>>>;

    /// The settings that `flags` give and those that `table` gives, each as `--show-config` prints them
    /// (the check that flags and tables share their defaults).
    #[cfg(test)]
    fn settings_of(&self, flags: &[&str], table: Value) -> std::result::Result<(Value, Value, Vec<String>), String>;
}

/// A stage type as a registry entry (`fn() -> S`: the entry holds no `S`, so it is `Sync` for any `S`).
struct Of<S>(PhantomData<fn() -> S>);

struct Ready<S: Stage> {
    config: S::Config,
    target: S::Target,
}

impl<S: Stage> Planned for Ready<S> {
    fn run(&self, ctx: &Context) -> Result<Done> {
        run_at::<S>(&self.config, self.target.clone(), ctx)
    }

    fn phases(&self, shards: u64) -> std::result::Result<Vec<Phase>, String> {
        S::Target::phases(shards)
    }

    fn run_task(&self, shards: u64, phase: usize, task: u64, ctx: &Context) -> Result<Done> {
        let mut target = self.target.clone();
        target.for_task(shards, phase, task);
        run_at::<S>(&self.config, target, ctx)
    }

    fn show(&self) -> Value {
        let key = S::NAME.replace('-', "_");
        serde_json::json!({ key: self.config, "output": self.target })
    }
}

/// Run stage `S`, with the datasets it reads on object storage (`s3://…` anywhere in its settings)
/// fetched to their local mirrors first, and an output on object storage written in its mirror, pulled
/// before and pushed after (`crate::dataset::remote`).
fn run_at<S: Stage>(config: &S::Config, mut target: S::Target, ctx: &Context) -> Result<Done> {
    use crate::dataset::remote::{Remote, is_remote};
    let mut json = serde_json::to_value(config).expect("settings serialise");
    let mut fetched = false;
    let mut fetch = |value: &mut Value| -> Result<()> {
        if let Value::String(s) = value
            && is_remote(s)
        {
            *s = Remote::open(s)?.fetch()?.display().to_string();
            fetched = true;
        }
        Ok(())
    };
    walk(&mut json, &mut fetch)?;
    let local: Option<S::Config> = match fetched {
        true => Some(serde_json::from_value(json).expect("settings read back as they serialised")),
        false => None,
    };
    let config = local.as_ref().unwrap_or(config);
    let output = match target.output_mut() {
        Some(out) if is_remote(&out.to_string_lossy()) => {
            let remote = Remote::open(&out.to_string_lossy())?;
            let pulled = remote.pull()?;
            *out = remote.local.clone();
            Some((remote, pulled))
        }
        _ => None,
    };
    let mut done = S::run(config, &target, ctx)?;
    if let Some((remote, pulled)) = output {
        remote.push(&pulled, ctx.quiet)?;
        done.summary = done.summary.replace(&remote.local.display().to_string(), remote.url());
    }
    Ok(done)
}

/// Call `f` on every value in `value`, depth first.
fn walk(value: &mut Value, f: &mut impl FnMut(&mut Value) -> Result<()>) -> Result<()> {
    match value {
        Value::Array(items) => items.iter_mut().try_for_each(|v| walk(v, f)),
        Value::Object(map) => map.iter_mut().try_for_each(|(_, v)| walk(v, f)),
        other => f(other),
    }
}

impl<S: Stage + 'static> Entry for Of<S> {
    fn name(&self) -> &'static str {
        S::NAME
    }

    fn pipeline_key(&self) -> Option<String> {
        <S::Target as Target>::in_pipeline(Path::new("")).map(|_| self.key())
    }

    fn command(&self) -> clap::Command {
        // after the flags: `augment_args` sets the about text from the structs' doc comments
        S::Target::augment_args(S::Config::augment_args(clap::Command::new(S::NAME)))
            .about(S::ABOUT)
            .long_about(S::LONG_ABOUT)
            .after_help(format!("Examples:\n{}", S::EXAMPLES))
    }

    fn plan_from_flags(&self, matches: &clap::ArgMatches) -> Result<Box<dyn Planned>> {
        let usage = |e: clap::Error| Error::usage(e.to_string());
        let mut config = S::Config::from_arg_matches(matches).map_err(usage)?;
        let target = S::Target::from_arg_matches(matches).map_err(usage)?;
        if let Some(file) = S::settings_file(&target) {
            let given: Vec<String> = matches
                .ids()
                .filter(|id| matches.value_source(id.as_str()) == Some(clap::parser::ValueSource::CommandLine))
                .map(ToString::to_string)
                .collect();
            config = crate::config::load(file, &config, &given)?;
        }
        Ok(Box::new(Ready::<S> { config, target }))
    }

    #[cfg(test)]
    fn settings_of(&self, flags: &[&str], table: Value) -> std::result::Result<(Value, Value, Vec<String>), String> {
        let cmd = S::Config::augment_args(clap::Command::new(S::NAME).no_binary_name(true));
        let ids = cmd.get_arguments().map(|a| a.get_id().to_string()).collect();
        let matches = cmd.try_get_matches_from(flags).map_err(|e| e.to_string())?;
        let from_flags = S::Config::from_arg_matches(&matches).map_err(|e| e.to_string())?;
        let from_table: S::Config = serde_json::from_value(table).map_err(|e| e.to_string())?;
        let json = |c: &S::Config| serde_json::to_value(c).expect("serialisable");
        Ok((json(&from_flags), json(&from_table), ids))
    }

    fn plan_from_table(&self, table: toml::Value, dir: &Path, file: &Path) -> Option<Result<Box<dyn Planned>>> {
        let target = S::Target::in_pipeline(dir)?;
        Some(
            table
                .try_into::<S::Config>()
                .map(|config| Box::new(Ready::<S> { config, target }) as Box<dyn Planned>)
                .map_err(|e| Error::data(Location::file(file).column(self.key()), e.message().to_string())),
        )
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// Every stage's defaults are written once: the settings of a command line with only the required
    /// flags equal those of a pipeline table with only the same required keys, and `--show-config` (the
    /// settings as JSON) shows every flag's setting, none hidden.
    #[test]
    fn flag_defaults_equal_table_defaults_and_show_config_shows_them_all() {
        let required: &[(&str, &[&str], Value)] = &[
            ("import", &["in.jsonl"], json!({ "input": "in.jsonl" })),
            ("synth", &["igsm"], json!({ "task": "igsm" })),
            ("verify", &[], json!({})),
            (
                "generate",
                &["--teacher", "local:t", "--problems", "p"],
                json!({ "teacher": "local:t", "problems": "p" }),
            ),
            ("init-model", &[], json!({})),
            ("journey", &["--input", "i"], json!({ "input": "i" })),
            ("train-sft", &["--model", "m", "--data", "d"], json!({ "model": "m", "data": ["d"] })),
            ("train-distill", &["--model", "m", "--data", "d"], json!({ "model": "m", "data": ["d"] })),
            ("train-rl", &["--model", "m", "--problems", "p"], json!({ "model": "m", "problems": "p" })),
            ("train-rm", &["--model", "m", "--data", "d"], json!({ "model": "m", "data": ["d"] })),
            ("eval", &["--model", "m", "--problems", "p"], json!({ "model": "m", "problems": "p" })),
            ("merge-lora", &["--adapter", "a"], json!({ "adapter": "a" })),
            ("filter", &["--input", "i"], json!({ "input": "i" })),
            ("export", &["i", "--format", "hf"], json!({ "input": "i", "format": "hf" })),
            ("stats", &["d"], json!({ "dataset": "d" })),
        ];
        for entry in STAGES {
            let (_, flags, table) = required
                .iter()
                .find(|(name, ..)| *name == entry.name())
                .unwrap_or_else(|| panic!("add `{}` to this test's table", entry.name()));
            let (from_flags, from_table, ids) =
                entry.settings_of(flags, table.clone()).unwrap_or_else(|e| panic!("`{}`: {e}", entry.name()));
            assert_eq!(from_flags, from_table, "`{}`: flag defaults differ from table defaults", entry.name());
            for id in ids {
                assert!(
                    crate::config::find(&from_flags, &id, &mut Vec::new()).is_some(),
                    "`{}`: `--show-config` hides `{id}`",
                    entry.name()
                );
            }
        }
    }
}
