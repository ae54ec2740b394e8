//! Distribution functions: normal, Student t and chi-square tails and quantiles.
//!
//! Every tail is computed directly (survival functions, `libm::erfc`), never as `1 - cdf`,
//! so p-values keep their relative accuracy down to the smallest normal doubles.

use std::f64::consts::{FRAC_1_SQRT_2, PI};

/// ln(2π)/2, used by several densities.
const LN_SQRT_2PI: f64 = 0.918_938_533_204_672_8;

/// Upper tail of the standard normal, Q(z) = P(Z > z).
pub fn normal_sf(z: f64) -> f64 {
    0.5 * libm::erfc(z * FRAC_1_SQRT_2)
}

/// Lower tail of the standard normal, Φ(z) = P(Z <= z).
pub fn normal_cdf(z: f64) -> f64 {
    0.5 * libm::erfc(-z * FRAC_1_SQRT_2)
}

/// Two-sided p-value of a standard normal statistic, 2·Q(|z|).
pub fn normal_two_sided_p(z: f64) -> f64 {
    libm::erfc(z.abs() * FRAC_1_SQRT_2).min(1.0)
}

/// Standard normal density.
pub fn normal_pdf(z: f64) -> f64 {
    (-0.5 * z * z - LN_SQRT_2PI).exp()
}

/// The z with Q(z) = q, for 0 < q < 1 (upper-tail quantile).
///
/// Wichura's AS 241 gives the start; Newton steps on ln Q with `erfc` make it exact to the
/// last bits in both tails, where a plain rational approximation loses relative accuracy.
pub fn normal_isf(q: f64) -> f64 {
    debug_assert!(q > 0.0 && q < 1.0);
    if q > 0.5 {
        return -normal_isf(1.0 - q);
    }
    let mut z = -as241_lower(q);
    if q < 1e-300 {
        // Below this Q underflows to subnormals; AS 241 alone is accurate to ~1e-16 relative.
        return z;
    }
    for _ in 0..3 {
        let sf = normal_sf(z);
        if sf <= 0.0 {
            break;
        }
        // Newton on ln Q(z) - ln q: d/dz ln Q = -φ/Q.
        let step = (sf.ln() - q.ln()) * sf / normal_pdf(z);
        z += step;
        if step.abs() <= 1e-15 * z.abs() {
            break;
        }
    }
    z
}

/// AS 241 (PPND16) for the lower tail p <= 0.5; the far-tail branch (p < ~1e-11) is replaced
/// by an asymptotic start, refined by the caller.
fn as241_lower(p: f64) -> f64 {
    let q = p - 0.5;
    if q.abs() <= 0.425 {
        let r = 0.180625 - q * q;
        let num = ((((((2.509_080_928_730_122_7e3 * r + 3.343_057_558_358_813e4) * r
            + 6.726_577_092_700_87e4)
            * r
            + 4.592_195_393_154_987e4)
            * r
            + 1.373_169_376_550_946e4)
            * r
            + 1.971_590_950_306_551_3e3)
            * r
            + 1.331_416_678_917_843_8e2)
            * r
            + 3.387_132_872_796_366_5;
        let den = ((((((5.226_495_278_852_545e3 * r + 2.872_908_573_572_194_3e4) * r
            + 3.930_789_580_009_271e4)
            * r
            + 2.121_379_430_158_659_7e4)
            * r
            + 5.394_196_021_424_751e3)
            * r
            + 6.871_870_074_920_579e2)
            * r
            + 4.231_333_070_160_091e1)
            * r
            + 1.0;
        return q * num / den;
    }
    let r = (-p.ln()).sqrt();
    if r <= 5.0 {
        let r = r - 1.6;
        let num = ((((((7.745_450_142_783_414e-4 * r + 2.272_384_498_926_918_4e-2) * r
            + 2.417_807_251_774_506e-1)
            * r
            + 1.270_458_252_452_368_4)
            * r
            + 3.647_848_324_763_204_5)
            * r
            + 5.769_497_221_460_691)
            * r
            + 4.630_337_846_156_545)
            * r
            + 1.423_437_110_749_683_5;
        let den = ((((((1.050_750_071_644_416_8e-9 * r + 5.475_938_084_995_345e-4) * r
            + 1.519_866_656_361_645_7e-2)
            * r
            + 1.481_039_764_274_800_8e-1)
            * r
            + 6.897_673_349_851e-1)
            * r
            + 1.676_384_830_183_803_8)
            * r
            + 2.053_191_626_637_759)
            * r
            + 1.0;
        return -(num / den);
    }
    // Far tail: Q(z) ~ φ(z)/z gives z² ≈ 2L - ln(2π·2L) with L = -ln p.
    let l = -p.ln();
    let z2 = 2.0 * l - (2.0 * PI * 2.0 * l).ln();
    -z2.sqrt()
}

