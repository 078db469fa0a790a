//! [`Progress`]: the one way commands show work in progress on stderr. On a terminal: bars for
//! transfers, a live spinner line, and plain lines printed above them; on a pipe or a file: the
//! plain lines alone; under `--format json` or `csv`: nothing, so that stdout carries exactly one
//! document and stderr only errors.

use std::collections::BTreeMap;
use std::io::IsTerminal as _;
use std::sync::Mutex;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use super::Format;

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Bars and spinners on a terminal.
    Terminal,
    /// Plain lines (stderr is not a terminal).
    Lines,
    /// Nothing.
    Quiet,
}

/// Progress on stderr, shared by every command that takes time.
pub struct Progress {
    mode: Mode,
    multi: MultiProgress,
    bars: Mutex<BTreeMap<String, ProgressBar>>,
    spinner: Mutex<Option<ProgressBar>>,
}

impl Progress {
    /// Progress in `mode`.
    pub fn new(mode: Mode) -> Progress {
        Progress {
            mode,
            multi: MultiProgress::new(),
            bars: Mutex::new(BTreeMap::new()),
            spinner: Mutex::new(None),
        }
    }

    /// The progress that suits `format` and stderr: quiet unless the output is text.
    pub fn for_format(format: Format) -> Progress {
        let mode = match format {
            Format::Json | Format::Csv => Mode::Quiet,
            Format::Text if std::io::stderr().is_terminal() => Mode::Terminal,
            Format::Text => Mode::Lines,
        };
        Progress::new(mode)
    }

    /// How it shows progress.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Whether anything is shown at all.
    pub fn is_shown(&self) -> bool {
        self.mode != Mode::Quiet
    }

    /// One line of progress (above the bars and the spinner on a terminal).
    pub fn line(&self, line: impl AsRef<str>) {
        match self.mode {
            Mode::Terminal => {
                let _ = self.multi.println(line.as_ref());
            }
            Mode::Lines => eprintln!("{}", line.as_ref()),
            Mode::Quiet => {}
        }
    }

    /// Starts a transfer bar keyed `key`, labelled `label`, of `total` bytes (terminal only).
    pub fn bar_start(&self, key: &str, label: &str, message: &str, total: u64) {
        if self.mode != Mode::Terminal {
            return;
        }
        let pb = self.multi.add(ProgressBar::new(total));
        if let Ok(style) = ProgressStyle::with_template(
            "{prefix:>24} {bar:30} {bytes:>10}/{total_bytes:<10} {msg}",
        ) {
            pb.set_style(style);
        }
        pb.set_prefix(label.to_string());
        pb.set_message(message.to_string());
        if let Ok(mut bars) = self.bars.lock() {
            bars.insert(key.to_string(), pb);
        }
    }

    /// Advances the bar `key` by `bytes`.
    pub fn bar_advance(&self, key: &str, bytes: u64) {
        if let Some(pb) = self.bars.lock().ok().and_then(|b| b.get(key).cloned()) {
            pb.inc(bytes);
        }
    }

    /// Ends the bar `key` with `message`.
    pub fn bar_finish(&self, key: &str, message: &str) {
        if let Some(pb) = self.bars.lock().ok().and_then(|b| b.get(key).cloned()) {
            pb.finish_with_message(message.to_string());
        }
    }

    /// Shows (terminal only) a live spinner line saying `message`, replacing an earlier one.
    pub fn spin(&self, message: impl Into<String>) {
        if self.mode != Mode::Terminal {
            return;
        }
        let Ok(mut spinner) = self.spinner.lock() else {
            return;
        };
        let bar = spinner.get_or_insert_with(|| {
            let bar = self.multi.add(ProgressBar::new_spinner());
            if let Ok(style) = ProgressStyle::with_template("  {spinner} {elapsed:>4} {msg}") {
                bar.set_style(style);
            }
            bar
        });
        bar.set_message(message.into());
        bar.tick();
    }

    /// Removes the spinner line.
    pub fn stop_spinner(&self) {
        if let Some(bar) = self.spinner.lock().ok().and_then(|mut s| s.take()) {
            bar.finish_and_clear();
        }
    }
}

impl crate::package::image::Progress for Progress {
    fn start(&self, label: &str, digest: &str, size: u64) {
        self.bar_start(digest, label, digest.get(7..19).unwrap_or(digest), size);
    }
    fn advance(&self, digest: &str, bytes: u64) {
        self.bar_advance(digest, bytes);
    }
    fn finish(&self, digest: &str, how: &str) {
        self.bar_finish(digest, how);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_formats_are_quiet() {
        assert_eq!(Progress::for_format(Format::Json).mode(), Mode::Quiet);
        assert_eq!(Progress::for_format(Format::Csv).mode(), Mode::Quiet);
        assert_ne!(Progress::for_format(Format::Text).mode(), Mode::Quiet);
    }
}
