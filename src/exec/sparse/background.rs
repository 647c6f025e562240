//! The background: what every node computes, timestep by timestep, when the input is empty.
//!
//! Folded batch norms give every neuron a bias, so an empty input still drives some channels
//! and their spikes feed the next layer. That response does not depend on the input, so it
//! is computed once per network (by running the executor on all-zero frames) and shared by
//! every stream. A pixel that no input event has reached holds exactly these values, so the
//! executor only computes the others.
//!
//! Storage: away from the borders the background is the same at every pixel (each layer's
//! window sees the same values); zero padding makes it differ within a band along each border
//! that widens by one pixel per layer. Each node's map at each timestep is stored as a table
//! over (row class × column class): rows and columns in the uniform interior share one class,
//! the others have their own. A node whose table is not small next to the layer is not
//! tracked at all (it is computed everywhere), so the cache stays small.

use crate::exec::sparse::lists::PixelLists;

/// One node's background at one timestep.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Class of each row.
    row_class: Vec<u32>,
    /// Class of each column.
    col_class: Vec<u32>,
    /// Column classes (the table's width).
    col_classes: usize,
    /// Channels per pixel.
    channels: usize,
    /// Dense values per cell (empty if the node keeps none).
    values: Vec<f32>,
    /// Nonzero values per cell (empty if the node keeps no lists).
    lists: PixelLists,
    /// Membranes after this timestep per cell (neuron nodes; else empty).
    membranes: Vec<f32>,
    /// Nonzero values over the whole map.
    nnz: u64,
}

impl Snapshot {
    /// Compresses a full map: `values` and `membranes` are NHWC (either may be empty);
    /// `lists` says whether to keep per-cell lists of the values, `binary` whether those are
    /// spikes.
    pub fn compress(
        height: usize,
        width: usize,
        channels: usize,
        values: &[f32],
        membranes: &[f32],
        lists: bool,
        binary: bool,
    ) -> Self {
        let arrays: Vec<&[f32]> = [values, membranes]
            .into_iter()
            .filter(|a| !a.is_empty())
            .collect();
        let row_len = width * channels;
        let (row_class, row_reps) = classes(height, |a, b| {
            arrays
                .iter()
                .all(|m| bits_eq(&m[a * row_len..][..row_len], &m[b * row_len..][..row_len]))
        });
        let (col_class, col_reps) = classes(width, |a, b| {
            arrays.iter().all(|m| {
                (0..height).all(|y| {
                    bits_eq(
                        &m[(y * width + a) * channels..][..channels],
                        &m[(y * width + b) * channels..][..channels],
                    )
                })
            })
        });
        let cells = row_reps.len() * col_reps.len();
        let gather = |m: &[f32]| -> Vec<f32> {
            if m.is_empty() {
                return Vec::new();
            }
            let mut out = Vec::with_capacity(cells * channels);
            for &y in &row_reps {
                for &x in &col_reps {
                    out.extend_from_slice(&m[(y * width + x) * channels..][..channels]);
                }
            }
            out
        };
        let table = gather(values);
        let mut cell_lists = PixelLists::default();
        if lists {
            cell_lists = PixelLists::new(cells, channels, binary);
            for (cell, pixel) in table.chunks_exact(channels.max(1)).enumerate() {
                cell_lists.set_from_dense(cell, pixel);
            }
        }
        Self {
            row_class,
            col_class,
            col_classes: col_reps.len(),
            channels,
            nnz: values.iter().filter(|v| **v != 0.0).count() as u64,
            values: table,
            lists: cell_lists,
            membranes: gather(membranes),
        }
    }

    /// Number of table cells.
    pub fn cells(&self) -> usize {
        self.values
            .len()
            .max(self.membranes.len())
            .checked_div(self.channels)
            .unwrap_or(0)
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        (self.values.len() + self.membranes.len() + self.lists.pixels() * (self.channels + 1))
            * std::mem::size_of::<f32>()
            + (self.row_class.len() + self.col_class.len()) * std::mem::size_of::<u32>()
    }

    /// The cell of pixel `p`.
    #[inline]
    pub fn cell(&self, p: usize) -> usize {
        let width = self.col_class.len();
        let (y, x) = (p / width, p % width);
        self.row_class[y] as usize * self.col_classes + self.col_class[x] as usize
    }

    /// The values at pixel `p`.
    #[inline]
    pub fn values_at(&self, p: usize) -> &[f32] {
        &self.values[self.cell(p) * self.channels..][..self.channels]
    }

    /// The membranes at pixel `p`.
    #[inline]
    pub fn membranes_at(&self, p: usize) -> &[f32] {
        &self.membranes[self.cell(p) * self.channels..][..self.channels]
    }

    /// The lists of the cells (index them with [`Snapshot::cell`]).
    pub fn lists(&self) -> &PixelLists {
        &self.lists
    }

