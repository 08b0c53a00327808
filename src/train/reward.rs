//! Rewards for RL, read off a verifier's verdict: a weighted sum of signals
//! (`--reward accuracy=1,format=0.2,language=0.1`). Each signal is a number per completion:
//!
//! | signal | value |
//! |---|---|
//! | `accuracy` | 1 when the answer is right (code: every test passes), else 0 |
//! | `format` | 1 when an answer is present and the `<think>` delimiters are balanced and in order, else 0 |
//! | `language` | 1 − the share of the reasoning's letters in a script foreign to the prompt (R1's consistency reward) |
//! | `repetition` | −1 when an n-gram repeats back to back past the verifier's limit, else 0 |
//! | `truncation` | −1 when the completion was cut at `--max-tokens` (or its reasoning never closed), else 0 |
//! | `length` | −(completion tokens / `--max-tokens`) |

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::verify::Verdict;

/// One signal a reward is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// 1 when the answer is right.
    Accuracy,
    /// 1 when the answer and the reasoning delimiters are well formed.
    Format,
    /// 1 minus the reasoning's share of letters in a foreign script.
    Language,
    /// -1 when the text repeats itself.
    Repetition,
    /// -1 when the sample was cut at its limit.
    Truncation,
    /// Minus the sample's share of its token budget.
    Length,
}

impl Signal {
    /// Every signal.
    pub const ALL: [Signal; 6] =
        [Signal::Accuracy, Signal::Format, Signal::Language, Signal::Repetition, Signal::Truncation, Signal::Length];

    /// The signal's name, as `--reward` spells it.
    pub fn name(self) -> &'static str {
        match self {
            Signal::Accuracy => "accuracy",
            Signal::Format => "format",
            Signal::Language => "language",
            Signal::Repetition => "repetition",
            Signal::Truncation => "truncation",
            Signal::Length => "length",
        }
    }

    /// The signal's value for a completion of `tokens` tokens (of at most `max_tokens`) judged `verdict`.
    pub fn value(self, verdict: &Verdict, tokens: usize, max_tokens: usize) -> f64 {
        let flag = |b: bool| if b { 1.0 } else { 0.0 };
        match self {
            Signal::Accuracy => flag(verdict.correct),
            Signal::Format => flag(verdict.format_ok),
            Signal::Language => 1.0 - verdict.foreign_script_share.unwrap_or(0.0),
            Signal::Repetition => -flag(verdict.repetition),
            Signal::Truncation => -flag(verdict.truncated),
            Signal::Length => -(tokens as f64) / max_tokens.max(1) as f64,
        }
    }
}

/// Signals with their weights, as `--reward` spells them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Rewards(pub Vec<(Signal, f64)>);

impl Rewards {
    /// Each signal's value for one completion, in the order of the list.
    pub fn values(&self, verdict: &Verdict, tokens: usize, max_tokens: usize) -> Vec<f64> {
        self.0.iter().map(|(s, _)| s.value(verdict, tokens, max_tokens)).collect()
    }

    /// The weighted sum of `values`.
    pub fn total(&self, values: &[f64]) -> f64 {
        self.0.iter().zip(values).map(|((_, w), v)| w * v).sum()
    }
}

impl FromStr for Rewards {
    type Err = String;

    fn from_str(s: &str) -> Result<Rewards, String> {
        let mut out: Vec<(Signal, f64)> = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, weight) = part.split_once('=').unwrap_or((part, "1"));
            let signal = Signal::ALL.into_iter().find(|s| s.name() == name.trim()).ok_or_else(|| {
                let names: Vec<&str> = Signal::ALL.iter().map(|s| s.name()).collect();
                format!("unknown reward `{name}` (known: {})", names.join(", "))
            })?;
            let weight: f64 = weight.trim().parse().map_err(|_| format!("`{part}`: the weight is not a number"))?;
            if out.iter().any(|(s, _)| *s == signal) {
                return Err(format!("reward `{name}` is given twice"));
            }
            out.push((signal, weight));
        }
        if out.is_empty() {
            return Err("no reward given (e.g. `accuracy=1,format=0.2`)".into());
        }
        Ok(Rewards(out))
    }
}

impl TryFrom<String> for Rewards {
    type Error = String;
    fn try_from(s: String) -> Result<Rewards, String> {
        s.parse()
    }
}

impl From<Rewards> for String {
    fn from(r: Rewards) -> String {
        r.to_string()
    }
}

impl fmt::Display for Rewards {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(|(s, w)| format!("{}={w}", s.name())).collect();
        write!(f, "{}", parts.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The spelling reads back as written; unknown signals, repeats and bad weights are refused by name.
    #[test]
    fn reward_lists_parse_and_print() {
        let r: Rewards = "accuracy=1, format=0.2,language".parse().unwrap();
        assert_eq!(r.0, vec![(Signal::Accuracy, 1.0), (Signal::Format, 0.2), (Signal::Language, 1.0)]);
        assert_eq!(r.to_string(), "accuracy=1,format=0.2,language=1");
        assert!("acuracy=1".parse::<Rewards>().unwrap_err().contains("unknown reward `acuracy`"));
        assert!("format=1,format=2".parse::<Rewards>().unwrap_err().contains("twice"));
        assert!("format=x".parse::<Rewards>().unwrap_err().contains("not a number"));
        let mut v = crate::verify::verify_answer("4", "2 + 2 = 4. The answer is 4.", &Default::default());
        v.foreign_script_share = Some(0.25);
        let values = r.values(&v, 10, 100);
        assert_eq!(values, vec![1.0, 1.0, 0.75]);
        assert!((r.total(&values) - 1.95).abs() < 1e-12);
        assert_eq!(Signal::Length.value(&v, 10, 100), -0.1);
    }
}
