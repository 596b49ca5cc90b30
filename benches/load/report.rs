//! The figures of a run: one row per scenario, format and server, printed as
//! a Markdown table with the pushgrid / baseline ratio, and saved as JSON.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

#[derive(Default, Serialize)]
pub struct Report {
    pub machine: String,
    pub command: String,
    pub rows: Vec<Row>,
}

#[derive(Serialize)]
pub struct Row {
    pub scenario: String,
    pub format: String,
    pub server: String,
    pub figures: BTreeMap<String, Value>,
}

/// Which way is better for a figure, for the ratio's reading.
fn higher_is_better(name: &str) -> bool {
    name.ends_with("_per_s")
}

impl Report {
    pub fn add(&mut self, scenario: &str, format: &str, server: &str, figures: BTreeMap<String, Value>) {
        self.rows.push(Row {
            scenario: scenario.into(),
            format: format.into(),
            server: server.into(),
            figures,
        });
    }

    pub fn markdown(&self) -> String {
        let mut out = String::from(
            "| scenario | format | figure | pushgrid | baseline | pushgrid / baseline |\n| --- | --- | --- | ---: | ---: | ---: |\n",
        );
        let pushgrid = self.rows.iter().filter(|r| r.server == "pushgrid");
        for row in pushgrid {
            let baseline = self
                .rows
                .iter()
                .find(|b| b.server == "baseline" && b.scenario == row.scenario && b.format == row.format);
            for (name, value) in &row.figures {
                let other = baseline.and_then(|b| b.figures.get(name));
                let ratio = match (value.as_f64(), other.and_then(Value::as_f64)) {
                    (Some(a), Some(b))
                        if b > 0.0 && (higher_is_better(name) || name.starts_with("latency")) =>
                    {
                        format!("{:.2}", a / b)
                    }
                    (Some(a), Some(b)) if b > 0.0 && name.contains("bytes") => format!("{:.2}", a / b),
                    _ => String::new(),
                };
                out += &format!(
                    "| {} | {} | {} | {} | {} | {} |\n",
                    row.scenario,
                    row.format,
                    name,
                    show(value),
                    other.map(show).unwrap_or_default(),
                    ratio
                );
            }
        }
        out
    }
}

fn show(value: &Value) -> String {
    match value.as_f64() {
        Some(v) if v.fract() != 0.0 => format!("{v:.2}"),
        Some(v) => format!("{v}"),
        None => value.to_string(),
    }
}
