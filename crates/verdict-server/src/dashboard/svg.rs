//! Chart primitives, drawn as SVG text on the server: linear scales with round ticks,
//! path data, and the two shapes the dashboard uses — a line chart (several series, an
//! optional confidence band) and a confidence-interval bar around zero.
//!
//! Everything is a pure function of numbers to a string, so it is unit-tested as such;
//! text that reaches the SVG (series names) is escaped here.

use super::escape;
use std::fmt::Write as _;

/// A linear map from a data interval (`domain`) to a pixel interval (`range`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scale {
    d0: f64,
    d1: f64,
    r0: f64,
    r1: f64,
}

impl Scale {
    /// A scale from `domain` to `range`; an empty domain (both ends equal) is widened by
    /// one unit each way, so a single value lands in the middle instead of dividing by zero.
    pub fn new(domain: (f64, f64), range: (f64, f64)) -> Self {
        let (mut d0, mut d1) = domain;
        if !(d1 - d0).is_normal() {
            let pad = if d0.abs() > 0.0 { d0.abs() * 0.5 } else { 1.0 };
            d0 -= pad;
            d1 += pad;
        }
        Self {
            d0,
            d1,
            r0: range.0,
            r1: range.1,
        }
    }

    /// The pixel position of `v`.
    pub fn map(&self, v: f64) -> f64 {
        self.r0 + (v - self.d0) / (self.d1 - self.d0) * (self.r1 - self.r0)
    }

    /// The domain.
    pub fn domain(&self) -> (f64, f64) {
        (self.d0, self.d1)
    }
}

/// A round step (1, 2 or 5 times a power of ten) that cuts `span` into about `count` parts.
pub fn nice_step(span: f64, count: usize) -> f64 {
    if !(span.is_finite() && span > 0.0) {
        return 1.0;
    }
    let raw = span / count.max(1) as f64;
    let power = 10f64.powf(raw.log10().floor());
    let m = raw / power;
    let f = if m <= 1.0 {
        1.0
    } else if m <= 2.0 {
        2.0
    } else if m <= 5.0 {
        5.0
    } else {
        10.0
    };
    f * power
}

/// `(lo, hi)` widened outwards to multiples of the step for `count` ticks.
pub fn nice_domain(lo: f64, hi: f64, count: usize) -> (f64, f64) {
    let (lo, hi) = if (hi - lo).is_normal() {
        (lo, hi)
    } else if lo == 0.0 {
        (0.0, 1.0)
    } else {
        (lo - lo.abs() * 0.5, hi + hi.abs() * 0.5)
    };
    let step = nice_step(hi - lo, count);
    (
        round_to_step((lo / step).floor() * step, step),
        round_to_step((hi / step).ceil() * step, step),
    )
}

/// `v` rounded to the decimals `step` has, which removes floating-point dust such as
/// 0.6000000000000001 from multiples of 0.2 (it would show in labels and compare unequal).
fn round_to_step(v: f64, step: f64) -> f64 {
    let decimals = (-step.log10().floor()).max(0.0) as usize;
    let r: f64 = format!("{v:.decimals$}").parse().unwrap_or(v);
    if r == 0.0 {
        0.0 // not -0.0
    } else {
        r
    }
}

/// Round tick values from `lo` to `hi` inclusive (about `count` of them).
pub fn ticks(lo: f64, hi: f64, count: usize) -> Vec<f64> {
    if !(lo.is_finite() && hi.is_finite()) || hi < lo {
        return Vec::new();
    }
    let step = nice_step(hi - lo, count);
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    (first..=last)
        .take(100)
        .map(|i| round_to_step(i as f64 * step, step))
        .collect()
}

fn num(v: f64) -> String {
    // One decimal is sub-pixel precision enough, and keeps pages small.
    let r = (v * 10.0).round() / 10.0;
    if r == r.trunc() {
        format!("{}", r as i64)
    } else {
        format!("{r:.1}")
    }
}