/// ln Γ(a + 1/2) - ln Γ(a), accurate for large `a` where the two log-gammas cancel.
pub fn ln_gamma_ratio_half(a: f64) -> f64 {
    if a < 20.0 {
        return libm::lgamma(a + 0.5) - libm::lgamma(a);
    }
    // Stirling: the (z - 1/2) ln z - z parts combine to ln(a)/2 + a·ln1p(1/2a) - 1/2 exactly.
    fn stirling_tail(z: f64) -> f64 {
        let z2 = z * z;
        (1.0 / 12.0
            - (1.0 / 360.0 - (1.0 / 1260.0 - (1.0 / 1680.0 - 1.0 / (1188.0 * z2)) / z2) / z2) / z2)
            / z
    }
    0.5 * a.ln() + (a * (0.5 / a).ln_1p() - 0.5) + (stirling_tail(a + 0.5) - stirling_tail(a))
}

/// Degrees of freedom above which the t tail uses Hill's normalising expansion
/// (ACM Algorithm 395), whose error is far below 1e-12 there, instead of the continued fraction,
/// whose cost grows like sqrt(df).
const T_ASYMPTOTIC_DF: f64 = 1.0e4;

/// Upper tail of Student's t with `df` degrees of freedom, P(T > t).
pub fn t_sf(t: f64, df: f64) -> f64 {
    debug_assert!(df > 0.0);
    if t.is_infinite() {
        return if t > 0.0 { 0.0 } else { 1.0 };
    }
    if df.is_infinite() {
        return normal_sf(t);
    }
    if t < 0.0 {
        return 1.0 - t_sf(-t, df);
    }
    if df >= T_ASYMPTOTIC_DF {
        return normal_sf(hill_z(t, df));
    }
    let a = 0.5 * df;
    let t2 = t * t;
    // x = df/(df+t²) and y = 1-x = t²/(df+t²), each computed without cancellation.
    let y = t2 / (df + t2);
    let x = df / (df + t2);
    let ln_x = -(t2 / df).ln_1p();
    let ln_y = if t2 == 0.0 {
        f64::NEG_INFINITY
    } else {
        2.0 * t.ln() - (df + t2).ln()
    };
    // ln B(a, 1/2) = ln Γ(1/2) - [ln Γ(a+1/2) - ln Γ(a)].
    let ln_beta = 0.5 * PI.ln() - ln_gamma_ratio_half(a);
    if x < (a + 1.0) / (a + 2.5) {
        0.5 * inc_beta_cf(a, 0.5, x, y, ln_x, ln_y, ln_beta)
    } else {
        0.5 * (1.0 - inc_beta_cf(0.5, a, y, x, ln_y, ln_x, ln_beta))
    }
}

/// Hill's normal deviate for the t tail: Q(z) = P(T > t) for large df.
fn hill_z(t: f64, df: f64) -> f64 {
    let a = df - 0.5;
    let b = 48.0 * a * a;
    let y = a * (t * t / df).ln_1p();
    (((((-0.4 * y - 3.3) * y - 24.0) * y - 85.5) / (0.8 * y * y + 100.0 + b) + y + 3.0) / b + 1.0)
        * y.sqrt()
}

/// Two-sided p-value of a t statistic, 2·P(T > |t|).
pub fn t_two_sided_p(t: f64, df: f64) -> f64 {
    (2.0 * t_sf(t.abs(), df)).min(1.0)
}

/// Student t density.
pub fn t_pdf(t: f64, df: f64) -> f64 {
    if df >= T_ASYMPTOTIC_DF * 100.0 {
        // The constant tends to 1/sqrt(2π); ln1p keeps the shape exact.
        let ln = ln_gamma_ratio_half(0.5 * df)
            - 0.5 * (df * PI).ln()
            - 0.5 * (df + 1.0) * (t * t / df).ln_1p();
        return ln.exp();
    }
    (ln_gamma_ratio_half(0.5 * df) - 0.5 * (df * PI).ln() - 0.5 * (df + 1.0) * (t * t / df).ln_1p())
        .exp()
}

