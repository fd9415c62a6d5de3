//! A year of a unit's figures as a line chart (percent by month): SVG drawn on the server,
//! like the growth charts, so the web app needs no chart library. A month without a
//! denominator (no child weighed) breaks the line instead of drawing a zero.

use super::{Lang, N, decimal, escape};
use std::fmt::Write as _;

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 320.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 620.0;
const TOP: f64 = 64.0;
const BOTTOM: f64 = 280.0;
/// Colour-blind-safe line colours (Okabe–Ito), in line order.
const COLOURS: [&str; 6] = ["#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9"];

/// One line of the chart: its label and a value per month (`None`: nothing to divide by).
#[derive(Clone, Debug, PartialEq)]
pub struct Line {
    pub label: String,
    pub values: Vec<Option<f64>>,
}

/// The chart: `months` labels the x axis (`2026-11`), each line a percent per month. `id` is
/// unique on the page (it names the title and description elements).
pub fn trend_svg(id: &str, title: &str, months: &[String], lines: &[Line], lang: Lang) -> String {
    let id = escape(id);
    let top = lines.iter().flat_map(|l| l.values.iter().flatten()).fold(0.0_f64, |a, &b| a.max(b));
    let y_max = nice_max(top);
    let step = if months.len() > 1 { (RIGHT - LEFT) / (months.len() - 1) as f64 } else { 0.0 };
    let x = |i: usize| LEFT + step * i as f64;
    let y = |v: f64| BOTTOM - (v.clamp(0.0, y_max) / y_max) * (BOTTOM - TOP);
    let mut out = String::with_capacity(8 * 1024);
    let _ = write!(
        out,
        r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" role="img" lang="{lang}" aria-labelledby="{id}-title {id}-desc" font-family="system-ui, sans-serif" font-size="12">"##,
        w = N(WIDTH),
        h = N(HEIGHT),
        lang = lang.code()
    );
    let _ = write!(out, r#"<title id="{id}-title">{}</title>"#, escape(title));
    let _ = write!(out, r#"<desc id="{id}-desc">{}</desc>"#, escape(&describe(months, lines, lang)));
    let _ = write!(out, r##"<rect width="{}" height="{}" fill="#fff"/>"##, N(WIDTH), N(HEIGHT));
    let _ = write!(
        out,
        r##"<text x="{}" y="20" font-size="14" font-weight="600" fill="#1d2433">{}</text>"##,
        N(LEFT),
        escape(title)
    );
    legend(&mut out, lines);
    // Five steps: every top `nice_max` gives is a multiple of 5, so each tick is whole.
    for k in 0..=5 {
        let v = y_max * f64::from(k) / 5.0;
        let _ = write!(
            out,
            r##"<line x1="{l}" x2="{r}" y1="{y}" y2="{y}" stroke="#e3e7ef"/><text x="{tx}" y="{ty}" text-anchor="end" fill="#1d2433">{v} %</text>"##,
            l = N(LEFT),
            r = N(RIGHT),
            y = N(y(v)),
            tx = N(LEFT - 6.0),
            ty = N(y(v) + 4.0),
            v = decimal(v, 0, lang)
        );
    }
    for (i, m) in months.iter().enumerate() {
        let _ = write!(
            out,
            r##"<text x="{}" y="{}" text-anchor="middle" fill="#1d2433">{}</text>"##,
            N(x(i)),
            N(BOTTOM + 18.0),
            escape(&month_label(m, lang))
        );
    }
    for (n, line) in lines.iter().enumerate() {
        draw_line(&mut out, line, COLOURS[n % COLOURS.len()], &x, &y, months, lang);
    }
    out.push_str("</svg>");
    out
}

/// The top of the y axis: a round number just above the largest value (at least 5 %).
fn nice_max(top: f64) -> f64 {
    let top = if top.is_finite() { top.max(5.0) } else { 5.0 };
    for m in [5.0, 10.0, 20.0, 25.0, 40.0, 50.0, 60.0, 80.0, 100.0] {
        if top <= m {
            return m;
        }
    }
    (top / 50.0).ceil() * 50.0
}

fn legend(out: &mut String, lines: &[Line]) {
    let mut x = LEFT;
    for (n, line) in lines.iter().enumerate() {
        let colour = COLOURS[n % COLOURS.len()];
        let _ = write!(
            out,
            r##"<rect x="{}" y="34" width="14" height="4" fill="{colour}"/><text x="{}" y="40" fill="#1d2433">{}</text>"##,
            N(x),
            N(x + 18.0),
            escape(&line.label)
        );
        x += 26.0 + 7.0 * line.label.chars().count() as f64;
    }
}

/// The line's segments between months that have a value, and a dot with a tooltip on each.
fn draw_line(
    out: &mut String,
    line: &Line,
    colour: &str,
    x: &dyn Fn(usize) -> f64,
    y: &dyn Fn(f64) -> f64,
    months: &[String],
    lang: Lang,
) {
    let mut path = String::new();
    let mut pen_down = false;
    for (i, v) in line.values.iter().enumerate().take(months.len()) {
        match v.filter(|v| v.is_finite()) {
            Some(v) => {
                let _ = write!(path, "{}{} {}", if pen_down { "L" } else { "M" }, N(x(i)), N(y(v)));
                pen_down = true;
            }
            None => pen_down = false,
        }
    }
    if !path.is_empty() {
        let _ = write!(out, r#"<path class="trend" d="{path}" fill="none" stroke="{colour}" stroke-width="2.5"/>"#);
    }
    for (i, v) in line.values.iter().enumerate().take(months.len()) {
        let Some(v) = v.filter(|v| v.is_finite()) else { continue };
        let tip = format!("{} {}: {} %", line.label, month_label(&months[i], lang), decimal(v, 1, lang));
        let _ = write!(
            out,
            r#"<circle class="value" cx="{}" cy="{}" r="3.5" fill="{colour}"><title>{}</title></circle>"#,
            N(x(i)),
            N(y(v)),
            escape(&tip)
        );
    }
}

/// `2026-11` → `Nov 26` / `Nov 26` (Indonesian abbreviations where they differ).
fn month_label(month: &str, lang: Lang) -> String {
    const ID: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "Mei", "Jun", "Jul", "Agu", "Sep", "Okt", "Nov", "Des"];
    const EN: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let Some((year, m)) = month.split_once('-') else { return month.to_owned() };
    let Some(i) = m.parse::<usize>().ok().filter(|m| (1..=12).contains(m)) else { return month.to_owned() };
    let names = if lang == Lang::Id { &ID } else { &EN };
    format!("{} {}", names[i - 1], year.get(2..).unwrap_or(year))
}

/// What a screen reader says: the span and each line's latest value.
fn describe(months: &[String], lines: &[Line], lang: Lang) -> String {
    let span = match (months.first(), months.last()) {
        (Some(a), Some(b)) => format!("{} – {}", month_label(a, lang), month_label(b, lang)),
        _ => String::new(),
    };
    let latest: Vec<String> = lines
        .iter()
        .map(|l| match l.values.iter().rev().flatten().next() {
            Some(v) => format!("{} {} %", l.label, decimal(*v, 1, lang)),
            None => format!("{} –", l.label),
        })
        .collect();
    format!("{span}. {}", latest.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_axis_top_is_round_and_at_least_five_percent() {
        assert_eq!(nice_max(0.0), 5.0);
        assert_eq!(nice_max(23.4), 25.0);
        assert_eq!(nice_max(100.0), 100.0);
        assert_eq!(nice_max(f64::NAN), 5.0);
    }

    #[test]
    fn months_read_as_people_write_them() {
        assert_eq!(month_label("2026-08", Lang::Id), "Agu 26");
        assert_eq!(month_label("2026-08", Lang::En), "Aug 26");
        assert_eq!(month_label("bad", Lang::Id), "bad");
    }
}
