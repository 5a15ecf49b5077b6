//! Free slots from weekly hours, dated exceptions and booked time, correct across
//! daylight-saving changes.
//!
//! Availability is wall-clock time in the therapist's IANA time zone ("Mondays 09:00 to
//! 17:00 in Europe/London"). Each local day is turned into windows of real time with the
//! time zone database (jiff), so a slot at 09:00 London is 09:00 UTC in winter and 08:00 UTC
//! in summer. Slots start every `step` minutes of wall-clock time from the start of each
//! window; a wall-clock start that does not exist (skipped by a spring-forward change) is
//! not offered, one that exists twice (repeated by an autumn change) is offered twice.

use jiff::{
    SignedDuration, Timestamp,
    civil::{Date, DateTime, Weekday},
    tz::{AmbiguousOffset, TimeZone},
};

/// Minutes after local midnight; 1440 is the end of the day.
pub type Minute = u16;

/// A weekly window, e.g. Monday 09:00–17:00.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WeeklyWindow {
    pub weekday: Weekday,
    pub start: Minute,
    pub end: Minute,
}

/// Whether a dated exception removes or adds time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExceptionKind {
    Unavailable,
    Available,
}

/// A dated change to the weekly hours; `window: None` means the whole day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DayException {
    pub day: Date,
    pub kind: ExceptionKind,
    pub window: Option<(Minute, Minute)>,
}

/// A therapist's hours.
#[derive(Debug, Clone)]
pub struct Availability {
    pub tz: TimeZone,
    pub weekly: Vec<WeeklyWindow>,
    pub exceptions: Vec<DayException>,
    /// Minutes between possible slot starts.
    pub step: Minute,
}

/// A span of real time, `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub start: Timestamp,
    pub end: Timestamp,
}

impl Span {
    pub fn overlaps(&self, other: &Span) -> bool {
        self.start < other.end && other.start < self.end
    }
}

/// Why a start time cannot be booked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotRefusal {
    InPast,
    TooShortNotice,
    OutsideAvailability,
    Misaligned,
    Taken,
}

/// One local day's open minutes as sorted, disjoint `[start, end)` intervals.
fn day_minutes(avail: &Availability, day: Date) -> Vec<(Minute, Minute)> {
    let exceptions: Vec<&DayException> = avail.exceptions.iter().filter(|e| e.day == day).collect();
    if exceptions
        .iter()
        .any(|e| e.kind == ExceptionKind::Unavailable && e.window.is_none())
    {
        return Vec::new();
    }
    let mut open: Vec<(Minute, Minute)> = avail
        .weekly
        .iter()
        .filter(|w| w.weekday == day.weekday())
        .map(|w| (w.start, w.end))
        .collect();
    open.extend(
        exceptions
            .iter()
            .filter(|e| e.kind == ExceptionKind::Available)
            .filter_map(|e| e.window),
    );
    let mut open = merge(open);
    for e in exceptions
        .iter()
        .filter(|e| e.kind == ExceptionKind::Unavailable)
    {
        if let Some((a, b)) = e.window {
            open = subtract(&open, a, b);
        }
    }
    open
}

