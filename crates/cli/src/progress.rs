//! Progress for long work (pulls, moving a store, district reports): on stderr, and only
//! when stderr is a terminal; a log file or a pipe gets nothing.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::time::Duration;

/// A bar (known total) or spinner (unknown), hidden unless a person watches stderr.
#[derive(Clone)]
pub struct Progress(ProgressBar);

impl Progress {
    /// A spinner that says what is going on; it ticks by itself.
    pub fn spinner(message: &str) -> Self {
        let bar = ProgressBar::with_draw_target(None, target());
        bar.set_style(ProgressStyle::with_template("{spinner} {msg} ({elapsed})").unwrap_or_else(|_| plain()));
        bar.set_message(message.to_owned());
        bar.enable_steady_tick(Duration::from_millis(120));
        Self(bar)
    }

    /// A bar of `total` steps.
    pub fn bar(total: u64, message: &str) -> Self {
        let bar = ProgressBar::with_draw_target(Some(total), target());
        let template = "{msg} [{bar:30}] {pos}/{len} ({eta} lagi)";
        bar.set_style(ProgressStyle::with_template(template).unwrap_or_else(|_| plain()).progress_chars("=> "));
        bar.set_message(message.to_owned());
        Self(bar)
    }

    pub fn set(&self, done: u64, total: u64) {
        self.0.set_length(total);
        self.0.set_position(done);
    }

    pub fn say(&self, message: String) {
        self.0.set_message(message);
    }

    /// Clear the bar and leave `message` on its own line (at a terminal only).
    pub fn done(&self, message: String) {
        let shown = !self.0.is_hidden();
        self.0.finish_and_clear();
        if shown {
            eprintln!("{message}");
        }
    }
}

fn target() -> ProgressDrawTarget {
    if std::io::stderr().is_terminal() { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() }
}

fn plain() -> ProgressStyle {
    ProgressStyle::default_bar()
}

/// Bytes as people read them: `1,2 MB`, `340 KB`, `512 B`.
pub fn bytes_id(n: u64) -> String {
    const KB: f64 = 1000.0;
    let n_f = n as f64;
    let s = if n_f >= KB * KB {
        format!("{:.1} MB", n_f / (KB * KB))
    } else if n_f >= KB {
        format!("{:.0} KB", n_f / KB)
    } else {
        format!("{n} B")
    };
    s.replace('.', ",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_read_with_units_and_a_decimal_comma() {
        assert_eq!(bytes_id(512), "512 B");
        assert_eq!(bytes_id(340_000), "340 KB");
        assert_eq!(bytes_id(1_234_567), "1,2 MB");
    }
}
