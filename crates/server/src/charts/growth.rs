//! A child's WHO growth chart as SVG, drawn on the server for the child's page in the
//! puskesmas web app (issue #16 item 3).
//!
//! Drawn here rather than in the browser because the WHO tables already live on the server
//! ([`posync_model::growth`]), the page then needs no charting library, and the same child gives
//! the same bytes (cacheable, testable). Pure: no I/O; the route that serves it is elsewhere.
//!
//! What the chart shows, after WHO's printed charts:
//! - the reference curves at −3, −2, 0, +2 and +3 SD (`<path class="sd-m3">` … `sd-p3`), each
//!   labelled at its right end, and thinner unlabelled −1/+1 SD curves (`sd-m1`, `sd-p1`);
//!   median green, ±2 SD red-orange, ±3 SD black, as on WHO's charts; the band between −2 and
//!   +2 SD is shaded light green, as on Indonesia's KMS card;
//! - an x window that shows the child: for age-based indicators from birth to the larger of
//!   24 months and the last measurement + 6 months, rounded up to whole years; for
//!   weight-for-length/height a window around the measurements; both clipped to WHO's table;
//! - a y range from the −3 SD minimum to the +3 SD maximum over the window (widened to take in
//!   the child's measurements), with round gridlines;
//! - the child's measurements as `<circle class="point">` in date order joined by a
//!   `<polyline class="trajectory">`, each with a `<title>` tooltip (date, age or length, value).
//!
//! Measurements that cannot be placed are left out, never a panic: a non-finite or
//! non-positive value, an x outside WHO's table, or a value more than half the curves' height
//! beyond the ±3 SD curves (a typing error would otherwise squash the chart).
//!
//! Output: one `<svg>` with a fixed 640×400 `viewBox` and `width="100%"`, so it scales to its
//! container (text stays readable from a 390 px phone to a 1280 px tablet); `role="img"` with
//! `aria-labelledby` naming its `<title>` and `<desc>`; styling as presentation attributes, not a
//! `<style>` element, because an inline SVG's stylesheet would apply to the whole page (and a
//! page's CSS can still override the attributes). Coordinates carry at most one decimal. The
//! output is deterministic and does not depend on the order of the points. Size: about 15 KB of
//! curves and axes plus about 150 bytes per measurement; under 40 KB for 60 measurements (tested).

use super::{Lang, N, decimal, escape};
use posync_model::Sex;
use posync_model::growth::{Indicator, lms};
use std::fmt::{self, Write as _};
use time::Date;

/// One measurement of the child, in the indicator's units.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ChartPoint {
    /// Age in days for age-based indicators; length/height in cm (after WHO's lying/standing
    /// correction) for weight-for-length and weight-for-height.
    pub x: f64,
    /// kg, cm or kg/m², as the indicator measures.
    pub y: f64,
    /// The day of the measurement, shown in its tooltip.
    pub date: Date,
}

/// The whole chart as an SVG document (UTF-8, no XML declaration, ready to inline in HTML or
/// to serve as `image/svg+xml`). See the module documentation for what it shows. Its `<title>`
/// and `<desc>` ids (`chart-wfa-f-title`, …) name the indicator and sex, so a page can inline
/// several of one child's charts without clashing ids.
pub fn growth_chart_svg(indicator: Indicator, sex: Sex, points: &[ChartPoint], lang: Lang) -> String {
    let chart = Chart::new(indicator, sex, points, lang);
    let mut out = String::with_capacity(16 * 1024 + 200 * chart.points.len());
    // Writing to a String cannot fail.
    let _ = chart.write(&mut out);
    out
}

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 400.0;
/// The plot area in viewBox units: room on the left for the y ticks and label, on the right
/// for the curve labels, at the top for the title, at the bottom for the x ticks and label.
const LEFT: f64 = 64.0;
const RIGHT: f64 = 580.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 340.0;
/// WHO's month: 365.25 / 12 days.
const DAYS_PER_MONTH: f64 = 30.4375;
/// Points per curve, minus one: a segment spans about 4 units, smooth to the eye while the
/// seven curves and the band stay near 13 KB.
const SEGMENTS: usize = 120;
/// Weight-for-length/height: margin around the measurements and narrowest window, cm.
const LENGTH_MARGIN: f64 = 5.0;
const LENGTH_MIN_SPAN: f64 = 20.0;
/// Closest two curve labels may sit (their font is 12 units high).
const LABEL_GAP: f64 = 13.0;
const CHILD_COLOUR: &str = "#1565c0";