/// SVG path data through `points` (`M x,y L x,y …`); empty for no points.
pub fn path(points: &[(f64, f64)]) -> String {
    let mut out = String::new();
    for (i, (x, y)) in points.iter().enumerate() {
        let _ = write!(
            out,
            "{}{},{}",
            if i == 0 { 'M' } else { 'L' },
            num(*x),
            num(*y)
        );
    }
    out
}

/// The runs of consecutive defined values, so a line breaks where data is missing
/// instead of pretending a value of zero.
pub fn segments(points: &[(f64, Option<f64>)]) -> Vec<Vec<(f64, f64)>> {
    let mut out: Vec<Vec<(f64, f64)>> = Vec::new();
    let mut current = Vec::new();
    for (x, y) in points {
        match y {
            Some(y) if y.is_finite() => current.push((*x, *y)),
            _ => {
                if !current.is_empty() {
                    out.push(std::mem::take(&mut current));
                }
            }
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// A closed area between an upper and a lower line given as `(x, lo, hi)` in pixels:
/// along the upper edge left to right, back along the lower edge.
pub fn band_path(points: &[(f64, f64, f64)]) -> String {
    if points.is_empty() {
        return String::new();
    }
    let upper: Vec<(f64, f64)> = points.iter().map(|(x, _, hi)| (*x, *hi)).collect();
    let lower: Vec<(f64, f64)> = points.iter().rev().map(|(x, lo, _)| (*x, *lo)).collect();
    let mut d = path(&upper);
    for (x, y) in lower {
        let _ = write!(d, "L{},{}", num(x), num(y));
    }
    d.push('Z');
    d
}

/// Unix seconds to a UTC civil date `(year, month, day)` (Howard Hinnant's algorithm),
/// so axis labels need no date library.
pub fn civil(unix: i64) -> (i64, u32, u32) {
    let z = unix.div_euclid(86_400) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// `MM-DD HH:MM` in UTC.
pub fn time_label(unix: i64) -> String {
    let (_, m, d) = civil(unix);
    let secs = unix.rem_euclid(86_400);
    format!("{m:02}-{d:02} {:02}:{:02}", secs / 3600, secs % 3600 / 60)
}

/// Round instants (in unix seconds) between `lo` and `hi`: multiples of 1, 2, 3, 6 or 12
/// hours or of 1, 2 or 7 days, about `count` of them.
pub fn time_ticks(lo: f64, hi: f64, count: usize) -> Vec<f64> {
    if !(lo.is_finite() && hi.is_finite()) || hi < lo {
        return Vec::new();
    }
    const STEPS: [f64; 8] = [
        3600.0, 7200.0, 10800.0, 21600.0, 43200.0, 86400.0, 172_800.0, 604_800.0,
    ];
    let step = STEPS
        .iter()
        .copied()
        .find(|s| (hi - lo) / s <= count as f64)
        .unwrap_or(604_800.0);
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    (first..=last).take(50).map(|i| i as f64 * step).collect()
}

/// One line of a chart.
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend text (escaped when drawn).
    pub name: String,
    /// CSS colour.
    pub color: &'static str,
    /// `(x, y)` points; `None` breaks the line.
    pub points: Vec<(f64, Option<f64>)>,
}

/// A shaded interval around a series: `(x, lo, hi)` in data units.
#[derive(Debug, Clone)]
pub struct Band {
    /// CSS colour (drawn translucent).
    pub color: &'static str,
    /// The interval at each x.
    pub points: Vec<(f64, f64, f64)>,
}

/// A line chart over time (x in unix seconds).
#[derive(Debug, Clone)]
pub struct LineChart {
    /// `id` attribute of the `<svg>` (for tests and the browser check).
    pub id: String,
    /// Accessible title.
    pub title: String,
    /// The lines.
    pub series: Vec<Series>,
    /// Bands drawn under the lines.
    pub bands: Vec<Band>,
    /// Formats y tick labels.
    pub y_format: fn(f64) -> String,
    /// Whether the y axis must include zero (rates and lifts read against zero).
    pub include_zero: bool,
    /// The y axis reaches at least this high, so a flat zero line (no errors) is drawn
    /// on a small scale instead of 0 to 100 %.
    pub min_top: Option<f64>,
}

/// Chart size in SVG units (scaled by CSS to the container).
const W: f64 = 640.0;
const H: f64 = 240.0;
const LEFT: f64 = 58.0;
const RIGHT: f64 = 14.0;
const TOP: f64 = 26.0;
const BOTTOM: f64 = 28.0;

impl LineChart {
    /// The `<svg>` element.
    pub fn render(&self) -> String {
        let xs: Vec<f64> = self
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.0))
            .chain(self.bands.iter().flat_map(|b| b.points.iter().map(|p| p.0)))
            .collect();
        let ys: Vec<f64> = self
            .series
            .iter()
            .flat_map(|s| s.points.iter().filter_map(|p| p.1))
            // The first looks of a confidence sequence are very wide; sizing the axis on
            // them would flatten the rest. The axis fits the later two thirds of each
            // band, and the band is clipped to the plot.
            .chain(self.bands.iter().flat_map(|b| {
                b.points[b.points.len() / 3..]
                    .iter()
                    .flat_map(|p| [p.1, p.2])
            }))
            .filter(|v| v.is_finite())
            .chain(self.include_zero.then_some(0.0))
            .collect();
        let has_data = !ys.is_empty();
        let ys: Vec<f64> = ys.into_iter().chain(self.min_top).collect();
        let mut svg = format!(
            r#"<svg id="{}" class="chart" viewBox="0 0 {W} {H}" role="img" aria-label="{}" xmlns="http://www.w3.org/2000/svg">"#,
            escape(&self.id),
            escape(&self.title)
        );
        let _ = write!(
            svg,
            r#"<title>{}</title><defs><clipPath id="{}-plot"><rect x="{LEFT}" y="{TOP}" width="{}" height="{}"/></clipPath></defs>"#,
            escape(&self.title),
            escape(&self.id),
            W - LEFT - RIGHT,
            H - TOP - BOTTOM
        );
        if !has_data || xs.is_empty() {
            let _ = write!(
                svg,
                r#"<text x="{}" y="{}" class="empty" text-anchor="middle">no data yet</text></svg>"#,
                W / 2.0,
                H / 2.0
            );
            return svg;
        }
        let (x_lo, x_hi) = bounds(&xs);
        // A single bucket is drawn in the middle of a one-hour window, not on an axis end.
        let (x_lo, x_hi) = if x_hi > x_lo {
            (x_lo, x_hi)
        } else {
            (x_lo - 1800.0, x_hi + 1800.0)
        };
        let (y_lo, y_hi) = bounds(&ys);
        let (y_lo, y_hi) = nice_domain(y_lo, y_hi, 5);
        let x = Scale::new((x_lo, x_hi), (LEFT, W - RIGHT));
        let y = Scale::new((y_lo, y_hi), (H - BOTTOM, TOP));

        // Grid and y labels.
        for t in ticks(y_lo, y_hi, 5) {
            let py = y.map(t);
            let class = if t == 0.0 { "zero" } else { "gridline" };
            let _ = write!(
                svg,
                r#"<line class="{class}" x1="{LEFT}" x2="{}" y1="{}" y2="{}"/><text class="tick" x="{}" y="{}" text-anchor="end">{}</text>"#,
                W - RIGHT,
                num(py),
                num(py),
                LEFT - 6.0,
                num(py + 4.0),
                escape(&(self.y_format)(t))
            );
        }
        // X labels at round times (whole hours or days, UTC).
        for t in time_ticks(x_lo, x_hi, 5) {
            let px = x.map(t);
            let anchor = if px - LEFT < 30.0 {
                "start"
            } else if W - RIGHT - px < 30.0 {
                "end"
            } else {
                "middle"
            };
            let _ = write!(
                svg,
                r#"<line class="gridline" x1="{0}" x2="{0}" y1="{TOP}" y2="{1}"/><text class="tick" x="{0}" y="{2}" text-anchor="{anchor}">{3}</text>"#,
                num(px),
                H - BOTTOM,
                H - 10.0,
                time_label(t as i64)
            );
        }
        for b in &self.bands {
            let mut px: Vec<(f64, f64, f64)> = b
                .points
                .iter()
                .map(|(bx, lo, hi)| (x.map(*bx), y.map(*lo), y.map(*hi)))
                .collect();
            // One point has no width; give it a visible one.
            if let [(px0, lo, hi)] = px[..] {
                px = vec![(px0 - 5.0, lo, hi), (px0 + 5.0, lo, hi)];
            }
            let _ = write!(
                svg,
                r#"<path class="band" d="{}" fill="{}" fill-opacity="0.18" stroke="none" clip-path="url(#{}-plot)"/>"#,
                band_path(&px),
                b.color,
                escape(&self.id)
            );
        }
        for s in &self.series {
            for seg in segments(&s.points) {
                let px: Vec<(f64, f64)> = seg.iter().map(|(a, b)| (x.map(*a), y.map(*b))).collect();
                let _ = write!(
                    svg,
                    r#"<path class="line" d="{}" stroke="{}" fill="none" stroke-width="2"/>"#,
                    path(&px),
                    s.color
                );
                // Markers only while there are few points: they show where data is.
                if s.points.len() <= 48 {
                    for (a, b) in &px {
                        let _ = write!(
                            svg,
                            r#"<circle cx="{}" cy="{}" r="2.6" fill="{}"/>"#,
                            num(*a),
                            num(*b),
                            s.color
                        );
                    }
                }
            }
        }
        // Legend, top left, one entry per series.
        let mut lx = LEFT;
        for s in &self.series {
            let _ = write!(
                svg,
                r#"<rect x="{}" y="8" width="10" height="10" rx="2" fill="{}"/><text class="legend" x="{}" y="17">{}</text>"#,
                num(lx),
                s.color,
                num(lx + 14.0),
                escape(&s.name)
            );
            lx += 24.0 + 6.5 * s.name.chars().count() as f64;
        }
        svg.push_str("</svg>");
        svg
    }
}

fn bounds(values: &[f64]) -> (f64, f64) {
    values
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(*v), hi.max(*v))
        })
}

