//! Schedule resolver benchmark: `on_call` at 10,000 instants and a 90-day `shifts` for a
//! schedule of 5 layers, 50 people and 200 overrides in America/New_York, across the autumn DST
//! change. Run with `cargo bench --bench schedules`; targets: on_call < 50 µs, 90-day shifts
//! < 5 ms.

use std::hint::black_box;
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveTime, Utc};
use lark_oncall::schedule::model::{
    Layer, Override, Participant, Restriction, Rotation, RotationUnit, Schedule, Version, wall_time,
};
use lark_oncall::schedule::resolve;

const ON_CALL_SAMPLES: usize = 10_000;
const SHIFTS_RUNS: usize = 200;

/// A deterministic pseudo-random sequence (64-bit LCG), so every run measures the same schedule.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % below
    }
}

fn people(range: std::ops::Range<usize>, per_turn: usize) -> Vec<Participant> {
    let ids: Vec<String> = range.map(|i| format!("mem_{i:02}")).collect();
    ids.chunks(per_turn).map(|c| Participant(c.to_vec())).collect()
}

fn layer(name: &str, participants: Vec<Participant>, unit: RotationUnit, every: u32, first: &str) -> Layer {
    Layer {
        name: name.into(),
        participants,
        rotation: Rotation { unit, every },
        first_handoff: wall_time::parse(first).unwrap(),
        active_from: None,
        active_until: None,
        restrictions: vec![],
    }
}

fn window(days: &[u8], start: &str, end: &str) -> Restriction {
    Restriction {
        days: days.to_vec(),
        start: NaiveTime::parse_from_str(start, "%H:%M").unwrap(),
        end: NaiveTime::parse_from_str(end, "%H:%M").unwrap(),
    }
}

fn schedule(from: DateTime<Utc>) -> Schedule {
    let mut office = layer(
        "office",
        people(10..20, 1),
        RotationUnit::Day,
        1,
        "2026-09-01T09:00",
    );
    office
        .restrictions
        .push(window(&[0, 1, 2, 3, 4], "09:00", "18:00"));
    let mut weekend_nights = layer(
        "weekend nights",
        people(40..50, 1),
        RotationUnit::Week,
        1,
        "2026-09-05T22:00",
    );
    weekend_nights
        .restrictions
        .push(window(&[4, 5, 6], "22:00", "06:00"));
    let layers = vec![
        layer(
            "base",
            people(0..10, 1),
            RotationUnit::Week,
            1,
            "2026-09-07T09:00",
        ),
        office,
        layer(
            "follow the sun",
            people(20..30, 1),
            RotationUnit::Hour,
            12,
            "2026-09-01T08:00",
        ),
        layer(
            "pairs",
            people(30..40, 2),
            RotationUnit::Day,
            3,
            "2026-09-02T10:00",
        ),
        weekend_nights,
    ];
    let mut rng = Lcg(20);
    let overrides = (0..200)
        .map(|i| {
            let start = from + chrono::Duration::minutes(rng.next(90 * 24 * 60) as i64);
            Override {
                id: format!("ovr_{i}"),
                start,
                end: start + chrono::Duration::hours(2 + rng.next(7) as i64),
                member_id: format!("mem_{:02}", rng.next(50)),
                note: None,
                created_at: from,
            }
        })
        .collect();
    Schedule {
        id: "sch_bench".into(),
        name: "bench".into(),
        description: String::new(),
        handoff_notice: None,
        daily_summary: None,
        versions: vec![Version {
            effective_from: None,
            time_zone: "America/New_York".into(),
            layers,
            created_at: from,
        }],
        overrides,
        created_at: from,
        updated_at: from,
    }
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let from = DateTime::parse_from_rfc3339("2026-10-01T00:00:00Z")
        .unwrap()
        .with_timezone(&Utc);
    let to = from + chrono::Duration::days(90);
    let s = schedule(from);

    let mut rng = Lcg(7);
    let mut on_call = Vec::with_capacity(ON_CALL_SAMPLES);
    for _ in 0..ON_CALL_SAMPLES {
        let at = from + chrono::Duration::seconds(rng.next(90 * 86_400) as i64);
        let t0 = Instant::now();
        black_box(resolve::on_call(black_box(&s), at));
        on_call.push(t0.elapsed());
    }
    on_call.sort_unstable();

    let mut shifts = Vec::with_capacity(SHIFTS_RUNS);
    let mut counts = (0, 0, 0);
    for _ in 0..SHIFTS_RUNS {
        let t0 = Instant::now();
        let r = black_box(resolve::shifts(black_box(&s), from, to));
        shifts.push(t0.elapsed());
        counts = (
            r.final_shifts.len(),
            r.layers.iter().map(|l| l.shifts.len()).sum::<usize>(),
            r.gaps.len(),
        );
    }
    shifts.sort_unstable();

    println!("schedule: 5 layers, 50 people, 200 overrides, America/New_York, {from} + 90 days");
    println!(
        "on_call ({ON_CALL_SAMPLES} instants): p50 {:.1} µs, p99 {:.1} µs, max {:.1} µs (target < 50 µs)",
        us(percentile(&on_call, 0.5)),
        us(percentile(&on_call, 0.99)),
        us(on_call[on_call.len() - 1]),
    );
    println!(
        "90-day shifts ({SHIFTS_RUNS} runs): p50 {:.2} ms, p99 {:.2} ms (target < 5 ms); {} final shifts, {} layer shifts, {} gaps",
        us(percentile(&shifts, 0.5)) / 1000.0,
        us(percentile(&shifts, 0.99)) / 1000.0,
        counts.0,
        counts.1,
        counts.2,
    );
}
