//! Code: the program in an output runs against each of the problem's tests in the [`sandbox`], one run per
//! test. The program is the last fenced block tagged Python (else the last untagged one) in the solution
//! part, or the whole solution part when it has no fence. A test (an item of the problems table's `tests`)
//! is one of:
//!
//! - a Python snippet appended to the program (HumanEval's `check(candidate)`, MBPP's asserts): it passes
//!   when the run exits 0 having reached its end, which the harness marks with a line the program cannot
//!   know in advance, so a program that exits early (`sys.exit(0)`) fails. As in HumanEval's harness, the
//!   program does not run as `__main__` (its `if __name__ == "__main__":` block is skipped);
//! - a JSON object `{"stdin": …, "stdout": …}` (APPS, TACO, CodeContests, LiveCodeBench): the program runs
//!   as a script with that input; it passes when it exits 0 and its output has the expected
//!   whitespace-separated tokens, numbers equal within 1e-6 relative (as those benchmarks' checkers allow).

use super::sandbox::{self, Job, Run, Status};
use super::{Failure, Method, Rule, TraceRef, Verdict, VerifySettings, extract};

/// Longest test message kept in a verdict.
const MAX_MESSAGE: usize = 300;

/// The program an output gives: the fenced block ([`Rule::Fenced`]) or the whole solution part.
pub fn extract_code(solution: &str) -> Option<(String, Rule)> {
    let mut blocks: Vec<(String, String)> = Vec::new(); // (language, body)
    let mut open: Option<(String, Vec<&str>)> = None;
    for line in solution.lines() {
        let fence = line.trim_start().strip_prefix("```");
        match (&mut open, fence) {
            (None, Some(info)) => open = Some((info.trim().to_ascii_lowercase(), Vec::new())),
            (Some(_), Some(rest)) if rest.trim().is_empty() => {
                let (lang, body) = open.take().expect("open");
                blocks.push((lang, body.join("\n")));
            }
            (Some((_, body)), _) => body.push(line),
            (None, None) => {}
        }
    }
    if let Some((lang, body)) = open {
        blocks.push((lang, body.join("\n"))); // a block cut off at the end
    }
    let python = |lang: &str| matches!(lang, "python" | "py" | "python3");
    let chosen =
        blocks.iter().rev().find(|(l, _)| python(l)).or_else(|| blocks.iter().rev().find(|(l, _)| l.is_empty()));
    match chosen {
        Some((_, body)) => Some((body.clone(), Rule::Fenced)).filter(|(b, _)| !b.trim().is_empty()),
        None if blocks.is_empty() && !solution.trim().is_empty() => Some((solution.trim().to_string(), Rule::Whole)),
        None => None,
    }
}

/// Judge a code output: run its program with each test. An `Err` names the unusable column.
pub fn verify(t: &TraceRef, settings: &VerifySettings) -> Result<Verdict, (&'static str, String)> {
    let tests = t.tests.filter(|tests| !tests.is_empty()).ok_or_else(|| {
        ("tests", "a code row needs `tests`: Python snippets that exit 0 when the program passes".to_string())
    })?;
    let limits = settings.sandbox_limits();
    let probe = sandbox::probe(&limits.python).map_err(|e| ("domain", format!("code rows run in a sandbox: {e}")))?;
    let parts = extract::split(t.output);
    let code = extract_code(parts.solution);
    let mut verdict = super::checked_verdict(t.output, &parts, code.clone(), Failure::NoCode, settings);
    verdict.verifier = &probe.verifier;
    let Some((code, _)) = code else { return Ok(verdict) };
    let nonces: Vec<String> = (0..tests.len()).map(nonce).collect();
    let tests: Vec<Test> = tests.iter().map(|t| Test::of(t)).collect();
    let jobs: Vec<Job> = tests
        .iter()
        .zip(&nonces)
        .map(|(test, nonce)| match test {
            Test::Snippet(test) => Job {
                program: format!("{code}\n\n{test}\n\n__import__('os').write(1, b'\\n{nonce}\\n')\n"),
                stdin: String::new(),
                main: false,
            },
            Test::Io { stdin, .. } => Job { program: code.clone(), stdin: stdin.clone(), main: true },
        })
        .collect();
    let runs = sandbox::run_all(&limits, &jobs).map_err(|e| ("domain", format!("code rows run in a sandbox: {e}")))?;
    let mut passed = 0;
    for (i, ((test, run), nonce)) in tests.iter().zip(&runs).zip(&nonces).enumerate() {
        let outcome = match test {
            Test::Snippet(_) => judge(run, Some(nonce), &limits),
            Test::Io { stdout, .. } => judge(run, None, &limits).and_then(|()| same_output(&run.stdout, stdout)),
        };
        match outcome {
            Ok(()) => passed += 1,
            Err((failure, message)) => {
                if !verdict.failed.contains(&failure) {
                    verdict.failed.push(failure);
                }
                verdict.test_error.get_or_insert_with(|| format!("test {} of {}: {message}", i + 1, tests.len()));
            }
        }
    }
    verdict.tests_passed = Some(passed as f64 / tests.len() as f64);
    verdict.correct = passed == tests.len();
    verdict.match_method = verdict.correct.then_some(Method::Tests);
    Ok(verdict)
}

/// One item of `tests`.
enum Test<'a> {
    Snippet(&'a str),
    Io { stdin: String, stdout: String },
}

