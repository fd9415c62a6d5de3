//! The WHO growth chart SVG, read back as XML: its curves, labels, the child's dots and what a
//! screen reader hears, for every indicator, both sexes and both languages.

use posync_model::Sex;
use posync_model::growth::{Indicator, lms};
use posync_server::charts::{ChartPoint, Lang, growth_chart_svg};
use proptest::prelude::*;
use time::Date;
use time::macros::date;

const FIVE_CURVES: [&str; 5] = ["sd-m3", "sd-m2", "sd-0", "sd-p2", "sd-p3"];
/// The plot area's bottom edge in viewBox units: no dot may fall below it.
const PLOT_BOTTOM: f64 = 340.0;
const DAYS_PER_MONTH: f64 = 30.4375;

fn parse(svg: &str) -> roxmltree::Document<'_> {
    match roxmltree::Document::parse(svg) {
        Ok(doc) => doc,
        Err(e) => panic!("not XML: {e}\n{svg}"),
    }
}

fn elements<'a>(doc: &'a roxmltree::Document<'a>, name: &str) -> Vec<roxmltree::Node<'a, 'a>> {
    doc.descendants().filter(|n| n.has_tag_name(name)).collect()
}

fn with_class<'a>(doc: &'a roxmltree::Document<'a>, name: &str, class: &str) -> Vec<roxmltree::Node<'a, 'a>> {
    elements(doc, name)
        .into_iter()
        .filter(|n| n.attribute("class").is_some_and(|c| c.split(' ').any(|t| t == class)))
        .collect()
}

fn number(s: &str) -> f64 {
    s.trim().parse().unwrap_or_else(|e| panic!("{s:?} is not a number: {e}"))
}

/// The vertices of a curve's path (`M x,y L x,y …`), in viewBox units.
fn curve(doc: &roxmltree::Document<'_>, class: &str) -> Vec<(f64, f64)> {
    let paths = with_class(doc, "path", class);
    assert_eq!(paths.len(), 1, "one path of class {class}");
    let d = paths[0].attribute("d").unwrap_or_default();
    d.split(['M', 'L'])
        .filter(|s| !s.is_empty())
        .map(|xy| match xy.split_once(',') {
            Some((x, y)) => (number(x), number(y)),
            None => panic!("bad vertex {xy:?} in {class}"),
        })
        .collect()
}

/// The curve's y at `x`, between its two neighbouring vertices.
fn curve_at(curve: &[(f64, f64)], x: f64) -> f64 {
    let i = curve.windows(2).position(|w| w[0].0 <= x && x <= w[1].0);
    let Some(i) = i else { panic!("x {x} outside the curve {:?}..{:?}", curve.first(), curve.last()) };
    let ((x0, y0), (x1, y1)) = (curve[i], curve[i + 1]);
    if x1 == x0 { y0 } else { y0 + (y1 - y0) * (x - x0) / (x1 - x0) }
}

/// `(cx, cy, tooltip)` of each of the child's dots, in drawing order.
fn dots(doc: &roxmltree::Document<'_>) -> Vec<(f64, f64, String)> {
    with_class(doc, "circle", "point")
        .into_iter()
        .map(|c| {
            let at = |a: &str| number(c.attribute(a).unwrap_or_default());
            let title = c.children().find(|n| n.has_tag_name("title")).and_then(|t| t.text()).unwrap_or_default();
            (at("cx"), at("cy"), title.to_string())
        })
        .collect()
}

fn child_text(doc: &roxmltree::Document<'_>, name: &str) -> String {
    let root = doc.root_element();
    root.children().find(|n| n.has_tag_name(name)).and_then(|n| n.text()).unwrap_or_default().to_string()
}

fn texts(doc: &roxmltree::Document<'_>) -> Vec<String> {
    elements(doc, "text").into_iter().filter_map(|t| t.text()).map(str::to_string).collect()
}

fn median(indicator: Indicator, sex: Sex, x: f64) -> f64 {
    match lms(indicator, sex, x) {
        Some(l) => l.sd(0.0),
        None => panic!("{indicator:?} has no row at {x}"),
    }
}

/// `n` days after 10 Jan 2026 (a birth date); the birth date itself for an `n` no calendar holds.
fn day(n: i64) -> Date {
    date!(2026 - 01 - 10).checked_add(time::Duration::days(n.clamp(-100_000, 100_000))).unwrap_or(date!(2026 - 01 - 10))
}

