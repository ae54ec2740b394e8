//! Hashing and bucketing, bit-for-bit as GrowthBook's `util.ts`.
//!
//! FNV-1a 32-bit runs over UTF-16 code units (JavaScript's `charCodeAt`), not UTF-8
//! bytes: the two agree only on ASCII, and users with accents, Thai or emoji in their
//! ids would otherwise land in different buckets than in every JavaScript SDK.

const FNV_OFFSET: u32 = 0x811c_9dc5;
const FNV_PRIME: u32 = 0x0100_0193;

/// A bucket range `[start, end)` on the unit interval.
pub type Range = (f64, f64);

/// Folds UTF-16 code units into an FNV-1a state.
#[inline]
fn fnv_feed(h: u32, s: &str) -> u32 {
    let bytes = s.as_bytes();
    // ASCII bytes are their own UTF-16 code units; skip the transcoding for them.
    if bytes.is_ascii() {
        fnv_ascii_from(h, bytes)
    } else {
        s.encode_utf16()
            .fold(h, |h, unit| (h ^ u32::from(unit)).wrapping_mul(FNV_PRIME))
    }
}

#[inline]
fn fnv_ascii_from(h: u32, bytes: &[u8]) -> u32 {
    bytes
        .iter()
        .fold(h, |h, &b| (h ^ u32::from(b)).wrapping_mul(FNV_PRIME))
}

/// FNV-1a 32-bit over the UTF-16 code units of `s`.
pub fn fnv1a32(s: &str) -> u32 {
    fnv_feed(FNV_OFFSET, s)
}

/// FNV-1a of an ASCII byte string (the decimal digits of hash version 2).
#[inline]
fn fnv_ascii(bytes: &[u8]) -> u32 {
    fnv_ascii_from(FNV_OFFSET, bytes)
}

/// GrowthBook's `hash(seed, value, version)`: a number in `[0, 1)`, or `None` for an
/// unknown version (which excludes the user).
///
/// Version 1 hashes `value + seed` into thousandths; version 2 hashes the decimal string
/// of `fnv(seed + value)` into ten-thousandths. Concatenation is done by feeding the
/// two strings in turn, so no string is allocated.
#[inline]
pub fn hash(seed: &str, value: &str, version: u32) -> Option<f64> {
    match version {
        2 => {
            let first = fnv_feed(fnv_feed(FNV_OFFSET, seed), value);
            let mut digits = itoa::Buffer::new();
            let m = fnv_ascii(digits.format(first).as_bytes());
            Some(f64::from(m % 10_000) / 10_000.0)
        }
        1 => {
            let n = fnv_feed(fnv_feed(FNV_OFFSET, value), seed);
            Some(f64::from(n % 1_000) / 1_000.0)
        }
        _ => None,
    }
}

/// `getEqualWeights(n)`: `n` copies of `1/n` (empty for `n <= 0`).
pub fn equal_weights(n: usize) -> Vec<f64> {
    vec![1.0 / n as f64; n]
}

/// `getBucketRanges(numVariations, coverage, weights)`.
///
/// Coverage is clamped to `[0, 1]`; weights of the wrong length, or not summing to 1
/// within 0.01, fall back to equal weights. Coverage shrinks each variation's range at
/// its own start, which is why raising coverage never moves an enrolled user.
pub fn bucket_ranges(
    num_variations: usize,
    coverage: Option<f64>,
    weights: Option<&[f64]>,
) -> Vec<Range> {
    let coverage = coverage.unwrap_or(1.0);
    // `clamp` lets NaN through, as JavaScript's comparisons do.
    let coverage = coverage.clamp(0.0, 1.0);
    let equal = equal_weights(num_variations);
    let mut weights = match weights {
        Some(w) if w.len() == num_variations => w,
        _ => &equal[..],
    };
    // Left fold from 0, the same operation order as `reduce`, for identical rounding.
    let total = weights.iter().fold(0.0, |sum, w| sum + w);
    // Two comparisons, not a range: a NaN total keeps its weights, as in JavaScript.
    #[allow(clippy::manual_range_contains)]
    if total < 0.99 || total > 1.01 {
        weights = &equal[..];
    }
    let mut cumulative = 0.0;
    weights
        .iter()
        .map(|w| {
            let start = cumulative;
            cumulative += w;
            (start, start + coverage * w)
        })
        .collect()
}

