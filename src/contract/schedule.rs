//! The reconciliation schedule: `nightly`, `hourly`, `manual`, or a 5-field cron expression
//! (minute hour day-of-month month day-of-week; `*`, lists, ranges and steps; numbers only;
//! evaluated in UTC). One parser for the contract's validation and the engine's scheduler.

use chrono::{DateTime, Datelike, Duration, Timelike, Utc};

const DAY_MS: i64 = 86_400_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schedule {
    /// Run when the last finished run is this old (`nightly`: a day, `hourly`: an hour).
    Every {
        period_ms: i64,
    },
    /// Run at the minutes the cron expression names (UTC).
    Cron(Cron),
    Manual,
}

/// A parsed 5-field cron expression: the allowed values of each field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    minutes: Vec<bool>,
    hours: Vec<bool>,
    days: Vec<bool>,
    months: Vec<bool>,
    weekdays: Vec<bool>,
    /// Both day fields restricted: a day matches when either does (cron's rule).
    days_or: bool,
}

impl Schedule {
    pub fn parse(s: &str) -> Result<Schedule, String> {
        match s {
            "nightly" => return Ok(Schedule::Every { period_ms: DAY_MS }),
            "hourly" => return Ok(Schedule::Every { period_ms: 3_600_000 }),
            "manual" => return Ok(Schedule::Manual),
            _ => {}
        }
        let fields: Vec<&str> = s.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(format!("{s:?} has {} fields; a cron expression has 5", fields.len()));
        }
        let minutes = field(fields[0], 0, 59, "minute")?;
        let hours = field(fields[1], 0, 23, "hour")?;
        let days = field(fields[2], 1, 31, "day of month")?;
        let months = field(fields[3], 1, 12, "month")?;
        let mut weekdays = field(fields[4], 0, 7, "day of week")?;
        // 7 is Sunday too.
        if weekdays[7] {
            weekdays[0] = true;
        }
        Ok(Schedule::Cron(Cron {
            minutes,
            hours,
            days,
            months,
            weekdays,
            days_or: fields[2] != "*" && fields[4] != "*",
        }))
    }

    /// When the next run is due, given when the last one finished (or, with none, when the
    /// engine started). `None`: manual.
    pub fn next_due(&self, after_ms: i64) -> Option<i64> {
        match self {
            Schedule::Every { period_ms } => Some(after_ms + period_ms),
            Schedule::Cron(c) => c.next_after(after_ms),
            Schedule::Manual => None,
        }
    }
}

impl Cron {
    /// The first whole minute strictly after `after_ms` that the expression names, looking at
    /// most a little over four years ahead (`0 0 29 2 *` fires once in four years).
    pub fn next_after(&self, after_ms: i64) -> Option<i64> {
        let start = DateTime::<Utc>::from_timestamp_millis(after_ms)?;
        let mut t = start.with_second(0)?.with_nanosecond(0)? + Duration::minutes(1);
        let end = start + Duration::days(4 * 366 + 1);
        while t <= end {
            if !self.months[t.month() as usize] || !self.day_matches(&t) {
                // Skip to the next day's midnight.
                t = (t + Duration::days(1)).with_hour(0)?.with_minute(0)?;
                continue;
            }
            if !self.hours[t.hour() as usize] {
                t = (t + Duration::hours(1)).with_minute(0)?;
                continue;
            }
            if self.minutes[t.minute() as usize] {
                return Some(t.timestamp_millis());
            }
            t += Duration::minutes(1);
        }
        None
    }

    fn day_matches(&self, t: &DateTime<Utc>) -> bool {
        let dom = self.days[t.day() as usize];
        let dow = self.weekdays[t.weekday().num_days_from_sunday() as usize];
        if self.days_or {
            dom || dow
        } else {
            dom && dow
        }
    }
}

/// One field's allowed values, indexed by value (`hi + 1` long).
fn field(f: &str, lo: u32, hi: u32, name: &str) -> Result<Vec<bool>, String> {
    let mut allowed = vec![false; hi as usize + 1];
    for item in f.split(',') {
        let bad = || format!("{name} {item:?}: expected *, N, N-M or a step (*/S, N-M/S) within {lo}..={hi}");
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => match s.parse::<u32>() {
                Ok(step) if step >= 1 => (r, step),
                _ => return Err(bad()),
            },
            None => (item, 1),
        };
        let num = |s: &str| s.parse::<u32>().ok().filter(|n| (lo..=hi).contains(n));
        let (a, b) = match range.split_once('-') {
            _ if range == "*" => (lo, hi),
            Some((a, b)) => match (num(a), num(b)) {
                (Some(a), Some(b)) if a <= b => (a, b),
                _ => return Err(bad()),
            },
            None if item.contains('/') => return Err(bad()),
            None => match num(range) {
                Some(n) => (n, n),
                None => return Err(bad()),
            },
        };
        for v in (a..=b).step_by(step as usize) {
            allowed[v as usize] = true;
        }
    }
    Ok(allowed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> i64 {
        DateTime::parse_from_rfc3339(s).expect("time").timestamp_millis()
    }

    #[test]
    fn keywords_and_cron_parse_and_bad_fields_are_named() {
        assert_eq!(Schedule::parse("nightly"), Ok(Schedule::Every { period_ms: DAY_MS }));
        assert_eq!(Schedule::parse("manual"), Ok(Schedule::Manual));
        assert!(matches!(Schedule::parse("*/15 2-4 * * 1-5"), Ok(Schedule::Cron(_))));
        let e = Schedule::parse("60 3 * * *").unwrap_err();
        assert!(e.contains("minute"), "{e}");
        assert!(Schedule::parse("0 3 * *").unwrap_err().contains("5"));
        assert!(Schedule::parse("5/2 * * * *").is_err());
    }

    #[test]
    fn next_due_follows_the_expression_in_utc() {
        let s = Schedule::parse("0 3 * * *").expect("cron");
        assert_eq!(s.next_due(at("2026-11-27T15:00:00Z")), Some(at("2026-11-28T03:00:00Z")));
        assert_eq!(s.next_due(at("2026-11-28T02:59:30Z")), Some(at("2026-11-28T03:00:00Z")));
        // Strictly after: a run that finished at 03:00:10 waits for tomorrow.
        assert_eq!(s.next_due(at("2026-11-28T03:00:10Z")), Some(at("2026-11-29T03:00:00Z")));
        let s = Schedule::parse("*/20 9-10 * * 1-5").expect("cron");
        // Friday 10:50 → Monday 09:00.
        assert_eq!(s.next_due(at("2026-11-27T10:50:00Z")), Some(at("2026-11-30T09:00:00Z")));
        // Both day fields restricted: either matches (the 1st, or any Sunday).
        let s = Schedule::parse("0 0 1 * 0").expect("cron");
        assert_eq!(s.next_due(at("2026-11-27T12:00:00Z")), Some(at("2026-11-29T00:00:00Z")));
        assert_eq!(s.next_due(at("2026-11-29T12:00:00Z")), Some(at("2026-12-01T00:00:00Z")));
        let leap = Schedule::parse("0 0 29 2 *").expect("cron");
        assert_eq!(
            leap.next_due(at("2026-11-27T00:00:00Z")),
            Some(at("2028-02-29T00:00:00Z"))
        );
        assert_eq!(Schedule::parse("hourly").expect("kw").next_due(0), Some(3_600_000));
        assert_eq!(Schedule::Manual.next_due(0), None);
    }
}
