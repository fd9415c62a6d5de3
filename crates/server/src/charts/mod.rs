//! Charts drawn on the server as SVG for the puskesmas web app: a child's WHO growth charts
//! ([`growth`]) and a unit's monthly figures over a year ([`trend`]). Pure: no I/O; the routes
//! that serve them are elsewhere. What they share lives here: the language, numbers as the
//! reader writes them, compact coordinates and XML escaping.

pub mod growth;
pub mod trend;

pub use growth::{ChartPoint, growth_chart_svg};
use std::fmt::{self, Display};

/// The language of a chart's text. Indonesian first: kader and puskesmas staff read it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Lang {
    #[default]
    Id,
    En,
}

impl Lang {
    /// The BCP 47 tag, for the root's `lang` attribute (a screen reader picks its voice by it).
    pub fn code(self) -> &'static str {
        match self {
            Lang::Id => "id",
            Lang::En => "en",
        }
    }
}

/// A number as the reader writes it: Indonesian with a decimal comma (`9,2`).
pub(crate) fn decimal(v: f64, decimals: usize, lang: Lang) -> String {
    let s = format!("{v:.decimals$}");
    match lang {
        Lang::Id => s.replace('.', ","),
        Lang::En => s,
    }
}

/// A coordinate with at most one decimal and no trailing `.0` (`12`, `-3.5`, never `-0`):
/// keeps the output small and the same bytes on every platform.
pub(crate) struct N(pub(crate) f64);

impl Display for N {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tenths = (self.0 * 10.0).round() as i64;
        let sign = if tenths < 0 { "-" } else { "" };
        let abs = tenths.unsigned_abs();
        match abs % 10 {
            0 => write!(f, "{sign}{}", abs / 10),
            d => write!(f, "{sign}{}.{d}", abs / 10),
        }
    }
}

/// Escapes text for XML content and double- or single-quoted attributes.
pub(crate) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_characters_are_escaped() {
        assert_eq!(
            escape(r#"<a href="x">Tom & 'Jerry'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;Tom &amp; &apos;Jerry&apos;&lt;/a&gt;"
        );
        assert_eq!(escape("Perempuan — −2 SD"), "Perempuan — −2 SD");
    }

    #[test]
    fn coordinates_have_one_decimal_and_no_negative_zero() {
        let s = |v: f64| N(v).to_string();
        assert_eq!(
            [s(12.0), s(12.04), s(12.06), s(-3.46), s(-0.04), s(0.0), s(579.95)],
            ["12", "12", "12.1", "-3.5", "0", "0", "580"]
        );
    }
}
