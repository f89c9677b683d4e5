//! Per-thread f32 buffers kept from one call to the next: a fresh buffer of a few hundred
//! kilobytes or more is zeroed and page-faulted in on every call (15% of a 64-channel
//! Winograd conv on Zen 4). Used for Winograd's transformed inputs and products, the padded
//! input copy, the GEMM's column split and the depthwise + 1x1 bands.

use std::cell::RefCell;
use std::thread::LocalKey;

/// A thread-local buffer for [`with_buffer`].
pub(crate) type ThreadBuffer = LocalKey<RefCell<Vec<f32>>>;

/// Runs `f` with this thread's buffer `key` holding at least `len` values, of which it gets
/// the first `len` (contents left from before: callers write every value they read), or with
/// a fresh zeroed buffer when this thread's is in use (it took another task while waiting
/// inside `f`).
pub(crate) fn with_buffer<R>(
    key: &'static ThreadBuffer,
    len: usize,
    f: impl FnOnce(&mut [f32]) -> R,
) -> R {
    key.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            if buf.len() < len {
                buf.resize(len, 0.0);
            }
            f(&mut buf[..len])
        }
        Err(_) => f(&mut vec![0.0; len]),
    })
}

/// [`with_buffer`] handing out `len` values that start on a 64-byte boundary.
pub(crate) fn with_aligned_buffer<R>(
    key: &'static ThreadBuffer,
    len: usize,
    f: impl FnOnce(&mut [f32]) -> R,
) -> R {
    const LANES: usize = 16;
    with_buffer(key, len + LANES, |buf| {
        // align_offset may decline (usize::MAX): then alignment is only a speed matter.
        let start = buf.as_ptr().align_offset(LANES * 4).min(LANES);
        f(&mut buf[start..start + len])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    thread_local! {
        static BUF: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    }

    /// The buffer is kept (what one call wrote, the next sees) and grows but hands out exactly
    /// `len` values; a nested call gets a fresh buffer instead of a borrow panic.
    #[test]
    fn buffers_are_kept_grown_and_never_shared() {
        with_buffer(&BUF, 4, |b| b.copy_from_slice(&[1.0, 2.0, 3.0, 4.0]));
        with_buffer(&BUF, 2, |b| assert_eq!(b, &[1.0, 2.0]));
        with_buffer(&BUF, 6, |b| {
            assert_eq!(b.len(), 6);
            assert_eq!(&b[..4], &[1.0, 2.0, 3.0, 4.0]);
            with_buffer(&BUF, 3, |inner| {
                assert_eq!(inner, &[0.0, 0.0, 0.0]);
                inner[0] = 9.0;
            });
            assert_eq!(b[0], 1.0);
        });
    }
}
