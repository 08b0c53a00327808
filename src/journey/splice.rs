//! Splices of sampled traces (O1 Replication Journey, part 1, without the tree): for a problem whose
//! teacher samples include a wrong and a right one, the wrong sample up to its first failing step, a
//! transition that says what failed, then the right sample.
//!
//! The failing step is located by the step checker: the first line with a calculation (`(4 + 5) % 7 = 3`,
//! `12 * 3 = 36`) that does not evaluate to the result written. A wrong sample whose calculations all
//! check out (a wrong plan, a misread problem) is kept whole up to its final answer, and the transition
//! says that the answer does not check out: the verifier rejected it.

use serde::Serialize;

use super::{JourneyConfig, Kind, Reject, Seg, judge, sft_row};
use crate::dataset::{Calc, SftRow, Trace};
use crate::error::Result;
use crate::rng::Rng;
use crate::verify::checks;

/// Where the wrong sample was cut.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Cut {
    /// `step` (a calculation that does not check out) or `answer` (a wrong final answer).
    pub located: &'static str,
    /// The failing line (0-based) for `step`.
    pub line: Option<usize>,
    /// The failing calculation (`3 + 4 = 8`), or the wrong final answer.
    pub written: String,
    /// The calculation redone (`3 + 4 = 7`), for `step`.
    pub expected: Option<String>,
}

/// The calculations written in `line`: each `expr = number` whose left side is an arithmetic expression
/// with an operator (`c = a + b = (2 + 4) % 7 = 6` holds one, `(2 + 4) % 7` = `6`; a chain
/// `3 + 4 = 7 * 2 = 14` holds two).
pub fn calculations(line: &str) -> Vec<Calc> {
    let parts: Vec<&str> = line.split('=').collect();
    let arithmetic = |c: char| c.is_ascii_digit() || " +-*/%().".contains(c);
    let mut out = Vec::new();
    for pair in parts.windows(2) {
        let lhs = pair[0];
        let start = lhs.char_indices().rev().take_while(|&(_, c)| arithmetic(c)).last().map_or(lhs.len(), |(i, _)| i);
        let expr = lhs[start..].trim().trim_start_matches(['.', ' ']);
        let result: String = pair[1].trim_start().chars().take_while(|c| c.is_ascii_digit() || *c == '-').collect();
        let has_operator = expr.trim_start_matches('-').contains(['+', '-', '*', '/', '%']);
        if has_operator && expr.chars().any(|c| c.is_ascii_digit()) && result.parse::<i128>().is_ok() {
            out.push(Calc { expr: expr.to_string(), result });
        }
    }
    out
}

/// Does every calculation written in `text` check out? (what a fix must pass: a right answer reached
/// through wrong arithmetic is not a correction)
pub fn checks_out(text: &str) -> bool {
    text.lines().all(|line| calculations(line).iter().all(checks::calc))
}

/// The first line of `text` with a calculation that does not check out, and that calculation with its
/// right result.
fn first_failing(text: &str) -> Option<(usize, Calc, String)> {
    text.lines().enumerate().find_map(|(i, line)| {
        calculations(line).into_iter().find(|c| !checks::calc(c)).and_then(|c| {
            let right = crate::expr::parse(&c.expr).ok()?.eval().ok()?.as_int()?;
            Some((i, c, right.to_string()))
        })
    })
}

/// Transitions after a located failing calculation.
const STEP: [&str; 3] = [
    "Wait, {expr} is {right}, not {wrong}. This went wrong; let me start over.",
    "Hmm, {expr} = {wrong} is wrong: it is {right}. Let me redo the solution from the beginning.",
    "Wait, that step is off: {expr} = {right}. Let me solve it again.",
];
/// Transitions after a wrong final answer whose steps all check out.
const ANSWER: [&str; 3] = [
    "Wait, {answer} does not check out. Let me solve it again, more carefully.",
    "Hmm, I am not confident in {answer}. Let me rework the problem from the start.",
    "Wait, let me re-read the problem: {answer} is not right. Starting over.",
];

/// The reasoning of a sample: what is inside the thinking delimiters, or the whole completion.
fn body(t: &Trace) -> &str {
    t.reasoning.as_deref().unwrap_or(&t.completion)
}

/// The segments of a splice of `wrong` into `right` (both samples of one problem; `wrong` rejected by the
/// verifier with its answer `wrong_answer`, `right` accepted), or `None` when the wrong sample has nothing
/// to keep before its failure.
pub fn build(
    wrong: &Trace,
    wrong_answer: &str,
    right: &Trace,
    mask_errors: bool,
    rng: &mut Rng,
) -> Option<(Vec<Seg>, Cut)> {
    let (kept, detect, cut) = cut(wrong, wrong_answer, rng)?;
    let open = if right.reasoning.is_some() { "<think>\n" } else { "" };
    let mut segs = vec![
        Seg { kind: Kind::Error, text: format!("{open}{kept}"), train: !mask_errors },
        Seg { kind: Kind::Detect, text: detect, train: true },
    ];
    match &right.reasoning {
        Some(reasoning) => {
            segs.push(Seg { kind: Kind::Fix, text: format!("{}\n</think>", reasoning.trim()), train: true });
            segs.push(Seg { kind: Kind::Final, text: right.solution.trim().to_string(), train: true });
        }
        None => segs.push(Seg { kind: Kind::Fix, text: right.completion.trim().to_string(), train: true }),
    }
    Some((segs, cut))
}

