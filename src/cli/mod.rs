//! The command line: a thin layer that parses flags into the stages' config structs, runs the stage,
//! and prints. Progress and summaries go to stderr; stdout carries data only (`forge stats` output).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use forge::filter::{FilterConfig, FilterStep};
use forge::generate::GenerateConfig;
use forge::import::ImportConfig;
use forge::synth::SynthConfig;
use forge::verify::VerifyConfig;
use forge::{Context, Outcome, OutputArgs};

#[derive(Debug, Parser)]
#[command(
    name = "forge",
    version,
    about = "Make reasoning data and train on it",
    long_about = "Make reasoning data and train on it: import or synthesise problems, generate solutions with a \
                  teacher, verify and curate them, weave in verified wrong-then-corrected steps (journey), \
                  train a student (full or LoRA) and evaluate it; `forge run` chains the stages from a TOML \
                  pipeline, `forge export` writes what other trainers read.\n\n\
                  Every stage reads and writes datasets: directories of Parquet shards plus manifest.json. \
                  Start with `forge run pipelines/quickstart.toml`."
)]
pub struct Cli {
    /// Print nothing but errors: no progress bars, no summaries
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Print the stage's resolved settings (defaults filled in, as a pipeline TOML table would hold them)
    /// as JSON, and exit without running
    #[arg(long, global = true)]
    pub show_config: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Turn JSONL, Parquet or CSV into a problems dataset
    #[command(after_help = "Examples:
  forge import --preset gsm8k ../shared/data/gsm8k/train.jsonl -o problems/
  forge import --preset math500 ../shared/data/math500/test.jsonl -o math500/
  forge import --prompt-col q --answer-col a --id-col id my.csv -o problems/
  forge import --preset gsm8k train.jsonl -o problems/ --shard 3/8   # slice 3 of 8")]
    Import {
        #[command(flatten)]
        config: ImportConfig,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Generate verifiable problems with step-by-step reference solutions
    #[command(after_help = "Examples:
  forge synth igsm --n 1000 --seed 7 -o igsm/
  forge synth igsm --n 200 --ops 8..10 --seed 8 -o igsm-hard/   # harder, out-of-distribution split
  forge synth arith --n 5000 --ops 3 -o arith/
  forge synth countdown --n 1000 --ops 3 -o countdown/           # 4 numbers")]
    Synth {
        #[command(flatten)]
        config: SynthConfig,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Check model outputs against gold answers: extraction, equivalence, format, truncation
    #[command(after_help = "Examples:
  forge verify --gold '\\frac12' --pred 'so the answer is \\boxed{0.5}'   # exit 0: equivalent, 1: not
  forge verify --input traces.jsonl --output verdicts.jsonl
  forge verify --input runs.parquet --output checked.parquet --gold-col gold --output-col response")]
    Verify {
        #[command(flatten)]
        config: VerifyConfig,
    },
    /// Sample chain-of-thought solutions of problems from a teacher model
    #[command(after_help = "Examples:
  forge generate --teacher local:ckpt/ --problems problems/ -n 4 --temperature 0.7 -o traces/
  forge generate --teacher local:ckpt/ --problems problems/ -n 4 --temperature 0.7 --top-p 0.95 --max-tokens 1024 --seed 1 -o traces/
  forge generate --teacher local:r1-distill/ --problems math500/ --prefill '<think>\\n' --temperature 0.6 -o traces/
  forge generate --teacher local:ckpt/ --problems problems/ --prompt-template '{prompt}' --system 'You are a careful solver.' -o traces/")]
    Generate {
        #[command(flatten)]
        config: GenerateConfig,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Write a fresh, randomly initialised model (byte-level tokenizer, ChatML template) as a checkpoint
    #[command(after_help = "Examples:
  forge init-model --family qwen2 -o tiny/                                   # 64 wide, 2 layers
  forge init-model --family llama --hidden 256 --layers 8 --heads 8 --kv-heads 4 --intermediate 688 -o small/
  forge init-model --arch qwen2 --hidden 256 --layers 4 --heads 4 --tokenizer-from Qwen2.5-0.5B/ -o init/")]
    InitModel {
        #[command(flatten)]
        config: forge::model::tiny::InitConfig,
        /// Checkpoint directory to write
        #[arg(short, long, value_name = "DIR")]
        output: PathBuf,
    },
    /// Write training conversations with verified wrong-then-corrected steps (journey learning)
    #[command(
        long_about = "Write training conversations that show a mistake, its detection and the fix (an `sft` \
                      table: `messages`, `prompt`/`completion`, and `segments` labelling each span as step, \
                      error, detect, fix, verify or final, with a `train` flag). `--strategy synthetic` \
                      writes, at each checkable step and with probability `--error-rate`, a wrong version of \
                      the step (arithmetic slip, wrong operand, wrong operator, misread number, a quantity \
                      used before it is computed), then a \
                      detection stating the recomputation, then the correct step; `--strategy verify` writes \
                      clean solutions with checks that confirm correct steps; `--strategy splice` takes a \
                      teacher's traces and, for a problem with a wrong and a right sample, writes the wrong one \
                      up to its first failing calculation (or its wrong answer), a transition that says what \
                      failed, then the right one; `--strategy teacher` gives the same wrong prefix and a cue \
                      (\"Wait, let me check that again.\") to `--teacher` and keeps a continuation whose \
                      calculations check out and whose answer verifies. Every error is rejected by the \
                      step checker, every fix accepted and every final answer verified, or the row is not \
                      written (the report counts it). Input: problems with reference steps that carry \
                      calculations (`forge synth`, GSM8K imported with `--preset gsm8k`); for `splice`, \
                      traces from `forge generate` with several samples per problem (`splice`, `teacher`).",
        after_help = "Examples:
  forge journey --input igsm/ --error-rate 0.5 -o sft/
  forge journey --input igsm/ --error-rate 0.5 --mask-errors -o sft-masked/
  forge journey --input gsm8k-train/ --error-rate 0.2 --marker back --error-types arithmetic,operand -o sft/
  forge journey --input igsm/ --error-rate 0.5 --detect-after 2 -o sft-late/
  forge journey --input igsm/ --strategy verify --verify-share 0.4 -o sft-verify/
  forge journey --input igsm/ --error-rate 0 -o sft-clean/          # clean solutions, same format
  forge journey --input traces/ --strategy splice -o sft-splice/     # traces of `forge generate -n 4`
  forge journey --input traces/ --strategy teacher --teacher local:teacher/ --continuations 4 -o sft-teacher/"
    )]
    Journey {
        #[command(flatten)]
        config: forge::journey::JourneyConfig,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Fine-tune a model on conversations (loss on assistant tokens), write a Hugging Face checkpoint
    #[command(
        name = "train-sft",
        long_about = "Fine-tune a Qwen2 / Llama checkpoint on conversations. Rows are `messages` (every assistant \
                      message is trained), `prompt`/`completion` (strings or message lists; the completion is \
                      trained), or a problems dataset with reference `steps` (the reference solution is \
                      trained, under `forge generate`'s instruction). `segments` with `train = false` are \
                      left out of the loss. Examples are packed into rows of `--max-length` tokens without \
                      attention across them; AdamW with warmup and cosine decay, gradient clipping and \
                      accumulation up to `--batch-tokens` per step.\n\n\
                      OUT receives the model (config, safetensors, tokenizer: transformers and vLLM load it), \
                      metrics.csv, loss.png and train-report.json; checkpoints/ holds periodic checkpoints \
                      while it runs, and a rerun of an interrupted command resumes from the last one.",
        after_help = "Examples:
  forge train-sft --model init/ --data sft/ -o student/ --epochs 3 --lr 3e-4 --batch-tokens 16384
  forge train-sft --model Qwen2.5-0.5B-Instruct/ --data curated/ --eval-data heldout/ -o ft/ --lr 1e-5 --max-length 4096
  forge train-sft --model init/ --data igsm/ -o teacher/ --max-steps 2000 --lr 1e-3 --schedule linear
  forge train-sft --model init/ --data sft/ -o student/ --resume     # continue an interrupted run"
    )]
    TrainSft {
        #[command(flatten)]
        config: forge::train::TrainConfig,
        #[command(flatten)]
        output: forge::train::TrainOutput,
    },
    /// Score a model on problems: generate, verify, report pass@1, pass@n, maj@n, length, truncation
    #[command(after_help = "Examples:
  forge eval --model student/ --problems igsm-test/                    # greedy, one sample
  forge eval --model student/ --problems igsm-test/ -n 8 --json | jq .accuracy
  forge eval --model r1-distill/ --problems math500/ -n 4 --temperature 0.6 --prefill '<think>\\n' --max-tokens 8192 -o eval-math500/")]
    Eval {
        #[command(flatten)]
        config: forge::eval::EvalConfig,
        /// Where the traces and eval-report.json go (default: `eval-<model>-<problems>`)
        #[arg(short, long, value_name = "DIR")]
        output: Option<PathBuf>,
        /// Print the report as one JSON object on stdout (with `accuracy` = pass@1)
        #[arg(long)]
        json: bool,
    },
    /// Fold a LoRA adapter (peft format, e.g. from `forge train-sft --lora-rank`) into its base model
    #[command(
        name = "merge-lora",
        after_help = "Examples:
  forge merge-lora --adapter student-lora/ -o student/               # base from adapter_config.json
  forge merge-lora --adapter my-peft-adapter/ --base Qwen2.5-0.5B-Instruct/ -o merged/"
    )]
    MergeLora {
        /// The adapter directory (`adapter_config.json`, `adapter_model.safetensors`)
        #[arg(long, value_name = "DIR")]
        adapter: PathBuf,
        /// The base checkpoint (default: `base_model_name_or_path` of the adapter)
        #[arg(long, value_name = "DIR")]
        base: Option<PathBuf>,
        /// Checkpoint directory to write
        #[arg(short, long, value_name = "DIR")]
        output: PathBuf,
    },
    /// Turn raw traces into training data: verify, decontaminate, deduplicate, select
    #[command(
        long_about = "Turn raw traces into training data. Each row is kept or rejected with a reason: \
                      contaminated (shares a word 8-gram with an evaluation item), truncated, repetition, \
                      language, bad_format, no_answer, too_short, too_long, no_consensus (no majority answer \
                      for a problem without gold), pass_rate, incorrect, duplicate_prompt, exact_duplicate, \
                      near_duplicate, max_per_problem. Kept rows land in OUT (a `curated` table for traces), \
                      rejected ones in OUT/rejected with `reject_reason` and `reject_detail`; \
                      OUT/filter-report.json counts them and lists the benchmark items hit.\n\n\
                      Settings come from flags or from `--config FILE.toml` with the same names (flags given \
                      win; `--show-config` prints them all).",
        after_help = "Examples:
  forge filter --input traces/ -o curated/
  forge filter --input traces/ -o curated/ --near-dup --decontaminate math500/ --max-per-problem 4 --pass-rate 0.1:0.9
  forge filter --input problems/ -o clean/ --decontaminate ../shared/data/gsm8k/test.jsonl --decontam-digits
  forge filter --input traces/ -o curated/ --config filter.toml

  # the same on many machines (map/reduce over shared storage; N = 4 here):
  forge filter --input traces/ -o curated/ --near-dup --step signatures --shard $I/4   # I = 0..3
  forge filter --input traces/ -o curated/ --near-dup --step buckets --shard $I/4      # I = 0..3
  forge filter --input traces/ -o curated/ --near-dup --step clusters                  # once
  forge filter --input traces/ -o curated/ --near-dup --step write --shard $I/4        # I = 0..3"
    )]
    Filter {
        #[command(flatten)]
        config: FilterConfig,
        /// TOML file with the settings (the names of the flags, `[minhash]`, `[decontam]` and `[verify]`
        /// tables for theirs); flags given on the command line override it
        #[arg(long = "config", value_name = "FILE")]
        config_file: Option<PathBuf>,
        /// Run one map/reduce step (for `--shard` over machines); without it, all four run here
        #[arg(long, value_enum)]
        step: Option<FilterStep>,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Run a pipeline: a declared chain of stages; stages whose settings and inputs are unchanged are skipped
    #[command(after_help = "Examples:
  forge run pipelines/quickstart.toml
  forge run pipelines/quickstart.toml --from student    # rerun from the stage named `student`
  forge run pipelines/quickstart.toml --dir /tmp/qs     # write the stages elsewhere")]
    Run {
        /// The pipeline file (TOML: `dir`, then `[[stage]]` tables with a `name` and one stage table)
        pipeline: PathBuf,
        /// Rerun from this stage on, even where outputs are up to date
        #[arg(long, value_name = "STAGE")]
        from: Option<String>,
        /// Write the stages here instead of the pipeline's `dir`
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Write a dataset in the layouts other trainers read: HF datasets, TRL messages, ShareGPT, JSONL
    #[command(after_help = "Examples:
  forge export sft/ --format hf -o my-dataset/                       # data/train-*.parquet + README.md card
  forge export curated/ --format messages --reasoning think -o trl/   # TRL SFTTrainer, <think> reasoning
  forge export curated/ --format sharegpt --reasoning thought -o lf/  # LLaMA-Factory (dataset_info.json)
  forge export sft/ --format jsonl --reasoning none -o jsonl/")]
    Export {
        #[command(flatten)]
        config: forge::export::ExportConfig,
        /// Directory to write
        #[arg(short, long, value_name = "DIR")]
        output: PathBuf,
    },
    /// Summarise a dataset: rows, and per column nulls, lengths and top values
    #[command(after_help = "Examples:
  forge stats problems/
  forge stats problems/ --json | jq '.columns[] | {name, nulls}'
  forge stats ../shared/data/gsm8k/test.jsonl")]
    Stats {
        /// A dataset directory, Parquet file or JSONL file
        dataset: PathBuf,
        /// Print JSON instead of a table
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cli: Cli, matches: &clap::ArgMatches) -> anyhow::Result<ExitCode> {
    let ctx = Context { command: std::env::args().collect(), quiet: cli.quiet };
    let mut cli = cli;
    if let Command::Filter { config, config_file: Some(file), .. } = &mut cli.command {
        let sub = matches.subcommand_matches("filter").expect("the filter subcommand");
        let given: Vec<String> = sub
            .ids()
            .filter(|id| sub.value_source(id.as_str()) == Some(clap::parser::ValueSource::CommandLine))
            .map(|id| id.to_string())
            .collect();
        *config = forge::config::load(file, config, &given)?;
    }
    if cli.show_config {
        let config = match &cli.command {
            Command::Import { config, output } => serde_json::json!({ "import": config, "output": output }),
            Command::Synth { config, output } => serde_json::json!({ "synth": config, "output": output }),
            Command::Verify { config } => serde_json::json!({ "verify": config }),
            Command::Filter { config, output, .. } => serde_json::json!({ "filter": config, "output": output }),
            Command::Generate { config, output } => serde_json::json!({ "generate": config, "output": output }),
            Command::TrainSft { config, output } => serde_json::json!({ "train_sft": config, "output": output }),
            Command::Journey { config, output } => serde_json::json!({ "journey": config, "output": output }),
            Command::Eval { config, output, .. } => serde_json::json!({ "eval": config, "output": output }),
            Command::MergeLora { adapter, base, output } => {
                serde_json::json!({ "merge_lora": { "adapter": adapter, "base": base, "output": output } })
            }
            Command::InitModel { config, output } => serde_json::json!({ "init_model": config, "output": output }),
            Command::Stats { dataset, json } => serde_json::json!({ "stats": { "dataset": dataset, "json": json } }),
            Command::Run { pipeline, from, dir } => {
                serde_json::json!({ "run": { "pipeline": pipeline, "from": from, "dir": dir } })
            }
            Command::Export { config, output } => serde_json::json!({ "export": config, "output": output }),
        };
        let text = serde_json::to_string_pretty(&config)? + "\n";
        std::io::stdout().write_all(text.as_bytes()).context("writing to stdout")?;
        return Ok(ExitCode::SUCCESS);
    }
    match cli.command {
        Command::Import { config, output } => {
            let outcome = forge::import::run(&config, &output, &ctx)?;
            summarise(&outcome, &output, &ctx);
        }
        Command::Synth { config, output } => {
            let outcome = forge::synth::run(&config, &output, &ctx)?;
            summarise(&outcome, &output, &ctx);
        }
        Command::Verify { config } => {
            if let (Some(gold), Some(pred)) = (&config.gold, &config.pred) {
                let mut verdict = forge::verify::verify_answer(gold, pred, &config.settings);
                if let Some(prompt) = &config.prompt {
                    forge::verify::check_language(&mut verdict, prompt, pred, &config.settings);
                }
                let text = serde_json::to_string_pretty(&verdict)? + "\n";
                std::io::stdout().write_all(text.as_bytes()).context("writing to stdout")?;
                return Ok(if verdict.correct { ExitCode::SUCCESS } else { ExitCode::from(1) });
            }
            let report = forge::verify::run(&config, &ctx)?;
            if !ctx.quiet {
                eprintln!("{report}");
            }
        }
        Command::InitModel { config, output } => {
            let params = forge::model::tiny::init(&config, &output)?;
            if !ctx.quiet {
                eprintln!("wrote a {:?} model of {params} parameters to `{}`", config.family, output.display());
            }
        }
        Command::Generate { config, output } => {
            let outcome = forge::generate::run(&config, &output, &ctx)?;
            summarise(&outcome, &output, &ctx);
        }
        Command::Journey { config, output } => {
            let outcome = forge::journey::run(&config, &output, &ctx)?;
            summarise(&outcome, &output, &ctx);
        }
        Command::TrainSft { config, output } => {
            let (report, ran) = forge::train::run(&config, &output, &ctx)?;
            if !ctx.quiet {
                let dir = output.output.display();
                if !ran {
                    eprintln!("`{dir}` already holds this finished run; nothing to do");
                }
                let eval = report.final_eval_loss.map(|e| format!(", eval loss {e:.4}")).unwrap_or_default();
                eprintln!(
                    "{} steps over {} examples ({} dropped), {} tokens ({} trained): loss {:.4}{eval}; {:.0} tokens/s\nwrote the model to `{dir}`",
                    report.steps,
                    report.examples,
                    report.dropped,
                    report.tokens,
                    report.trained_tokens,
                    report.final_loss,
                    report.tokens_per_second
                );
            }
        }
        Command::MergeLora { adapter, base, output } => {
            forge::model::lora::merge_dir(&adapter, base.as_deref(), &output)?;
            if !ctx.quiet {
                eprintln!("wrote the merged model to `{}`", output.display());
            }
        }
        Command::Eval { config, output, json } => {
            let (report, _) =
                forge::eval::run(&config, output.as_deref(), &Context { quiet: ctx.quiet || json, ..ctx })?;
            let text = if json { serde_json::to_string(&report)? + "\n" } else { report.table() };
            std::io::stdout().write_all(text.as_bytes()).context("writing to stdout")?;
        }
        Command::Filter { config, step, output, .. } => {
            if let Some(outcome) = forge::filter::run(&config, &output, step, &ctx)? {
                summarise(&outcome, &output, &ctx);
            }
        }
        Command::Export { config, output } => {
            let rows = forge::export::run(&config, &output)?;
            if !ctx.quiet {
                eprintln!("wrote {rows} rows as {:?} to `{}`", config.format, output.display());
            }
        }
        Command::Run { pipeline, from, dir } => {
            let spec = forge::pipeline::load(&pipeline, dir.as_deref())?;
            let summaries = forge::pipeline::run(&spec, from.as_deref(), &ctx)?;
            if !ctx.quiet {
                eprintln!("\n{}", forge::pipeline::table(&summaries));
            }
        }
        Command::Stats { dataset, json } => {
            let stats = forge::stats::run(&dataset, ctx.quiet)?;
            let text = if json { serde_json::to_string_pretty(&stats)? + "\n" } else { stats.table() };
            std::io::stdout().write_all(text.as_bytes()).context("writing to stdout")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn summarise(outcome: &Outcome, output: &OutputArgs, ctx: &Context) {
    if ctx.quiet {
        return;
    }
    let m = outcome.manifest();
    match outcome {
        Outcome::UpToDate(_) => {
            eprintln!("`{}` is up to date ({} rows); nothing to do", output.output.display(), m.rows)
        }
        Outcome::Written(_) => eprintln!(
            "{}\nwrote {} rows in {} file(s) to `{}`",
            m.report,
            m.rows,
            m.files.len(),
            output.output.display()
        ),
    }
}
