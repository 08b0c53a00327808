//! Progress on stderr: rows done, rate and ETA. Hidden with `--quiet` and when stderr is not a terminal,
//! so logs and pipes stay clean.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A progress bar on stderr (hidden with `--quiet` or when stderr is not a terminal).
pub struct Progress(ProgressBar);

impl Progress {
    /// Rows of `total`, labelled `label`.
    pub fn rows(label: &str, total: u64, quiet: bool) -> Self {
        let target = if quiet { ProgressDrawTarget::hidden() } else { ProgressDrawTarget::stderr() };
        let bar = ProgressBar::with_draw_target(Some(total), target);
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix:>8} [{bar:30}] {human_pos}/{human_len} rows  {per_sec}  {msg}  ETA {eta}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar.set_prefix(label.to_string());
        Progress(bar)
    }

    /// Optimizer steps of a training run.
    pub fn steps(label: &str, total: u64, quiet: bool) -> Self {
        let progress = Progress::rows(label, total, quiet);
        progress.0.set_style(
            ProgressStyle::with_template("{prefix:>8} [{bar:30}] step {pos}/{len}  {msg}  ETA {eta}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        progress
    }

    /// Counts nobody sees (work inside a stage that shows its own).
    pub fn hidden() -> Self {
        Progress(ProgressBar::hidden())
    }

    /// `rows` more done.
    pub fn inc(&self, rows: u64) {
        self.0.inc(rows);
    }

    /// A short status beside the counts (e.g. tokens/s).
    pub fn message(&self, text: &str) {
        self.0.set_message(text.to_string());
    }

    /// Remove the bar.
    pub fn finish(&self) {
        self.0.finish_and_clear();
    }
}
