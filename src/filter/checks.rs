//! The row checks of `forge filter`, as a list of components, each with its reason code (the checks over
//! groups of rows, consensus, pass rate and duplicates, run in the clusters step). The signatures step runs
//! the list over every row; a row that fails several checks is rejected for the first in reason order.

use super::decontam::Hit;
use super::{FilterConfig, Reason};
use crate::verify::{Failure, Verdict};

/// What the row checks see of one row.
pub struct RowView<'a> {
    /// The benchmark item the prompt or completion overlaps, with where it lives: (benchmark, item, field).
    pub contamination: Option<(Overlap<'a>, &'a str, &'a str, &'a str)>,
    /// The verifier's verdict on a trace's completion.
    pub verdict: Option<&'a Verdict>,
    /// Characters of the row's text (the completion of a trace, the prompt of a problem).
    pub chars: u64,
    /// Generated tokens, where the table records them.
    pub tokens: Option<u64>,
    /// Why the teacher gave no sample, for a trace whose request failed past its retries
    /// (`finish_reason = "error"`).
    pub teacher_error: Option<&'a str>,
}

/// How a row overlaps a benchmark item.
#[derive(Debug, Clone, Copy)]
pub enum Overlap<'a> {
    /// Shared word n-grams (`--decontaminate`).
    Ngrams(&'a Hit),
    /// A sentence embedding this close (`--semantic-decontaminate`), and the judge's answer (`--judge`).
    Similar(f32, Option<&'a str>),
}

/// One row check.
#[derive(Debug, Clone, Copy)]
pub enum RowCheck {
    /// The prompt or completion overlaps a benchmark item (`--decontaminate`).
    Contaminated,
    /// The teacher's request failed past its retries: there is no sample (an HTTP teacher's error row).
    TeacherError,
    /// One of the verifier's checks failed: truncated, repetition loop, wrong language, bad format, no answer
    /// (a wrong answer is not a row check: the pass rate counts it first).
    Verdict(Reason, fn(&Verdict) -> bool),
    /// Fewer characters than `--min-chars`.
    MinChars(u64),
    /// More characters than `--max-chars`.
    MaxChars(u64),
    /// More generated tokens than `--max-tokens`.
    MaxTokens(u64),
}

impl RowCheck {
    /// The checks `cfg` asks for, in reason order.
    pub fn list(cfg: &FilterConfig) -> Vec<RowCheck> {
        let mut checks = vec![RowCheck::Contaminated, RowCheck::TeacherError];
        if !cfg.no_verify {
            checks.extend([
                RowCheck::Verdict(Reason::Truncated, |v| v.truncated),
                RowCheck::Verdict(Reason::Repetition, |v| v.repetition),
                RowCheck::Verdict(Reason::Language, |v| v.language_ok == Some(false)),
                RowCheck::Verdict(Reason::BadFormat, |v| v.failed.contains(&Failure::BadDelimiters)),
                RowCheck::Verdict(Reason::NoAnswer, |v| v.failed.contains(&Failure::NoAnswer)),
            ]);
        }
        checks.extend(cfg.min_chars.map(RowCheck::MinChars));
        checks.extend(cfg.max_chars.map(RowCheck::MaxChars));
        checks.extend(cfg.max_tokens.map(RowCheck::MaxTokens));
        checks
    }

    pub fn reason(self) -> Reason {
        match self {
            RowCheck::Contaminated => Reason::Contaminated,
            RowCheck::TeacherError => Reason::TeacherError,
            RowCheck::Verdict(reason, _) => reason,
            RowCheck::MinChars(_) => Reason::TooShort,
            RowCheck::MaxChars(_) | RowCheck::MaxTokens(_) => Reason::TooLong,
        }
    }

    /// The rejection's detail when `row` fails the check.
    pub fn run(self, row: &RowView) -> Option<String> {
        match self {
            RowCheck::Contaminated => row.contamination.map(|(overlap, benchmark, item, field)| {
                let detail = match overlap {
                    Overlap::Ngrams(hit) => serde_json::json!({
                        "benchmark": benchmark, "item": item, "field": field,
                        "shared_ngrams": hit.shared, "containment": (hit.containment * 1e4).round() / 1e4,
                    }),
                    Overlap::Similar(cosine, judge) => {
                        let mut detail = serde_json::json!({
                            "benchmark": benchmark, "item": item, "field": field,
                            "similarity": (f64::from(cosine) * 1e4).round() / 1e4,
                        });
                        if let Some(answer) = judge {
                            detail["judge"] = answer.into();
                        }
                        detail
                    }
                };
                detail.to_string()
            }),
            RowCheck::TeacherError => row.teacher_error.map(str::to_string),
            RowCheck::Verdict(_, failed) => row
                .verdict
                .filter(|v| failed(v))
                .map(|v| v.failed.iter().map(|f| f.name()).collect::<Vec<_>>().join(",")),
            RowCheck::MinChars(n) => (row.chars < n).then(|| format!("{} characters", row.chars)),
            RowCheck::MaxChars(n) => (row.chars > n).then(|| format!("{} characters", row.chars)),
            RowCheck::MaxTokens(n) => row.tokens.filter(|t| *t > n).map(|t| format!("{t} tokens")),
        }
    }
}

/// The first check `row` fails, in the order of `checks`, and its detail.
pub fn first_failure(checks: &[RowCheck], row: &RowView) -> Option<(Reason, String)> {
    checks.iter().find_map(|c| c.run(row).map(|detail| (c.reason(), detail)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::{VerifySettings, verify_answer};

    #[test]
    fn the_first_failed_check_in_reason_order_rejects() {
        let cfg: FilterConfig = toml::from_str("input = \"x\"\nmin_chars = 10\nmax_tokens = 5").unwrap();
        let checks = RowCheck::list(&cfg);
        let reasons: Vec<Reason> = checks.iter().map(|c| c.reason()).collect();
        assert!(reasons.is_sorted(), "{reasons:?}");
        let cut = verify_answer("4", "<think>never closed", &VerifySettings::default());
        let row = |verdict, chars, tokens| RowView { contamination: None, verdict, chars, tokens, teacher_error: None };
        // Truncated (and with no answer) and too short: truncated comes first, with every failed check named.
        let (reason, detail) = first_failure(&checks, &row(Some(&cut), 3, None)).unwrap();
        assert_eq!((reason, detail.as_str()), (Reason::Truncated, "unclosed_reasoning,no_answer"));
        assert_eq!(first_failure(&checks, &row(None, 3, Some(9))).unwrap().0, Reason::TooShort);
        assert_eq!(first_failure(&checks, &row(None, 30, Some(9))), Some((Reason::TooLong, "9 tokens".into())));
        assert_eq!(first_failure(&checks, &row(None, 30, Some(5))), None);
        let no_verify = RowCheck::list(&toml::from_str("input = \"x\"\nno_verify = true").unwrap());
        assert_eq!(first_failure(&no_verify, &row(Some(&cut), 3, None)), None);
    }
}
