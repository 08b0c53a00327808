//! `metrics.csv` (one row per optimizer step, appended as training goes, so a killed run keeps its
//! curve; a resumed run drops rows after its checkpoint) and `loss.png`, the curve drawn from it. The
//! PNG is drawn and encoded here (a few hundred bytes of font, deflate from `flate2`): no plotting stack,
//! no system fonts.

use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Location, Result};

/// One row of `metrics.csv`: one optimizer step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// The step (1-based).
    pub step: u64,
    /// The epoch it belongs to.
    pub epoch: u64,
    /// Mean loss per trained token.
    pub loss: f64,
    /// Loss on the held-out examples, at evaluation steps.
    pub eval_loss: Option<f64>,
    /// The learning rate used.
    pub lr: f64,
    /// The gradient's global norm before clipping.
    pub grad_norm: f64,
    /// Tokens read so far.
    pub tokens: u64,
    /// Tokens read per second over this invocation.
    pub tokens_per_second: f64,
}

/// `metrics.csv`, appended to step by step (a resumed run continues it).
pub struct Log {
    file: fs_err::File,
}

/// The columns of train-sft's and train-distill's `metrics.csv` (train-rl's starts with them).
pub const HEADER: &str = "step,epoch,loss,eval_loss,lr,grad_norm,tokens,tokens_per_second\n";

impl Log {
    /// Open `dir/metrics.csv` for a run at `step`: rows of later steps (written after the checkpoint the
    /// run resumes from) are dropped.
    pub fn open(dir: &Path, step: u64) -> Result<Log> {
        Log::with_header(dir, step, HEADER)
    }

    /// [`Log::open`] for a log of other columns (`header` ends with a newline; the first column is the step).
    pub fn with_header(dir: &Path, step: u64, header: &str) -> Result<Log> {
        let path = dir.join("metrics.csv");
        let mut text = header.to_string();
        if path.exists() {
            for (i, l) in fs_err::read_to_string(&path)?.lines().enumerate().skip(1) {
                let first = l.split(',').next().unwrap_or_default();
                let at: u64 = first.parse().map_err(|_| {
                    Error::data(Location::line(&path, i as u64 + 1), format!("`{first}` is not a step number"))
                })?;
                if at <= step {
                    text.push_str(l);
                    text.push('\n');
                }
            }
        }
        crate::dataset::write_atomic(&path, text.as_bytes())?;
        Ok(Log { file: fs_err::OpenOptions::new().append(true).open(&path)? })
    }

    /// Append one row and flush it.
    pub fn push(&mut self, row: &Row) -> Result<()> {
        self.push_line(&line(row))
    }

    /// Append one line (ending with a newline) of [`Log::with_header`]'s columns.
    pub fn push_line(&mut self, line: &str) -> Result<()> {
        self.file.write_all(line.as_bytes())?;
        self.file.flush()?;
        Ok(())
    }
}

/// A row as a line of [`HEADER`]'s columns.
pub fn line(r: &Row) -> String {
    let eval = r.eval_loss.map(|e| format!("{e:.6}")).unwrap_or_default();
    format!(
        "{},{},{:.6},{eval},{:e},{:.4},{},{:.1}\n",
        r.step, r.epoch, r.loss, r.lr, r.grad_norm, r.tokens, r.tokens_per_second
    )
}

/// The rows of a `metrics.csv`.
pub fn read(path: &Path) -> Result<Vec<Row>> {
    let mut reader = csv::Reader::from_path(path).map_err(|e| Error::data(Location::file(path), e.to_string()))?;
    reader
        .deserialize()
        .enumerate()
        .map(|(i, r)| r.map_err(|e| Error::data(Location::line(path, i as u64 + 2), e.to_string())))
        .collect()
}

/// Draw `dir/metrics.csv` into `dir/loss.png`: training loss per step (blue), evaluation loss (orange).
pub fn plot(dir: &Path) -> Result<()> {
    let rows = read(&dir.join("metrics.csv"))?;
    let png = draw(&rows);
    crate::dataset::write_atomic(&dir.join("loss.png"), &png)
}

/// The RL columns of a `metrics.csv` that train-rl wrote.
#[derive(Deserialize)]
struct RewardRow {
    step: u64,
    reward: f64,
    accuracy: f64,
}

/// Draw train-rl's `dir/metrics.csv` into `dir/reward.png`: mean reward per step (blue), accuracy (orange).
pub fn plot_rewards(dir: &Path) -> Result<()> {
    let path = dir.join("metrics.csv");
    let mut reader = csv::Reader::from_path(&path).map_err(|e| Error::data(Location::file(&path), e.to_string()))?;
    let rows: Vec<RewardRow> = reader
        .deserialize()
        .enumerate()
        .map(|(i, r)| r.map_err(|e| Error::data(Location::line(&path, i as u64 + 2), e.to_string())))
        .collect::<Result<_>>()?;
    let reward = rows.iter().map(|r| (r.step as f64, r.reward)).collect();
    let accuracy = rows.iter().map(|r| (r.step as f64, r.accuracy)).collect();
    crate::dataset::write_atomic(
        &dir.join("reward.png"),
        &crate::plot::curves([("REWARD", reward), ("ACCURACY", accuracy)], "STEP"),
    )
}

/// The loss curve as PNG bytes.
pub fn draw(rows: &[Row]) -> Vec<u8> {
    let train = rows.iter().map(|r| (r.step as f64, r.loss)).collect();
    let eval = rows.iter().filter_map(|r| r.eval_loss.map(|e| (r.step as f64, e))).collect();
    crate::plot::curves([("TRAIN LOSS", train), ("EVAL LOSS", eval)], "STEP")
}
