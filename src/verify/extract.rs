//! Finding the final answer in a model output.
//!
//! The reasoning is split off first (`<think>…</think>`, `<|begin_of_thought|>…<|end_of_thought|>`), and the
//! solution part is searched before the whole text. Rules, tried in order (the ranking Math-Verify uses), each
//! taking the **last** match: `<answer>…</answer>` (TinyZero); `\boxed{}`/`\fbox{}` (boxes separated only by
//! `,`/`and`/spacing, or by a few words with an `and`, form one list); "final answer is", "Final Answer:", "the
//! answer is", `Answer:`, GSM8K's `#### N` (within the rest of the sentence: the text when it reads as an
//! answer, else a number after its last math span, else that span); the last math span (`$…$`, `\(…\)`,
//! `\[…\]`, `$$…$$`, with the spans just before it joined by `,`/`and`); a short output that is nothing but an
//! answer; and, unless switched off, the last number that is not part of a word. The rule that fired is
//! recorded so curation can distrust fallbacks.
//!
//! Work is linear in the output: every scan moves forward, and a delimiter with no closing one is not searched
//! for again.

use std::cell::RefCell;

use memchr::memmem::{Finder, FinderRev};
use serde::Serialize;

/// Which rule found the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// `<answer>…</answer>`.
    AnswerTag,
    /// The last `\boxed{…}` (or `\fbox{…}`).
    Boxed,
    /// "The final answer is …".
    FinalAnswerIs,
    /// "Final Answer: …", "**Final Answer** …".
    FinalAnswer,
    /// "The answer is …".
    AnswerIs,
    /// "Answer: …".
    AnswerColon,
    /// GSM8K's `#### …`.
    Gsm8k,
    /// The last math span (`$…$`, `\\(…\\)`, `\\[…\\]`, `$$…$$`) with no number after it.
    LastSpan,
    /// The whole (short) output is one answer: `\frac12`, `(1, 2)`, `Evelyn`; for code, the whole solution part.
    Whole,
    /// Code: a fenced block (the last one tagged Python, else the last untagged one).
    Fenced,
    /// The last number in the output: the fallback.
    LastNumber,
}

// memchr's SIMD substring search, with each needle's searcher built once per thread: these scans run over
// every output, and std's two-way search, then building memchr's searchers per call, showed up as the largest
// single costs in profiles of `forge verify`.
thread_local! {
    static FORWARD: RefCell<Vec<(&'static str, Finder<'static>)>> = const { RefCell::new(Vec::new()) };
    static BACKWARD: RefCell<Vec<(&'static str, FinderRev<'static>)>> = const { RefCell::new(Vec::new()) };
}