/// Largest normal deviate for which [`cornish_fisher`] is exact at df >= 1e4: the first
/// neglected term, of order z¹¹/df⁵, stays below 1e-16 relative.
pub const CORNISH_FISHER_MAX_Z: f64 = 8.0;

/// Cornish–Fisher expansion of the t quantile from the normal one (A&S 26.7.5, four terms):
/// exact to double precision for df >= 1e4 and z <= 8, a good Newton start below.
pub fn cornish_fisher(z: f64, df: f64) -> f64 {
    let z2 = z * z;
    let g1 = (z2 + 1.0) * z / 4.0;
    let g2 = ((5.0 * z2 + 16.0) * z2 + 3.0) * z / 96.0;
    let g3 = (((3.0 * z2 + 19.0) * z2 + 17.0) * z2 - 15.0) * z / 384.0;
    let g4 = ((((79.0 * z2 + 776.0) * z2 + 1482.0) * z2 - 1920.0) * z2 - 945.0) * z / 92160.0;
    z + (g1 + (g2 + (g3 + g4 / df) / df) / df) / df
}

/// The t with P(T > t) = q for Student's t with `df` degrees of freedom, 0 < q < 1.
pub fn t_isf(q: f64, df: f64) -> f64 {
    debug_assert!(q > 0.0 && q < 1.0 && df > 0.0);
    if q > 0.5 {
        return -t_isf(1.0 - q, df);
    }
    if q == 0.5 {
        return 0.0;
    }
    if df == 1.0 {
        return 1.0 / (PI * q).tan();
    }
    if df == 2.0 {
        return (1.0 - 2.0 * q) / (2.0 * q * (1.0 - q)).sqrt();
    }
    let z = normal_isf(q);
    if df >= T_ASYMPTOTIC_DF && z <= CORNISH_FISHER_MAX_Z {
        return cornish_fisher(z, df);
    }
    let mut t = if df >= 5.0 {
        cornish_fisher(z, df)
    } else {
        // Tail behaviour of t: P(T > t) ~ c·t^-df, crude but safe for Newton with a bracket.
        z.max((q * df).powf(-1.0 / df))
    };
    if !(t.is_finite() && t > 0.0) {
        t = z.max(1.0);
    }
    // Safeguarded Newton on ln sf(t) - ln q; the bracket keeps it inside (lo, hi).
    let (mut lo, mut hi) = (0.0_f64, f64::INFINITY);
    let ln_q = q.ln();
    for _ in 0..200 {
        let sf = t_sf(t, df);
        if sf > q {
            lo = lo.max(t);
        } else {
            hi = hi.min(t);
        }
        let pdf = t_pdf(t, df);
        let mut next = if sf > 0.0 && pdf > 0.0 {
            t + (sf.ln() - ln_q) * sf / pdf
        } else {
            f64::NAN
        };
        // The bracket is closed: a zero step at an exact start must not trigger bisection.
        if !(next >= lo && next <= hi && next.is_finite()) {
            next = if hi.is_finite() {
                0.5 * (lo + hi)
            } else {
                2.0 * t.max(1.0)
            };
        }
        // Newton converges quadratically: once a step is below 1e-13 the next would be ~1e-26,
        // so stop rather than chase last-ulp noise of the tail function.
        let done = (next - t).abs() <= 1e-13 * t.abs();
        t = next;
        if done {
            break;
        }
    }
    t
}

/// Regularised incomplete beta I_x(a, b) by the Lentz continued fraction, for x below the
/// mean-ish switch point (the caller swaps arguments otherwise). `y = 1 - x` and the logs are
/// passed in so the caller can compute them without cancellation.
fn inc_beta_cf(a: f64, b: f64, x: f64, _y: f64, ln_x: f64, ln_y: f64, ln_beta: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    let front = (a * ln_x + b * ln_y - ln_beta).exp() / a;
    if front == 0.0 {
        return 0.0;
    }
    const TINY: f64 = 1e-300;
    let (qab, qap, qam) = (a + b, a + 1.0, a - 1.0);
    let mut c = 1.0;
    let mut d = 1.0 - qab * x / qap;
    if d.abs() < TINY {
        d = TINY;
    }
    d = 1.0 / d;
    let mut h = d;
    for m in 1..200_000 {
        let m = f64::from(m);
        let m2 = 2.0 * m;
        let aa = m * (b - m) * x / ((qam + m2) * (a + m2));
        d = 1.0 + aa * d;
        if d.abs() < TINY {
            d = TINY;
        }
        c = 1.0 + aa / c;
        if c.abs() < TINY {
            c = TINY;
        }
        d = 1.0 / d;
        h *= d * c;
        let aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2));
        d = 1.0 + aa * d;
        if d.abs() < TINY {
            d = TINY;
        }
        c = 1.0 + aa / c;
        if c.abs() < TINY {
            c = TINY;
        }
        d = 1.0 / d;
        let del = d * c;
        h *= del;
        if (del - 1.0).abs() < 1e-16 {
            break;
        }
    }
    front * h
}