/// A horizontal bar for an estimate and its interval on a symmetric axis `[-max, max]`
/// with zero in the middle: green when the interval is above zero, red when below, grey
/// when it straddles zero.
pub fn ci_bar(estimate: Option<f64>, ci: Option<[f64; 2]>, max: f64) -> String {
    const BW: f64 = 220.0;
    const BH: f64 = 22.0;
    let max = if max.is_normal() { max.abs() } else { 1.0 };
    let x = Scale::new((-max, max), (6.0, BW - 6.0));
    let mut svg = format!(
        r#"<svg class="ci" viewBox="0 0 {BW} {BH}" width="{BW}" height="{BH}" xmlns="http://www.w3.org/2000/svg"><line class="axis" x1="6" x2="{}" y1="{}" y2="{}"/><line class="zero" x1="{}" x2="{}" y1="2" y2="{}"/>"#,
        BW - 6.0,
        BH / 2.0,
        BH / 2.0,
        num(x.map(0.0)),
        num(x.map(0.0)),
        BH - 2.0
    );
    if let Some([lo, hi]) = ci.filter(|[lo, hi]| lo.is_finite() && hi.is_finite()) {
        let class = if lo > 0.0 {
            "up"
        } else if hi < 0.0 {
            "down"
        } else {
            "flat"
        };
        let (a, b) = (x.map(lo.max(-max)), x.map(hi.min(max)));
        let _ = write!(
            svg,
            r#"<rect class="{class}" x="{}" y="{}" width="{}" height="8" rx="3"/>"#,
            num(a),
            BH / 2.0 - 4.0,
            num((b - a).max(1.0))
        );
    }
    if let Some(e) = estimate.filter(|e| e.is_finite()) {
        let _ = write!(
            svg,
            r#"<circle class="est" cx="{}" cy="{}" r="4"/>"#,
            num(x.map(e.clamp(-max, max))),
            BH / 2.0
        );
    }
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_maps_ends_and_middle_and_inverts_for_y() {
        let s = Scale::new((0.0, 10.0), (100.0, 200.0));
        assert_eq!(s.map(0.0), 100.0);
        assert_eq!(s.map(10.0), 200.0);
        assert_eq!(s.map(5.0), 150.0);
        let y = Scale::new((0.0, 1.0), (240.0, 20.0));
        assert_eq!(y.map(1.0), 20.0);
        assert_eq!(y.map(0.25), 185.0);
    }

    #[test]
    fn an_empty_domain_is_widened_not_divided_by_zero() {
        let s = Scale::new((3.0, 3.0), (0.0, 100.0));
        assert_eq!(s.map(3.0), 50.0);
        let z = Scale::new((0.0, 0.0), (0.0, 100.0));
        assert_eq!(z.map(0.0), 50.0);
        assert!(z.map(1.0).is_finite());
    }

    #[test]
    fn steps_are_one_two_or_five_times_a_power_of_ten() {
        assert_eq!(nice_step(10.0, 5), 2.0);
        assert_eq!(nice_step(1.0, 5), 0.2);
        assert_eq!(nice_step(0.07, 5), 0.02);
        assert_eq!(nice_step(300.0, 4), 100.0);
        assert_eq!(nice_step(0.0, 5), 1.0);
        assert_eq!(nice_step(f64::NAN, 5), 1.0);
    }

    #[test]
    fn ticks_are_round_and_inside() {
        assert_eq!(ticks(0.0, 1.0, 5), vec![0.0, 0.2, 0.4, 0.6, 0.8, 1.0]);
        assert_eq!(ticks(-0.03, 0.05, 4), vec![-0.02, 0.0, 0.02, 0.04]);
        assert!(ticks(1.0, 0.0, 5).is_empty());
        assert!(ticks(f64::NAN, 1.0, 5).is_empty());
        // No floating-point dust such as 0.30000000000000004.
        assert!(ticks(0.0, 0.5, 5).iter().all(|t| t.to_string().len() <= 4));
    }

    #[test]
    fn nice_domain_contains_the_data() {
        assert_eq!(nice_domain(0.013, 0.087, 5), (0.0, 0.1));
        assert_eq!(nice_domain(-0.05, 0.12, 5), (-0.05, 0.15));
        let (lo, hi) = nice_domain(2.0, 2.0, 5);
        assert!(lo < 2.0 && hi > 2.0);
    }

    #[test]
    fn path_moves_then_draws() {
        assert_eq!(path(&[]), "");
        assert_eq!(path(&[(1.0, 2.0)]), "M1,2");
        assert_eq!(path(&[(0.0, 0.0), (10.25, 5.0)]), "M0,0L10.3,5");
    }

    #[test]
    fn segments_break_at_missing_values() {
        let s = segments(&[
            (0.0, Some(1.0)),
            (1.0, Some(2.0)),
            (2.0, None),
            (3.0, Some(f64::NAN)),
            (4.0, Some(3.0)),
        ]);
        assert_eq!(s, vec![vec![(0.0, 1.0), (1.0, 2.0)], vec![(4.0, 3.0)]]);
    }

    #[test]
    fn band_goes_along_the_top_and_back_along_the_bottom() {
        let d = band_path(&[(0.0, 10.0, 2.0), (5.0, 12.0, 4.0)]);
        assert_eq!(d, "M0,2L5,4L5,12L0,10Z");
        assert_eq!(band_path(&[]), "");
    }

    #[test]
    fn civil_dates_and_labels() {
        assert_eq!(civil(0), (1970, 1, 1));
        assert_eq!(civil(951_782_400), (2000, 2, 29));
        assert_eq!(civil(1_764_028_800), (2025, 11, 25));
        assert_eq!(
            time_label(1_764_028_800 + 3600 * 13 + 60 * 5),
            "11-25 13:05"
        );
    }

    #[test]
    fn time_ticks_fall_on_round_hours_and_days() {
        let h = 3600.0;
        assert_eq!(time_ticks(0.5 * h, 3.5 * h, 5), vec![h, 2.0 * h, 3.0 * h]);
        let t = time_ticks(0.0, 30.0 * h, 5);
        assert_eq!(t.first(), Some(&0.0));
        assert!(t.windows(2).all(|w| w[1] - w[0] == 6.0 * h), "{t:?}");
        assert!(time_ticks(0.0, 40.0 * 86_400.0, 5).len() <= 6);
        assert!(time_ticks(1.0, 0.0, 5).is_empty());
    }

    #[test]
    fn chart_draws_lines_band_and_escaped_legend() {
        let chart = LineChart {
            id: "lift".into(),
            title: "lift <b>".into(),
            series: vec![Series {
                name: "a<script>".into(),
                color: "#123456",
                points: vec![(0.0, Some(0.1)), (3600.0, Some(0.2)), (7200.0, None)],
            }],
            bands: vec![Band {
                color: "#123456",
                points: vec![(0.0, 0.0, 0.2), (3600.0, 0.1, 0.3)],
            }],
            y_format: |v| format!("{v}"),
            include_zero: true,
            min_top: None,
        };
        let svg = chart.render();
        assert!(svg.starts_with("<svg id=\"lift\""), "{svg}");
        assert!(svg.contains("class=\"band\""));
        assert_eq!(svg.matches("class=\"line\"").count(), 1);
        assert!(svg.contains("a&lt;script&gt;") && !svg.contains("<script>"));
        assert!(svg.contains("class=\"zero\""), "zero is on the axis: {svg}");
        assert!(svg.contains(r#"clip-path="url(#lift-plot)""#));
        assert!(svg.ends_with("</svg>"));
    }

    #[test]
    fn the_axis_fits_the_later_band_not_the_first_wide_looks() {
        let band = |first: f64| LineChart {
            id: "l".into(),
            title: "lift".into(),
            series: vec![],
            bands: vec![Band {
                color: "#000",
                points: vec![(0.0, -first, first), (1.0, -0.2, 0.2), (2.0, -0.1, 0.1)],
            }],
            y_format: |v| format!("{v}"),
            include_zero: true,
            min_top: None,
        };
        let wide = band(5.0).render();
        assert!(wide.contains(">0.2<") && !wide.contains(">5<"), "{wide}");
    }

    #[test]
    fn min_top_keeps_a_flat_zero_line_on_a_small_scale() {
        let chart = |min_top| LineChart {
            id: "e".into(),
            title: "errors".into(),
            series: vec![Series {
                name: "a".into(),
                color: "#000",
                points: vec![(0.0, Some(0.0)), (3600.0, Some(0.0))],
            }],
            bands: vec![],
            y_format: |v| format!("{v}"),
            include_zero: true,
            min_top,
        };
        assert!(chart(Some(0.01)).render().contains(">0.01<"));
        assert!(chart(None).render().contains(">1<"));
    }

    #[test]
    fn chart_without_data_says_so() {
        let chart = LineChart {
            id: "x".into(),
            title: "t".into(),
            series: vec![],
            bands: vec![],
            y_format: |v| format!("{v}"),
            include_zero: false,
            min_top: Some(1.0),
        };
        assert!(chart.render().contains("no data yet"));
    }

    #[test]
    fn ci_bar_colours_by_side_of_zero() {
        assert!(ci_bar(Some(0.2), Some([0.1, 0.3]), 0.5).contains("class=\"up\""));
        assert!(ci_bar(Some(-0.2), Some([-0.3, -0.1]), 0.5).contains("class=\"down\""));
        assert!(ci_bar(Some(0.0), Some([-0.1, 0.1]), 0.5).contains("class=\"flat\""));
        let none = ci_bar(None, None, 0.5);
        assert!(!none.contains("<rect") && !none.contains("<circle"));
        // Zero is in the middle of the 220-wide bar.
        assert!(ci_bar(None, None, 0.5).contains("x1=\"110\" x2=\"110\""));
    }
}