/// The searcher for `needle` in `cache`, built on first use (needles are the few literals of this module).
fn cached<'c, F>(cache: &'c mut Vec<(&'static str, F)>, needle: &'static str, build: fn(&'static str) -> F) -> &'c F {
    let i = match cache.iter().position(|(n, _)| std::ptr::eq(*n, needle)) {
        Some(i) => i,
        None => {
            cache.push((needle, build(needle)));
            cache.len() - 1
        }
    };
    &cache[i].1
}

/// The first `needle` in `haystack`.
pub(super) fn find(haystack: &str, needle: &'static str) -> Option<usize> {
    FORWARD.with_borrow_mut(|c| cached(c, needle, Finder::new).find(haystack.as_bytes()))
}

/// How many times `needle` occurs in `haystack` (not overlapping).
pub(super) fn count(haystack: &str, needle: &'static str) -> usize {
    FORWARD.with_borrow_mut(|c| cached(c, needle, Finder::new).find_iter(haystack.as_bytes()).count())
}

/// The last `needle` in `haystack`. memchr's reverse search has no SIMD path: a forward search first answers
/// the common case (not there at all) and leaves the reverse search only the text from the first match on.
fn rfind(haystack: &str, needle: &'static str) -> Option<usize> {
    let first = find(haystack, needle)?;
    let rest = &haystack.as_bytes()[first..];
    BACKWARD.with_borrow_mut(|c| cached(c, needle, FinderRev::new).rfind(rest)).map(|i| first + i)
}

/// A model output split into reasoning and solution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split<'a> {
    /// The thinking part, when there is one.
    pub reasoning: Option<&'a str>,
    /// The part after it (the whole output without reasoning delimiters).
    pub solution: &'a str,
    /// The reasoning was opened but never closed (truncated or malformed).
    pub unclosed: bool,
}

/// Split `<think>…</think>` (the opening tag may be missing, as when the template prefills it) or
/// `<|begin_of_thought|>…<|end_of_thought|>` from the solution.
pub fn split(text: &str) -> Split<'_> {
    for (open, close) in [("<think>", "</think>"), ("<|begin_of_thought|>", "<|end_of_thought|>")] {
        if let Some(end) = rfind(text, close) {
            let start = find(&text[..end], open).map_or(0, |i| i + open.len());
            let mut solution = &text[end + close.len()..];
            if let Some(s) = find(solution, "<|begin_of_solution|>") {
                solution = &solution[s + "<|begin_of_solution|>".len()..];
                solution = solution.split("<|end_of_solution|>").next().unwrap_or(solution);
            }
            return Split { reasoning: Some(&text[start..end]), solution, unclosed: false };
        }
        if let Some(start) = find(text, open) {
            return Split { reasoning: Some(&text[start + open.len()..]), solution: "", unclosed: true };
        }
    }
    Split { reasoning: None, solution: text, unclosed: false }
}

/// The answer found in `text` and the rule that found it.
pub fn extract(text: &str, last_number: bool) -> Option<(String, Rule)> {
    extract_split(text, &split(text), last_number)
}

/// As [`extract`], for a caller that has split `text` already.
pub fn extract_split(text: &str, parts: &Split<'_>, last_number: bool) -> Option<(String, Rule)> {
    // A marked answer in the solution, else in the reasoning, else the solution's last math span (the
    // reasoning's spans are working, not answers).
    let reasoning = parts.reasoning.is_some().then_some(text);
    let found = marked_in(parts.solution)
        .or_else(|| reasoning.and_then(marked_in))
        .or_else(|| last_span(parts.solution).map(|s| (s, Rule::LastSpan)));
    if found.is_some() {
        return found;
    }
    if let Some(whole) = whole_answer(parts.solution) {
        return Some((whole, Rule::Whole));
    }
    if last_number { last_number_in(text).map(|n| (n, Rule::LastNumber)) } else { None }
}

/// The answer a gold field stands for: the field itself, or, when it is prose around math (`The answer
/// is $5$.`, `so \boxed{12} apples`), what extraction finds in it.
pub fn gold_answer(gold: &str) -> std::borrow::Cow<'_, str> {
    let t = gold.trim();
    let spans = spans(t);
    let boxed = find(t, "\\boxed").is_some() || find(t, "\\fbox").is_some();
    let prose = !spans.is_empty() && spans.iter().map(|s| s.outer.len()).sum::<usize>() < t.len();
    if (boxed || prose)
        && let Some((answer, _)) = extract_in(t)
    {
        return answer.into();
    }
    gold.into()
}

/// A short output that is nothing but an answer: a number or structure the comparer can read, or a
/// few words without digits.
fn whole_answer(text: &str) -> Option<String> {
    let t = text.trim().trim_end_matches('.').trim().trim_matches('$').trim();
    if t.is_empty() || t.chars().count() > 64 {
        return None;
    }
    // A structure, a few words without digits, or one formula without words (`-[0,1)`: not its last number).
    let answer_like = super::answer::is_structured(t)
        || (t.chars().count() <= 32 && !t.chars().any(|c| c.is_ascii_digit()))
        || (!t.contains(char::is_whitespace) && looks_like_math(t) && !t.chars().any(|c| c.is_ascii_alphabetic()));
    answer_like.then(|| t.to_string())
}

