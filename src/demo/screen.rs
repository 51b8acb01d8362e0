//! What the demo shows while it runs: a table of the nodes with a progress line, redrawn in
//! place on a terminal (ANSI escapes), or one plain line per redraw otherwise; and event lines
//! (a node killed, the failover measured...) that stay above the table.

use std::io::{self, IsTerminal, Write};
use std::time::Duration;

use herd_checkers::lifecycle::NodeState;
use herd_membership::wire::State;

use crate::status::Status;

/// Width of a share bar at 100 %.
const BAR: usize = 30;

/// One node in the table.
pub struct Row<'a> {
    /// Its name.
    pub name: &'static str,
    /// What is known of it.
    pub node: Shown<'a>,
    /// Its answers over the last period.
    pub answers: u64,
    /// Every node's answers over the last period.
    pub all: u64,
    /// The period.
    pub period: Duration,
}

/// What is known of a node.
pub enum Shown<'a> {
    /// Its herd was killed by the demo.
    Killed,
    /// Its herd runs but does not answer on its control socket yet.
    Starting,
    /// Its herd's status.
    Status(&'a Status),
}

impl Row<'_> {
    /// Its state, as the table shows it.
    fn state(&self) -> String {
        match self.node {
            Shown::Killed => "killed (kill -9)".to_owned(),
            Shown::Starting => "starting".to_owned(),
            Shown::Status(status) => state_of(status),
        }
    }

    /// Whether it serves: up, a member, owning buckets.
    fn serving(&self) -> bool {
        matches!(self.node, Shown::Status(status) if status.serving())
    }

    /// The buckets it owns, or `-`.
    fn buckets(&self) -> String {
        match self.node {
            Shown::Status(status) => status.membership.owned().to_string(),
            _ => "-".to_owned(),
        }
    }

    /// Its share of the answers over the last period, 0 to 1.
    fn share(&self) -> f64 {
        if self.all == 0 {
            return 0.0;
        }
        self.answers as f64 / self.all as f64
    }

    /// Its answers per second over the last period.
    fn rate(&self) -> f64 {
        self.answers as f64 / self.period.as_secs_f64().max(1e-3)
    }
}

/// A node's state from its status: `up`, or herd's state with the membership's, and the
/// nodes it sees dead.
pub fn state_of(status: &Status) -> String {
    let mut state = if status.state == NodeState::Up && status.membership.state == State::Up {
        "up".to_owned()
    } else {
        format!("{} ({})", status.state, status.membership.state)
    };
    let dead: Vec<&str> = status
        .membership
        .nodes
        .iter()
        .filter(|node| !node.alive && node.state.is_some())
        .map(|node| node.name.as_str())
        .collect();
    if !dead.is_empty() {
        state.push_str(&format!(", sees {} dead", dead.join(",")));
    }
    state
}

/// Where the demo is.
pub struct Progress {
    /// The phase's name.
    pub phase: &'static str,
    /// Traffic time so far.
    pub elapsed: Duration,
    /// Traffic time planned.
    pub total: Duration,
    /// Requests sent, answered and lost so far.
    pub sent: u64,
    /// Requests answered.
    pub answered: u64,
    /// Requests lost.
    pub lost: u64,
}

/// The screen: standard output, or standard error when standard output carries JSON.
pub struct Screen {
    out: Box<dyn Write>,
    ansi: bool,
    /// The table's lines last drawn (ANSI mode), to erase and to redraw under an event.
    table: Vec<String>,
}

impl Screen {
    /// The screen on standard output, or on standard error if `json` (standard output then
    /// carries the summary alone).
    pub fn new(json: bool) -> Self {
        let (out, ansi): (Box<dyn Write>, bool) = if json {
            (Box::new(io::stderr()), io::stderr().is_terminal())
        } else {
            (Box::new(io::stdout()), io::stdout().is_terminal())
        };
        Screen {
            out,
            ansi,
            table: Vec::new(),
        }
    }

    /// Prints an event, above the table.
    pub fn event(&mut self, text: &str) -> io::Result<()> {
        self.erase()?;
        writeln!(self.out, "{text}")?;
        if self.ansi {
            for line in &self.table {
                writeln!(self.out, "{line}")?;
            }
        }
        self.out.flush()
    }

