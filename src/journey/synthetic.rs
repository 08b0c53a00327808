//! Synthetic retries on checkable steps (Physics of Language Models 2.2; `../shared/notes/journey.md`):
//! at each reference step that carries a calculation, with probability `p`, a wrong version of the step
//! (an error of a chosen type), then a detection that states the checkable reason, then the correct step.
//! Correct steps may be followed by a verification that confirms them, so that "Wait" is not a sure sign
//! of an error.
//!
//! The checker is exact arithmetic over the step's calculation: a written step is accepted when its
//! expression evaluates to the result written and that result is the reference step's.

use serde::{Deserialize, Serialize};

use super::{Kind, Seg};
use crate::dataset::{Calc, Step};
use crate::expr::parse;
use crate::rng::Rng;

/// How a step goes wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum ErrorType {
    /// The right calculation, a wrong result (`12 + 11 = 24`).
    Arithmetic,
    /// Another number of the problem in place of one operand.
    Operand,
    /// Another operator (`+` for `*`).
    Operator,
    /// An operand with a digit changed (`14` read as `41` or `15`).
    Misread,
    /// A later quantity started before what it needs is computed (iGSM; Physics of LMs 2.2's retry error).
    Unavailable,
}

impl ErrorType {
    /// Every error type.
    pub const ALL: [ErrorType; 5] =
        [ErrorType::Arithmetic, ErrorType::Operand, ErrorType::Operator, ErrorType::Misread, ErrorType::Unavailable];

    /// The type's name, as `--error-types` and provenance spell it.
    pub fn name(self) -> &'static str {
        match self {
            ErrorType::Arithmetic => "arithmetic",
            ErrorType::Operand => "operand",
            ErrorType::Operator => "operator",
            ErrorType::Misread => "misread",
            ErrorType::Unavailable => "unavailable",
        }
    }
}

/// Does the checker accept `calc` as step `reference`'s calculation? The expression must evaluate to the
/// result written, and that must be the reference result.
pub fn accepts(calc: &Calc, reference: &Calc) -> bool {
    let value = parse(&calc.expr).and_then(|e| e.eval()).ok().and_then(crate::expr::Rational::as_int);
    value.is_some_and(|v| v.to_string() == calc.result) && calc.result == reference.result
}

/// A wrong calculation in place of `calc`, of type `kind`, using `numbers` (the problem's numbers) for
/// wrong operands; `None` when this step cannot go wrong that way.
pub fn corrupt(calc: &Calc, kind: ErrorType, numbers: &[i128], rng: &mut Rng) -> Option<Calc> {
    let tokens = split(&calc.expr);
    let operand_at: Vec<usize> =
        tokens.iter().enumerate().filter(|(_, t)| t.parse::<i128>().is_ok()).map(|(i, _)| i).collect();
    let wrong = match kind {
        ErrorType::Unavailable => return None, // not a change of the calculation: see `premature`
        ErrorType::Arithmetic => {
            let right: i128 = calc.result.parse().ok()?;
            let delta = [1i128, 2, 3, 10][rng.below(4) as usize] * if rng.chance(0.5) { 1 } else { -1 };
            let wrong = right + delta;
            if wrong < 0 {
                return None;
            }
            return Some(Calc { expr: calc.expr.clone(), result: wrong.to_string() });
        }
        ErrorType::Operand => {
            let &at = pick(&operand_at, rng)?;
            let current: i128 = tokens[at].parse().ok()?;
            let others: Vec<i128> = numbers.iter().copied().filter(|&n| n != current).collect();
            let &n = pick(&others, rng)?;
            replace(&tokens, at, &n.to_string())
        }
        ErrorType::Misread => {
            let &at = pick(&operand_at, rng)?;
            let current: i128 = tokens[at].parse().ok()?;
            let digits: Vec<char> = current.to_string().chars().collect();
            let read = if digits.len() >= 2 && digits[0] != digits[1] && rng.chance(0.5) {
                let mut d = digits.clone();
                d.swap(0, 1);
                d.into_iter().collect::<String>()
            } else {
                (current + if rng.chance(0.5) || current == 0 { 1 } else { -1 }).to_string()
            };
            replace(&tokens, at, &read)
        }
        ErrorType::Operator => {
            let ops: Vec<usize> = tokens
                .iter()
                .enumerate()
                .filter(|(_, t)| matches!(t.as_str(), "+" | "-" | "*"))
                .map(|(i, _)| i)
                .collect();
            let &at = pick(&ops, rng)?;
            let swap = match tokens[at].as_str() {
                "+" => ["-", "*"][rng.below(2) as usize],
                "-" => "+",
                _ => "+",
            };
            replace(&tokens, at, swap)
        }
    };
    let value = parse(&wrong).ok()?.eval().ok()?.as_int()?;
    let wrong = Calc { expr: wrong, result: value.to_string() };
    (wrong.result != calc.result && value >= 0).then_some(wrong)
}

