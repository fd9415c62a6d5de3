//! What the CLI prints: one JSON object per line on stdout for results (scripts read them),
//! times as dates, and a closed pipe that ends the program quietly.

use anyhow::Result;

/// Write one line to stdout (see `out!`).
pub fn print_line(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = writeln!(stdout, "{args}").and_then(|()| stdout.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("posync: cannot write to stdout: {e}");
        std::process::exit(1);
    }
}

/// Each item as one JSON line, its times as dates (see [`with_dates`]).
pub fn print_json<T: serde::Serialize>(items: impl IntoIterator<Item = T>) -> Result<()> {
    for item in items {
        print_one(&item)?;
    }
    Ok(())
}

/// One JSON line, its times as dates.
pub fn print_one<T: serde::Serialize>(item: &T) -> Result<()> {
    let value = with_dates(serde_json::to_value(item)?);
    out!("{value}");
    Ok(())
}

/// Times as people and tools read them: every `at` or `…_at` field that holds Unix seconds
/// becomes an RFC 3339 UTC time (`2026-11-29T08:33:34Z`). The stores and the HTTP API keep
/// seconds; only what the CLI prints changes.
pub fn with_dates(value: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(key, v)| {
                    let is_time = key == "at" || key.ends_with("_at");
                    let v = match v.as_i64().filter(|_| is_time).and_then(rfc3339) {
                        Some(date) => Value::String(date),
                        None => with_dates(v),
                    };
                    (key, v)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(with_dates).collect()),
        other => other,
    }
}

fn rfc3339(unix_seconds: i64) -> Option<String> {
    let t = time::OffsetDateTime::from_unix_timestamp(unix_seconds).ok()?;
    t.format(&time::format_description::well_known::Rfc3339).ok()
}

/// A date as an Indonesian reader writes it: `1 Juni 2025`.
pub fn date_id(d: time::Date) -> String {
    const MONTHS: [&str; 12] = [
        "Januari",
        "Februari",
        "Maret",
        "April",
        "Mei",
        "Juni",
        "Juli",
        "Agustus",
        "September",
        "Oktober",
        "November",
        "Desember",
    ];
    format!("{} {} {}", d.day(), MONTHS[usize::from(u8::from(d.month())) - 1], d.year())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_seconds_in_time_fields_become_dates_and_nothing_else_changes() {
        let v = serde_json::json!({
            "at": 1_764_405_214, "expires_at": 0, "last_seen_at": null, "count": 1_764_405_214,
            "items": [{"recorded_at": 1_764_405_214, "weight_g": 8500}], "name": "at"
        });
        let got = with_dates(v);
        assert_eq!(got["at"], "2025-11-29T08:33:34Z");
        assert_eq!(got["expires_at"], "1970-01-01T00:00:00Z");
        assert_eq!(got["last_seen_at"], serde_json::Value::Null);
        assert_eq!(got["count"], 1_764_405_214);
        assert_eq!(got["items"][0]["recorded_at"], "2025-11-29T08:33:34Z");
        assert_eq!(got["items"][0]["weight_g"], 8500);
        assert_eq!(got["name"], "at");
    }

    #[test]
    fn dates_read_in_indonesian() {
        assert_eq!(date_id(time::macros::date!(2025 - 06 - 01)), "1 Juni 2025");
        assert_eq!(date_id(time::macros::date!(2026 - 12 - 31)), "31 Desember 2026");
    }
}