/// A girl weighed monthly from 1 to 6 months, near the median.
fn six_months_of_a_girl() -> Vec<ChartPoint> {
    [4.2, 5.1, 5.8, 6.4, 6.9, 7.3]
        .iter()
        .enumerate()
        .map(|(i, &kg)| {
            let days = ((i + 1) as f64 * DAYS_PER_MONTH).ceil();
            ChartPoint { x: days, y: kg, date: day(days as i64) }
        })
        .collect()
}

#[test]
fn the_chart_is_xml_with_five_sd_curves_a_title_and_a_description_in_indonesian() {
    let svg = growth_chart_svg(Indicator::WeightForAge, Sex::Female, &six_months_of_a_girl(), Lang::Id);
    let doc = parse(&svg);
    let root = doc.root_element();
    assert_eq!(root.tag_name().namespace(), Some("http://www.w3.org/2000/svg"));
    assert_eq!(root.attribute("viewBox"), Some("0 0 640 400"));
    assert_eq!(root.attribute("width"), Some("100%"));
    assert_eq!(root.attribute("role"), Some("img"));
    assert_eq!(root.attribute("lang"), Some("id"));
    for class in FIVE_CURVES {
        assert!(curve(&doc, class).len() > 50, "{class} is smooth");
        assert!(curve(&doc, class).len() <= 201, "{class} is bounded");
    }
    // aria-labelledby names the title and the description, which come first.
    let ids: Vec<&str> = root.attribute("aria-labelledby").unwrap_or_default().split(' ').collect();
    let firsts: Vec<_> = root.children().filter(|n| n.is_element()).take(2).collect();
    assert_eq!(firsts.iter().map(|n| n.tag_name().name()).collect::<Vec<_>>(), ["title", "desc"]);
    assert_eq!(firsts.iter().filter_map(|n| n.attribute("id")).collect::<Vec<_>>(), ids);
    assert_eq!(child_text(&doc, "title"), "Berat badan menurut umur — Perempuan");
    assert_eq!(
        child_text(&doc, "desc"),
        "Kurva WHO −3 sampai +3 SD; 6 pengukuran, terakhir 12 Jul 2026 (umur 6 bulan): 7,3 kg."
    );
    let texts = texts(&doc);
    for want in ["Berat badan menurut umur — Perempuan", "Umur (bulan)", "Berat badan (kg)", "Median", "−2 SD", "+3 SD"]
    {
        assert!(texts.iter().any(|t| t == want), "no text {want:?} in {texts:?}");
    }
}

#[test]
fn an_english_chart_speaks_english() {
    let svg = growth_chart_svg(Indicator::WeightForAge, Sex::Female, &six_months_of_a_girl(), Lang::En);
    let doc = parse(&svg);
    assert_eq!(doc.root_element().attribute("lang"), Some("en"));
    assert_eq!(child_text(&doc, "title"), "Weight-for-age — Girls");
    assert_eq!(
        child_text(&doc, "desc"),
        "WHO curves −3 to +3 SD; 6 measurements, latest 12 Jul 2026 (age 6 months): 7.3 kg."
    );
    let texts = texts(&doc);
    assert!(texts.iter().any(|t| t == "Age (months)") && texts.iter().any(|t| t == "Weight (kg)"), "{texts:?}");
    assert_eq!(dots(&doc)[0].2, "10 Feb 2026 (age 1 month): 4.2 kg");
}

#[test]
fn tooltips_give_the_date_and_the_value_with_a_decimal_comma_in_indonesian() {
    let points = [ChartPoint { x: 250.0, y: 9.2, date: date!(2026 - 11 - 12) }];
    let doc_text = growth_chart_svg(Indicator::WeightForAge, Sex::Male, &points, Lang::Id);
    let doc = parse(&doc_text);
    assert_eq!(dots(&doc).iter().map(|d| d.2.as_str()).collect::<Vec<_>>(), ["12 Nov 2026 (umur 8 bulan): 9,2 kg"]);
    assert_eq!(child_text(&doc, "title"), "Berat badan menurut umur — Laki-laki");
    assert!(with_class(&doc, "polyline", "trajectory").is_empty(), "one dot has no line");

    let points = [ChartPoint { x: 74.0, y: 9.0, date: date!(2026 - 08 - 03) }];
    let doc_text = growth_chart_svg(Indicator::WeightForLength, Sex::Female, &points, Lang::Id);
    let doc = parse(&doc_text);
    assert_eq!(dots(&doc)[0].2, "3 Agu 2026 (panjang 74,0 cm): 9,0 kg");
    let texts = texts(&doc);
    assert!(texts.iter().any(|t| t == "Panjang badan (cm)") && texts.iter().any(|t| t == "Berat badan (kg)"));
}