/// Sort and merge overlapping or touching intervals.
fn merge(mut v: Vec<(Minute, Minute)>) -> Vec<(Minute, Minute)> {
    v.sort_unstable();
    let mut out: Vec<(Minute, Minute)> = Vec::with_capacity(v.len());
    for (a, b) in v {
        match out.last_mut() {
            Some(last) if a <= last.1 => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

fn subtract(open: &[(Minute, Minute)], a: Minute, b: Minute) -> Vec<(Minute, Minute)> {
    let mut out = Vec::new();
    for &(x, y) in open {
        if b <= x || y <= a {
            out.push((x, y));
            continue;
        }
        if x < a {
            out.push((x, a));
        }
        if b < y {
            out.push((b, y));
        }
    }
    out
}

fn local(day: Date, minute: Minute) -> DateTime {
    let (day, minute) = if minute >= 1440 {
        (day.tomorrow().expect("dates in range"), minute - 1440)
    } else {
        (day, minute)
    };
    day.at((minute / 60) as i8, (minute % 60) as i8, 0, 0)
}

/// The instants a local wall-clock time maps to: none in a gap, two in a fold.
fn instants(tz: &TimeZone, dt: DateTime) -> Vec<Timestamp> {
    let amb = tz.to_ambiguous_timestamp(dt);
    match amb.offset() {
        AmbiguousOffset::Unambiguous { offset } => offset.to_timestamp(dt).into_iter().collect(),
        AmbiguousOffset::Gap { .. } => Vec::new(),
        AmbiguousOffset::Fold { before, after } => [before, after]
            .into_iter()
            .filter_map(|o| o.to_timestamp(dt).ok())
            .collect(),
    }
}

/// A window end: in a gap, the first instant after it (the window simply ends earlier in
/// real time); in a fold, the later instant.
fn end_instant(tz: &TimeZone, dt: DateTime) -> Option<Timestamp> {
    let amb = tz.to_ambiguous_timestamp(dt);
    match amb.offset() {
        AmbiguousOffset::Fold { after, .. } => after.to_timestamp(dt).ok(),
        _ => amb.compatible().ok(),
    }
}

impl Availability {
    /// The local days whose windows can touch `[from, to)`.
    fn days(&self, from: Timestamp, to: Timestamp) -> impl Iterator<Item = Date> {
        let first = from.to_zoned(self.tz.clone()).date().yesterday().ok();
        let last = to.to_zoned(self.tz.clone()).date();
        let mut next = first;
        std::iter::from_fn(move || {
            let d = next?;
            if d > last {
                return None;
            }
            next = d.tomorrow().ok();
            Some(d)
        })
    }

    /// Windows of real time open for appointments, overlapping `[from, to)`.
    pub fn windows(&self, from: Timestamp, to: Timestamp) -> Vec<Span> {
        let mut out = Vec::new();
        for day in self.days(from, to) {
            for (a, b) in day_minutes(self, day) {
                let start = instants(&self.tz, local(day, a))
                    .into_iter()
                    .next()
                    .or_else(|| {
                        self.tz
                            .to_ambiguous_timestamp(local(day, a))
                            .compatible()
                            .ok()
                    });
                let end = end_instant(&self.tz, local(day, b));
                if let (Some(start), Some(end)) = (start, end)
                    && start < end
                {
                    let span = Span { start, end };
                    if span.overlaps(&Span {
                        start: from,
                        end: to,
                    }) {
                        out.push(span);
                    }
                }
            }
        }
        out
    }

    /// Every aligned start whose appointment of `minutes` fits in a window, in `[from, to)`.
    pub fn candidates(&self, from: Timestamp, to: Timestamp, minutes: Minute) -> Vec<Timestamp> {
        let length = SignedDuration::from_mins(i64::from(minutes));
        let mut out = Vec::new();
        for day in self.days(from, to) {
            for (a, b) in day_minutes(self, day) {
                let Some(window_end) = end_instant(&self.tz, local(day, b)) else {
                    continue;
                };
                let mut m = a;
                while m < b {
                    for start in instants(&self.tz, local(day, m)) {
                        if start >= from && start < to && start + length <= window_end {
                            out.push(start);
                        }
                    }
                    m = m.saturating_add(self.step.max(1));
                }
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }
}

/// Whether an appointment at `start` of `minutes` clashes with `busy` given the buffer the
/// therapist keeps between appointments.
fn clashes(start: Timestamp, minutes: Minute, buffer: Minute, busy: &[Span]) -> bool {
    let buf = SignedDuration::from_mins(i64::from(buffer));
    let mine = Span {
        start: start - buf,
        end: start + SignedDuration::from_mins(i64::from(minutes)) + buf,
    };
    busy.iter().any(|b| b.overlaps(&mine))
}

/// What a slot search needs besides the availability.
#[derive(Debug, Clone)]
pub struct SlotQuery<'a> {
    pub minutes: Minute,
    pub buffer: Minute,
    /// The therapist's booked appointments (without buffers).
    pub busy: &'a [Span],
    /// Now.
    pub now: Timestamp,
    /// The earliest bookable start (now plus the minimum notice).
    pub earliest: Timestamp,
}

impl Availability {
    /// Free starts in `[from, to)`.
    pub fn free_slots(&self, from: Timestamp, to: Timestamp, q: &SlotQuery<'_>) -> Vec<Timestamp> {
        let from = from.max(q.earliest);
        if from >= to {
            return Vec::new();
        }
        self.candidates(from, to, q.minutes)
            .into_iter()
            .filter(|s| !clashes(*s, q.minutes, q.buffer, q.busy))
            .collect()
    }

    /// Whether `start` can be booked, and if not, why (in the order a person would want
    /// to hear it).
    pub fn check(&self, start: Timestamp, q: &SlotQuery<'_>) -> Result<(), SlotRefusal> {
        if start <= q.now {
            return Err(SlotRefusal::InPast);
        }
        if start < q.earliest {
            return Err(SlotRefusal::TooShortNotice);
        }
        let day = SignedDuration::from_hours(24);
        let near = self.candidates(start - day, start + day, q.minutes);
        if !near.contains(&start) {
            let length = SignedDuration::from_mins(i64::from(q.minutes));
            let inside = self
                .windows(start - day, start + day)
                .iter()
                .any(|w| w.start <= start && start + length <= w.end);
            return Err(if inside {
                SlotRefusal::Misaligned
            } else {
                SlotRefusal::OutsideAvailability
            });
        }
        if clashes(start, q.minutes, q.buffer, q.busy) {
            return Err(SlotRefusal::Taken);
        }
        Ok(())
    }
}

/// The same local wall-clock time `weeks` weeks after `start`, in `tz` (a weekly series
/// keeps its local hour across daylight-saving changes). `None` when that local time does
/// not exist.
pub fn weekly_occurrence(tz: &TimeZone, start: Timestamp, weeks: i64) -> Option<Timestamp> {
    let local = start.to_zoned(tz.clone()).datetime();
    let target = local.checked_add(jiff::Span::new().weeks(weeks)).ok()?;
    instants(tz, target).into_iter().next()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn weekdays(tz: &str, start: Minute, end: Minute) -> Availability {
        Availability {
            tz: TimeZone::get(tz).unwrap(),
            weekly: [
                Weekday::Monday,
                Weekday::Tuesday,
                Weekday::Wednesday,
                Weekday::Thursday,
                Weekday::Friday,
            ]
            .into_iter()
            .map(|weekday| WeeklyWindow {
                weekday,
                start,
                end,
            })
            .collect(),
            exceptions: Vec::new(),
            step: 60,
        }
    }

    fn query(busy: &[Span]) -> SlotQuery<'_> {
        SlotQuery {
            minutes: 50,
            buffer: 10,
            busy,
            now: ts("2000-01-01T00:00:00Z"),
            earliest: ts("2000-01-01T00:00:00Z"),
        }
    }

    fn first_slot_each_day(a: &Availability, from: &str, to: &str) -> Vec<String> {
        let mut seen = std::collections::BTreeMap::new();
        for s in a.free_slots(ts(from), ts(to), &query(&[])) {
            let day = s.to_zoned(TimeZone::UTC).date();
            seen.entry(day).or_insert(s.to_string());
        }
        seen.into_values().collect()
    }

    #[test]
    fn london_spring_forward_keeps_wall_clock_hours() {
        // Clocks go forward on Sunday 29 March 2026: Friday 09:00 GMT, Monday 09:00 BST.
        let a = weekdays("Europe/London", 9 * 60, 12 * 60);
        assert_eq!(
            first_slot_each_day(&a, "2026-03-27T00:00:00Z", "2026-03-31T00:00:00Z"),
            ["2026-03-27T09:00:00Z", "2026-03-30T08:00:00Z"]
        );
    }

    #[test]
    fn new_york_fall_back_keeps_wall_clock_hours() {
        // Clocks go back on Sunday 1 November 2026: Friday 09:00 EDT, Monday 09:00 EST.
        let a = weekdays("America/New_York", 9 * 60, 12 * 60);
        assert_eq!(
            first_slot_each_day(&a, "2026-10-30T00:00:00Z", "2026-11-03T00:00:00Z"),
            ["2026-10-30T13:00:00Z", "2026-11-02T14:00:00Z"]
        );
    }

    #[test]
    fn a_skipped_hour_has_no_slots_and_a_repeated_hour_has_two() {
        let mut a = weekdays("America/New_York", 0, 0);
        a.weekly = vec![WeeklyWindow {
            weekday: Weekday::Sunday,
            start: 60,
            end: 4 * 60,
        }];
        a.step = 30;
        let q = SlotQuery {
            minutes: 30,
            buffer: 0,
            ..query(&[])
        };
        // 8 March 2026: 02:00-03:00 does not exist. Local 01:00, 01:30, 03:00, 03:30.
        let spring: Vec<String> = a
            .free_slots(ts("2026-03-08T00:00:00Z"), ts("2026-03-09T00:00:00Z"), &q)
            .iter()
            .map(|t| t.to_zoned(a.tz.clone()).datetime().to_string())
            .collect();
        assert_eq!(
            spring,
            [
                "2026-03-08T01:00:00",
                "2026-03-08T01:30:00",
                "2026-03-08T03:00:00",
                "2026-03-08T03:30:00"
            ]
        );
        // 1 November 2026: 01:00-02:00 happens twice; four real hours, eight half-hours.
        let autumn = a.free_slots(ts("2026-11-01T00:00:00Z"), ts("2026-11-02T00:00:00Z"), &q);
        assert_eq!(autumn.len(), 8, "{autumn:?}");
    }

    #[test]
    fn bookings_buffers_and_exceptions_remove_slots() {
        let mut a = weekdays("UTC", 9 * 60, 13 * 60);
        a.step = 30;
        // Tuesday 1 December 2026 is a day off; Wednesday 2nd has extra hours 18:00-19:00.
        a.exceptions = vec![
            DayException {
                day: "2026-12-01".parse().unwrap(),
                kind: ExceptionKind::Unavailable,
                window: None,
            },
            DayException {
                day: "2026-12-02".parse().unwrap(),
                kind: ExceptionKind::Available,
                window: Some((18 * 60, 19 * 60)),
            },
            DayException {
                day: "2026-12-02".parse().unwrap(),
                kind: ExceptionKind::Unavailable,
                window: Some((11 * 60, 13 * 60)),
            },
        ];
        let busy = [Span {
            start: ts("2026-11-30T10:00:00Z"),
            end: ts("2026-11-30T10:50:00Z"),
        }];
        let q = query(&busy);
        let fmt = |v: Vec<Timestamp>| v.iter().map(|t| t.to_string()).collect::<Vec<_>>();
        assert_eq!(
            fmt(a.free_slots(ts("2026-11-30T00:00:00Z"), ts("2026-12-01T00:00:00Z"), &q)),
            // 09:00 would end 09:50 + 10 buffer = 10:00: fine. 09:30, 10:00, 10:30 clash;
            // 11:00 starts 10 minutes after the booking ends: fine.
            [
                "2026-11-30T09:00:00Z",
                "2026-11-30T11:00:00Z",
                "2026-11-30T11:30:00Z",
                "2026-11-30T12:00:00Z"
            ]
        );
        assert!(
            a.free_slots(ts("2026-12-01T00:00:00Z"), ts("2026-12-02T00:00:00Z"), &q)
                .is_empty()
        );
        assert_eq!(
            fmt(a.free_slots(ts("2026-12-02T00:00:00Z"), ts("2026-12-03T00:00:00Z"), &q)),
            [
                "2026-12-02T09:00:00Z",
                "2026-12-02T09:30:00Z",
                "2026-12-02T10:00:00Z",
                "2026-12-02T18:00:00Z"
            ]
        );
    }

    #[test]
    fn check_explains_refusals() {
        let a = weekdays("UTC", 9 * 60, 17 * 60);
        let busy = [Span {
            start: ts("2026-11-30T10:00:00Z"),
            end: ts("2026-11-30T10:50:00Z"),
        }];
        let q = SlotQuery {
            now: ts("2026-11-29T12:00:00Z"),
            earliest: ts("2026-11-30T09:30:00Z"),
            ..query(&busy)
        };
        assert_eq!(
            a.check(ts("2026-11-28T09:00:00Z"), &q),
            Err(SlotRefusal::InPast)
        );
        assert_eq!(
            a.check(ts("2026-11-30T09:00:00Z"), &q),
            Err(SlotRefusal::TooShortNotice)
        );
        assert_eq!(
            a.check(ts("2026-11-30T10:00:00Z"), &q),
            Err(SlotRefusal::Taken)
        );
        assert_eq!(
            a.check(ts("2026-11-30T11:15:00Z"), &q),
            Err(SlotRefusal::Misaligned)
        );
        assert_eq!(
            a.check(ts("2026-11-30T16:30:00Z"), &q),
            Err(SlotRefusal::OutsideAvailability)
        );
        assert_eq!(
            a.check(ts("2026-12-05T11:00:00Z"), &q),
            Err(SlotRefusal::OutsideAvailability)
        );
        assert_eq!(a.check(ts("2026-11-30T11:00:00Z"), &q), Ok(()));
    }

    #[test]
    fn weekly_series_keeps_local_time() {
        let tz = TimeZone::get("Europe/London").unwrap();
        // 09:00 GMT on 23 March 2026, then 09:00 BST on 30 March.
        let next = weekly_occurrence(&tz, ts("2026-03-23T09:00:00Z"), 1).unwrap();
        assert_eq!(next, ts("2026-03-30T08:00:00Z"));
    }
}