    /// Draws the table and the progress line, in place of the last ones on a terminal.
    pub fn draw(&mut self, rows: &[Row], progress: &Progress) -> io::Result<()> {
        if !self.ansi {
            writeln!(self.out, "{}", plain_line(rows, progress))?;
            return self.out.flush();
        }
        self.erase()?;
        self.table = table(rows, progress);
        for line in &self.table {
            writeln!(self.out, "{line}")?;
        }
        self.out.flush()
    }

    /// Prints `text` below the table, which stays as last drawn.
    pub fn print(&mut self, text: &str) -> io::Result<()> {
        self.table.clear();
        write!(self.out, "{text}")?;
        self.out.flush()
    }

    /// Erases the table last drawn (terminal only).
    fn erase(&mut self) -> io::Result<()> {
        if self.ansi && !self.table.is_empty() {
            // Up to the table's first line, then clear to the end of the screen.
            write!(self.out, "\x1b[{}F\x1b[J", self.table.len())?;
        }
        Ok(())
    }
}

/// The table's lines, with colours.
fn table(rows: &[Row], progress: &Progress) -> Vec<String> {
    let mut lines = vec![format!(
        "\x1b[1m  {:<9} {:<24} {:>7}  {:<38} {:>7}\x1b[0m",
        "NODE", "STATE", "BUCKETS", "SHARE OF ANSWERS (LAST SECOND)", "ANS/S"
    )];
    for row in rows {
        let colour = if row.serving() { "32" } else { "31" };
        let share = row.share();
        let bar = "█".repeat((share * BAR as f64).round() as usize);
        lines.push(format!(
            "  {:<9} \x1b[{colour}m{:<24}\x1b[0m {:>7}  {:>5.1} % {bar:<BAR$} {:>7.0}",
            row.name,
            row.state(),
            row.buckets(),
            share * 100.0,
            row.rate()
        ));
    }
    let done = if progress.total.is_zero() {
        0
    } else {
        ((progress.elapsed.as_secs_f64() / progress.total.as_secs_f64()).min(1.0) * 20.0) as usize
    };
    lines.push(format!(
        "  [{}{}] {:<12} {}   sent {}  answered {}  lost {}",
        "#".repeat(done),
        ".".repeat(20 - done),
        progress.phase,
        times(progress),
        progress.sent,
        progress.answered,
        progress.lost
    ));
    lines
}

/// The table in one line, for a log or a pipe.
fn plain_line(rows: &[Row], progress: &Progress) -> String {
    let nodes: Vec<String> = rows
        .iter()
        .map(|row| {
            format!(
                "{} {} {} buckets {:.0}%",
                row.name,
                row.state(),
                row.buckets(),
                row.share() * 100.0
            )
        })
        .collect();
    format!(
        "[{}] {}: sent {} answered {} lost {} | {}",
        times(progress),
        progress.phase,
        progress.sent,
        progress.answered,
        progress.lost,
        nodes.join(" | ")
    )
}

/// `7.5/20 s`.
fn times(progress: &Progress) -> String {
    format!(
        "{:>5.1}/{} s",
        progress.elapsed.as_secs_f64(),
        progress.total.as_secs()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows() -> Vec<Row<'static>> {
        let second = Duration::from_secs(1);
        vec![
            Row {
                name: "alpha",
                node: Shown::Starting,
                answers: 1280,
                all: 2560,
                period: second,
            },
            Row {
                name: "bravo",
                node: Shown::Killed,
                answers: 0,
                all: 2560,
                period: second,
            },
        ]
    }

    fn progress() -> Progress {
        Progress {
            phase: "node down",
            elapsed: Duration::from_millis(7500),
            total: Duration::from_secs(20),
            sent: 100,
            answered: 90,
            lost: 10,
        }
    }

    #[test]
    fn a_plain_line_holds_every_node_and_the_progress() {
        assert_eq!(
            plain_line(&rows(), &progress()),
            "[  7.5/20 s] node down: sent 100 answered 90 lost 10 | alpha starting - buckets 50% \
             | bravo killed (kill -9) - buckets 0%"
        );
    }

    #[test]
    fn the_table_has_a_line_per_node_between_its_header_and_progress() {
        let lines = table(&rows(), &progress());
        assert_eq!(lines.len(), 4);
        assert!(lines[1].contains("alpha") && lines[1].contains(&"█".repeat(BAR / 2)));
        assert!(
            lines[3].contains("[#######.............] node down"),
            "{}",
            lines[3]
        );
    }
}
