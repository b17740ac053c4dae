//! Writing the Prometheus text exposition format (version 0.0.4) for the metrics this crate
//! renders itself and for the state metrics of the scrape page (`redshard-proxy`).

use std::fmt::{Display, Write};

use super::names::Metric;

/// Writes metrics of one namespace into a string.
#[derive(Debug)]
pub struct Text<'a> {
    /// Where the text goes.
    out: &'a mut String,
    /// The prefix of every name.
    namespace: &'a str,
}

impl<'a> Text<'a> {
    /// A writer appending to `out`, naming metrics `<namespace>_<name>`.
    pub fn new(out: &'a mut String, namespace: &'a str) -> Self {
        Self { out, namespace }
    }

    /// The `# HELP` and `# TYPE` lines of `metric`; once, before its samples.
    pub fn header(&mut self, metric: &Metric) {
        let _ = write!(self.out, "# HELP {}_{} ", self.namespace, metric.name);
        escape_into(self.out, metric.help, false);
        let _ = writeln!(
            self.out,
            "\n# TYPE {}_{} {}",
            self.namespace,
            metric.name,
            metric.kind.as_str()
        );
    }

    /// One sample of `metric` with `values` for its labels, in the order of `metric.labels`.
    pub fn sample(&mut self, metric: &Metric, values: &[&str], value: impl Display) {
        self.series(metric, "", values, None, value);
    }

    /// One `_bucket` sample of the histogram `metric`: its labels, then `le`.
    pub(crate) fn bucket(&mut self, metric: &Metric, values: &[&str], le: &str, value: u64) {
        self.series(metric, "_bucket", values, Some(("le", le)), value);
    }

    /// One sample of the series `<metric>_<suffix>` (a histogram's `_sum` or `_count`).
    pub(crate) fn suffixed(
        &mut self,
        metric: &Metric,
        suffix: &str,
        values: &[&str],
        value: impl Display,
    ) {
        self.series(metric, suffix, values, None, value);
    }

    fn series(
        &mut self,
        metric: &Metric,
        suffix: &str,
        values: &[&str],
        extra: Option<(&str, &str)>,
        value: impl Display,
    ) {
        let _ = write!(self.out, "{}_{}{suffix}", self.namespace, metric.name);
        let labels = metric.labels.iter().copied().zip(values.iter().copied());
        let mut labels = labels.chain(extra).peekable();
        if labels.peek().is_some() {
            self.out.push('{');
            for (i, (name, label)) in labels.enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{name}=\"");
                escape_into(self.out, label, true);
                self.out.push('"');
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }

    /// A metric without labels: header and its one sample.
    pub fn single(&mut self, metric: &Metric, value: impl Display) {
        self.header(metric);
        self.sample(metric, &[], value);
    }
}

/// Escapes `\` and newlines (and `"` in label values), as the format requires.
fn escape_into(out: &mut String, text: &str, quote: bool) {
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if quote => out.push_str("\\\""),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::{Kind, Metric};

    const M: Metric = Metric {
        name: "things_total",
        kind: Kind::Counter,
        labels: &["node", "kind"],
        help: "Things \\ with\nnewline.",
    };

    #[test]
    fn writes_the_text_format_with_escapes() {
        let mut out = String::new();
        let mut text = Text::new(&mut out, "ns");
        text.header(&M);
        text.sample(&M, &["a\"b\\c\nd", "x"], 3);
        let h = Metric {
            name: "wait_seconds",
            kind: Kind::Histogram,
            labels: &["cmd"],
            help: "h",
        };
        text.bucket(&h, &["get"], "0.5", 2);
        text.suffixed(&h, "_count", &["get"], 2);
        text.single(
            &Metric {
                name: "up",
                kind: Kind::Gauge,
                labels: &[],
                help: "h",
            },
            1.5,
        );
        assert_eq!(
            out,
            "# HELP ns_things_total Things \\\\ with\\nnewline.\n\
             # TYPE ns_things_total counter\n\
             ns_things_total{node=\"a\\\"b\\\\c\\nd\",kind=\"x\"} 3\n\
             ns_wait_seconds_bucket{cmd=\"get\",le=\"0.5\"} 2\n\
             ns_wait_seconds_count{cmd=\"get\"} 2\n\
             # HELP ns_up h\n# TYPE ns_up gauge\nns_up 1.5\n"
        );
    }
}