/// One reference curve: its SD, class, label at the right end, and stroke.
struct Curve {
    k: f64,
    class: &'static str,
    label: Option<&'static str>,
    colour: &'static str,
    width: &'static str,
}

/// Drawn in this order, so the labelled curves lie over the thin ±1 SD ones.
const CURVES: [Curve; 7] = [
    Curve { k: -1.0, class: "sd-m1", label: None, colour: "#f0a030", width: "0.8" },
    Curve { k: 1.0, class: "sd-p1", label: None, colour: "#f0a030", width: "0.8" },
    Curve { k: -3.0, class: "sd-m3", label: Some("−3 SD"), colour: "#212121", width: "1.5" },
    Curve { k: -2.0, class: "sd-m2", label: Some("−2 SD"), colour: "#d84315", width: "1.5" },
    Curve { k: 0.0, class: "sd-0", label: Some("Median"), colour: "#2e7d32", width: "2" },
    Curve { k: 2.0, class: "sd-p2", label: Some("+2 SD"), colour: "#d84315", width: "1.5" },
    Curve { k: 3.0, class: "sd-p3", label: Some("+3 SD"), colour: "#212121", width: "1.5" },
];

/// Everything decided before drawing: the window, the sampled curves, the points shown.
struct Chart {
    indicator: Indicator,
    sex: Sex,
    lang: Lang,
    frame: Frame,
    y_step: f64,
    /// Sampled `(x, y)` per entry of [`CURVES`], in data units.
    curves: Vec<Vec<(f64, f64)>>,
    /// The measurements drawn, in date order.
    points: Vec<ChartPoint>,
}

impl Chart {
    fn new(indicator: Indicator, sex: Sex, points: &[ChartPoint], lang: Lang) -> Chart {
        let table = indicator.x_range();
        let placeable: Vec<ChartPoint> = points.iter().copied().filter(|p| placeable(p, table)).collect();
        let (x0, x1) = if is_age_based(indicator) {
            age_window(placeable.iter().map(|p| p.x).reduce(f64::max), table)
        } else {
            length_window(&placeable, table)
        };
        let curves: Vec<Vec<(f64, f64)>> = CURVES.iter().map(|c| sample(indicator, sex, (x0, x1), c.k)).collect();
        let (c_lo, c_hi) = extent(curves.iter().flatten().map(|&(_, y)| y)).unwrap_or((0.0, 1.0));
        let slack = (c_hi - c_lo) / 2.0;
        let mut shown: Vec<ChartPoint> = placeable
            .into_iter()
            .filter(|p| (x0..=x1).contains(&p.x) && (c_lo - slack..=c_hi + slack).contains(&p.y))
            .collect();
        shown.sort_by(|a, b| a.date.cmp(&b.date).then(a.x.total_cmp(&b.x)).then(a.y.total_cmp(&b.y)));
        let (lo, hi) = extent(shown.iter().map(|p| p.y)).map_or((c_lo, c_hi), |(l, h)| (l.min(c_lo), h.max(c_hi)));
        let y_step = nice_step(hi - lo);
        let y0 = (lo / y_step).floor() * y_step;
        let y1 = ((hi / y_step).ceil() * y_step).max(y0 + y_step);
        Chart { indicator, sex, lang, frame: Frame { x0, x1, y0, y1 }, y_step, curves, points: shown }
    }

