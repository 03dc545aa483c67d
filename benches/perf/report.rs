//! The suite's table and JSON report: one row per figure, with its baseline and target.

use serde_json::{json, Value};

/// One measured figure.
pub struct Figure {
    /// Short name, e.g. `webhook ingest`.
    pub name: String,
    /// The value and its unit, e.g. 4200.0 / `events/s`.
    pub value: f64,
    pub unit: String,
    /// The same-run baseline this figure is a ratio of, when it has one.
    pub baseline: Option<f64>,
    /// The target in words, e.g. `>= 0.5 x baseline`.
    pub target: String,
    /// Whether the target holds (`None`: a figure reported without a target).
    pub met: Option<bool>,
    /// Everything else measured (percentiles, counts, settings).
    pub detail: Value,
}

#[derive(Default)]
pub struct Report {
    figures: Vec<Figure>,
    failures: Vec<(String, String)>,
}

impl Report {
    pub fn add(&mut self, f: Figure) {
        eprintln!(
            "perf: {} = {:.3} {}{}",
            f.name,
            f.value,
            f.unit,
            f.baseline
                .map(|b| format!(" (baseline {b:.3}, ratio {:.3})", f.value / b))
                .unwrap_or_default()
        );
        self.figures.push(f);
    }

    pub fn failed(&mut self, section: &str, why: &str) {
        self.failures.push((section.to_string(), why.to_string()));
    }

    pub fn any_failed(&self) -> bool {
        !self.failures.is_empty()
    }

    pub fn print(&self) {
        println!();
        println!(
            "{:<44} {:>14} {:<11} {:>12} {:>7}  {:<28} {:<3}",
            "figure", "value", "unit", "baseline", "ratio", "target", "met"
        );
        for f in &self.figures {
            println!(
                "{:<44} {:>14.2} {:<11} {:>12} {:>7}  {:<28} {}",
                f.name,
                f.value,
                f.unit,
                f.baseline.map(|b| format!("{b:.1}")).unwrap_or_else(|| "-".into()),
                f.baseline
                    .map(|b| format!("{:.3}", f.value / b))
                    .unwrap_or_else(|| "-".into()),
                f.target,
                match f.met {
                    Some(true) => "yes",
                    Some(false) => "NO",
                    None => "-",
                }
            );
        }
        for (section, why) in &self.failures {
            println!("section {section} did not run: {why}");
        }
    }

    pub fn write_json(&self) {
        let report = json!({
            "machine": {
                "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            },
            "figures": self.figures.iter().map(|f| json!({
                "name": f.name,
                "value": f.value,
                "unit": f.unit,
                "baseline": f.baseline,
                "ratio": f.baseline.map(|b| f.value / b),
                "target": f.target,
                "met": f.met,
                "detail": f.detail,
            })).collect::<Vec<_>>(),
            "failed_sections": self.failures.iter().map(|(s, w)| json!({"section": s, "error": w})).collect::<Vec<_>>(),
        });
        let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
        let out = std::path::Path::new(&target).join("bench");
        let path = out.join("perf.json");
        let written = std::fs::create_dir_all(&out)
            .and_then(|_| std::fs::write(&path, serde_json::to_string_pretty(&report).unwrap_or_default()));
        match written {
            Ok(()) => println!("report: {}", path.display()),
            Err(e) => eprintln!("perf: cannot write {}: {e}", path.display()),
        }
    }
}

/// An environment knob, or its default.
pub fn knob<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The p-th percentile (0..=100) of sorted values (nearest rank); 0 when empty.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}