fn pick<'a, T>(items: &'a [T], rng: &mut Rng) -> Option<&'a T> {
    (!items.is_empty()).then(|| rng.pick(items))
}

/// Numbers, operators and parentheses of an expression, in order.
fn split(expr: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for c in expr.chars() {
        if c.is_ascii_digit() && out.last().is_some_and(|t| t.chars().all(|d| d.is_ascii_digit())) {
            out.last_mut().expect("checked").push(c);
        } else if !c.is_whitespace() {
            out.push(c.to_string());
        }
    }
    out
}

/// The expression with token `at` replaced, spaced as forge writes expressions (`(12 + 14) % 23`).
fn replace(tokens: &[String], at: usize, with: &str) -> String {
    let mut out = String::new();
    for (i, t) in tokens.iter().enumerate() {
        let t = if i == at { with } else { t.as_str() };
        let op = matches!(t, "+" | "-" | "*" | "/" | "%");
        if op {
            out.push(' ');
        }
        out.push_str(t);
        if op {
            out.push(' ');
        }
    }
    out
}

/// Where `calc` is written in `text` (the last place): its tokens in order, then `=` and the result, with
/// any spacing and a `$` before numbers allowed, as GSM8K writes `16 - 3 - 4 = 9` or `9 * 2 = $18` for
/// the calculation `16-3-4`.
fn locate(text: &str, calc: &Calc) -> Option<std::ops::Range<usize>> {
    let mut want = split(&calc.expr);
    want.push("=".into());
    want.push(calc.result.clone());
    let bytes = text.as_bytes();
    let at = |start: usize| -> Option<usize> {
        let mut i = start;
        for (k, token) in want.iter().enumerate() {
            if k > 0 {
                while i < bytes.len() && (bytes[i] == b' ' || bytes[i] == b'$') {
                    i += 1;
                }
            }
            if !text[i..].starts_with(token.as_str()) {
                return None;
            }
            i += token.len();
        }
        // a whole number: `= 9` must not match `= 90`
        (i == bytes.len() || !bytes[i].is_ascii_digit()).then_some(i)
    };
    (0..text.len())
        .rev()
        .filter(|&s| text.is_char_boundary(s) && (s == 0 || !bytes[s - 1].is_ascii_digit()))
        .find_map(|s| at(s).map(|end| s..end))
}

/// A step's text with its calculation `calc` written as `wrong` instead.
pub fn rewrite(step: &Step, calc: &Calc, wrong: &Calc) -> Option<String> {
    let range = locate(&step.text, calc)?;
    let mut text = step.text.clone();
    text.replace_range(range, &format!("{} = {}", wrong.expr, wrong.result));
    Some(text)
}

