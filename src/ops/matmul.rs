//! A thin safe wrapper over `gemm` for row/column-strided f32 matrices, single-threaded (the
//! convolutions parallelise over images instead, which pays better for small matrices), and
//! a product split over the cores by output columns (the channel-major convolutions).

use rayon::prelude::*;

/// A read-only matrix view: element (i, j) is `data[i * row_stride + j * col_stride]`.
#[derive(Clone, Copy)]
pub struct MatRef<'a> {
    pub data: &'a [f32],
    pub row_stride: usize,
    pub col_stride: usize,
}

impl<'a> MatRef<'a> {
    /// A row-major matrix with `cols` columns.
    pub fn row_major(data: &'a [f32], cols: usize) -> Self {
        MatRef {
            data,
            row_stride: cols,
            col_stride: 1,
        }
    }

    /// The transpose of a row-major matrix that has `cols` columns.
    pub fn transposed(data: &'a [f32], cols: usize) -> Self {
        MatRef {
            data,
            row_stride: 1,
            col_stride: cols,
        }
    }

    fn last_index(&self, rows: usize, cols: usize) -> usize {
        (rows - 1) * self.row_stride + (cols - 1) * self.col_stride
    }
}

/// `dst (m x n, rows `dst_row_stride` apart) (+)= lhs (m x k) * rhs (k x n)`, single-threaded.
///
/// # Safety
/// `dst` must be valid for writes at `i * dst_row_stride + j` for every i < m, j < n, and no
/// other thread may touch those elements during the call.
#[allow(clippy::too_many_arguments)]
pub unsafe fn matmul_strided(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_row_stride: usize,
    accumulate: bool,
    lhs: MatRef<'_>,
    rhs: MatRef<'_>,
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                std::slice::from_raw_parts_mut(dst.add(i * dst_row_stride), n).fill(0.0);
            }
        }
        return;
    }
    assert!(lhs.last_index(m, k) < lhs.data.len(), "lhs out of bounds");
    assert!(rhs.last_index(k, n) < rhs.data.len(), "rhs out of bounds");
    gemm::gemm(
        m,
        n,
        k,
        dst,
        1,
        dst_row_stride as isize,
        accumulate,
        lhs.data.as_ptr(),
        lhs.col_stride as isize,
        lhs.row_stride as isize,
        rhs.data.as_ptr(),
        rhs.col_stride as isize,
        rhs.row_stride as isize,
        1.0,
        1.0,
        false,
        false,
        false,
        gemm::Parallelism::None,
    );
}

/// `dst (m x n, row-major) (+)= lhs (m x k) * rhs (k x n)`; accumulates when `accumulate`.
pub fn matmul(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    accumulate: bool,
    lhs: MatRef<'_>,
    rhs: MatRef<'_>,
) {
    assert!(dst.len() >= m * n, "destination too small");
    // SAFETY: `dst` holds the m x n matrix (checked above) and is borrowed mutably, so no
    // other thread touches it.
    unsafe { matmul_strided(m, n, k, dst.as_mut_ptr(), n, accumulate, lhs, rhs) }
}

/// Column (or row) ranges of `len`, one per thread, in multiples of 16 (the GEMM's register
/// tile), at least 64 wide: small products stay on one core.
fn blocks(len: usize) -> Vec<(usize, usize)> {
    let threads = rayon::current_num_threads().max(1);
    let width = len.div_ceil(threads).div_ceil(16) * 16;
    let width = width.max(64);
    (0..len)
        .step_by(width)
        .map(|start| (start, (start + width).min(len)))
        .collect()
}

/// A pointer into a destination whose blocks the threads write without overlapping.
#[derive(Clone, Copy)]
struct Dst(*mut f32);
// SAFETY: each thread writes a disjoint range of columns (or rows) through it, and the buffer
// outlives the parallel loop.
unsafe impl Send for Dst {}
unsafe impl Sync for Dst {}

impl Dst {
    /// The pointer (a method, so closures capture the whole `Send` wrapper).
    fn at(self, offset: usize) -> *mut f32 {
        // SAFETY: callers stay inside the buffer the pointer came from.
        unsafe { self.0.add(offset) }
    }
}

/// `dst (m x n, row-major) (+)= lhs (m x k) * rhs (k x n)`, the columns of `dst` split over
/// the threads (each column's sums stay on one thread: the result does not depend on
/// scheduling).
/// `rhs_columns(c)` is the view of `rhs` starting at column `c`.
pub fn par_matmul_by_columns<'a>(
    (m, n, k): (usize, usize, usize),
    dst: &mut [f32],
    accumulate: bool,
    lhs: MatRef<'a>,
    rhs_columns: impl Fn(usize) -> MatRef<'a> + Sync,
) {
    assert!(dst.len() >= m * n, "destination too small");
    let out = Dst(dst.as_mut_ptr());
    blocks(n).into_par_iter().for_each(|(c0, c1)| {
        // SAFETY: columns c0..c1 of the m x n row-major `dst` belong to this block alone.
        unsafe {
            matmul_strided(
                m,
                c1 - c0,
                k,
                out.at(c0),
                n,
                accumulate,
                lhs,
                rhs_columns(c0),
            )
        }
    });
}

/// `count` independent products run in parallel, one per task: product p writes the m x n
/// matrix whose row i starts at `dst[(i * count + p) * n]` (the products' rows interleaved), from
/// `lhs(p)` (m x k) and `rhs(p)` (k x n).
pub fn par_interleaved_matmuls<'a>(
    count: usize,
    (m, n, k): (usize, usize, usize),
    dst: &mut [f32],
    lhs: impl Fn(usize) -> MatRef<'a> + Sync,
    rhs: impl Fn(usize) -> MatRef<'a> + Sync,
) {
    assert!(dst.len() >= m * count * n, "destination too small");
    let out = Dst(dst.as_mut_ptr());
    (0..count).into_par_iter().for_each(|p| {
        // SAFETY: product p writes only elements (i * count + p) * n + j, j < n: disjoint from
        // every other product's, and inside `dst` (checked above).
        unsafe { matmul_strided(m, n, k, out.at(p * n), count * n, false, lhs(p), rhs(p)) }
    });
}