/// The answer in `text` by the first rule that finds one: a marked answer, else the last math span.
fn extract_in(text: &str) -> Option<(String, Rule)> {
    marked_in(text).or_else(|| last_span(text).map(|s| (s, Rule::LastSpan)))
}

/// The answer `text` marks: an answer tag, a box, a "final answer" marker.
fn marked_in(text: &str) -> Option<(String, Rule)> {
    if let Some(i) = rfind(text, "<answer>") {
        let rest = &text[i + "<answer>".len()..];
        let inner = rest.split("</answer>").next().unwrap_or(rest).trim();
        if !inner.is_empty() {
            return Some((inner.to_string(), Rule::AnswerTag));
        }
    }
    if let Some(boxed) = boxed_answer(text) {
        return Some((boxed, Rule::Boxed));
    }
    let lower = text.to_ascii_lowercase();
    for (anchor, rule) in [
        ("final answer is", Rule::FinalAnswerIs),
        ("final answer", Rule::FinalAnswer),
        ("answer is", Rule::AnswerIs),
        ("answer:", Rule::AnswerColon),
        ("####", Rule::Gsm8k),
    ] {
        let Some(i) = rfind(&lower, anchor) else { continue };
        let rest = &text[i + anchor.len()..];
        // A bare "final answer" marks one only as a heading or label (`Final Answer:`, `**Final Answer**`).
        if rule == Rule::FinalAnswer && !rest.trim_start_matches(['*', ' ']).starts_with([':', '\n']) {
            continue;
        }
        if let Some(after) = marked(rest) {
            return Some((after, rule));
        }
    }
    None
}

/// The answer after a "final answer" marker, within the rest of its sentence: the text itself when it
/// reads as an answer (`17`, `(1, 2)`, `x = 5`), else a number after the last math span (`The largest
/// $n$ is 34.` gives 34), else that span, else the text (`Evelyn`).
fn marked(rest: &str) -> Option<String> {
    let rest = rest.trim_start_matches([':', ' ', '\t', '*']);
    // A display block right after the marker (`**Final Answer**\n\\[ … \\]`) may span lines.
    let lead = rest.len() - rest.trim_start().len();
    let tail = match leading_span(&rest[lead..]) {
        Some(s) => &rest[..(lead + s.outer.end).max(rest.find('\n').unwrap_or(rest.len()))],
        None => rest.lines().next().unwrap_or(""),
    };
    // "… is $42$. I hope it is correct." (Minerva's format): the sentence ends at a period and a space.
    let tail = sentence(tail);
    let found = spans(tail);
    if found.is_empty() {
        let cleaned = clean_tail(tail);
        if cleaned.is_empty() || super::answer::is_structured(&cleaned) {
            return (!cleaned.is_empty()).then_some(cleaned);
        }
        return Some(last_number_in(tail).unwrap_or(cleaned));
    }
    if let Some(n) = found.last().and_then(|s| last_number_in(&tail[s.outer.end..])) {
        return Some(n);
    }
    joined_spans(tail, &found)
}

/// `tail` up to the end of its first sentence outside math.
fn sentence(tail: &str) -> &str {
    let bytes = tail.as_bytes();
    let mut math = spans(tail).into_iter().map(|s| s.outer).peekable();
    let mut i = 0;
    while i < bytes.len() {
        if let Some(span) = math.peek()
            && span.contains(&i)
        {
            i = span.end;
            math.next();
            continue;
        }
        if matches!(bytes[i], b'.' | b'!' | b'?') && bytes.get(i + 1).is_none_or(|b| *b == b' ') {
            // `3.5` stays one number.
            if !(bytes[i] == b'.'
                && i > 0
                && bytes[i - 1].is_ascii_digit()
                && bytes.get(i + 1).is_some_and(u8::is_ascii_digit))
            {
                return &tail[..i];
            }
        }
        i += 1;
    }
    tail
}

/// A math span: `$…$`, `$$…$$`, `\\(…\\)` or `\\[…\\]`, with its content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span<'a> {
    /// Byte range of the span, delimiters included.
    pub outer: std::ops::Range<usize>,
    /// Its content, without the delimiters.
    pub content: &'a str,
}

