//! Small-batch kernels for training dense layers on the CPU (the head fast path).
//!
//! With 32 rows a step, a GEMM library re-packs each weight matrix for every product and then
//! uses it for only 32 rows: packing costs as much as the multiply. Here the weights live packed
//! for good, in panels of [`PANEL`] output units ([`PanelMatrix`]); Adam is element-wise, so it
//! updates them in that layout too. Every product is [`accumulate`]: a register tile of rows of
//! one operand times a 32-wide row of the other, along the shared dimension, in one fixed order
//! (results do not depend on the number of threads). The tiles use AVX-512 or AVX2 + FMA when
//! the CPU has them (checked at run time), plain Rust otherwise.

use std::sync::OnceLock;

/// Output units per weight panel, and the width of every register tile.
pub const PANEL: usize = 32;

/// A dense layer's weights (`inputs` x `units`) stored as `units.div_ceil(PANEL)` panels, each
/// `inputs` rows of [`PANEL`] units, row-major; units past `units` are zero.
#[derive(Clone, Debug, PartialEq)]
pub struct PanelMatrix {
    pub inputs: usize,
    pub units: usize,
    pub data: Vec<f32>,
}

impl PanelMatrix {
    pub fn zeros(inputs: usize, units: usize) -> Self {
        PanelMatrix {
            inputs,
            units,
            data: vec![0.0; units.div_ceil(PANEL) * inputs * PANEL],
        }
    }

    /// From a row-major `inputs` x `units` matrix.
    pub fn from_row_major(weight: &[f32], inputs: usize, units: usize) -> Self {
        assert_eq!(weight.len(), inputs * units, "weight is inputs x units");
        let mut packed = Self::zeros(inputs, units);
        for (i, row) in weight.chunks_exact(units.max(1)).enumerate() {
            for (j, &w) in row.iter().enumerate() {
                let at = packed.index(i, j);
                packed.data[at] = w;
            }
        }
        packed
    }

    /// The row-major `inputs` x `units` matrix.
    pub fn to_row_major(&self) -> Vec<f32> {
        let mut weight = Vec::with_capacity(self.inputs * self.units);
        for i in 0..self.inputs {
            weight.extend((0..self.units).map(|j| self.data[self.index(i, j)]));
        }
        weight
    }

    pub fn panels(&self) -> usize {
        self.units.div_ceil(PANEL)
    }

    /// `units` rounded up to whole panels.
    pub fn padded_units(&self) -> usize {
        self.panels() * PANEL
    }

    fn index(&self, i: usize, j: usize) -> usize {
        (j / PANEL * self.inputs + i) * PANEL + j % PANEL
    }
}

/// The vector instructions the kernels use on this CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    Avx512,
    Avx2Fma,
    Portable,
}

impl Isa {
    /// The best this CPU runs, found once.
    pub fn detect() -> Isa {
        static FOUND: OnceLock<Isa> = OnceLock::new();
        *FOUND.get_or_init(|| {
            #[cfg(target_arch = "x86_64")]
            {
                if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("fma") {
                    return Isa::Avx512;
                }
                if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                    return Isa::Avx2Fma;
                }
            }
            Isa::Portable
        })
    }

    /// For `t < count`, `l < PANEL`:
    /// `acc[t * PANEL + l] += sum over d < depth of a[t * a_row + d * a_col] * b[d * b_row + l]`,
    /// the sum taken in order of `d`.
    #[allow(clippy::too_many_arguments)]
    pub fn accumulate(
        self,
        count: usize,
        acc: &mut [f32],
        a: &[f32],
        (a_row, a_col): (usize, usize),
        b: &[f32],
        b_row: usize,
        depth: usize,
    ) {
        if count == 0 || depth == 0 {
            return;
        }
        assert!(acc.len() >= count * PANEL, "accumulator too small");
        assert!(
            (count - 1) * a_row + (depth - 1) * a_col < a.len(),
            "a out of bounds"
        );
        assert!((depth - 1) * b_row + PANEL <= b.len(), "b out of bounds");
        let (acc, a, b) = (acc.as_mut_ptr(), a.as_ptr(), b.as_ptr());
        // Whole tiles of `$tile` rows through `$kernel`, the rest one row at a time.
        #[cfg(target_arch = "x86_64")]
        macro_rules! tiled {
            ($kernel:ident, $tile:literal) => {
                tiles(count, $tile, |t0, tile| {
                    let (acc, a) = (acc.add(t0 * PANEL), a.add(t0 * a_row));
                    if tile == $tile {
                        x86::$kernel::<$tile>(acc, a, a_row, a_col, b, b_row, depth)
                    } else {
                        x86::$kernel::<1>(acc, a, a_row, a_col, b, b_row, depth)
                    }
                })
            };
        }
        // SAFETY: the bounds of every access are checked above (tile t0 reads a from
        // t0 * a_row, writes acc from t0 * PANEL); the features were detected at run time.
        unsafe {
            match self {
                #[cfg(target_arch = "x86_64")]
                Isa::Avx512 => tiled!(tile_avx512, 8),
                #[cfg(target_arch = "x86_64")]
                Isa::Avx2Fma => tiled!(tile_avx2, 2),
                _ => {
                    for t in 0..count {
                        for d in 0..depth {
                            let x = *a.add(t * a_row + d * a_col);
                            for l in 0..PANEL {
                                *acc.add(t * PANEL + l) += x * *b.add(d * b_row + l);
                            }
                        }
                    }
                }
            }
        }
    }

    /// One Adam step on `params` with gradients `grads` (see [`AdamStep`]).
    pub fn adam(
        self,
        step: &AdamStep,
        params: &mut [f32],
        grads: &[f32],
        m: &mut [f32],
        v: &mut [f32],
    ) {
        assert!(grads.len() == params.len() && m.len() == params.len() && v.len() == params.len());
        match self {
            // SAFETY: the features were detected at run time.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { x86::adam_avx512(step, params, grads, m, v) },
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2Fma => unsafe { x86::adam_avx2(step, params, grads, m, v) },
            _ => step.apply(params, grads, m, v),
        }
    }
}

