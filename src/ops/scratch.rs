//! Reusable f32 buffers per thread. The convolutions need large temporary matrices every step
//! (the 28x28 layer's im2col matrix is 58 MB per batch of 64); allocating them fresh means
//! zeroing (or page-faulting) them every time, although every element is overwritten before
//! it is read. A buffer taken here has unspecified contents: callers write before reading.

use std::cell::RefCell;

/// Buffers kept per thread at most; beyond that, returned buffers are freed.
const KEPT_PER_THREAD: usize = 8;

thread_local! {
    static FREE: RefCell<Vec<Vec<f32>>> = const { RefCell::new(Vec::new()) };
}

/// A buffer of `len` values with unspecified contents: the smallest kept one that is large
/// enough, or a new one.
pub fn take(len: usize) -> Vec<f32> {
    let found = FREE.with(|free| {
        let mut free = free.borrow_mut();
        let best = free
            .iter()
            .enumerate()
            .filter(|(_, b)| b.capacity() >= len)
            .min_by_key(|(_, b)| b.capacity())
            .map(|(i, _)| i);
        best.map(|i| free.swap_remove(i))
    });
    match found {
        Some(mut buffer) => {
            // Shrinking keeps old values, growing (within capacity) zero-fills the rest.
            buffer.resize(len, 0.0);
            buffer
        }
        None => vec![0.0; len],
    }
}

/// Gives a buffer back for later [`take`]s on this thread.
pub fn give(buffer: Vec<f32>) {
    if buffer.capacity() == 0 {
        return;
    }
    FREE.with(|free| {
        let mut free = free.borrow_mut();
        if free.len() < KEPT_PER_THREAD {
            free.push(buffer);
        } else if let Some(smallest) = free.iter_mut().min_by_key(|b| b.capacity()) {
            // Keep the larger of the two.
            if smallest.capacity() < buffer.capacity() {
                *smallest = buffer;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_reused_by_size_and_have_the_length_asked_for() {
        let big = take(1000);
        let big_ptr = big.as_ptr();
        let small = take(10);
        let small_ptr = small.as_ptr();
        give(big);
        give(small);
        let again_small = take(8);
        assert_eq!(again_small.len(), 8);
        assert_eq!(
            again_small.as_ptr(),
            small_ptr,
            "best fit: the small buffer"
        );
        let again_big = take(900);
        assert_eq!(again_big.len(), 900);
        assert_eq!(again_big.as_ptr(), big_ptr);
        let fresh = take(2000);
        assert_eq!(fresh.len(), 2000);
        assert!(
            fresh.iter().all(|&v| v == 0.0),
            "a new buffer starts at zero"
        );
    }
}