    /// Number of nonzero values at pixel `p`.
    #[inline]
    pub fn nnz_at(&self, p: usize) -> usize {
        if self.lists.pixels() > 0 {
            self.lists.channels_at(self.cell(p)).len()
        } else {
            self.values_at(p).iter().filter(|v| **v != 0.0).count()
        }
    }

    /// Nonzero values over the whole map.
    pub fn nnz(&self) -> u64 {
        self.nnz
    }
}

/// Bit equality (so −0 and +0 differ and NaNs compare by payload).
fn bits_eq(a: &[f32], b: &[f32]) -> bool {
    a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

/// Splits `len` positions into classes: the longest run of positions equal to the middle one
/// that contains it shares one class, every other position has its own. Returns the class of
/// each position and a representative of each class.
fn classes(len: usize, equal: impl Fn(usize, usize) -> bool) -> (Vec<u32>, Vec<usize>) {
    if len == 0 {
        return (Vec::new(), Vec::new());
    }
    let mid = len / 2;
    let mut lo = mid;
    while lo > 0 && equal(lo - 1, mid) {
        lo -= 1;
    }
    let mut hi = mid + 1;
    while hi < len && equal(hi, mid) {
        hi += 1;
    }
    let mut class = Vec::with_capacity(len);
    let mut reps = Vec::new();
    for p in 0..len {
        if p < lo || p >= hi {
            class.push(reps.len() as u32);
            reps.push(p);
        } else if p == lo {
            class.push(reps.len() as u32);
            reps.push(mid);
        } else {
            class.push(class[lo]);
        }
    }
    (class, reps)
}

/// The background of every node over a number of timesteps.
#[derive(Debug, Clone, Default)]
pub struct Background {
    /// Per node (None: not tracked), per timestep.
    nodes: Vec<Option<Vec<Snapshot>>>,
    /// Timesteps covered.
    steps: usize,
}

impl Background {
    /// An empty background for `nodes` nodes covering `steps` timesteps (filled by
    /// [`Background::set`]).
    pub fn new(nodes: usize, steps: usize) -> Self {
        Self {
            nodes: vec![None; nodes],
            steps,
        }
    }

    /// Timesteps covered.
    pub fn steps(&self) -> usize {
        self.steps
    }

    /// Stores node `node`'s snapshots (one per timestep).
    pub fn set(&mut self, node: usize, snapshots: Vec<Snapshot>) {
        debug_assert_eq!(snapshots.len(), self.steps);
        self.nodes[node] = Some(snapshots);
    }

    /// Stops tracking node `node` (drops its snapshots).
    pub fn clear(&mut self, node: usize) {
        self.nodes[node] = None;
    }

    /// Node `node`'s background at timestep `t`, if tracked and covered.
    #[inline]
    pub fn at(&self, node: usize, t: usize) -> Option<&Snapshot> {
        self.nodes.get(node)?.as_ref()?.get(t)
    }

    /// Whether node `node` is tracked.
    pub fn tracks(&self, node: usize) -> bool {
        self.nodes.get(node).is_some_and(Option::is_some)
    }

    /// Bytes held by all snapshots.
    pub fn bytes(&self) -> usize {
        self.nodes
            .iter()
            .flatten()
            .flat_map(|s| s.iter().map(Snapshot::bytes))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_interior_collapses_to_one_class() {
        // 6×5×2 map: value depends only on distance to the top/left border, capped at 2.
        let (h, w, c) = (6, 5, 2);
        let mut m = vec![0.0f32; h * w * c];
        for y in 0..h {
            for x in 0..w {
                for ch in 0..c {
                    m[(y * w + x) * c + ch] = (y.min(2) * 10 + x.min(1)) as f32 + ch as f32 * 0.5;
                }
            }
        }
        let s = Snapshot::compress(h, w, c, &m, &[], true, false);
        // Rows 0, 1 distinct; rows 2..6 one class. Column 0 distinct; 1..5 one class.
        assert_eq!(s.cells(), 3 * 2);
        for p in 0..h * w {
            assert_eq!(s.values_at(p), &m[p * c..][..c]);
            assert_eq!(
                s.nnz_at(p),
                m[p * c..][..c].iter().filter(|v| **v != 0.0).count()
            );
        }
        assert_eq!(s.nnz(), m.iter().filter(|v| **v != 0.0).count() as u64);
    }

    #[test]
    fn classes_keep_everything_distinct_when_nothing_repeats() {
        let (class, reps) = classes(4, |a, b| a == b);
        assert_eq!(class, vec![0, 1, 2, 3]);
        assert_eq!(reps, vec![0, 1, 2, 3]);
        let (class, reps) = classes(5, |_, _| true);
        assert_eq!(class, vec![0; 5]);
        assert_eq!(reps, vec![2]);
    }
}