#[test]
fn every_indicator_sex_and_language_draws_a_chart_with_no_nan_and_one_desc() {
    for indicator in Indicator::ALL {
        let (t0, t1) = indicator.x_range();
        for sex in [Sex::Female, Sex::Male] {
            let near = |x: f64| ChartPoint { x, y: median(indicator, sex, x) * 1.05, date: day(x as i64) };
            for points in [vec![], vec![near(t0), near((t0 + t1) / 2.0), near(t1)]] {
                for lang in [Lang::Id, Lang::En] {
                    let svg = growth_chart_svg(indicator, sex, &points, lang);
                    let doc = parse(&svg);
                    for class in FIVE_CURVES {
                        assert!(curve(&doc, class).len() > 50, "{indicator:?} {sex:?} {class}");
                    }
                    assert_eq!(dots(&doc).len(), points.len(), "{indicator:?} {sex:?}");
                    for bad in ["NaN", "inf"] {
                        assert!(!svg.contains(bad), "{indicator:?} {sex:?} {lang:?} has {bad}");
                    }
                    assert!(!child_text(&doc, "desc").is_empty());
                }
            }
        }
    }
}

#[test]
fn a_child_exactly_on_the_median_is_drawn_on_the_median_curve() {
    let cases: [(Indicator, Sex, &[f64]); 4] = [
        (Indicator::WeightForAge, Sex::Female, &[0.0, 30.0, 91.0, 182.0, 365.0, 548.0, 700.0]),
        (Indicator::LengthHeightForAge, Sex::Male, &[45.0, 400.0, 800.0, 1200.0, 1500.0]),
        (Indicator::WeightForLength, Sex::Male, &[70.0, 72.5, 75.3, 78.0]),
        (Indicator::WeightForHeight, Sex::Female, &[96.0, 101.2, 104.0]),
    ];
    for (indicator, sex, xs) in cases {
        let points: Vec<ChartPoint> =
            xs.iter().map(|&x| ChartPoint { x, y: median(indicator, sex, x), date: day(x as i64) }).collect();
        let svg = growth_chart_svg(indicator, sex, &points, Lang::Id);
        let doc = parse(&svg);
        let median_curve = curve(&doc, "sd-0");
        let dots = dots(&doc);
        assert_eq!(dots.len(), xs.len(), "{indicator:?}");
        for (cx, cy, title) in dots {
            let on_curve = curve_at(&median_curve, cx);
            assert!((cy - on_curve).abs() <= 0.5, "{indicator:?} {title}: dot at y {cy}, median at {on_curve}");
        }
    }
}

#[test]
fn the_curves_lie_in_order_minus_three_lowest_everywhere() {
    for indicator in Indicator::ALL {
        for sex in [Sex::Female, Sex::Male] {
            let svg = growth_chart_svg(indicator, sex, &[], Lang::En);
            let doc = parse(&svg);
            let curves: Vec<Vec<(f64, f64)>> = FIVE_CURVES.iter().map(|c| curve(&doc, c)).collect();
            for pair in curves.windows(2) {
                let (lower, upper) = (&pair[0], &pair[1]);
                assert_eq!(lower.len(), upper.len());
                for (a, b) in lower.iter().zip(upper) {
                    assert_eq!(a.0, b.0, "sampled at the same x");
                    // SVG y grows downwards: a lower curve has the larger y.
                    assert!(a.1 > b.1, "{indicator:?} {sex:?}: at x {} a lower curve is at {} above {}", a.0, a.1, b.1);
                }
            }
        }
    }
}

