//! Examples into training rows: packed several to a row (best-fit decreasing, as TRL's `bfd`) with
//! attention kept inside each example (a block-diagonal causal mask) and positions restarting at each
//! example, or one to a row with padding. Both give each example the logits it would get alone.

use std::collections::BTreeMap;

use candle_core::{Device, Tensor};

use super::data::Example;
use crate::model::Mask;
use crate::rng::Rng;

/// The rows of one epoch, each a list of example indices, in training order: examples shuffled with
/// `(seed, epoch)`, packed into rows of `capacity` tokens (or one per row), rows shuffled again.
pub fn epoch_rows(lengths: &[usize], capacity: usize, packing: bool, seed: u64, epoch: u64) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    Rng::for_row(seed, "shuffle", epoch).shuffle(&mut order);
    let mut rows = if packing {
        best_fit_decreasing(lengths, &order, capacity)
    } else {
        order.into_iter().map(|i| vec![i]).collect()
    };
    Rng::for_row(seed, "rows", epoch).shuffle(&mut rows);
    rows
}

/// Longest first, each into the row with the least room that still fits it.
fn best_fit_decreasing(lengths: &[usize], order: &[usize], capacity: usize) -> Vec<Vec<usize>> {
    let mut sorted = order.to_vec();
    sorted.sort_by_key(|&i| std::cmp::Reverse(lengths[i]));
    let mut rows: Vec<Vec<usize>> = Vec::new();
    let mut by_room: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for i in sorted {
        let len = lengths[i].min(capacity);
        let fit = by_room.range_mut(len..).next().map(|(&room, ids)| (room, ids.pop().expect("non-empty")));
        let (row, room) = match fit {
            Some((room, row)) => {
                if by_room[&room].is_empty() {
                    by_room.remove(&room);
                }
                (row, room)
            }
            None => {
                rows.push(Vec::new());
                (rows.len() - 1, capacity)
            }
        };
        rows[row].push(i);
        by_room.entry(room - len).or_default().push(row);
    }
    rows
}

/// Model inputs of a micro-batch: `[b, t]` ids and positions, the mask (each position sees the earlier
/// positions of its own example), and the flat positions (into `b * t`) whose next token carries the
/// loss, with those next tokens.
pub struct Batch {
    /// `[b, t]` token ids.
    pub ids: Tensor,
    /// `[b, t]` positions, restarting at 0 for each packed example.
    pub positions: Tensor,
    /// Which positions each position attends to.
    pub mask: Mask,
    /// `[n]` flat positions whose next token carries the loss.
    pub picks: Tensor,
    /// `[n]` those next tokens.
    pub targets: Tensor,
    /// The teacher's top-k distributions at the picked positions, where the examples carry them.
    pub teacher: Option<super::distill::Sparse>,
    /// Tokens with a loss.
    pub tokens: usize,
    /// Tokens in the rows, padding aside.
    pub seen: usize,
}

/// Tokens of `rows` that carry a loss.
pub fn trained_tokens(examples: &[Example], rows: &[Vec<usize>]) -> usize {
    rows.iter().flatten().map(|&i| examples[i].trained()).sum()
}