/// Calls `run(t0, tile)` for whole tiles of `tile` rows, then for single rows.
#[inline(always)]
fn tiles(count: usize, tile: usize, mut run: impl FnMut(usize, usize)) {
    let mut t0 = 0;
    while t0 + tile <= count {
        run(t0, tile);
        t0 += tile;
    }
    while t0 < count {
        run(t0, 1);
        t0 += 1;
    }
}

/// Adam's update for one step (dfdx's formula with Keras' defaults: beta1 0.9, beta2 0.999,
/// epsilon 1e-7), bias corrections folded into `c1`, `c2`.
#[derive(Clone, Copy, Debug)]
pub struct AdamStep {
    pub learning_rate: f32,
    c1: f32,
    c2: f32,
}

const BETA1: f32 = 0.9;
const BETA2: f32 = 0.999;
const EPSILON: f32 = 1e-7;

impl AdamStep {
    /// Step `step` (counted from 1) at `learning_rate`.
    pub fn new(step: i32, learning_rate: f32) -> Self {
        AdamStep {
            learning_rate,
            c1: (1.0 - BETA1.powi(step)).recip(),
            c2: (1.0 - BETA2.powi(step)).recip(),
        }
    }

    #[inline(always)]
    fn apply(&self, params: &mut [f32], grads: &[f32], m: &mut [f32], v: &mut [f32]) {
        for (((p, &g), m), v) in params.iter_mut().zip(grads).zip(m).zip(v) {
            *m = *m * BETA1 + g * (1.0 - BETA1);
            *v = *v * BETA2 + g * g * (1.0 - BETA2);
            *p -= self.learning_rate * (*m * self.c1) / ((*v * self.c2).sqrt() + EPSILON);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{AdamStep, PANEL};
    use std::arch::x86_64::*;

    /// Generates a register-tile kernel: `T` rows of `a`, each times a `PANEL`-wide row of `b`,
    /// accumulated in `T x PANEL / width` vector registers.
    macro_rules! tile_kernel {
        ($name:ident, $feature:literal, $vector:ty, $width:literal, $splat:ident, $load:ident,
         $store:ident, $fma:ident) => {
            /// # Safety
            /// The CPU has the features; `acc` holds `T x PANEL` values; `a` and `b` are
            /// readable at every index the loop forms.
            #[target_feature(enable = $feature)]
            #[allow(clippy::too_many_arguments)]
            pub unsafe fn $name<const T: usize>(
                acc: *mut f32,
                a: *const f32,
                a_row: usize,
                a_col: usize,
                b: *const f32,
                b_row: usize,
                depth: usize,
            ) {
                const VECTORS: usize = PANEL / $width;
                let mut sums = [[$splat(0.0); VECTORS]; T];
                for (t, row) in sums.iter_mut().enumerate() {
                    for (v, sum) in row.iter_mut().enumerate() {
                        *sum = $load(acc.add(t * PANEL + v * $width));
                    }
                }
                for d in 0..depth {
                    let b_at = b.add(d * b_row);
                    let mut b_row_vectors = [$splat(0.0); VECTORS];
                    for (v, bv) in b_row_vectors.iter_mut().enumerate() {
                        *bv = $load(b_at.add(v * $width));
                    }
                    for (t, row) in sums.iter_mut().enumerate() {
                        let x = $splat(*a.add(t * a_row + d * a_col));
                        for (sum, bv) in row.iter_mut().zip(b_row_vectors) {
                            *sum = $fma(x, bv, *sum);
                        }
                    }
                }
                for (t, row) in sums.iter().enumerate() {
                    for (v, sum) in row.iter().enumerate() {
                        $store(acc.add(t * PANEL + v * $width), *sum);
                    }
                }
            }
        };
    }

    tile_kernel!(
        tile_avx512,
        "avx512f,avx2,fma",
        __m512,
        16,
        _mm512_set1_ps,
        _mm512_loadu_ps,
        _mm512_storeu_ps,
        _mm512_fmadd_ps
    );
    tile_kernel!(
        tile_avx2,
        "avx2,fma",
        __m256,
        8,
        _mm256_set1_ps,
        _mm256_loadu_ps,
        _mm256_storeu_ps,
        _mm256_fmadd_ps
    );

    /// Generates Adam's step compiled for the instruction set `$feature`.
    macro_rules! adam_kernel {
        ($name:ident, $feature:literal) => {
            /// # Safety
            /// The CPU has the features.
            #[target_feature(enable = $feature)]
            pub unsafe fn $name(
                step: &AdamStep,
                p: &mut [f32],
                g: &[f32],
                m: &mut [f32],
                v: &mut [f32],
            ) {
                step.apply(p, g, m, v)
            }
        };
    }

    adam_kernel!(adam_avx512, "avx512f,avx2,fma");
    adam_kernel!(adam_avx2, "avx2,fma");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| ((i as u32).wrapping_mul(2_654_435_761) ^ seed) % 2001)
            .map(|v| v as f32 / 1000.0 - 1.0)
            .collect()
    }

