//! The command line: a thin layer over the library. The subcommands are the registry's stages
//! (`forge::pipeline::registry::STAGES`), each parsed into its settings struct and run; `forge run` composes them.
//! Progress and summaries go to stderr; stdout carries data only (`forge stats` output).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Arg, ArgAction, ArgMatches, Args, FromArgMatches};

use forge::Context;
use forge::pipeline::registry::STAGES;

const LONG_ABOUT: &str = "Make reasoning data and train on it: import or synthesise problems, generate solutions with a \
                          teacher, verify and curate them, weave in verified wrong-then-corrected steps (journey), \
                          train or distil a student (full or LoRA) and evaluate it; `forge run` chains the stages from a TOML \
                          pipeline, `forge export` writes what other trainers read.\n\n\
                          Every stage reads and writes datasets: directories of Parquet shards plus manifest.json, \
                          local or on object storage (s3://, gs://, az://). \
                          Start with `forge run pipelines/quickstart.toml`.";

/// `forge run`'s flags.
#[derive(Debug, serde::Serialize, clap::Args)]
struct RunArgs {
    /// The pipeline file (TOML: `dir`, then `[[stage]]` tables with a `name` and one stage table)
    pipeline: PathBuf,
    /// Rerun from this stage on, even where outputs are up to date
    #[arg(long, value_name = "STAGE")]
    from: Option<String>,
    /// Write the stages here instead of the pipeline's `dir`
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Where the stages run: here, one task after another, or as Slurm job arrays (sbatch, one array
    /// per stage phase over its `shards`, chained with afterok dependencies)
    #[arg(long, value_enum, default_value_t = Executor::Local)]
    executor: Executor,
    /// With `--executor slurm`: print the sbatch scripts, submit and change nothing
    #[arg(long)]
    dry_run: bool,
    /// With `--executor slurm`: wait for this run's jobs still queued from an earlier submission, submit,
    /// and wait until the jobs end, showing their progress; an error if a stage did not finish
    #[arg(long)]
    wait: bool,
    /// Print what each stage has finished (on Slurm: what is queued or running) and exit
    #[arg(long, conflicts_with_all = ["from", "dry_run", "wait"])]
    status: bool,
    /// Run one task of a stage, `STAGE:PHASE:TASK`, as a Slurm job does
    #[arg(long, hide = true, value_name = "STAGE:PHASE:TASK")]
    task: Option<String>,
}

/// Where `forge run` runs the stages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
enum Executor {
    /// Here, stage by stage
    Local,
    /// As Slurm job arrays
    Slurm,
}

/// The whole command line: global flags, every registered stage, and `run`.
pub fn command() -> clap::Command {
    // about text after the flags: `augment_args` sets it from the struct's doc comment
    let run = RunArgs::augment_args(clap::Command::new("run"))
        .about("Run a pipeline: a declared chain of stages; stages whose settings and inputs are unchanged are skipped")
        .long_about(None::<&str>)
        .after_help(
            "Examples:
  forge run pipelines/quickstart.toml
  forge run pipelines/quickstart.toml --from student    # rerun from the stage named `student`
  forge run pipelines/quickstart.toml --dir /tmp/qs     # write the stages elsewhere
  forge run pipeline.toml --executor slurm              # submit the stages as Slurm job arrays
  forge run pipeline.toml --executor slurm --dry-run    # print the sbatch scripts
  forge run pipeline.toml --status                      # what has finished, what is queued


A stage table may hold `shards = N` (its work in N tasks, a Slurm array) and
`slurm = { partition, time, cpus, mem, gpus, options, setup }` over the pipeline's `[slurm]` defaults.",
        );
    let serve = forge::serve::ServeConfig::augment_args(clap::Command::new("serve"))
        .about("Serve a checkpoint over an OpenAI-compatible HTTP API (chat and completions, streaming, continuous batching)")
        .long_about(None::<&str>)
        .after_help(
            "Prints the server's URL on stdout once it accepts requests; SIGINT or SIGTERM stops it after the requests in flight.

Examples:
  forge serve --model student/ --port 8000
  forge serve --model student/ --port 0 --max-batch 128      # any free port
  forge generate --teacher openai:http://127.0.0.1:8000/v1 --problems problems/ -n 4 -o traces/
  curl http://127.0.0.1:8000/v1/chat/completions -H 'Content-Type: application/json' \\
    -d '{\"messages\": [{\"role\": \"user\", \"content\": \"What is 2 + 3?\"}], \"temperature\": 0}'",
        );
    clap::Command::new("forge")
        .version(env!("CARGO_PKG_VERSION"))
        .about("Make reasoning data and train on it")
        .long_about(LONG_ABOUT)
        .subcommand_required(true)
        .arg_required_else_help(true)
        .arg(
            Arg::new("quiet")
                .short('q')
                .long("quiet")
                .global(true)
                .action(ArgAction::SetTrue)
                .help("Print nothing but errors: no progress bars, no summaries"),
        )
        .arg(Arg::new("show_config").long("show-config").global(true).action(ArgAction::SetTrue).help(
            "Print the stage's resolved settings (defaults filled in, as a pipeline TOML table would hold them) \
             as JSON, and exit without running",
        ))
        .subcommands(STAGES.iter().map(|s| s.command()))
        .subcommand(run)
        .subcommand(serve)
}

pub fn run(matches: &ArgMatches) -> anyhow::Result<ExitCode> {
    let ctx = Context { command: std::env::args().collect(), quiet: matches.get_flag("quiet") };
    let show_config = matches.get_flag("show_config");
    let (name, sub) = matches.subcommand().expect("a subcommand is required");
    if name == "run" {
        let args = RunArgs::from_arg_matches(sub)?;
        if show_config {
            return print(&(serde_json::to_string_pretty(&serde_json::json!({ "run": args }))? + "\n"));
        }
        return run_pipeline(&args, &ctx);
    }
    if name == "serve" {
        let cfg = forge::serve::ServeConfig::from_arg_matches(sub)?;
        if show_config {
            return print(&(serde_json::to_string_pretty(&serde_json::json!({ "serve": cfg }))? + "\n"));
        }
        forge::serve::serve(&cfg, ctx.quiet, &mut |url| {
            print(&format!("{url}\n")).map(drop).map_err(|e| forge::Error::usage(e.to_string()))
        })?;
        return Ok(ExitCode::SUCCESS);
    }
    let stage = forge::pipeline::registry::find(name).expect("every subcommand is registered").plan_from_flags(sub)?;
    if show_config {
        return print(&(serde_json::to_string_pretty(&stage.show())? + "\n"));
    }
    let done = stage.run(&ctx)?;
    if !ctx.quiet && !done.summary.is_empty() {
        eprintln!("{}", done.summary);
    }
    if let Some(text) = &done.stdout {
        print(text)?;
    }
    Ok(if done.check_failed { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

/// `forge run`: a pipeline here or on Slurm, its status, or one task of it.
fn run_pipeline(args: &RunArgs, ctx: &Context) -> anyhow::Result<ExitCode> {
    use forge::pipeline::{self, slurm};
    let spec = pipeline::load(&args.pipeline, args.dir.as_deref())?;
    if let Some(task) = &args.task {
        let bad = || forge::Error::usage(format!("`--task {task}`: expected STAGE:PHASE:TASK"));
        let mut parts = task.rsplitn(3, ':');
        let (Some(t), Some(p), Some(name)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad().into());
        };
        let (p, t) = (p.parse().map_err(|_| bad())?, t.parse().map_err(|_| bad())?);
        let done = spec.run_task(spec.position(name)?, p, t, ctx)?;
        if !ctx.quiet && !done.summary.is_empty() {
            eprintln!("{}", done.summary);
        }
        return Ok(ExitCode::SUCCESS);
    }
    if args.status {
        return print(&pipeline::status(&spec)?);
    }
    if args.executor == Executor::Local {
        if args.dry_run || args.wait {
            return Err(forge::Error::usage("`--dry-run` and `--wait` go with `--executor slurm`").into());
        }
        let summaries = pipeline::run(&spec, args.from.as_deref(), ctx)?;
        if !ctx.quiet {
            eprintln!("\n{}", pipeline::table(&summaries));
        }
        return Ok(ExitCode::SUCCESS);
    }
    if args.wait && !args.dry_run {
        slurm::drain(&spec, ctx)?; // what an earlier submission left in the queue, first
    }
    let jobs = slurm::submit(&spec, args.from.as_deref(), args.dry_run, ctx)?;
    if args.dry_run {
        let scripts: Vec<String> = jobs.iter().map(|j| j.script.clone()).collect();
        return print(&scripts.join("\n"));
    }
    if jobs.is_empty() && !ctx.quiet {
        eprintln!("every stage has finished; nothing to submit");
    }
    if args.wait {
        if let Err(e) = slurm::wait(&spec, ctx) {
            eprintln!("{}", pipeline::status(&spec)?);
            return Err(e.into());
        }
        if !ctx.quiet {
            eprintln!("\n{}", pipeline::status(&spec)?);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print(text: &str) -> anyhow::Result<ExitCode> {
    std::io::stdout().write_all(text.as_bytes()).context("writing to stdout")?;
    Ok(ExitCode::SUCCESS)
}