/// Pack `rows` (each a list of indices into `examples`) into one micro-batch's inputs.
pub fn batch(examples: &[Example], rows: &[Vec<usize>], device: &Device) -> candle_core::Result<Batch> {
    let width = rows.iter().map(|r| r.iter().map(|&i| examples[i].ids.len()).sum::<usize>()).max().unwrap_or(1);
    let (mut ids, mut positions, mut segment) = (Vec::new(), Vec::new(), Vec::new());
    let (mut picks, mut targets) = (Vec::new(), Vec::new());
    let mut teacher: Vec<&[(u32, f32)]> = Vec::new();
    for (r, row) in rows.iter().enumerate() {
        let start = ids.len();
        for (s, &i) in row.iter().enumerate() {
            let e = &examples[i];
            for (j, &id) in e.ids.iter().enumerate() {
                if e.train.get(j + 1) == Some(&true) {
                    picks.push((ids.len()) as u32);
                    targets.push(e.ids[j + 1]);
                    teacher.push(e.teacher.get(j + 1).map_or(&[], Vec::as_slice));
                }
                ids.push(id);
                positions.push(j as u32);
                segment.push(s as u32);
            }
        }
        let pad = width - (ids.len() - start);
        ids.extend(std::iter::repeat_n(0, pad));
        positions.extend(std::iter::repeat_n(0, pad));
        segment.extend(std::iter::repeat_n(u32::MAX, pad));
        debug_assert_eq!(ids.len(), (r + 1) * width);
    }
    let b = rows.len();
    let mut ranges = Vec::with_capacity(b * width);
    for seg in segment.chunks(width) {
        let mut first = 0;
        for q in 0..width {
            if q > 0 && seg[q] != seg[q - 1] {
                first = q;
            }
            // a padding query sees itself, so its softmax is defined
            ranges.push(if seg[q] == u32::MAX { (q as u32, q as u32) } else { (first as u32, q as u32) });
        }
    }
    Ok(Batch {
        ids: Tensor::from_vec(ids, (b, width), device)?,
        positions: Tensor::from_vec(positions, (b, width), device)?,
        mask: Mask::new(ranges, b, width, width),
        tokens: picks.len(),
        seen: segment.iter().filter(|&&s| s != u32::MAX).count(),
        teacher: super::distill::Sparse::new(&teacher, device)?,
        picks: Tensor::new(picks, device)?,
        targets: Tensor::new(targets, device)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every example lands in exactly one row, no row is over capacity, and the same seed and epoch give
    /// the same rows (a resumed run must see the data in the same order).
    #[test]
    fn packing_places_each_example_once() {
        let lengths: Vec<usize> = (0..200).map(|i| 5 + (i * 37) % 60).collect();
        let rows = epoch_rows(&lengths, 64, true, 3, 1);
        let mut seen: Vec<usize> = rows.iter().flatten().copied().collect();
        seen.sort();
        assert_eq!(seen, (0..200).collect::<Vec<_>>());
        assert!(rows.iter().all(|r| r.iter().map(|&i| lengths[i]).sum::<usize>() <= 64));
        let total: usize = lengths.iter().sum();
        assert!(rows.len() <= total.div_ceil(64) + 3, "{} rows for {total} tokens", rows.len());
        assert_eq!(rows, epoch_rows(&lengths, 64, true, 3, 1));
        assert_ne!(rows, epoch_rows(&lengths, 64, true, 3, 2));
        assert_eq!(epoch_rows(&lengths, 64, false, 3, 1).len(), 200);
    }

    /// A packed row's mask lets each position see only earlier positions of its own example.
    #[test]
    fn packed_mask_is_block_diagonal() {
        let ex = |n: usize| Example::new((1..=n as u32).collect(), vec![true; n]);
        let examples = vec![ex(3), ex(2)];
        let b = batch(&examples, &[vec![0, 1], vec![1]], &Device::Cpu).unwrap();
        assert_eq!(b.ids.dims(), &[2, 5]);
        let mask: Vec<Vec<f32>> =
            b.mask.dense(&Device::Cpu).unwrap().get(0).unwrap().get(0).unwrap().to_vec2().unwrap();
        let open: Vec<Vec<bool>> = mask.iter().map(|r| r.iter().map(|&x| x == 0.0).collect()).collect();
        let (t, f) = (true, false);
        assert_eq!(
            open,
            vec![
                vec![t, f, f, f, f],
                vec![t, t, f, f, f],
                vec![t, t, t, f, f],
                vec![f, f, f, t, f],
                vec![f, f, f, t, t]
            ]
        );
        assert_eq!(b.positions.to_vec2::<u32>().unwrap(), vec![vec![0, 1, 2, 0, 1], vec![0, 1, 0, 0, 0]]);
        // next-token targets inside each example only: 2, 3 | 2 ; 2
        assert_eq!(b.targets.to_vec1::<u32>().unwrap(), vec![2, 3, 2, 2]);
        assert_eq!(b.picks.to_vec1::<u32>().unwrap(), vec![0, 1, 3, 5]);
    }
}