/// Surface forms of a detection in natural language: each states the recomputation that shows the error.
const WAIT: [&str; 5] = [
    "Wait, {wrong_expr} is not right here: {expr} = {result}.",
    "Hmm, let me recheck that: {expr} = {result}, not {wrong_result}.",
    "Wait, that step is wrong. Redo it: {expr} = {result}.",
    "Let me check that step again. {wrong_expr} = {wrong_result} is not what this step needs; {expr} = {result}.",
    "That doesn't look right: the calculation should be {expr} = {result}.",
];

/// Detections written after other steps: they say which step was wrong.
const LATE: [&str; 3] = [
    "Wait, going back a few steps: {wrong_expr} = {wrong_result} was wrong. {expr} = {result}.",
    "Hmm, an earlier step is off: {expr} = {result}, not {wrong_result}. Fixing it.",
    "Wait, I made a mistake earlier: {wrong_expr} = {wrong_result} is wrong, {expr} = {result}.",
];

/// The quantity an iGSM-style step defines (`Define c as ...`).
fn defines(text: &str) -> Option<&str> {
    text.strip_prefix("Define ")?.split_once(" as ").map(|(v, _)| v)
}

/// The quantities a step's formula uses (`c = a - b = ...` uses `a` and `b`).
fn uses<'a>(text: &'a str, var: &str) -> Vec<&'a str> {
    let marker = format!(". {var} = ");
    let Some(at) = text.find(&marker) else { return Vec::new() };
    let formula = &text[at + marker.len()..];
    let formula = formula.split(" = ").next().unwrap_or_default().trim_end_matches('.');
    formula
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|t| !t.is_empty() && t.chars().all(|c| c.is_ascii_lowercase()))
        .collect()
}

/// At step `i`, a later step written too early: its definition and formula, which use a quantity not yet
/// computed; returns the written text and that quantity. The checker rejects it because the quantity is
/// defined at step `i` or later.
fn premature(steps: &[Step], i: usize, rng: &mut Rng) -> Option<(String, String)> {
    let defined_later: Vec<&str> = steps[i..].iter().filter_map(|s| defines(&s.text)).collect();
    let candidates: Vec<(usize, &str)> = (i + 1..steps.len())
        .filter_map(|j| {
            let var = defines(&steps[j].text)?;
            uses(&steps[j].text, var).into_iter().find(|u| defined_later.contains(u)).map(|u| (j, u))
        })
        .collect();
    let &(j, missing) = pick(&candidates, rng)?;
    let text = &steps[j].text;
    let var = defines(text)?;
    let marker = format!(". {var} = ");
    let start = text.find(&marker)? + marker.len();
    let end = text[start..].find(" = ").map_or(text.len(), |e| start + e);
    Some((format!("{}.", text[..end].trim_end_matches('.')), missing.to_string()))
}

/// Does `text` use a quantity not among `known`? (the checker of an `unavailable` error)
pub fn uses_unknown(text: &str, known: &[&str]) -> bool {
    defines(text).is_some_and(|v| uses(text, v).iter().any(|u| !known.contains(u)))
}

const NOT_YET: [&str; 3] = [
    "Wait, {missing} is not computed yet, so this cannot be done now.",
    "Hmm, that needs {missing}, which I have not worked out yet. Back up.",
    "Wait, I don't know {missing} yet.",
];

/// Surface forms of a verification that confirms a correct step.
const VERIFY: [&str; 4] = [
    "Let me verify: {expr} = {result}. Correct.",
    "Wait, let me double-check {expr}: it is {result}. Good.",
    "Checking: {expr} gives {result}, as written.",
    "Quick check: {expr} = {result}. Yes.",
];

fn fill(template: &str, calc: &Calc, wrong: Option<&Calc>) -> String {
    let mut s = template.replace("{expr}", &calc.expr).replace("{result}", &calc.result);
    if let Some(w) = wrong {
        s = s.replace("{wrong_expr}", &w.expr).replace("{wrong_result}", &w.result);
    }
    s
}

