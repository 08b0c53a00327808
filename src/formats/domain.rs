//! What kind of problem a row holds: it decides the instruction the problem is put under, its reference
//! answer's last line, and which verifier judges an output. Tables keep it as the string column `domain`
//! (other tools read it); forge reads it into [`Domain`] at the edge.

use serde::{Deserialize, Serialize};

/// How an answer is judged (the problems table's `domain`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Domain {
    /// A final answer compared with the gold one (numbers, expressions, sets, text)
    #[default]
    Math,
    /// A program, run against the problem's tests in a sandbox
    Code,
    /// An expression over given numbers that must reach a target, each number used once
    Countdown,
}

impl Domain {
    /// The domain's name, as the `domain` column spells it.
    pub fn name(self) -> &'static str {
        match self {
            Domain::Math => "math",
            Domain::Code => "code",
            Domain::Countdown => "countdown",
        }
    }

    /// The domain a `domain` column names. A value forge does not know (or none) is judged as math, the
    /// domain of every answer-with-gold dataset, which is what the column's writers other than forge mean.
    pub fn of(column: &str) -> Domain {
        match column {
            "code" => Domain::Code,
            "countdown" => Domain::Countdown,
            _ => Domain::Math,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_read_back_and_unknown_domains_are_math() {
        for d in [Domain::Math, Domain::Code, Domain::Countdown] {
            assert_eq!(Domain::of(d.name()), d);
            assert_eq!(serde_json::to_value(d).unwrap(), d.name());
        }
        assert_eq!(Domain::of("gsm8k"), Domain::Math);
    }
}