#[test]
fn measurements_beyond_the_table_or_not_numbers_are_left_out() {
    let ok = |x: f64, y: f64| ChartPoint { x, y, date: day(x as i64) };
    let points = [
        ok(100.0, 5.5),
        ok(2000.0, 16.0),
        ok(-3.0, 3.0),
        ok(f64::NAN, 6.0),
        ok(200.0, f64::NAN),
        ok(210.0, f64::INFINITY),
        ok(f64::NEG_INFINITY, 6.0),
        ok(220.0, 0.0),
        ok(230.0, -7.0),
        ok(300.0, 8.1),
    ];
    let svg = growth_chart_svg(Indicator::WeightForAge, Sex::Male, &points, Lang::Id);
    let doc = parse(&svg);
    let titles: Vec<String> = dots(&doc).into_iter().map(|d| d.2).collect();
    assert_eq!(titles, ["20 Apr 2026 (umur 3 bulan): 5,5 kg", "6 Nov 2026 (umur 9 bulan): 8,1 kg"]);
    assert!(child_text(&doc, "desc").contains("2 pengukuran"));

    let points = [ok(40.0, 3.0), ok(75.0, 9.0), ok(130.0, 25.0)];
    let doc_text = growth_chart_svg(Indicator::WeightForLength, Sex::Female, &points, Lang::En);
    let doc = parse(&doc_text);
    assert_eq!(dots(&doc).len(), 1);
    assert!(child_text(&doc, "desc").contains("1 measurement,"));
}

#[test]
fn a_severely_underweight_child_is_drawn_inside_the_chart_and_a_typing_error_is_left_out() {
    let x = 365.0;
    let Some(l) = lms(Indicator::WeightForAge, Sex::Female, x) else { panic!("no row") };
    let points = [ChartPoint { x, y: l.sd(-4.5), date: day(365) }, ChartPoint { x: x + 30.0, y: 92.0, date: day(395) }];
    let svg = growth_chart_svg(Indicator::WeightForAge, Sex::Female, &points, Lang::Id);
    let doc = parse(&svg);
    let dots = dots(&doc);
    assert_eq!(dots.len(), 1, "92 kg at 13 months is left out");
    let (_, cy, _) = dots[0];
    assert!(cy <= PLOT_BOTTOM, "the dot at −4.5 SD is inside the plot: cy {cy}");
    assert!(cy > curve_at(&curve(&doc, "sd-m3"), dots[0].0), "and below the −3 SD curve");
}

#[test]
fn the_age_axis_runs_to_two_years_in_two_month_ticks_or_whole_years_past_the_child_in_six() {
    let x_ticks = |svg: &str| -> Vec<String> {
        let doc = parse(svg);
        let group = with_class(&doc, "g", "x-ticks");
        group[0].children().filter_map(|t| t.text()).map(str::to_string).collect()
    };
    let young = growth_chart_svg(Indicator::WeightForAge, Sex::Female, &six_months_of_a_girl(), Lang::Id);
    assert_eq!(x_ticks(&young), ["0", "2", "4", "6", "8", "10", "12", "14", "16", "18", "20", "22", "24"]);

    let at_30_months = [ChartPoint { x: 30.0 * DAYS_PER_MONTH, y: 12.5, date: day(913) }];
    let older = growth_chart_svg(Indicator::WeightForAge, Sex::Female, &at_30_months, Lang::Id);
    assert_eq!(x_ticks(&older), ["0", "6", "12", "18", "24", "30", "36"]);

    let at_57_months = [ChartPoint { x: 57.0 * DAYS_PER_MONTH, y: 17.0, date: day(1735) }];
    let oldest = growth_chart_svg(Indicator::WeightForAge, Sex::Female, &at_57_months, Lang::Id);
    assert_eq!(x_ticks(&oldest).last().map(String::as_str), Some("60"), "clipped to WHO's table");
}

#[test]
fn sixty_measurements_stay_under_40_kb() {
    let points: Vec<ChartPoint> = (0..60)
        .map(|m| {
            let x = (m as f64 * DAYS_PER_MONTH + 3.0).min(1856.0);
            ChartPoint { x, y: median(Indicator::WeightForAge, Sex::Male, x) * 0.93, date: day(x as i64) }
        })
        .collect();
    let svg = growth_chart_svg(Indicator::WeightForAge, Sex::Male, &points, Lang::Id);
    assert_eq!(dots(&parse(&svg)).len(), 60);
    assert!(svg.len() < 40_000, "{} bytes", svg.len());
}

#[test]
fn the_same_measurements_in_any_order_give_the_same_bytes() {
    let points = six_months_of_a_girl();
    let once = growth_chart_svg(Indicator::WeightForAge, Sex::Female, &points, Lang::Id);
    let again = growth_chart_svg(Indicator::WeightForAge, Sex::Female, &points, Lang::Id);
    let reversed: Vec<ChartPoint> = points.iter().rev().copied().collect();
    let reversed = growth_chart_svg(Indicator::WeightForAge, Sex::Female, &reversed, Lang::Id);
    assert_eq!(once, again);
    assert_eq!(once, reversed);
}

