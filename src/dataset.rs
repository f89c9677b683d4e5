//! Training data: named tensors split along axis 0 into rows, taken in batches, in file order
//! or shuffled per epoch with a seed, as `kiln train` and the training example read them.

use kiln_ir::{Data, Error, Result, Tensor};

/// Named tensors with the same number of rows (their first dim).
#[derive(Clone, Debug)]
pub struct Dataset {
    columns: Vec<(String, Tensor)>,
    rows: usize,
}

impl Dataset {
    /// The columns must be non-empty, each of rank 1 or more, all with one first dim.
    pub fn new(columns: Vec<(String, Tensor)>) -> Result<Dataset> {
        let Some((first_name, first)) = columns.first() else {
            return Err(Error::Invalid("a dataset needs at least one tensor".into()));
        };
        let rows_of = |name: &str, t: &Tensor| {
            t.dims().first().copied().ok_or_else(|| {
                Error::Invalid(format!(
                    "%{name} is a scalar; training data is split along its first dim"
                ))
            })
        };
        let rows = rows_of(first_name, first)?;
        for (name, t) in &columns[1..] {
            let r = rows_of(name, t)?;
            if r != rows {
                return Err(Error::Invalid(format!(
                    "training data has different first dims: %{first_name} has {rows} rows \
                     ({}), %{name} has {r} ({}); every feed must have one row per sample",
                    first.ty(),
                    t.ty()
                )));
            }
        }
        Ok(Dataset { columns, rows })
    }

    /// The number of samples.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// The column names, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.columns.iter().map(|(n, _)| n.as_str())
    }

    /// The rows `start..end` as a dataset of their own (e.g. a held-out part).
    pub fn range(&self, start: usize, end: usize) -> Result<Dataset> {
        let rows: Vec<usize> = (start..end.min(self.rows)).collect();
        Dataset::new(self.take(&rows)?)
    }

    /// The given rows of every column, in that order.
    pub fn take(&self, rows: &[usize]) -> Result<Vec<(String, Tensor)>> {
        if let Some(&bad) = rows.iter().find(|&&r| r >= self.rows) {
            return Err(Error::Invalid(format!(
                "row {bad} of a dataset of {} rows",
                self.rows
            )));
        }
        self.columns
            .iter()
            .map(|(name, t)| Ok((name.clone(), take_rows(t, rows)?)))
            .collect()
    }

    /// The order rows are visited in epoch `epoch`: file order, or a permutation drawn from
    /// `shuffle` and the epoch (the same seed gives the same sequence of epochs).
    pub fn epoch_order(&self, shuffle: Option<u64>, epoch: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.rows).collect();
        if let Some(seed) = shuffle {
            let mut state = seed ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            for i in (1..order.len()).rev() {
                let j = (splitmix64(&mut state) % (i as u64 + 1)) as usize;
                order.swap(i, j);
            }
        }
        order
    }

    /// The full batches of `batch` rows of `order` (a partial last batch is dropped).
    pub fn batches<'a>(
        &'a self,
        order: &'a [usize],
        batch: usize,
    ) -> impl Iterator<Item = Result<Vec<(String, Tensor)>>> + 'a {
        order
            .chunks_exact(batch.max(1))
            .map(move |rows| self.take(rows))
    }
}

/// The given rows (slices along axis 0) of `t`.
fn take_rows(t: &Tensor, rows: &[usize]) -> Result<Tensor> {
    let per_row = t.numel() / t.dims()[0].max(1);
    let mut dims = t.dims().to_vec();
    dims[0] = rows.len();
    fn pick<T: Copy>(v: &[T], rows: &[usize], per_row: usize) -> Vec<T> {
        rows.iter()
            .flat_map(|&r| v[r * per_row..(r + 1) * per_row].iter().copied())
            .collect()
    }
    let data = match t.data() {
        Data::F32(v) => Data::F32(pick(v, rows, per_row)),
        Data::I32(v) => Data::I32(pick(v, rows, per_row)),
        Data::I64(v) => Data::I64(pick(v, rows, per_row)),
        Data::Bool(v) => Data::Bool(pick(v, rows, per_row)),
    };
    Tensor::new(&dims, data)
}

/// The splitmix64 generator step (a well-mixed 64-bit sequence from any seed).
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data() -> Dataset {
        Dataset::new(vec![
            (
                "x".into(),
                Tensor::from_vec(&[5, 2], (0..10).map(|i| i as f32).collect()).unwrap(),
            ),
            (
                "y".into(),
                Tensor::new(&[5], Data::I32(vec![0, 1, 2, 3, 4])).unwrap(),
            ),
        ])
        .unwrap()
    }

    #[test]
    fn batches_take_rows_in_order_and_drop_the_partial_one() {
        let d = data();
        let order = d.epoch_order(None, 0);
        let batches: Vec<_> = d.batches(&order, 2).collect::<Result<_>>().unwrap();
        assert_eq!(batches.len(), 2);
        assert_eq!(batches[1][0].1.as_f32().unwrap(), &[4.0, 5.0, 6.0, 7.0]);
        assert!(matches!(batches[1][1].1.data(), Data::I32(v) if v == &[2, 3]));
    }

    #[test]
    fn shuffling_is_a_seeded_permutation_per_epoch() {
        let d = data();
        let a = d.epoch_order(Some(7), 0);
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, vec![0, 1, 2, 3, 4]);
        assert_eq!(a, d.epoch_order(Some(7), 0));
        let epochs: Vec<_> = (0..4).map(|e| d.epoch_order(Some(7), e)).collect();
        assert!(epochs.iter().any(|o| *o != a), "epochs reshuffle");
    }

    #[test]
    fn different_first_dims_are_an_error_naming_both() {
        let e = Dataset::new(vec![
            ("x".into(), Tensor::zeros(&[5, 2])),
            ("y".into(), Tensor::zeros(&[4])),
        ])
        .unwrap_err()
        .to_string();
        assert!(e.contains("%x has 5 rows") && e.contains("%y has 4"), "{e}");
        assert!(Dataset::new(vec![("s".into(), Tensor::scalar(1.0))]).is_err());
    }
}