/// Upper tail of the chi-square distribution with `df` degrees of freedom.
pub fn chi2_sf(x: f64, df: f64) -> f64 {
    if x <= 0.0 {
        return 1.0;
    }
    gamma_q(0.5 * df, 0.5 * x)
}

/// Regularised upper incomplete gamma Q(a, x): series below x < a + 1, continued fraction above.
fn gamma_q(a: f64, x: f64) -> f64 {
    let ln_front = -x + a * x.ln() - libm::lgamma(a);
    if x < a + 1.0 {
        // P by its series; Q = 1 - P is not small here, so the subtraction is safe.
        let mut ap = a;
        let mut sum = 1.0 / a;
        let mut del = sum;
        for _ in 0..10_000 {
            ap += 1.0;
            del *= x / ap;
            sum += del;
            if del.abs() < sum.abs() * 1e-17 {
                break;
            }
        }
        return (1.0 - sum * ln_front.exp()).max(0.0);
    }
    const TINY: f64 = 1e-300;
    let mut b = x + 1.0 - a;
    let mut c = 1.0 / TINY;
    let mut d = 1.0 / b;
    let mut h = d;
    for i in 1..10_000 {
        let i = f64::from(i);
        let an = -i * (i - a);
        b += 2.0;
        d = an * d + b;
        if d.abs() < TINY {
            d = TINY;
        }
        c = b + an / c;
        if c.abs() < TINY {
            c = TINY;
        }
        d = 1.0 / d;
        let del = d * c;
        h *= del;
        if (del - 1.0).abs() < 1e-16 {
            break;
        }
    }
    ln_front.exp() * h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_quantile_round_trips() {
        for &q in &[0.5, 0.3, 0.025, 1e-3, 1e-8, 1e-20, 1e-100, 1e-250] {
            let z = normal_isf(q);
            let back = normal_sf(z);
            // Q is steep out there: relative error ≈ z² · eps(z), about 1e-13 at q = 1e-250.
            assert!(((back - q) / q).abs() < 5e-13, "q={q} z={z} back={back}");
        }
        assert!((normal_isf(0.025) - 1.959_963_984_540_054).abs() < 1e-15);
    }

    #[test]
    fn t_quantile_round_trips() {
        for &df in &[1.0, 2.0, 3.0, 4.5, 10.0, 57.3, 999.0, 5e4, 1e6, 1e12] {
            for &q in &[0.4, 0.025, 1e-4, 1e-9] {
                let t = t_isf(q, df);
                let back = t_sf(t, df);
                assert!(
                    ((back - q) / q).abs() < 1e-11,
                    "df={df} q={q} t={t} back={back}"
                );
            }
        }
    }

    #[test]
    fn closed_forms_for_one_and_two_df() {
        // df = 1 is Cauchy: sf(t) = 1/2 - atan(t)/π; df = 2: sf = (1 - t/sqrt(t²+2))/2.
        for &t in &[0.1_f64, 1.0, 3.0, 40.0] {
            let cauchy = 0.5 - t.atan() / PI;
            assert!(((t_sf(t, 1.0) - cauchy) / cauchy).abs() < 1e-13);
            let two = 0.5 * (1.0 - t / (t * t + 2.0).sqrt());
            assert!(((t_sf(t, 2.0) - two) / two).abs() < 1e-11);
        }
    }

    #[test]
    fn chi_square_one_df_is_a_normal_tail() {
        for &z in &[0.5, 2.0, 5.0, 20.0] {
            let p = chi2_sf(z * z, 1.0);
            let r = normal_two_sided_p(z);
            assert!(((p - r) / r).abs() < 1e-12, "z={z} {p} {r}");
        }
    }
}
