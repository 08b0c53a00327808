//! What a problem looks like to a model: the instruction each domain's problems are put under (the same
//! for the teacher in `generate`, the student in `train-sft` and the model in `eval`), and the answer line
//! a reference solution ends with.

use super::domain::Domain;

/// The instruction each domain's problems get unless `--prompt-template` says otherwise.
pub fn default_template(domain: Domain) -> &'static str {
    match domain {
        Domain::Countdown => {
            "{prompt}\n\nThink step by step, then give the final expression (each number used once) as \\boxed{expression}."
        }
        Domain::Code => {
            "{prompt}\n\nThink step by step, then write the complete Python solution in one ```python block."
        }
        Domain::Math => "{prompt}\n\nPlease reason step by step, and put your final answer within \\boxed{}.",
    }
}

/// `prompt` under its domain's instruction: the user message a model sees.
pub fn instruction(domain: Domain, prompt: &str) -> String {
    default_template(domain).replace("{prompt}", prompt)
}

/// The last line of a solution: the final answer in `\boxed{}` (Countdown: the expression).
/// `None` without one (no gold; a Countdown problem without `solution` in its metadata).
pub fn answer_line(domain: Domain, gold: Option<&str>, metadata: &str) -> Option<String> {
    let answer = if domain == Domain::Countdown {
        let meta: serde_json::Value = serde_json::from_str(metadata).ok()?;
        meta["solution"].as_str()?.to_string()
    } else {
        gold?.to_string()
    };
    Some(format!("The answer is \\boxed{{{answer}}}."))
}