impl<'a> Test<'a> {
    fn of(test: &'a str) -> Test<'a> {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Io {
            stdin: String,
            stdout: String,
        }
        match test.trim_start().starts_with('{').then(|| serde_json::from_str::<Io>(test).ok()).flatten() {
            Some(io) => Test::Io { stdin: io.stdin, stdout: io.stdout },
            None => Test::Snippet(test),
        }
    }
}

/// The output has the expected tokens (numbers within 1e-6 relative); else the first difference.
fn same_output(got: &[u8], expected: &str) -> Result<(), (Failure, String)> {
    let got = String::from_utf8_lossy(got);
    let (mut g, mut e) = (got.split_whitespace(), expected.split_whitespace());
    for at in 1.. {
        match (g.next(), e.next()) {
            (None, None) => return Ok(()),
            (Some(a), Some(b)) if a == b || close(a, b) => {}
            (a, b) => {
                let show = |t: Option<&str>| t.map_or("the end".to_string(), |t| format!("`{}`", clip(t)));
                let message = format!("wrong output: token {at} is {}, expected {}", show(a), show(b));
                return Err((Failure::FailedTest, message));
            }
        }
    }
    unreachable!("the loop returns")
}

fn close(a: &str, b: &str) -> bool {
    match (a.parse::<f64>(), b.parse::<f64>()) {
        (Ok(x), Ok(y)) if x.is_finite() && y.is_finite() => (x - y).abs() <= 1e-6 * y.abs().max(1.0),
        _ => false,
    }
}

fn clip(t: &str) -> String {
    if t.chars().count() <= 40 { t.to_string() } else { t.chars().take(40).collect::<String>() + "…" }
}

/// A marker no program can predict: the run's position, the time and a counter, hashed.
fn nonce(i: usize) -> String {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
    let seed = format!("{t}:{n}:{i}:{}", std::process::id());
    format!("forge-tests-done-{:032x}", xxhash_rust::xxh3::xxh3_128(seed.as_bytes()))
}

/// Whether a test run ended well (exit 0; with a snippet test, its end marker written); if not, the
/// failure and a message for the verdict.
fn judge(run: &Run, nonce: Option<&str>, limits: &sandbox::Limits) -> Result<(), (Failure, String)> {
    let last_error = || {
        let text = String::from_utf8_lossy(&run.stderr);
        let line = text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim().to_string();
        let mut message: String = line.chars().take(MAX_MESSAGE).collect();
        if message.len() < line.len() {
            message.push('…');
        }
        message
    };
    match run.status {
        Status::Exited(0) => {
            let out = String::from_utf8_lossy(&run.stdout);
            if nonce.is_none_or(|nonce| out.trim_end().ends_with(nonce)) {
                Ok(())
            } else {
                Err((Failure::FailedTest, "the program exited before the test finished".into()))
            }
        }
        Status::Exited(code) => {
            let message = last_error();
            let kind = message.split(':').next().unwrap_or("").trim();
            let failure = match kind {
                "SyntaxError" | "IndentationError" | "TabError" => Failure::SyntaxError,
                "MemoryError" => Failure::Memory,
                "RecursionError" => Failure::Crash,
                _ => Failure::FailedTest,
            };
            Err((failure, if message.is_empty() { format!("exit code {code}") } else { message }))
        }
        Status::Timeout => {
            Err((Failure::Timeout, format!("killed after {} s (the sandbox timeout)", limits.timeout.as_secs_f64())))
        }
        Status::Signaled(libc::SIGXCPU) => Err((Failure::Timeout, "killed at its CPU-time limit".into())),
        Status::Signaled(sig) => Err((Failure::Crash, format!("killed by signal {sig} ({})", signal_name(sig)))),
        Status::OutputLimit => Err((Failure::OutputLimit, "wrote more output than the sandbox keeps".into())),
        Status::Lost => Err((Failure::Crash, "its result was lost: the program killed the sandbox's server".into())),
    }
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGKILL => "SIGKILL",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGSYS => "SIGSYS",
        libc::SIGTERM => "SIGTERM",
        _ => "signal",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_python_block_is_the_program() {
        let text = "First try:\n```python\nx = 1\n```\nBetter:\n```py\ndef f():\n    return 2\n```\nDone.";
        assert_eq!(extract_code(text), Some(("def f():\n    return 2".into(), Rule::Fenced)));
        let untagged = "```text\nnot code\n```\n```\nprint(1)\n```";
        assert_eq!(extract_code(untagged).unwrap().0, "print(1)");
        let cut = "```python\ndef g():\n    return 3";
        assert_eq!(extract_code(cut).unwrap().0, "def g():\n    return 3");
        assert_eq!(extract_code("def h(): return 4\n"), Some(("def h(): return 4".into(), Rule::Whole)));
        assert_eq!(extract_code("```text\nprose only\n```"), None);
        assert_eq!(extract_code("  \n"), None);
    }

    #[test]
    fn outputs_compare_by_tokens_and_numbers_within_tolerance() {
        assert!(same_output(b"3 4\n5\n", "3 4 5").is_ok());
        assert!(same_output(b"0.3333333\n", "0.33333333").is_ok());
        assert!(same_output(b"YES", "yes").is_err());
        let (failure, message) = same_output(b"1 2", "1 2 3").unwrap_err();
        assert_eq!(
            (failure, message.as_str()),
            (Failure::FailedTest, "wrong output: token 3 is the end, expected `3`")
        );
        assert!(matches!(Test::of(r#"{"stdin": "1 2\n", "stdout": "3\n"}"#), Test::Io { .. }));
        assert!(matches!(Test::of("assert f() == {'stdin': 1}"), Test::Snippet(_)));
    }
}