/// Every math span in `text`, in order. `$…$` stays on one line and must look like math, so currency
/// (`costs $5 and then $10`) is not a span: the closing `$` is not followed by a digit, and a space before it
/// needs a space after the opening one. `\\$` is a literal dollar sign.
pub fn spans(text: &str) -> Vec<Span<'_>> {
    scan(text, usize::MAX)
}

/// The math span that opens `text`, if one does.
fn leading_span(text: &str) -> Option<Span<'_>> {
    scan(text, 0).pop()
}

/// The spans of `text` that open at or before byte `last_start`.
fn scan(text: &str, last_start: usize) -> Vec<Span<'_>> {
    let bytes = text.as_bytes();
    let mut found = Vec::new();
    let mut unclosed = [false; 3];
    let mut i = 0;
    while i < bytes.len() && i <= last_start {
        // Only `$` and `\\` (ASCII, so char boundaries) start a span.
        if !matches!(bytes[i], b'$' | b'\\') {
            i += 1;
            continue;
        }
        let rest = &text[i..];
        let pair = if rest.starts_with("\\[") {
            Some((0, "\\[", "\\]"))
        } else if rest.starts_with("\\(") {
            Some((1, "\\(", "\\)"))
        } else if rest.starts_with("$$") {
            Some((2, "$$", "$$"))
        } else {
            None
        };
        if let Some((k, open, close)) = pair {
            // Once a delimiter has no closing one, no later opening has either: skip them, so `\\[` repeated
            // 100,000 times is one scan, not 100,000.
            if !unclosed[k] {
                if let Some(end) = find(&rest[open.len()..], close) {
                    let content = &rest[open.len()..open.len() + end];
                    found.push(Span { outer: i..i + open.len() + end + close.len(), content: content.trim() });
                    i += open.len() + end + close.len();
                    continue;
                }
                unclosed[k] = true;
            }
        } else if bytes[i] == b'\\' {
            i += 2;
            continue;
        } else if bytes[i] == b'$'
            && let Some(span) = inline_span(text, i)
        {
            i = span.outer.end;
            found.push(span);
            continue;
        }
        i += 1;
    }
    found.retain(|s| !s.content.is_empty());
    found
}

/// The `$…$` span opening at `start`, if the `$` opens one.
fn inline_span(text: &str, start: usize) -> Option<Span<'_>> {
    let line = &text[start + 1..];
    let bytes = line.as_bytes();
    let mut j = 0;
    while j < bytes.len() {
        match bytes[j] {
            b'\n' => return None,
            b'\\' => j += 1,
            b'$' => {
                let content = &line[..j];
                // `$5 and $` closes on a space; `$ x $` and `$ x$` are fine.
                let balanced = !content.ends_with(char::is_whitespace) || content.starts_with(char::is_whitespace);
                let digit_after = bytes.get(j + 1).is_some_and(u8::is_ascii_digit);
                if balanced && !digit_after && looks_like_math(content) {
                    return Some(Span { outer: start..start + 1 + j + 1, content: content.trim() });
                }
                return None;
            }
            _ => {}
        }
        j += 1;
    }
    None
}

/// Not a sentence: outside `\\text{…}`-style commands, no two words of three or more letters.
fn looks_like_math(content: &str) -> bool {
    let mut words = 0;
    let mut run = 0;
    let mut command = false;
    let mut depth = 0usize;
    for c in content.chars() {
        match c {
            '\\' => {
                command = true;
                run = 0;
            }
            '{' => {
                depth += 1;
                command = false;
            }
            '}' => {
                depth = depth.saturating_sub(1);
            }
            c if c.is_ascii_alphabetic() => {
                if !command && depth == 0 {
                    run += 1;
                    if run == 3 {
                        words += 1;
                    }
                }
            }
            _ => {
                run = 0;
                command = false;
            }
        }
    }
    words < 2
}