/// `inRange`: half-open `[start, end)`.
#[inline]
pub fn in_range(n: f64, range: Range) -> bool {
    n >= range.0 && n < range.1
}

/// `chooseVariation(n, ranges)`: the first range containing `n`, if any.
#[inline]
pub fn choose_variation(n: f64, ranges: &[Range]) -> Option<usize> {
    ranges.iter().position(|&r| in_range(n, r))
}

/// `inNamespace(hashValue, [id, start, end])`: always hash version 1 with seed `__id`.
pub fn in_namespace(hash_value: &str, id: &str, range: Range) -> bool {
    // hash v1 is fnv(value + seed) with seed "__" + id.
    let n = fnv_feed(fnv_feed(fnv_feed(FNV_OFFSET, hash_value), "__"), id);
    let n = f64::from(n % 1_000) / 1_000.0;
    n >= range.0 && n < range.1
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Vectors produced by the GrowthBook JavaScript SDK (npm 1.8.0), which hashes
    /// UTF-16 code units; a UTF-8 implementation gets them wrong (Thai, CJK, accents),
    /// and so does one hashing code points (emoji, which are surrogate pairs).
    #[test]
    fn non_ascii_ids_hash_as_the_javascript_sdk() {
        let cases: &[(&str, &str, u32, f64)] = &[
            ("", "é", 1, 0.94),
            ("", "é", 2, 0.8917),
            ("exp", "你好", 2, 0.6736),
            ("seed", "😀", 1, 0.429),
            ("seed", "😀", 2, 0.4346),
            ("my-test", "Ünïcödé-user", 2, 0.1083),
            // Produced with @growthbook/growthbook 1.8.0 (runInlineExperiment's bucket).
            ("exp-001", "สมชาย", 1, 0.487),
            ("exp-001", "สมชาย", 2, 0.8537),
            ("exp-001", "สวัสดีครับ", 1, 0.905),
            ("exp-001", "สวัสดีครับ", 2, 0.5285),
            ("ranking", "ผู้ใช้-42", 1, 0.818),
            ("ranking", "ผู้ใช้-42", 2, 0.3523),
            ("exp-001", "👩‍💻", 1, 0.387),
            ("exp-001", "👩‍💻", 2, 0.9324),
            ("exp-001", "user-🎉-7", 1, 0.883),
            ("exp-001", "user-🎉-7", 2, 0.357),
            ("exp-001", "José", 1, 0.355),
            ("exp-001", "José", 2, 0.3448),
            ("exp-001", "Zoë", 1, 0.488),
            ("exp-001", "Zoë", 2, 0.2878),
            ("exp-001", "François", 1, 0.709),
            ("exp-001", "François", 2, 0.4637),
            ("exp-001", "你好", 1, 0.975),
            ("exp-001", "你好", 2, 0.9046),
            ("exp-001", "사용자", 1, 0.683),
            ("exp-001", "사용자", 2, 0.6577),
            ("😀", "user-1", 1, 0.889),
            ("😀", "user-1", 2, 0.847),
        ];
        for &(seed, value, version, expected) in cases {
            assert_eq!(
                hash(seed, value, version),
                Some(expected),
                "{seed:?} {value:?} v{version}"
            );
        }
    }

    #[test]
    fn unknown_version_is_none() {
        assert_eq!(hash("abc", "def", 99), None);
        assert_eq!(hash("abc", "def", 0), None);
    }

    #[test]
    fn coverage_shrinks_each_range_at_its_start() {
        let r = bucket_ranges(3, Some(0.2), Some(&[0.2, 0.3, 0.5]));
        let floor = |x: f64| (x * 1e8).floor() / 1e8;
        let r: Vec<_> = r.iter().map(|&(a, b)| (floor(a), floor(b))).collect();
        assert_eq!(r, vec![(0.0, 0.04), (0.2, 0.26), (0.5, 0.6)]);
    }

    #[test]
    fn namespace_matches_hash_v1_with_prefixed_seed() {
        for id in ["1", "2", "user-é", "😀"] {
            let n = hash("__ns", id, 1).unwrap();
            assert_eq!(in_namespace(id, "ns", (0.0, 0.5)), n < 0.5);
        }
    }
}
