//! Layers built from several ops: batch normalisation in training mode.

use crate::Graph;
use kiln_ir::{Error, NodeId, Op, Result};

/// What [`Graph::batch_norm_training`] adds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchNormTraining {
    /// The normalised value.
    pub y: NodeId,
    /// The batch mean per channel.
    pub mean: NodeId,
    /// The batch variance per channel (biased: divided by the count), which `y` uses.
    pub variance: NodeId,
    /// The assigns updating the moving mean and the moving variance: run them as targets with
    /// the train step.
    pub updates: [NodeId; 2],
}

impl Graph {
    /// Batch normalisation in training mode over the last axis (channels) of `x`, as
    /// `tf.compat.v1.nn.fused_batch_norm(is_training=True)` and the fused path of
    /// `tf.compat.v1.layers.batch_normalization(training=True)` compute it: the batch mean and
    /// biased variance over every other axis normalise `x` through `batch_norm`, so gradients
    /// reach `x` through the statistics too. The moving averages become
    /// `moving * momentum + stat * (1 - momentum)`, the variance's with the unbiased batch
    /// variance (times `n / (n - 1)`, `n` the values per channel, counted at run time when
    /// the batch is `?`). TensorFlow's non-fused path (inputs of other ranks than 4 in its
    /// layers) updates with the biased variance instead.
    ///
    /// Errors: `x` of rank < 2, or per-channel operands whose shape is not `[channels]`.
    #[allow(clippy::too_many_arguments)]
    pub fn batch_norm_training(
        &mut self,
        x: NodeId,
        scale: NodeId,
        offset: NodeId,
        moving_mean: NodeId,
        moving_variance: NodeId,
        momentum: f32,
        epsilon: f32,
    ) -> Result<BatchNormTraining> {
        let tx = self.node(x).ty.clone();
        if tx.rank() < 2 {
            let node = self.node(x);
            return Err(Error::Op {
                node: node.name.clone(),
                op: node.op.name(),
                message: format!(
                    "batch_norm_training needs x of rank >= 2 (channels last), got {tx}"
                ),
            });
        }
        let axes: Vec<i64> = (0..tx.rank() as i64 - 1).collect();
        let mean = self.reduce_mean(x, &axes, false)?;
        let centred = self.sub(x, mean)?;
        let squares = self.square(centred)?;
        let variance = self.reduce_mean(squares, &axes, false)?;
        // batch_norm checks the per-channel operands against x's channels.
        let y = self.batch_norm(x, [scale, offset, mean, variance], epsilon)?;

        let count = match tx.shape.dims()[..tx.rank() - 1]
            .iter()
            .try_fold(1usize, |n, d| d.map(|d| n * d))
        {
            Some(n) => self.scalar(n as f32)?,
            None => {
                // The number of values per channel, known at run time: sum of ones like x.
                let one = self.scalar(1.0)?;
                let ones = self.op(Op::BroadcastLike, &[one, x])?;
                self.reduce_sum(ones, &axes, false)?
            }
        };
        let one = self.scalar(1.0)?;
        let count_less_one = self.sub(count, one)?;
        let bessel = self.div(count, count_less_one)?;
        let unbiased = self.mul(variance, bessel)?;
        let updates = [
            self.moving_average(moving_mean, mean, momentum)?,
            self.moving_average(moving_variance, unbiased, momentum)?,
        ];
        Ok(BatchNormTraining {
            y,
            mean,
            variance,
            updates,
        })
    }

    /// `moving := moving * momentum + value * (1 - momentum)`.
    fn moving_average(&mut self, moving: NodeId, value: NodeId, momentum: f32) -> Result<NodeId> {
        let keep = self.scalar(momentum)?;
        let take = self.scalar(1.0 - momentum)?;
        let kept = self.mul(moving, keep)?;
        let taken = self.mul(value, take)?;
        let next = self.add(kept, taken)?;
        self.assign(moving, next)
    }
}