/// The last math span of `text`, joined with the spans just before it when only `,` or `and` separate
/// them (`$-2$, $1$ and $3$`). `None` when a number follows it outside math (the number is later, and the
/// last-number rule decides).
fn last_span(text: &str) -> Option<String> {
    let found = spans(text);
    let last = found.last()?;
    if number_after(text, last.outer.end) {
        return None;
    }
    joined_spans(text, &found)
}

fn joined_spans(text: &str, found: &[Span<'_>]) -> Option<String> {
    let last = found.last()?;
    let mut items = vec![last.content];
    let mut start = last.outer.start;
    for prev in found.iter().rev().skip(1) {
        if !conjunctive(&text[prev.outer.end..start]) {
            break;
        }
        items.push(prev.content);
        start = prev.outer.start;
    }
    items.reverse();
    Some(items.join(", "))
}

/// Does a number (not part of a word) appear in `text` after `from`?
fn number_after(text: &str, from: usize) -> bool {
    last_number_in(&text[from..]).is_some()
}

/// Two answers joined into one list: only spacing, commas and `and` between them (`\\quad \\text{and} \\quad`),
/// or a few words with an `and` (or `;`) and no word that takes the first one back (`$\\boxed{1}$ papers
/// and $\\boxed{2}$ bins`, `(a) $\\boxed{3}$ and (b) $\\boxed{5}$`, but not `$\\boxed{1}$ or $\\boxed{2}$`
/// or `$\\boxed{1}$ no wait $\\boxed{2}$`).
fn conjunctive(gap: &str) -> bool {
    let words: Vec<&str> = gap.split(|c: char| !c.is_ascii_alphanumeric()).filter(|w| !w.is_empty()).collect();
    let filler = |w: &&str| matches!(*w, "and" | "text" | "quad" | "qquad" | "mbox");
    if words.iter().all(filler) {
        return true;
    }
    let joined = gap.contains(';') || words.contains(&"and");
    let retracts = |w: &&str| {
        matches!(
            w.to_ascii_lowercase().as_str(),
            "or" | "no" | "not" | "wait" | "but" | "instead" | "actually" | "either"
        )
    };
    joined && words.len() <= 6 && !words.iter().any(retracts) && !gap.contains(['.', '\n'])
}

/// Every top-level `\boxed{…}` / `\fbox{…}` (or `\boxed 5`) in `text`, in order: the span of the whole
/// box and its content. Braces are matched; `\{` and `\}` do not count.
pub fn boxes(text: &str) -> Vec<(std::ops::Range<usize>, &str)> {
    let bytes = text.as_bytes();
    let mut starts: Vec<(usize, usize)> = memchr::memmem::find_iter(bytes, b"\\boxed")
        .map(|i| (i, i + 6))
        .chain(memchr::memmem::find_iter(bytes, b"\\fbox").map(|i| (i, i + 5)))
        .collect();
    starts.sort_unstable();
    let mut found: Vec<(std::ops::Range<usize>, &str)> = Vec::new();
    if starts.is_empty() {
        return found;
    }
    let pairs = brace_pairs(text);
    for (start, after) in starts {
        if found.last().is_some_and(|(span, _)| start < span.end) {
            continue;
        }
        if let Some((content, end)) = box_content(text, after, &pairs) {
            found.push((start..end, content));
        }
    }
    found
}

/// The content of the last box in `text`.
pub fn last_boxed(text: &str) -> Option<&str> {
    boxes(text).pop().map(|(_, content)| content)
}

/// Every matched `{`…`}` pair of `text` (`\\{` and `\\}` do not count), sorted by the opening brace: one scan,
/// so `\\boxed{` repeated 100,000 times without a closing brace is not 100,000 scans to the end.
fn brace_pairs(text: &str) -> Vec<(usize, usize)> {
    let mut open = Vec::new();
    let mut pairs = Vec::new();
    let mut escaped = false;
    for (i, b) in text.bytes().enumerate() {
        match b {
            _ if escaped => escaped = false,
            b'\\' => escaped = true,
            b'{' => open.push(i),
            b'}' => {
                if let Some(o) = open.pop() {
                    pairs.push((o, i));
                }
            }
            _ => {}
        }
    }
    pairs.sort_unstable();
    pairs
}

fn box_content<'t>(text: &'t str, at: usize, pairs: &[(usize, usize)]) -> Option<(&'t str, usize)> {
    let rest = &text[at..];
    if rest.starts_with('{') {
        let close = pairs.binary_search_by_key(&at, |p| p.0).ok().map(|i| pairs[i].1)?;
        Some((text[at + 1..close].trim(), close + 1))
    } else if rest.starts_with(' ') {
        let skipped = rest.len() - rest.trim_start().len();
        let token = rest.trim_start().split(|c: char| c.is_whitespace() || c == '$').next()?;
        (!token.is_empty()).then_some((token, at + skipped + token.len()))
    } else {
        None
    }
}

