//! Latency over a sliding window, in bounded memory: the window is cut into
//! [`SLICES`] time slices, each with its own histograms; a slice is reset
//! and reused when time comes round to it again, so a server costs at most
//! `2 × SLICES` histograms however many calls it serves.

use std::time::Duration;

use hdrhistogram::Histogram;

/// Slices per window: the p99 covers the last 9 to 10 tenths of the window.
pub const SLICES: usize = 10;

/// Values are recorded in microseconds, up to 10 minutes (longer ones count
/// as 10 minutes: far over any budget anyway).
const MAX_MICROS: u64 = 600_000_000;

/// Two significant digits: 1% is precise enough to compare with a budget,
/// and keeps each histogram near 12 KB.
const SIGFIG: u8 = 2;

fn histogram() -> Option<Histogram<u32>> {
    Histogram::new_with_bounds(1, MAX_MICROS, SIGFIG).ok()
}

/// What is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A `tools/call`'s latency (request head to answer head).
    Call,
    /// A new session's time to its first result.
    FirstResult,
}

impl Kind {
    pub fn describe(self) -> &'static str {
        match self {
            Kind::Call => "tool-call latency",
            Kind::FirstResult => "time to first result",
        }
    }

    pub fn unit(self, count: u64) -> &'static str {
        match (self, count) {
            (Kind::Call, 1) => "call",
            (Kind::Call, _) => "calls",
            (Kind::FirstResult, 1) => "session",
            (Kind::FirstResult, _) => "sessions",
        }
    }
}

#[derive(Default)]
struct Slot {
    /// Which slice of time the slot holds (`now / slice`); `None` when unused.
    epoch: Option<u64>,
    calls: Option<Histogram<u32>>,
    first: Option<Histogram<u32>>,
}

/// The p99 of one kind over the window, and how many samples it rests on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quantile {
    pub count: u64,
    pub p99: Duration,
}

/// Both measures of one server over the window.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Measure {
    pub calls: Option<Quantile>,
    pub first: Option<Quantile>,
}

impl Measure {
    pub fn get(&self, kind: Kind) -> Option<Quantile> {
        match kind {
            Kind::Call => self.calls,
            Kind::FirstResult => self.first,
        }
    }
}

pub struct Window {
    slice_nanos: u64,
    slots: [Slot; SLICES],
}

impl Window {
    pub fn new(window: Duration) -> Window {
        let slice = (window.as_nanos() / SLICES as u128).clamp(1, u64::MAX as u128) as u64;
        Window {
            slice_nanos: slice,
            slots: Default::default(),
        }
    }

    fn epoch(&self, now: Duration) -> u64 {
        (now.as_nanos() / self.slice_nanos as u128).min(u64::MAX as u128) as u64
    }

    /// Records `value` at time `now` (monotonic, from the alerts' clock).
    pub fn record(&mut self, now: Duration, kind: Kind, value: Duration) {
        let epoch = self.epoch(now);
        let slot = &mut self.slots[(epoch % SLICES as u64) as usize];
        if slot.epoch != Some(epoch) {
            // An old slice: its time has passed out of the window.
            for h in [&mut slot.calls, &mut slot.first].into_iter().flatten() {
                h.reset();
            }
            slot.epoch = Some(epoch);
        }
        let histogram = match kind {
            Kind::Call => &mut slot.calls,
            Kind::FirstResult => &mut slot.first,
        };
        if histogram.is_none() {
            *histogram = self::histogram();
        }
        if let Some(h) = histogram {
            let micros = value.as_micros().clamp(1, MAX_MICROS as u128) as u64;
            h.saturating_record(micros);
        }
    }

    /// The p99 of each kind over the slices still inside the window at `now`.
    pub fn measure(&self, now: Duration) -> Measure {
        let current = self.epoch(now);
        let oldest = current.saturating_sub(SLICES as u64 - 1);
        let live: Vec<&Slot> = self
            .slots
            .iter()
            .filter(|s| s.epoch.is_some_and(|e| e >= oldest && e <= current))
            .collect();
        let merge = |pick: fn(&Slot) -> Option<&Histogram<u32>>| -> Option<Quantile> {
            let mut total = histogram()?;
            for h in live.iter().filter_map(|s| pick(s)) {
                // Same bounds everywhere: adding cannot fail.
                let _ = total.add(h);
            }
            (!total.is_empty()).then(|| Quantile {
                count: total.len(),
                p99: Duration::from_micros(total.value_at_quantile(0.99)),
            })
        };
        Measure {
            calls: merge(|s| s.calls.as_ref()),
            first: merge(|s| s.first.as_ref()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn the_p99_covers_the_window_and_forgets_what_left_it() {
        let mut w = Window::new(Duration::from_secs(10));
        let t0 = Duration::from_secs(100);
        for i in 0..99 {
            w.record(t0, Kind::Call, MS * 10 + MS * (i % 3));
        }
        w.record(t0, Kind::Call, MS * 500);
        let m = w.measure(t0 + Duration::from_secs(5));
        let calls = m.calls.unwrap();
        assert_eq!(calls.count, 100);
        // The 99th of 100 values is the largest of the 10-12 ms ones.
        assert!(
            calls.p99 >= MS * 11 && calls.p99 <= MS * 13,
            "{:?}",
            calls.p99
        );
        assert_eq!(m.first, None);
        for _ in 0..5 {
            w.record(t0, Kind::Call, MS * 500);
        }
        assert!(w.measure(t0).calls.unwrap().p99 >= MS * 495);
        // Ten seconds on, every slice recorded at t0 is out of the window.
        assert_eq!(w.measure(t0 + Duration::from_secs(10)).calls, None);
        // A slot reused for a new slice starts empty.
        w.record(t0 + Duration::from_secs(10), Kind::FirstResult, MS * 3);
        let m = w.measure(t0 + Duration::from_secs(10));
        assert_eq!(m.calls, None);
        assert_eq!(m.first.unwrap().count, 1);
    }

    #[test]
    fn memory_is_bounded_however_many_calls() {
        let mut w = Window::new(Duration::from_secs(1));
        for i in 0..200_000u64 {
            w.record(
                Duration::from_micros(i * 37),
                Kind::Call,
                MS * (i % 50) as u32,
            );
        }
        let histograms = w.slots.iter().filter(|s| s.calls.is_some()).count();
        assert!(histograms <= SLICES);
        let bytes: usize = w
            .slots
            .iter()
            .filter_map(|s| s.calls.as_ref())
            .map(|h| h.distinct_values() * std::mem::size_of::<u32>())
            .sum();
        assert!(bytes < 200_000, "{bytes} bytes of counts");
    }
}
