//! Goals, the tables printed for them, and the JSON written under `bench/results/`.

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use crate::limits::MachineLimits;

/// How a measured value is judged.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum Goal {
    /// Met when the value is at most this.
    AtMost(f64),
    /// Met when the value is below this.
    Below(f64),
    /// Met when the value is at least this.
    AtLeast(f64),
    /// Reported, not judged.
    Info,
}

/// One measured value and its goal.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What was measured.
    pub name: String,
    /// The goal.
    pub goal: Goal,
    /// The value.
    pub measured: f64,
    /// Its unit.
    pub unit: String,
    /// Whether the goal is met (always true for [`Goal::Info`]).
    pub met: bool,
}

impl Check {
    fn new(name: &str, goal: Goal, measured: f64, unit: &str) -> Self {
        let met = match goal {
            Goal::AtMost(g) => measured <= g,
            Goal::Below(g) => measured < g,
            Goal::AtLeast(g) => measured >= g,
            Goal::Info => true,
        };
        Self {
            name: name.to_owned(),
            goal,
            measured,
            unit: unit.to_owned(),
            met,
        }
    }

    /// Goal: `measured ≤ goal`.
    pub fn at_most(name: &str, goal: f64, measured: f64, unit: &str) -> Self {
        Self::new(name, Goal::AtMost(goal), measured, unit)
    }

    /// Goal: `measured < goal`.
    pub fn below(name: &str, goal: f64, measured: f64, unit: &str) -> Self {
        Self::new(name, Goal::Below(goal), measured, unit)
    }

    /// Goal: `measured ≥ goal`.
    pub fn at_least(name: &str, goal: f64, measured: f64, unit: &str) -> Self {
        Self::new(name, Goal::AtLeast(goal), measured, unit)
    }

    /// No goal: reported only.
    pub fn info(name: &str, measured: f64, unit: &str) -> Self {
        Self::new(name, Goal::Info, measured, unit)
    }
}

fn number(x: f64) -> String {
    if (x == x.trunc() && x.abs() < 1e12) || x.abs() >= 100.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.2}")
    }
}

/// The checks as a Markdown table.
pub fn table(checks: &[Check]) -> String {
    let mut out = String::from("| measure | goal | measured | met |\n| --- | --- | --- | --- |\n");
    for c in checks {
        let goal = match c.goal {
            Goal::AtMost(g) => format!("≤ {} {}", number(g), c.unit),
            Goal::Below(g) => format!("< {} {}", number(g), c.unit),
            Goal::AtLeast(g) => format!("≥ {} {}", number(g), c.unit),
            Goal::Info => "—".to_owned(),
        };
        let met = match (c.goal, c.met) {
            (Goal::Info, _) => "",
            (_, true) => "yes",
            (_, false) => "**no**",
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} {} | {} |",
            c.name,
            goal.trim(),
            number(c.measured),
            c.unit,
            met
        );
    }
    out
}

/// The machine the benchmark ran on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// Logical CPUs.
    pub cores: usize,
    /// Memory, MiB.
    pub memory_mib: u64,
    /// `/proc/cpuinfo`'s model name.
    pub cpu_model: String,
}

impl Machine {
    /// Reads this machine's description from `/proc`.
    pub fn this() -> Self {
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory_mib = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .map_or(0, |kib| kib / 1024);
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|v| v.split_once(':'))
            .map_or_else(String::new, |(_, m)| m.trim().to_owned());
        Self {
            cores: std::thread::available_parallelism().map_or(1, usize::from),
            memory_mib,
            cpu_model,
        }
    }
}

#[derive(Serialize)]
struct ScenarioFile<'a, T: Serialize> {
    scenario: &'a str,
    finished_at_ms: i64,
    command: String,
    machine: &'a Machine,
    limits: &'a MachineLimits,
    checks: &'a [Check],
    measured: &'a T,
}

/// Prints a scenario's table and writes `<dir>/<scenario>.json`.
pub fn publish<T: Serialize>(
    dir: &Path,
    scenario: &str,
    machine: &Machine,
    limits: &MachineLimits,
    checks: &[Check],
    measured: &T,
) -> anyhow::Result<()> {
    println!("\n## {scenario}\n\n{}", table(checks));
    std::fs::create_dir_all(dir)?;
    let file = ScenarioFile {
        scenario,
        finished_at_ms: crate::scenarios::now_ms(),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        machine,
        limits,
        checks,
        measured,
    };
    std::fs::write(
        dir.join(format!("{scenario}.json")),
        serde_json::to_vec_pretty(&file)?,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn goals_are_judged_and_tabled() {
        let checks = [
            Check::at_most("dups", 0.0, 0.0, ""),
            Check::at_most("lag", 25.0, 31.5, "ms"),
            Check::below("cpu", 1.0, 1.0, "%"),
            Check::at_least("rate", 800.0, 900.0, "/s"),
            Check::info("x", 1.234, ""),
        ];
        assert_eq!(
            checks.iter().map(|c| c.met).collect::<Vec<_>>(),
            [true, false, false, true, true]
        );
        let t = table(&checks);
        assert!(t.contains("| lag | ≤ 25 ms | 31.50 ms | **no** |"), "{t}");
        assert!(t.contains("| x | — | 1.23  |  |"), "{t}");
    }
}
