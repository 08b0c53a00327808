//! `forge merge-lora`: a LoRA adapter (peft format) folded into its base model, written as a plain
//! checkpoint ([`crate::model::lora`] does the folding).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::Context;
use crate::error::Result;
use crate::stage::{DirTarget, Done, Stage};

/// `forge merge-lora` settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct MergeConfig {
    /// The adapter directory (`adapter_config.json`, `adapter_model.safetensors`)
    #[arg(long, value_name = "DIR")]
    pub adapter: PathBuf,
    /// The base checkpoint (default: `base_model_name_or_path` of the adapter)
    #[arg(long, value_name = "DIR")]
    pub base: Option<PathBuf>,
}

/// `forge merge-lora`.
pub struct MergeLora;

impl Stage for MergeLora {
    const NAME: &'static str = "merge-lora";
    const ABOUT: &'static str =
        "Fold a LoRA adapter (peft format, e.g. from `forge train-sft --lora-rank`) into its base model";
    const EXAMPLES: &'static str =
        "  forge merge-lora --adapter student-lora/ -o student/               # base from adapter_config.json
  forge merge-lora --adapter my-peft-adapter/ --base Qwen2.5-0.5B-Instruct/ -o merged/";
    type Config = MergeConfig;
    type Target = DirTarget;

    fn run(cfg: &MergeConfig, out: &DirTarget, _: &Context) -> Result<Done> {
        crate::model::lora::merge_dir(&cfg.adapter, cfg.base.as_deref(), &out.output)?;
        Ok(Done { summary: format!("wrote the merged model to `{}`", out.output.display()), ..Done::default() })
    }
}