/// The wrong sample's reasoning up to its failure (trailing whitespace trimmed), a transition that states
/// what failed, and where it was cut; `None` when nothing comes before the failure.
pub fn cut(wrong: &Trace, wrong_answer: &str, rng: &mut Rng) -> Option<(String, String, Cut)> {
    let text = body(wrong);
    let lines: Vec<&str> = text.lines().collect();
    let (kept, detect, cut) = match first_failing(text) {
        Some((i, calc, right_result)) => {
            let detect = rng
                .pick(&STEP)
                .replace("{expr}", &calc.expr)
                .replace("{right}", &right_result)
                .replace("{wrong}", &calc.result);
            let cut = Cut {
                located: "step",
                line: Some(i),
                written: format!("{} = {}", calc.expr, calc.result),
                expected: Some(format!("{} = {right_result}", calc.expr)),
            };
            (lines[..=i].join("\n"), detect, cut)
        }
        None => {
            // up to the line that states the final answer, which the transition then rejects
            let last = lines.iter().rposition(|l| l.contains(wrong_answer)).unwrap_or(lines.len());
            let detect = rng.pick(&ANSWER).replace("{answer}", wrong_answer);
            let cut = Cut { located: "answer", line: None, written: wrong_answer.to_string(), expected: None };
            (lines[..last].join("\n"), detect, cut)
        }
    };
    if kept.trim().is_empty() {
        return None;
    }
    Some((kept.trim_end().to_string(), detect, cut))
}

/// The splice row of one problem's samples, or the reason there is none.
pub(super) fn row(cfg: &JourneyConfig, samples: &[Trace], index: u64) -> Result<std::result::Result<SftRow, Reject>> {
    let (wrong, right) = judge(samples)?;
    Ok(splice(cfg, &wrong, &right, index))
}

fn splice(
    cfg: &JourneyConfig,
    wrong: &[(&Trace, String)],
    right: &[&Trace],
    index: u64,
) -> std::result::Result<SftRow, Reject> {
    if right.is_empty() {
        return Err(Reject::NoRight);
    }
    if wrong.is_empty() {
        return Err(Reject::NoWrong);
    }
    let mut rng = Rng::for_row(cfg.seed, "splice", index);
    let (w, answer) = rng.pick(wrong);
    let r = *rng.pick(right);
    let (segs, cut) = build(w, answer, r, cfg.mask_errors, &mut rng).ok_or(Reject::NothingBefore)?;
    let metadata = serde_json::json!({
        "strategy": cfg.strategy,
        "journey": true,
        "mask_errors": cfg.mask_errors,
        "wrong_sample": w.sample_index,
        "right_sample": r.sample_index,
        "teacher": r.teacher,
        "cut": cut,
        "checks": { "errors_rejected": true, "fixes_accepted": true, "final_verified": true },
    });
    let id = format!("{}-splice", r.problem_id);
    sft_row(&id, &r.problem_id, &r.source, &r.domain, &r.prompt, r.gold.as_deref(), &r.metadata, &segs, metadata)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calculations_are_found_in_igsm_arith_and_chained_steps() {
        let c = |l: &str| calculations(l).into_iter().map(|c| (c.expr, c.result)).collect::<Vec<_>>();
        let s = |a: &str, b: &str| (a.to_string(), b.to_string());
        assert_eq!(c("Define c as Q. c = a + b = (2 + 4) % 7 = 6."), vec![s("(2 + 4) % 7", "6")]);
        assert_eq!(c("3 + 4 = 7 * 2 = 14"), vec![s("3 + 4", "7"), s("7 * 2", "14")]);
        assert_eq!(c("First, 12 * 3 = 36."), vec![s("12 * 3", "36")]);
        assert_eq!(c("So 5 - 9 = -4, then"), vec![s("5 - 9", "-4")]);
        assert!(c("Define a as M. a = 1.").is_empty());
        assert!(c("x = 5").is_empty());
        assert!(checks_out("3 + 4 = 7\nso 7 * 2 = 14"));
        assert!(!checks_out("3 + 4 = 7\nThe answer * 8 = 48"), "an operator without an operand is not a calculation");
        assert_eq!(first_failing("a = 1\n2 + 2 = 4\n3 * 3 = 10\n1 + 1 = 3").map(|f| (f.0, f.2)), Some((2, "9".into())));
    }
}