/// The boxed answer: the last box, joined with the boxes just before it when only `,`, `and`, spacing or
/// `$` separate them (`are $\boxed{-2}$ and $\boxed{1}$` is the set `-2, 1`). Boxes separated by `or` are
/// alternatives (`$\boxed{x+11}$ or $\boxed{11+x}$`), and any other words break the chain.
pub fn boxed_answer(text: &str) -> Option<String> {
    let all = boxes(text);
    let (mut span, last) = all.last()?.clone();
    let mut items = vec![last];
    for (prev_span, prev) in all.iter().rev().skip(1) {
        if !conjunctive(&text[prev_span.end..span.start]) {
            break;
        }
        items.push(prev);
        span = prev_span.clone();
    }
    items.reverse();
    Some(items.join(", "))
}

/// The answer text after an anchor: the rest of the line, without markdown bold, `$`s and a final period.
fn clean_tail(rest: &str) -> String {
    let line = rest.trim_start_matches([':', ' ', '\t']).lines().next().unwrap_or("");
    let line = line.trim().trim_matches('*').trim();
    let line = line.strip_prefix('$').and_then(|l| l.split('$').next()).unwrap_or(line);
    line.trim().trim_end_matches(['.', '*']).trim().to_string()
}

fn last_number_in(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut end = bytes.len();
    while end > 0 {
        if bytes[end - 1].is_ascii_digit() {
            let mut start = end;
            while start > 0 && (bytes[start - 1].is_ascii_digit() || matches!(bytes[start - 1], b'.' | b',')) {
                start -= 1;
            }
            // Part of a word or a name (`AZYUK2A`, `a_3`): not a number of its own.
            if start > 0 && (bytes[start - 1].is_ascii_alphabetic() || bytes[start - 1] == b'_') {
                end = start;
                continue;
            }
            if start > 0 && bytes[start - 1] == b'-' {
                if start > 1 && bytes[start - 2].is_ascii_alphabetic() {
                    end = start - 1;
                    continue;
                }
                start -= 1;
            }
            let n = text[start..end].trim_start_matches([',', '.']).replace(',', "");
            // `75%` is 75 hundredths (and still matches a gold of 75).
            let percent = text[end..].starts_with('%') || text[end..].starts_with("\\%");
            return Some(if percent { n + "%" } else { n });
        }
        end -= 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_in_order_and_last_match_wins() {
        let cases: &[(&str, &str, Rule)] = &[
            ("so \\boxed{1} no wait \\boxed{\\frac{1}{2}}", "\\frac{1}{2}", Rule::Boxed),
            ("the roots are $\\boxed{1}$ and $\\boxed{2}$", "1, 2", Rule::Boxed),
            ("$\\boxed{x+11}$ or $\\boxed{11+x}$", "11+x", Rule::Boxed),
            ("radius $\\boxed{1}$ no no $\\boxed{9}$", "9", Rule::Boxed),
            ("<think>maybe \\boxed{3}</think>The answer is 4.", "4", Rule::AnswerIs),
            ("<think>so $x = 4$? No.</think>\n\n5", "5", Rule::Whole),
            ("<think>so \\boxed{4}</think>\n\nDone, $x = 4$ works.", "4", Rule::Boxed),
            ("<think>I try $x = 3$.</think>\n\nDone: $x = 4$.", "x = 4", Rule::LastSpan),
            ("<think>x</think><answer> (1 + 2) / 3 </answer>", "(1 + 2) / 3", Rule::AnswerTag),
            ("I think the final answer is $42$. I hope it is correct.", "42", Rule::FinalAnswerIs),
            ("**Answer:** 17", "17", Rule::AnswerColon),
            ("Final Answer: **73**", "73", Rule::FinalAnswer),
            ("3 + 4 = 7\n#### 7", "7", Rule::Gsm8k),
            ("She makes 13 * 2 = $<<13*2=26>>26\nA: 26", "26", Rule::LastNumber),
            ("It costs 1,250 dollars.", "1250", Rule::LastNumber),
            ("The probability is $\\dfrac{3}{4}$ (or 75%).", "75%", Rule::LastNumber),
            ("\\frac12", "\\frac12", Rule::Whole),
            ("$(1, 2)$.", "(1, 2)", Rule::LastSpan),
            ("Evelyn", "Evelyn", Rule::Whole),
        ];
        for (text, answer, rule) in cases {
            assert_eq!(extract(text, true), Some((answer.to_string(), *rule)), "{text}");
        }
        assert_eq!(extract("There is no number anywhere in this output.", true), None);
        // Multi-byte text around the delimiters and numbers.
        assert_eq!(extract("Janet’s \\€ $x$ café ’", true), Some(("x".into(), Rule::LastSpan)));
        assert_eq!(extract("It is 5", false), None);
    }

    #[test]
    fn hostile_outputs_are_one_scan() {
        // Each would be quadratic if an unclosed delimiter or a rejected `$` were searched from every opening:
        // at 2 MB that is hours (the test never ends and CI's time limit fails it); linear, it is about a second.
        for unit in ["\\[", "\\(", "$$", "$5 and ", "$ x", "\\boxed{", "final answer: ", "$\\frac{1}{2}$, "] {
            let text = unit.repeat(2_000_000 / unit.len());
            let _ = extract(&text, true);
            let _ = gold_answer(&text);
        }
        let long_line = format!("The final answer is {}$x$ and more", "$ a ".repeat(50_000));
        assert!(extract(&long_line, true).is_some());
    }

    #[test]
    fn currency_is_not_math() {
        assert_eq!(spans("She pays $20 and gets $2 back, so $18 is left"), vec![]);
        assert_eq!(spans("costs $20 + $30 = $50."), vec![]);
        assert_eq!(spans("a \\$5 fee and $x$").len(), 1);
    }

    #[test]
    fn reasoning_is_split_off() {
        let s = split("<think>hmm</think>\\boxed{2}");
        assert_eq!((s.reasoning, s.solution, s.unclosed), (Some("hmm"), "\\boxed{2}", false));
        let s = split("prefilled reasoning</think>done");
        assert_eq!(s.reasoning, Some("prefilled reasoning"));
        let s = split("<think>cut off in the middle");
        assert!(s.unclosed);
        let s = split("<|begin_of_thought|>a<|end_of_thought|><|begin_of_solution|>b<|end_of_solution|>");
        assert_eq!((s.reasoning, s.solution), (Some("a"), "b"));
    }

    #[test]
    fn last_box_with_nested_braces_wins() {
        assert_eq!(last_boxed("so $\\boxed{1}$ or $\\boxed{\\frac{1}{2}}$."), Some("\\frac{1}{2}"));
        assert_eq!(last_boxed("\\boxed{\\{1,2\\}}"), Some("\\{1,2\\}"));
        assert_eq!(last_boxed("is $\\boxed 5$"), Some("5"));
        assert_eq!(last_boxed("$\\fbox{204}$ minutes"), Some("204"));
        assert_eq!(last_boxed("\\boxed{unclosed"), None);
        assert_eq!(last_boxed("no box"), None);
    }
}