/// The knobs of one solution.
pub struct Knobs<'a> {
    /// Chance that a step gets an error.
    pub error_rate: f64,
    /// Which errors may be made.
    pub types: &'a [ErrorType],
    /// Errors per solution at most.
    pub max_errors: u32,
    /// Chance that a step is followed by a check.
    pub verify_rate: f64,
    /// `[BACK]` instead of a sentence.
    pub back_token: bool,
    /// The wrong steps are not trained on (their segments' `train` false).
    pub mask_errors: bool,
    /// Correct steps written, at most, between an error and its detection.
    pub detect_after: u32,
}

/// An error the solution contains, for provenance.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Inserted {
    /// The step it was made at (0-based).
    pub step: usize,
    /// The type of error.
    #[serde(rename = "type")]
    pub kind: ErrorType,
    /// The wrong value, as written.
    pub written: String,
    /// The right value.
    pub expected: String,
    /// The checker rejected the wrong step and accepted the fix.
    pub checked: bool,
    /// Correct steps written between the error and its detection.
    pub detected_after: u32,
}

/// Does `later` need the result of `earlier`? iGSM steps say which quantities they use; other steps are
/// taken to need it when its result is among their operands, or when they carry no calculation to tell.
fn depends(later: &Step, earlier: &Step) -> bool {
    if let (Some(var), Some(defined)) = (defines(&later.text), defines(&earlier.text)) {
        return uses(&later.text, var).contains(&defined);
    }
    let Some(result) = earlier.calcs.last().map(|c| c.result.as_str()) else { return true };
    later.calcs.is_empty() || later.calcs.iter().any(|c| split(&c.expr).iter().any(|t| t == result))
}

