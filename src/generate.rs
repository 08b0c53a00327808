//! `forge generate`: a problems dataset in, a traces dataset out: for each problem, `n` chain-of-thought
//! samples from a teacher, one row per sample ([`crate::teacher::traces`] does the sampling and writing).
//! The teacher is a local checkpoint or an OpenAI-compatible server ([`crate::teacher::openai`]). Beam
//! search ([`crate::teacher::beam`]), thinking budgets ([`crate::teacher::budget`]) and adaptive sampling
//! ([`crate::teacher::adaptive`]) are settings of the same command.
//!
//! ```text
//! forge generate --teacher local:ckpt/ --problems problems/ -n 4 --temperature 0.7 -o traces/
//! forge generate --teacher openai:http://127.0.0.1:8000/v1 --problems problems/ -n 4 -o traces/
//! ```

use crate::error::Result;
pub use crate::teacher::traces::GenerateConfig;
use crate::{Context, OutputArgs};

/// `forge generate`.
pub struct Generate;

impl crate::stage::Stage for Generate {
    const NAME: &'static str = "generate";
    const ABOUT: &'static str = "Sample chain-of-thought solutions of problems from a teacher model";
    const EXAMPLES: &'static str = "  forge generate --teacher local:ckpt/ --problems problems/ -n 4 --temperature 0.7 -o traces/
  forge generate --teacher local:ckpt/ --problems problems/ -n 4 --temperature 0.7 --top-p 0.95 --max-tokens 1024 --seed 1 -o traces/
  forge generate --teacher local:r1-distill/ --problems math500/ --prefill '<think>\\n' --temperature 0.6 -o traces/
  forge generate --teacher local:ckpt/ --problems problems/ --prompt-template '{prompt}' --system 'You are a careful solver.' -o traces/
  forge generate --teacher openai:http://127.0.0.1:8000/v1 --model NAME --problems problems/ -n 4 --temperature 0.6 --concurrency 256 -o traces/
  forge generate --teacher openai:http://gpu1:8000/v1,http://gpu2:8000/v1 --problems problems/ -n 8 --journal /data/journal -o traces/
  forge generate --teacher local:ckpt/ --problems problems/ --beams 4 -n 2 -o traces/          # the 2 best of 4 beams
  forge generate --teacher local:r1-distill/ --problems math500/ --prefill '<think>\\n' --max-thinking-tokens 4096 --min-thinking-tokens 1024 -o traces/
  forge generate --teacher local:ckpt/ --problems problems/ -n 16 --until-correct 2 --pass-rate 0.1:0.9 -o traces/   # adaptive";
    type Config = GenerateConfig;
    type Target = OutputArgs;

    fn run(cfg: &GenerateConfig, out: &OutputArgs, ctx: &Context) -> Result<crate::stage::Done> {
        Ok(crate::stage::Done::dataset(&crate::teacher::traces::write_traces(cfg, out, ctx)?, &out.output))
    }
}
