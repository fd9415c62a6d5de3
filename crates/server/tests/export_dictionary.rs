//! The CSV exports' data dictionary (`proto/export/DATA-DICTIONARY.md`) documents exactly the
//! columns the exports emit, in order: a column added to the code without its documentation,
//! or documented but gone, fails here.

use posync_server::export_csv::{PEOPLE_COLUMNS, Period, VISIT_COLUMNS, people_csv, visits_csv};

const DICTIONARY: &str = include_str!("../../../proto/export/DATA-DICTIONARY.md");

/// The first cell (`` `column` ``) of each table row under the `## <file>` heading.
fn documented(file: &str) -> Vec<String> {
    let heading = format!("## {file}");
    let section = DICTIONARY.split(&heading).nth(1).unwrap_or_else(|| panic!("no section {heading}"));
    let section = section.split("\n## ").next().unwrap_or_default();
    section
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split_once('`'))
        .map(|(name, _)| name.to_owned())
        .collect()
}

fn emitted_header(csv: &str) -> Vec<String> {
    csv.lines().next().expect("a header row").split(',').map(str::to_owned).collect()
}

#[test]
fn every_visits_column_is_documented_and_every_documented_column_is_emitted() {
    let header = emitted_header(&visits_csv(&[]));
    assert_eq!(header, VISIT_COLUMNS);
    assert_eq!(documented("visits.csv"), header);
}

#[test]
fn every_people_column_is_documented_and_every_documented_column_is_emitted() {
    let march = Period::of_month(posync_model::report::Month::parse("2026-03").expect("month"));
    let header = emitted_header(&people_csv(&[], &[], march));
    assert_eq!(header, PEOPLE_COLUMNS);
    assert_eq!(documented("people.csv"), header);
}