/// The segments of one solution built from `steps`, and the errors in it.
pub fn build(steps: &[Step], numbers: &[i128], knobs: &Knobs, rng: &mut Rng) -> (Vec<Seg>, Vec<Inserted>) {
    let (mut segs, mut inserted) = (Vec::new(), Vec::new());
    let mut next = 0;
    while next < steps.len() {
        let (i, step) = (next, &steps[next]);
        next += 1;
        let calc = step.calcs.last();
        if let Some(calc) = calc
            && (inserted.len() as u32) < knobs.max_errors
            && !knobs.types.is_empty()
            && rng.chance(knobs.error_rate)
        {
            // the error types in random order: the first that fits this step is written
            let mut kinds = knobs.types.to_vec();
            rng.shuffle(&mut kinds);
            let known: Vec<&str> = steps[..i].iter().filter_map(|s| defines(&s.text)).collect();
            let made = kinds.into_iter().find_map(|kind| {
                if kind == ErrorType::Unavailable {
                    let (text, missing) = premature(steps, i, rng)?;
                    let detect = if knobs.back_token {
                        "[BACK]".into()
                    } else {
                        rng.pick::<&str>(&NOT_YET).replace("{missing}", &missing)
                    };
                    let checked =
                        uses_unknown(&text, &known) && !uses_unknown(&step.text, &known) && accepts(calc, calc);
                    return Some((kind, text.clone(), detect, text, checked, None));
                }
                let wrong = corrupt(calc, kind, numbers, rng)?;
                let text = rewrite(step, calc, &wrong)?;
                let checked = !accepts(&wrong, calc) && accepts(calc, calc);
                Some((kind, text, String::new(), format!("{} = {}", wrong.expr, wrong.result), checked, Some(wrong)))
            });
            if let Some((kind, text, mut detect, written, checked, wrong)) = made {
                segs.push(Seg { kind: Kind::Error, text, train: !knobs.mask_errors });
                // noticed late: first the steps that follow and do not need this step's result
                let mut late = 0;
                if let Some(wrong) = &wrong {
                    while late < knobs.detect_after && next < steps.len() && !depends(&steps[next], step) {
                        segs.push(Seg { kind: Kind::Step, text: steps[next].text.clone(), train: true });
                        (late, next) = (late + 1, next + 1);
                    }
                    let templates: &[&str] = if late > 0 { &LATE } else { &WAIT };
                    detect = if knobs.back_token {
                        "[BACK]".into()
                    } else {
                        fill(rng.pick::<&str>(templates), calc, Some(wrong))
                    };
                }
                inserted.push(Inserted {
                    step: i,
                    kind,
                    written,
                    expected: format!("{} = {}", calc.expr, calc.result),
                    checked,
                    detected_after: late,
                });
                segs.push(Seg { kind: Kind::Detect, text: detect, train: true });
                segs.push(Seg { kind: Kind::Fix, text: step.text.clone(), train: true });
                continue;
            }
        }
        segs.push(Seg { kind: Kind::Step, text: step.text.clone(), train: true });
        if let Some(calc) = calc
            && rng.chance(knobs.verify_rate)
        {
            segs.push(Seg { kind: Kind::Verify, text: fill(rng.pick::<&str>(&VERIFY), calc, None), train: true });
        }
    }
    (segs, inserted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn calc(expr: &str, result: &str) -> Calc {
        Calc { expr: expr.into(), result: result.into() }
    }

    /// Every error type, on every kind of calculation forge writes, gives a step the checker rejects;
    /// the reference step is accepted.
    #[test]
    fn every_error_is_rejected_and_every_fix_accepted() {
        let calcs = [
            calc("(12 - 14) % 23", "21"),
            calc("7 * 5", "35"),
            calc("31 * (45 - 41) - 95", "29"),
            calc("(4 * 22) % 23", "19"),
        ];
        let numbers = [3i128, 7, 11, 12, 14, 22, 45];
        for (k, c) in calcs.iter().enumerate() {
            assert!(accepts(c, c), "{c:?}");
            for kind in ErrorType::ALL.into_iter().filter(|&k| k != ErrorType::Unavailable) {
                let mut made = 0;
                for seed in 0..50 {
                    let mut rng = Rng::for_row(seed, "t", k as u64);
                    if let Some(w) = corrupt(c, kind, &numbers, &mut rng) {
                        assert!(!accepts(&w, c), "{kind:?}: {w:?} accepted for {c:?}");
                        if kind != ErrorType::Arithmetic {
                            let value = parse(&w.expr).unwrap().eval().unwrap().as_int().unwrap();
                            assert_eq!(
                                value.to_string(),
                                w.result,
                                "{kind:?}: correct arithmetic on the wrong calculation"
                            );
                        }
                        made += 1;
                    }
                }
                assert!(made > 10, "{kind:?} on {c:?}: only {made} of 50 tries");
            }
        }
    }

    #[test]
    fn calculations_are_found_however_they_are_spaced() {
        let step = |text: &str, expr: &str, result: &str| Step { text: text.into(), calcs: vec![calc(expr, result)] };
        let wrong = calc("9 * 3", "27");
        for (text, expr, result, want) in [
            ("She makes 9 * 2 = $18 every day.", "9*2", "18", "She makes 9 * 3 = 27 every day."),
            ("It takes 2/2=1 bolt", "2/2", "1", "It takes 9 * 3 = 27 bolt"),
            ("so 12 + 3 = 15 and 2+3=150", "2+3", "15", "so 12 + 3 = 15 and 2+3=150"),
        ] {
            let s = step(text, expr, result);
            match rewrite(&s, &s.calcs[0], &wrong) {
                Some(t) => assert_eq!(t, want),
                None => assert_eq!(text, want, "{text}: not found"),
            }
        }
    }

    /// An `unavailable` error writes a later step whose formula needs a quantity not computed yet; the
    /// checker rejects it, and accepts the step that belongs here.
    #[test]
    fn premature_steps_use_what_is_not_known_yet() {
        let step = |t: &str| Step { text: t.into(), calcs: vec![] };
        let steps = [
            step("Define a as the number of cups. a = 12."),
            step("Define b as the number of pens. b = 5."),
            step("Define c as the number of bags. c = a + b = (12 + 5) % 23 = 17."),
            step("Define d as the number of hats. d = c * a = (17 * 12) % 23 = 20."),
        ];
        assert_eq!(uses(&steps[3].text, "d"), ["c", "a"]);
        let mut rng = Rng::for_row(1, "t", 0);
        let (text, missing) = premature(&steps, 2, &mut rng).unwrap();
        assert_eq!(text, "Define d as the number of hats. d = c * a.");
        assert_eq!(missing, "c");
        let known = ["a", "b"];
        assert!(uses_unknown(&text, &known));
        assert!(!uses_unknown(&steps[2].text, &known));
        assert!(premature(&steps, 3, &mut rng).is_none(), "nothing comes after the last step");
    }

    /// With `detect_after`, the steps that do not need the wrong result come between the error and its
    /// detection; a step that needs it stops the delay.
    #[test]
    fn late_detection_writes_only_independent_steps_first() {
        let step = |t: &str, c: Option<(&str, &str)>| Step {
            text: t.into(),
            calcs: c.map(|(e, r)| vec![calc(e, r)]).unwrap_or_default(),
        };
        let steps = [
            step("Define a as A. a = 3.", None),
            step("Define b as B. b = a + 2 = (3 + 2) % 7 = 5.", Some(("(3 + 2) % 7", "5"))),
            step("Define c as C. c = 4.", None),
            step("Define d as D. d = c * 2 = (4 * 2) % 7 = 1.", Some(("(4 * 2) % 7", "1"))),
            step("Define e as E. e = b + d = (5 + 1) % 7 = 6.", Some(("(5 + 1) % 7", "6"))),
        ];
        let knobs = |detect_after| Knobs {
            error_rate: 1.0,
            types: &[ErrorType::Arithmetic],
            max_errors: 1,
            verify_rate: 0.0,
            back_token: false,
            mask_errors: false,
            detect_after,
        };
        let kinds = |segs: &[Seg]| segs.iter().map(|s| s.kind.name()).collect::<Vec<_>>().join(" ");
        let (segs, errors) = build(&steps, &[3, 2, 4, 7], &knobs(5), &mut Rng::for_row(1, "t", 0));
        // b is wrong; c and d do not need it and come first; e needs b, so the detection comes before it
        assert_eq!(kinds(&segs), "step error step step detect fix step");
        assert_eq!((errors[0].step, errors[0].detected_after), (1, 2));
        assert_eq!(segs[5].text, steps[1].text);
        // every late template states the redone calculation
        for t in LATE {
            assert!(
                fill(t, &calc("(3 + 2) % 7", "5"), Some(&calc("(3 + 2) % 7", "6"))).contains("(3 + 2) % 7 = 5"),
                "{t}"
            );
        }
        assert!(segs[4].text.contains("(3 + 2) % 7 = 5"), "{}", segs[4].text);
        let (segs, errors) = build(&steps, &[3, 2, 4, 7], &knobs(0), &mut Rng::for_row(1, "t", 0));
        assert_eq!(kinds(&segs), "step error detect fix step step step");
        assert_eq!(errors[0].detected_after, 0);

        // arithmetic chains: every step needs the one before, so detection is immediate
        let chain = [step("3 + 4 = 7", Some(("3 + 4", "7"))), step("7 * 2 = 14", Some(("7 * 2", "14")))];
        let (segs, _) = build(&chain, &[3, 4, 2], &knobs(3), &mut Rng::for_row(1, "t", 0));
        assert_eq!(kinds(&segs), "error detect fix step");
    }

    #[test]
    fn rewriting_keeps_the_rest_of_the_step() {
        let step = Step {
            text: "Define c as x. c = a - b = (12 - 14) % 23 = 21.".into(),
            calcs: vec![calc("(12 - 14) % 23", "21")],
        };
        let wrong = calc("(12 - 41) % 23", "17");
        assert_eq!(rewrite(&step, &step.calcs[0], &wrong).unwrap(), "Define c as x. c = a - b = (12 - 41) % 23 = 17.");
    }
}