#[test]
fn the_childs_line_joins_the_dots_in_date_order() {
    // Weight-for-length: the child's length may shrink between measurements (measured standing,
    // a re-measure), so the line follows the dates, not the x axis.
    let points = [
        ChartPoint { x: 76.0, y: 9.6, date: date!(2026 - 03 - 01) },
        ChartPoint { x: 72.0, y: 8.4, date: date!(2026 - 01 - 01) },
        ChartPoint { x: 75.0, y: 9.4, date: date!(2026 - 04 - 01) },
        ChartPoint { x: 74.0, y: 9.0, date: date!(2026 - 02 - 01) },
    ];
    let svg = growth_chart_svg(Indicator::WeightForLength, Sex::Male, &points, Lang::En);
    let doc = parse(&svg);
    let line = with_class(&doc, "polyline", "trajectory");
    let vertices: Vec<String> =
        line[0].attribute("points").unwrap_or_default().split(' ').map(str::to_string).collect();
    let dots: Vec<String> = dots(&doc).iter().map(|(x, y, _)| format!("{x},{y}")).collect();
    assert_eq!(vertices, dots);
    let titles: Vec<String> = self::dots(&doc).into_iter().map(|d| d.2).collect();
    assert!(titles[0].starts_with("1 Jan 2026 (length 72.0 cm)"), "{titles:?}");
    assert!(titles[3].starts_with("1 Apr 2026"), "{titles:?}");
}

fn any_date() -> impl Strategy<Value = Date> {
    (0i64..4000).prop_map(|n| date!(2020 - 01 - 01) + time::Duration::days(n))
}

fn any_value() -> impl Strategy<Value = f64> {
    prop_oneof![proptest::num::f64::ANY, -10.0..2000.0f64, Just(f64::NAN), Just(0.0)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn any_measurements_give_well_formed_xml_without_nan(
        indicator in proptest::sample::select(Indicator::ALL.to_vec()),
        male in any::<bool>(),
        points in proptest::collection::vec((any_value(), any_value(), any_date()), 0..12),
    ) {
        let sex = if male { Sex::Male } else { Sex::Female };
        let points: Vec<ChartPoint> = points.into_iter().map(|(x, y, date)| ChartPoint { x, y, date }).collect();
        let svg = growth_chart_svg(indicator, sex, &points, Lang::Id);
        let doc = roxmltree::Document::parse(&svg);
        prop_assert!(doc.is_ok(), "{:?}", doc.err());
        prop_assert!(!svg.contains("NaN") && !svg.contains("inf"));
        prop_assert!(svg.len() < 40_000);
    }
}

mod trend {
    use posync_server::charts::Lang;
    use posync_server::charts::trend::{Line, trend_svg};

    fn months() -> Vec<String> {
        (1..=12).map(|m| format!("2026-{m:02}")).collect()
    }

    #[test]
    fn a_month_without_a_value_breaks_the_line_and_every_value_has_a_dot() {
        let mut values: Vec<Option<f64>> = (0..12).map(|i| Some(10.0 + f64::from(i))).collect();
        values[5] = None;
        let svg = trend_svg("t", "D/S", &months(), &[Line { label: "D/S".into(), values }], Lang::Id);
        let doc = roxmltree::Document::parse(&svg).expect("well-formed SVG");
        let path = doc.descendants().find(|n| n.attribute("class") == Some("trend")).expect("the line");
        let d = path.attribute("d").expect("d");
        assert_eq!(d.matches('M').count(), 2, "two runs around the missing month: {d}");
        assert_eq!(doc.descendants().filter(|n| n.attribute("class") == Some("value")).count(), 11);
        assert!(svg.contains("Agu 26") && svg.contains("lang=\"id\""), "Indonesian month labels");
    }

    #[test]
    fn labels_are_escaped_and_the_chart_names_itself() {
        let line = Line { label: "<b>&".into(), values: vec![Some(1.0); 12] };
        let svg = trend_svg("x", "Tom & <Jerry>", &months(), &[line], Lang::En);
        let doc = roxmltree::Document::parse(&svg).expect("well-formed SVG");
        let root = doc.root_element();
        assert_eq!(root.attribute("role"), Some("img"));
        assert_eq!(root.attribute("aria-labelledby"), Some("x-title x-desc"));
        let title = doc.descendants().find(|n| n.has_tag_name("title")).and_then(|n| n.text());
        assert_eq!(title, Some("Tom & <Jerry>"));
    }
}