    fn write(&self, out: &mut String) -> fmt::Result {
        let id = format!("chart-{}-{}", self.indicator.table_name(), self.sex.code().to_lowercase());
        write!(
            out,
            r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" width="100%" role="img" aria-labelledby="{id}-title {id}-desc" lang="{lang}" font-family="system-ui, sans-serif">"#,
            W = N(WIDTH),
            H = N(HEIGHT),
            lang = self.lang.code(),
        )?;
        let title = chart_title(self.indicator, self.sex, self.lang);
        write!(out, r#"<title id="{id}-title">{}</title>"#, escape(&title))?;
        write!(out, r#"<desc id="{id}-desc">{}</desc>"#, escape(&self.description()))?;
        self.write_grid(out)?;
        self.write_band(out)?;
        self.write_curves(out)?;
        self.write_curve_labels(out)?;
        self.write_ticks(out)?;
        self.write_axis_labels(out, &title)?;
        self.write_points(out)?;
        out.push_str("</svg>");
        Ok(())
    }

    /// What a screen reader says after the title: how many measurements, and the latest.
    fn description(&self) -> String {
        let curves = match self.lang {
            Lang::Id => "Kurva WHO −3 sampai +3 SD",
            Lang::En => "WHO curves −3 to +3 SD",
        };
        match (self.points.last(), self.points.len(), self.lang) {
            (None, _, Lang::Id) => format!("{curves}; belum ada pengukuran."),
            (None, _, Lang::En) => format!("{curves}; no measurements."),
            (Some(p), n, Lang::Id) => {
                format!("{curves}; {n} pengukuran, terakhir {}.", point_text(self.indicator, p, self.lang))
            }
            (Some(p), 1, Lang::En) => format!("{curves}; 1 measurement, {}.", point_text(self.indicator, p, self.lang)),
            (Some(p), n, Lang::En) => {
                format!("{curves}; {n} measurements, latest {}.", point_text(self.indicator, p, self.lang))
            }
        }
    }

    /// Light gridlines at every tick, as one path, then the plot's frame.
    fn write_grid(&self, out: &mut String) -> fmt::Result {
        out.push_str(r##"<path class="grid" fill="none" stroke="#e0e0e0" stroke-width="0.8" d=""##);
        for (x, _) in x_ticks(self.indicator, self.frame.x0, self.frame.x1) {
            write!(out, "M{},{}V{}", N(self.frame.px(x)), N(TOP), N(BOTTOM))?;
        }
        for y in self.y_ticks() {
            write!(out, "M{},{}H{}", N(LEFT), N(self.frame.py(y)), N(RIGHT))?;
        }
        out.push_str(r#""/>"#);
        write!(
            out,
            r##"<rect class="frame" x="{}" y="{}" width="{}" height="{}" fill="none" stroke="#9e9e9e"/>"##,
            N(LEFT),
            N(TOP),
            N(RIGHT - LEFT),
            N(BOTTOM - TOP)
        )
    }

    /// The normal range, −2 to +2 SD, shaded as on the KMS card: the +2 SD curve forward, the
    /// −2 SD curve back.
    fn write_band(&self, out: &mut String) -> fmt::Result {
        let (Some(upper), Some(lower)) = (self.curve(2.0), self.curve(-2.0)) else {
            return Ok(());
        };
        out.push_str(r##"<path class="band" fill="#e8f5e9" stroke="none" d=""##);
        self.write_line(out, upper.iter().chain(lower.iter().rev()))?;
        out.push_str(r#"Z"/>"#);
        Ok(())
    }

    fn write_curves(&self, out: &mut String) -> fmt::Result {
        for (curve, samples) in CURVES.iter().zip(&self.curves) {
            write!(
                out,
                r#"<path class="{}" fill="none" stroke="{}" stroke-width="{}" d=""#,
                curve.class, curve.colour, curve.width
            )?;
            self.write_line(out, samples.iter())?;
            out.push_str(r#""/>"#);
        }
        Ok(())
    }

    /// "−2 SD", "Median", … just right of each labelled curve's end, nudged apart where the
    /// curves end close together.
    fn write_curve_labels(&self, out: &mut String) -> fmt::Result {
        let mut labels: Vec<(f64, &Curve)> = CURVES
            .iter()
            .zip(&self.curves)
            .filter(|(c, _)| c.label.is_some())
            .filter_map(|(c, samples)| samples.last().map(|&(_, y)| (self.frame.py(y), c)))
            .collect();
        labels.sort_by(|a, b| a.0.total_cmp(&b.0));
        spread(&mut labels, LABEL_GAP);
        out.push_str(r#"<g class="sd-labels" font-size="12">"#);
        for (y, curve) in labels {
            let label = curve.label.unwrap_or_default();
            write!(
                out,
                r#"<text x="{}" y="{}" fill="{}">{}</text>"#,
                N(RIGHT + 4.0),
                N(y + 4.0),
                curve.colour,
                escape(label)
            )?;
        }
        out.push_str("</g>");
        Ok(())
    }

    fn write_ticks(&self, out: &mut String) -> fmt::Result {
        out.push_str(r##"<g class="x-ticks" font-size="14" fill="#424242" text-anchor="middle">"##);
        for (x, label) in x_ticks(self.indicator, self.frame.x0, self.frame.x1) {
            write!(out, r#"<text x="{}" y="{}">{}</text>"#, N(self.frame.px(x)), N(BOTTOM + 18.0), escape(&label))?;
        }
        out.push_str("</g>");
        out.push_str(r##"<g class="y-ticks" font-size="14" fill="#424242" text-anchor="end">"##);
        let decimals = if self.y_step < 1.0 { 1 } else { 0 };
        for y in self.y_ticks() {
            let label = decimal(y, decimals, self.lang);
            write!(out, r#"<text x="{}" y="{}">{}</text>"#, N(LEFT - 6.0), N(self.frame.py(y) + 5.0), escape(&label))?;
        }
        out.push_str("</g>");
        Ok(())
    }

    fn write_axis_labels(&self, out: &mut String, title: &str) -> fmt::Result {
        let (x_label, y_label) = axis_labels(self.indicator, self.lang);
        write!(
            out,
            r##"<text class="chart-title" x="{}" y="24" font-size="17" font-weight="600" fill="#212121" text-anchor="middle">{}</text>"##,
            N(WIDTH / 2.0),
            escape(title)
        )?;
        write!(
            out,
            r##"<text class="axis-label x-label" x="{}" y="{}" font-size="14" fill="#212121" text-anchor="middle">{}</text>"##,
            N((LEFT + RIGHT) / 2.0),
            N(HEIGHT - 12.0),
            escape(x_label)
        )?;
        write!(
            out,
            r##"<text class="axis-label y-label" transform="translate(20,{}) rotate(-90)" font-size="14" fill="#212121" text-anchor="middle">{}</text>"##,
            N((TOP + BOTTOM) / 2.0),
            escape(y_label)
        )
    }

    /// The child's measurements: a line in date order, then a dot with a tooltip for each.
    fn write_points(&self, out: &mut String) -> fmt::Result {
        if self.points.is_empty() {
            return Ok(());
        }
        write!(out, r#"<g class="child" fill="{CHILD_COLOUR}">"#)?;
        if self.points.len() > 1 {
            write!(
                out,
                r#"<polyline class="trajectory" fill="none" stroke="{CHILD_COLOUR}" stroke-width="1.5" points=""#
            )?;
            for (i, p) in self.points.iter().enumerate() {
                let sep = if i == 0 { "" } else { " " };
                write!(out, "{sep}{},{}", N(self.frame.px(p.x)), N(self.frame.py(p.y)))?;
            }
            out.push_str(r#""/>"#);
        }
        for p in &self.points {
            write!(
                out,
                r##"<circle class="point" cx="{}" cy="{}" r="4" stroke="#fff" stroke-width="1"><title>{}</title></circle>"##,
                N(self.frame.px(p.x)),
                N(self.frame.py(p.y)),
                escape(&point_text(self.indicator, p, self.lang))
            )?;
        }
        out.push_str("</g>");
        Ok(())
    }

    /// Path data through `samples` (data units): `M x,y L x,y …`.
    fn write_line<'a>(&self, out: &mut String, samples: impl Iterator<Item = &'a (f64, f64)>) -> fmt::Result {
        for (i, &(x, y)) in samples.enumerate() {
            let cmd = if i == 0 { 'M' } else { 'L' };
            write!(out, "{cmd}{},{}", N(self.frame.px(x)), N(self.frame.py(y)))?;
        }
        Ok(())
    }

    fn curve(&self, k: f64) -> Option<&Vec<(f64, f64)>> {
        CURVES.iter().position(|c| c.k == k).and_then(|i| self.curves.get(i))
    }

    /// Every `y_step` from the bottom of the range to the top.
    fn y_ticks(&self) -> Vec<f64> {
        let n = ((self.frame.y1 - self.frame.y0) / self.y_step).round() as usize;
        (0..=n).map(|i| self.frame.y0 + i as f64 * self.y_step).collect()
    }
}

/// The data window and its mapping into the plot area (SVG y grows downwards).
struct Frame {
    x0: f64,
    x1: f64,
    y0: f64,
    y1: f64,
}

impl Frame {
    fn px(&self, x: f64) -> f64 {
        LEFT + (x - self.x0) / span(self.x0, self.x1) * (RIGHT - LEFT)
    }

    fn py(&self, y: f64) -> f64 {
        BOTTOM - (y - self.y0) / span(self.y0, self.y1) * (BOTTOM - TOP)
    }
}

/// The width of a range, never zero (a degenerate range must not divide by zero).
fn span(lo: f64, hi: f64) -> f64 {
    if hi - lo > 1e-9 { hi - lo } else { 1.0 }
}

fn is_age_based(indicator: Indicator) -> bool {
    !matches!(indicator, Indicator::WeightForLength | Indicator::WeightForHeight)
}

/// A measurement can be placed when both values are finite numbers, the value is positive
/// and its x lies within WHO's table.
fn placeable(p: &ChartPoint, (t0, t1): (f64, f64)) -> bool {
    p.x.is_finite() && p.y.is_finite() && p.y > 0.0 && (t0..=t1).contains(&p.x)
}

/// Birth (or the table's first age) to the larger of 24 months and the last measurement + 6
/// months, rounded up to whole years so the axis ends on a birthday; clipped to the table.
/// The end is a whole day: at 24 months (730.5 days) length-for-age steps down to
/// height-for-age between the rows of days 730 and 731, and half a step would show as a hook.
fn age_window(last_days: Option<f64>, (t0, t1): (f64, f64)) -> (f64, f64) {
    let months = last_days.map_or(0.0, |d| d / DAYS_PER_MONTH + 6.0).max(24.0);
    let years = (months / 12.0 - 1e-9).ceil();
    (t0.max(0.0), (years * 12.0 * DAYS_PER_MONTH).floor().min(t1))
}

/// A window around the measurements on 5 cm marks, at least 20 cm wide, kept inside the table
/// (shifted rather than cut where it can be); the whole table without measurements.
fn length_window(points: &[ChartPoint], (t0, t1): (f64, f64)) -> (f64, f64) {
    let Some((lo, hi)) = extent(points.iter().map(|p| p.x)) else {
        return (t0, t1);
    };
    let mut lo = ((lo - LENGTH_MARGIN) / 5.0).floor() * 5.0;
    let mut hi = ((hi + LENGTH_MARGIN) / 5.0).ceil() * 5.0;
    if hi - lo < LENGTH_MIN_SPAN {
        let grow = ((LENGTH_MIN_SPAN - (hi - lo)) / 10.0).ceil() * 5.0;
        lo -= grow;
        hi += grow;
    }
    if lo < t0 {
        hi += t0 - lo;
        lo = t0;
    }
    if hi > t1 {
        lo -= hi - t1;
        hi = t1;
    }
    (lo.max(t0), hi)
}

/// The curve at `k` SD, at `SEGMENTS + 1` evenly spaced x across the window.
fn sample(indicator: Indicator, sex: Sex, (x0, x1): (f64, f64), k: f64) -> Vec<(f64, f64)> {
    (0..=SEGMENTS)
        .filter_map(|i| {
            let x = x0 + (x1 - x0) * i as f64 / SEGMENTS as f64;
            let y = lms(indicator, sex, x)?.sd(k);
            y.is_finite().then_some((x, y))
        })
        .collect()
}

/// Smallest and largest of `values`; None when there are none.
fn extent(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    values.fold(None, |acc, v| match acc {
        None => Some((v, v)),
        Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
    })
}

/// A round gridline step (1, 2 or 5 times a power of ten) giving about eight lines.
fn nice_step(range: f64) -> f64 {
    let raw = range / 8.0;
    if !(raw.is_finite() && raw > 0.0) {
        return 1.0;
    }
    let magnitude = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0].into_iter().map(|m| m * magnitude).find(|&s| s >= raw - 1e-9).unwrap_or(10.0 * magnitude)
}

/// Pushes labels (sorted by y) down until each is at least `gap` below the one above.
fn spread<T>(labels: &mut [(f64, T)], gap: f64) {
    for i in 1..labels.len() {
        let floor = labels[i - 1].0 + gap;
        if labels[i].0 < floor {
            labels[i].0 = floor;
        }
    }
}

/// Ticks `(x, label)` on the x axis. Ages are labelled in months, as a posyandu counts them:
/// every 2 months up to two years, every 6 beyond; lengths every 5 cm, or 10 over a wide window.
/// An age window ends on a whole day, less than a day before its last month (see
/// [`age_window`]): that month still gets its tick, under a unit past the frame.
fn x_ticks(indicator: Indicator, x0: f64, x1: f64) -> Vec<(f64, String)> {
    let (unit, step, slack) = if is_age_based(indicator) {
        (DAYS_PER_MONTH, if x1 <= 24.0 * DAYS_PER_MONTH { 2.0 } else { 6.0 }, 1.0)
    } else {
        (1.0, if x1 - x0 > 40.0 { 10.0 } else { 5.0 }, 1e-9)
    };
    let first = ((x0 - 1e-9) / unit / step).ceil() as i64;
    let last = ((x1 + slack) / unit / step).floor() as i64;
    (first..=last).map(|i| i as f64 * step).map(|v| (v * unit, format!("{v}"))).collect()
}

/// "Berat badan menurut umur — Perempuan" / "Weight-for-age — Girls".
fn chart_title(indicator: Indicator, sex: Sex, lang: Lang) -> String {
    let name = match (indicator, lang) {
        (Indicator::WeightForAge, Lang::Id) => "Berat badan menurut umur",
        (Indicator::WeightForAge, Lang::En) => "Weight-for-age",
        (Indicator::LengthHeightForAge, Lang::Id) => "Panjang/tinggi badan menurut umur",
        (Indicator::LengthHeightForAge, Lang::En) => "Length/height-for-age",
        (Indicator::WeightForLength, Lang::Id) => "Berat badan menurut panjang badan",
        (Indicator::WeightForLength, Lang::En) => "Weight-for-length",
        (Indicator::WeightForHeight, Lang::Id) => "Berat badan menurut tinggi badan",
        (Indicator::WeightForHeight, Lang::En) => "Weight-for-height",
        (Indicator::BmiForAge, Lang::Id) => "IMT menurut umur",
        (Indicator::BmiForAge, Lang::En) => "BMI-for-age",
        (Indicator::HeadCircForAge, Lang::Id) => "Lingkar kepala menurut umur",
        (Indicator::HeadCircForAge, Lang::En) => "Head circumference-for-age",
        (Indicator::MuacForAge, Lang::Id) => "Lingkar lengan atas menurut umur",
        (Indicator::MuacForAge, Lang::En) => "Arm circumference-for-age",
    };
    let who = match (sex, lang) {
        (Sex::Female, Lang::Id) => "Perempuan",
        (Sex::Male, Lang::Id) => "Laki-laki",
        (Sex::Female, Lang::En) => "Girls",
        (Sex::Male, Lang::En) => "Boys",
    };
    format!("{name} — {who}")
}

/// `(x label, y label)` with the units people read.
fn axis_labels(indicator: Indicator, lang: Lang) -> (&'static str, &'static str) {
    let x = match (indicator, lang) {
        (Indicator::WeightForLength, Lang::Id) => "Panjang badan (cm)",
        (Indicator::WeightForLength, Lang::En) => "Length (cm)",
        (Indicator::WeightForHeight, Lang::Id) => "Tinggi badan (cm)",
        (Indicator::WeightForHeight, Lang::En) => "Height (cm)",
        (_, Lang::Id) => "Umur (bulan)",
        (_, Lang::En) => "Age (months)",
    };
    let y = match (indicator, lang) {
        (Indicator::WeightForAge | Indicator::WeightForLength | Indicator::WeightForHeight, Lang::Id) => {
            "Berat badan (kg)"
        }
        (Indicator::WeightForAge | Indicator::WeightForLength | Indicator::WeightForHeight, Lang::En) => "Weight (kg)",
        (Indicator::LengthHeightForAge, Lang::Id) => "Panjang/tinggi badan (cm)",
        (Indicator::LengthHeightForAge, Lang::En) => "Length/height (cm)",
        (Indicator::BmiForAge, Lang::Id) => "IMT (kg/m²)",
        (Indicator::BmiForAge, Lang::En) => "BMI (kg/m²)",
        (Indicator::HeadCircForAge, Lang::Id) => "Lingkar kepala (cm)",
        (Indicator::HeadCircForAge, Lang::En) => "Head circumference (cm)",
        (Indicator::MuacForAge, Lang::Id) => "Lingkar lengan atas (cm)",
        (Indicator::MuacForAge, Lang::En) => "Arm circumference (cm)",
    };
    (x, y)
}

fn unit(indicator: Indicator) -> &'static str {
    match indicator {
        Indicator::WeightForAge | Indicator::WeightForLength | Indicator::WeightForHeight => "kg",
        Indicator::BmiForAge => "kg/m²",
        Indicator::LengthHeightForAge | Indicator::HeadCircForAge | Indicator::MuacForAge => "cm",
    }
}

/// A measurement as its tooltip reads: "12 Nov 2026 (umur 8 bulan): 9,2 kg".
fn point_text(indicator: Indicator, p: &ChartPoint, lang: Lang) -> String {
    let at = match (indicator, lang) {
        (Indicator::WeightForLength, Lang::Id) => format!("panjang {} cm", decimal(p.x, 1, lang)),
        (Indicator::WeightForLength, Lang::En) => format!("length {} cm", decimal(p.x, 1, lang)),
        (Indicator::WeightForHeight, Lang::Id) => format!("tinggi {} cm", decimal(p.x, 1, lang)),
        (Indicator::WeightForHeight, Lang::En) => format!("height {} cm", decimal(p.x, 1, lang)),
        _ => age_text(p.x, lang),
    };
    format!("{} ({at}): {} {}", date_text(p.date, lang), decimal(p.y, 1, lang), unit(indicator))
}

/// Age in completed months, or in days in the first month.
fn age_text(days: f64, lang: Lang) -> String {
    let months = (days / DAYS_PER_MONTH).floor() as i64;
    let days = days.floor() as i64;
    match (months, lang) {
        (0, Lang::Id) => format!("umur {days} hari"),
        (0, Lang::En) if days == 1 => "age 1 day".to_string(),
        (0, Lang::En) => format!("age {days} days"),
        (m, Lang::Id) => format!("umur {m} bulan"),
        (1, Lang::En) => "age 1 month".to_string(),
        (m, Lang::En) => format!("age {m} months"),
    }
}

/// "12 Nov 2026"; Indonesian month abbreviations as CLDR gives them ("Agu", "Okt", "Des").
fn date_text(d: Date, lang: Lang) -> String {
    const ID: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "Mei", "Jun", "Jul", "Agu", "Sep", "Okt", "Nov", "Des"];
    const EN: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let names = match lang {
        Lang::Id => &ID,
        Lang::En => &EN,
    };
    let month = names[usize::from(u8::from(d.month())) - 1];
    format!("{} {month} {}", d.day(), d.year())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gridline_steps_are_round() {
        assert_eq!(nice_step(15.0), 2.0);
        assert_eq!(nice_step(7.0), 1.0);
        assert_eq!(nice_step(40.0), 5.0);
        assert_eq!(nice_step(3.0), 0.5);
        assert_eq!(nice_step(f64::NAN), 1.0);
        assert_eq!(nice_step(0.0), 1.0);
    }

    #[test]
    fn age_window_runs_to_two_years_or_half_a_year_past_the_child_in_whole_years() {
        let m = |months: f64| months * DAYS_PER_MONTH;
        let table = (0.0, 1856.0);
        assert_eq!(age_window(None, table), (0.0, 730.0));
        assert_eq!(age_window(Some(m(18.0)), table), (0.0, 730.0));
        assert_eq!(age_window(Some(m(19.0)), table), (0.0, 1095.0));
        assert_eq!(age_window(Some(m(56.0)), table), (0.0, 1856.0));
        assert_eq!(age_window(Some(m(5.0)), (91.0, 1856.0)), (91.0, 730.0));
    }

    #[test]
    fn length_window_surrounds_the_child_and_stays_in_the_table() {
        let at = |xs: &[f64]| -> Vec<ChartPoint> {
            xs.iter().map(|&x| ChartPoint { x, y: 8.0, date: time::macros::date!(2026 - 01 - 01) }).collect()
        };
        assert_eq!(length_window(&at(&[]), (45.0, 110.0)), (45.0, 110.0));
        assert_eq!(length_window(&at(&[72.3, 74.0]), (45.0, 110.0)), (60.0, 85.0));
        assert_eq!(length_window(&at(&[46.0]), (45.0, 110.0)), (45.0, 70.0));
        assert_eq!(length_window(&at(&[119.0]), (65.0, 120.0)), (95.0, 120.0));
        assert_eq!(length_window(&at(&[50.0, 105.0]), (45.0, 110.0)), (45.0, 110.0));
    }

    #[test]
    fn labels_closer_than_the_gap_are_pushed_apart() {
        let mut labels = [(10.0, 'a'), (15.0, 'b'), (40.0, 'c')];
        spread(&mut labels, 12.0);
        assert_eq!(labels, [(10.0, 'a'), (22.0, 'b'), (40.0, 'c')]);
    }

    #[test]
    fn tooltips_read_as_people_write() {
        let p = ChartPoint { x: 250.0, y: 9.2, date: time::macros::date!(2026 - 11 - 12) };
        assert_eq!(point_text(Indicator::WeightForAge, &p, Lang::Id), "12 Nov 2026 (umur 8 bulan): 9,2 kg");
        assert_eq!(point_text(Indicator::WeightForAge, &p, Lang::En), "12 Nov 2026 (age 8 months): 9.2 kg");
        let p = ChartPoint { x: 74.0, y: 9.0, date: time::macros::date!(2026 - 08 - 03) };
        assert_eq!(point_text(Indicator::WeightForLength, &p, Lang::Id), "3 Agu 2026 (panjang 74,0 cm): 9,0 kg");
        assert_eq!(age_text(12.0, Lang::Id), "umur 12 hari");
        assert_eq!(age_text(31.0, Lang::En), "age 1 month");
    }
}
