//! The CPU time a process has used, from `/proc`: the whole process, and its threads whose
//! name starts with a prefix (herd's web threads, `herd-web*`).

use std::time::Duration;

use anyhow::{bail, Context};

/// CPU time used so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuTime {
    /// The whole process, every thread it ever had included.
    pub process: Duration,
    /// Its live threads whose name starts with the prefix asked for. A thread that exits
    /// takes its time with it: tokio's blocking threads end after 10 s idle.
    pub threads: Duration,
}

impl CpuTime {
    /// What was used between `earlier` and `self`.
    pub fn since(self, earlier: CpuTime) -> CpuTime {
        CpuTime {
            process: self.process.saturating_sub(earlier.process),
            threads: self.threads.saturating_sub(earlier.threads),
        }
    }
}

/// The CPU time of process `pid` and of its threads named `prefix...`.
pub fn cpu_time(pid: u32, prefix: &str) -> anyhow::Result<CpuTime> {
    let tick = clock_tick()?;
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    let (_, process) = parse_stat(&text).with_context(|| format!("in {path}"))?;
    let mut threads = 0;
    let dir = format!("/proc/{pid}/task");
    for entry in std::fs::read_dir(&dir).with_context(|| format!("cannot list {dir}"))? {
        let path = entry
            .with_context(|| format!("cannot list {dir}"))?
            .path()
            .join("stat");
        // A thread may end between the listing and the read.
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let (name, ticks) = parse_stat(&text).with_context(|| format!("in {}", path.display()))?;
        if name.starts_with(prefix) {
            threads += ticks;
        }
    }
    Ok(CpuTime {
        process: tick * u32::try_from(process).context("too many clock ticks")?,
        threads: tick * u32::try_from(threads).context("too many clock ticks")?,
    })
}

/// The length of a clock tick, the unit of `/proc`'s CPU times.
fn clock_tick() -> anyhow::Result<Duration> {
    // SAFETY: sysconf takes no pointers.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if per_second <= 0 {
        bail!("sysconf(_SC_CLK_TCK) gave {per_second}");
    }
    Ok(Duration::from_secs(1) / u32::try_from(per_second).context("clock ticks per second")?)
}

/// The name (`comm`) and utime + stime, in clock ticks, of a `/proc/.../stat` line. The name
/// is in parentheses and may hold spaces and parentheses itself: the fields follow the last
/// `)`.
fn parse_stat(text: &str) -> anyhow::Result<(&str, u64)> {
    let open = text.find('(').context("no `(` before the name")?;
    let close = text.rfind(')').context("no `)` after the name")?;
    let name = text.get(open + 1..close).context("no name")?;
    // After the name: state (field 3) ... utime (14), stime (15).
    let fields: Vec<&str> = text[close + 1..].split_whitespace().collect();
    let ticks = |index: usize| -> anyhow::Result<u64> {
        let field = fields.get(index).context("too few fields")?;
        field
            .parse()
            .with_context(|| format!("field {} is `{field}`, not a number", index + 3))
    };
    Ok((name, ticks(11)? + ticks(12)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utime_and_stime_follow_the_last_parenthesis() {
        let line = "4242 (herd-web) S 1 4242 4242 0 -1 4194560 300 0 0 0 17 5 0 0 20 0 9 0 \
                    123 456 78 18446744073709551615";
        assert_eq!(parse_stat(line).unwrap(), ("herd-web", 22));
        let odd = "7 (a) b (c)) R 1 7 7 0 -1 0 0 0 0 0 1 2 0 0 20 0 1 0 5";
        assert_eq!(parse_stat(odd).unwrap(), ("a) b (c)", 3));
    }

    #[test]
    fn bad_lines_are_refused_with_the_reason() {
        assert!(parse_stat("4242 herd S 1").is_err());
        let short = parse_stat("4242 (herd) S 1 2").unwrap_err().to_string();
        assert!(short.contains("too few fields"), "{short}");
        let line = "1 (x) S 1 1 1 0 -1 0 0 0 0 0 ten 2 0";
        let error = parse_stat(line).unwrap_err().to_string();
        assert!(error.contains("field 14 is `ten`"), "{error}");
    }

    #[test]
    fn time_spent_spinning_is_counted() {
        let before = cpu_time(std::process::id(), "").unwrap();
        let start = std::time::Instant::now();
        let mut spent = Duration::ZERO;
        // A few clock ticks of work, bounded in time.
        while spent < Duration::from_millis(50) && start.elapsed() < Duration::from_secs(5) {
            spent = cpu_time(std::process::id(), "")
                .unwrap()
                .since(before)
                .process;
        }
        assert!(spent >= Duration::from_millis(50), "{spent:?}");
        assert_eq!(before.since(before), CpuTime::default());
    }
}
