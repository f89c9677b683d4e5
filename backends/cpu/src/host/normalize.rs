//! `lrn` on the host: `y[.., c] = x[.., c] / (bias + alpha * sum_{|j - c| <= r} x[.., j]^2) ^
//! beta` over the last axis (tf.nn.local_response_normalization), the window clipped at the
//! edges. The window sum and the power are evaluated in f64 like the reference evaluator, so
//! the two agree to rounding; LRN is rare enough (AlexNet, GoogLeNet v1) that this costs
//! nothing that matters.

/// `y = lrn(x)` for a rank-4 `x` of `dims`; `params` are `[bias, alpha, beta]`.
pub(super) fn lrn(x: &[f32], dims: &[usize], radius: usize, params: [f32; 3], y: &mut [f32]) {
    let [bias, alpha, beta] = params.map(f64::from);
    let c = dims.last().copied().unwrap_or(0);
    if c == 0 {
        return;
    }
    for (row, out) in x.chunks_exact(c).zip(y.chunks_exact_mut(c)) {
        for (ch, o) in out.iter_mut().enumerate() {
            let lo = ch.saturating_sub(radius);
            let hi = ch.saturating_add(radius).min(c - 1);
            let sum: f64 = row[lo..=hi]
                .iter()
                .map(|&v| f64::from(v) * f64::from(v))
                .sum();
            *o = (f64::from(row[ch]) / (bias + alpha * sum).powf(beta)) as f32;
        }
    }
}