    /// Every instruction set this CPU has gives the naive sums, for tile counts with and without
    /// a remainder, both operand orders.
    #[test]
    fn accumulate_matches_naive_sums() {
        let mut isas = vec![Isa::Portable];
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                isas.push(Isa::Avx2Fma);
            }
            if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("fma") {
                isas.push(Isa::Avx512);
            }
        }
        for isa in isas {
            for (count, depth, a_row, a_col, b_row) in [
                (11, 37, 1, 13, 40),
                (8, 5, 37, 1, 32),
                (3, 1, 2, 5, 33),
                (17, 64, 64, 1, 35),
            ] {
                let a = values((count - 1) * a_row + (depth - 1) * a_col + 1, 7);
                let b = values((depth - 1) * b_row + PANEL, 11);
                let start = values(count * PANEL, 3);
                let mut acc = start.clone();
                isa.accumulate(count, &mut acc, &a, (a_row, a_col), &b, b_row, depth);
                for t in 0..count {
                    for l in 0..PANEL {
                        let naive: f64 = (0..depth)
                            .map(|d| a[t * a_row + d * a_col] as f64 * b[d * b_row + l] as f64)
                            .sum::<f64>()
                            + start[t * PANEL + l] as f64;
                        let got = acc[t * PANEL + l] as f64;
                        assert!(
                            (got - naive).abs() < 1e-4 * (1.0 + naive.abs()),
                            "{isa:?} count {count} depth {depth}: {got} vs {naive} at ({t}, {l})"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn panels_round_trip_and_pad_with_zeros() {
        let weight = values(5 * 45, 1);
        let packed = PanelMatrix::from_row_major(&weight, 5, 45);
        assert_eq!(packed.panels(), 2);
        assert_eq!(packed.data.len(), 2 * 5 * PANEL);
        assert_eq!(packed.to_row_major(), weight);
        // Row 2, unit 40 sits in panel 1 at column 8.
        assert_eq!(packed.data[(5 + 2) * PANEL + 8], weight[2 * 45 + 40]);
        let padding: f32 = (0..5)
            .flat_map(|i| (45 - PANEL..PANEL).map(move |l| (5 + i) * PANEL + l))
            .map(|k| packed.data[k].abs())
            .sum();
        assert_eq!(padding, 0.0);
    }

    #[test]
    fn every_adam_variant_agrees_with_the_formula() {
        let step = AdamStep::new(3, 1e-3);
        let (g, m0, v0, p0) = (values(50, 1), values(50, 2), values(50, 3), values(50, 4));
        let v0: Vec<f32> = v0.iter().map(|x| x.abs()).collect();
        let (mut p, mut m, mut v) = (p0.clone(), m0.clone(), v0.clone());
        Isa::detect().adam(&step, &mut p, &g, &mut m, &mut v);
        for i in 0..50 {
            let mi = 0.9 * m0[i] as f64 + 0.1 * g[i] as f64;
            let vi = 0.999 * v0[i] as f64 + 0.001 * (g[i] as f64).powi(2);
            let (c1, c2) = (1.0 / (1.0 - 0.9f64.powi(3)), 1.0 / (1.0 - 0.999f64.powi(3)));
            let pi = p0[i] as f64 - 1e-3 * mi * c1 / ((vi * c2).sqrt() + 1e-7);
            assert!((p[i] as f64 - pi).abs() < 1e-6, "{} vs {pi}", p[i]);
            assert!((m[i] as f64 - mi).abs() < 1e-6 && (v[i] as f64 - vi).abs() < 1e-6);
        }
    }
}
