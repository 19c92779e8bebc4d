//! `--rounds N`: the floor and the cache-hit rows at each log setting,
//! measured one after another in N interleaved rounds, each ratio taken
//! against the floor of its own round; the median and the spread are
//! reported. On a shared machine whose speed drifts by tens of percent
//! between minutes (steal time), a single a-then-b pass compares two
//! different machines; interleaving compares neighbours.

use crate::{context_switches, io_syscalls, load_on, LogSetting, Proc};
use std::time::Duration;

/// One server measured against the floor, round after round.
pub(crate) struct Contender<'a> {
    pub(crate) name: String,
    pub(crate) server: &'a Proc,
}

/// The summary table: per contender, the median ratio to the floor, its
/// range, and the median server CPU per check against the floor's; with
/// `second`, also the median ratio to that contender of the same round.
pub(crate) async fn interleaved(
    floor: &Proc,
    contenders: &[Contender<'_>],
    second: Option<usize>,
    tokens: &[String],
    concurrency: usize,
    per_row: Duration,
    rounds: usize,
) -> anyhow::Result<String> {
    // One measurement of one server: its row, its context switches and
    // its socket system calls per check.
    struct Sample {
        row: crate::Row,
        switches: f64,
        syscalls: f64,
    }
    async fn measure(p: &Proc, tokens: &[String], c: usize, d: Duration) -> anyhow::Result<(Sample, u64)> {
        let (switched, called) = (context_switches(p.pid()), io_syscalls(p.pid()));
        let (row, denied) = load_on(p, tokens, c, d, None).await?;
        let checks = (row.rps * d.as_secs_f64()).max(1.0);
        let switches = context_switches(p.pid()).saturating_sub(switched) as f64 / checks;
        let syscalls = io_syscalls(p.pid()).saturating_sub(called) as f64 / checks;
        Ok((
            Sample {
                row,
                switches,
                syscalls,
            },
            denied,
        ))
    }
    // samples[0]: the floor; samples[i + 1]: contender i; one per round.
    let mut samples: Vec<Vec<Sample>> = (0..=contenders.len()).map(|_| Vec::new()).collect();
    for round in 0..rounds {
        let (a, _) = measure(floor, tokens, concurrency, per_row).await?;
        samples[0].push(a);
        for (i, c) in contenders.iter().enumerate() {
            let (r, denied) = measure(c.server, tokens, concurrency, per_row).await?;
            anyhow::ensure!(denied == 0, "{}: {denied} checks not allowed in round {round}", c.name);
            samples[i + 1].push(r);
        }
        eprintln!("authz-bench: round {}/{rounds} done", round + 1);
    }
    let series = |k: usize, f: fn(&Sample) -> f64| -> Vec<f64> { samples[k].iter().map(f).collect() };
    let rps = |k: usize| series(k, |s| s.row.rps);
    let cpu = |k: usize| median(&series(k, |s| s.row.cpu_us.unwrap_or(f64::NAN)));
    let switches = |k: usize| median(&series(k, |s| s.switches));
    let syscalls = |k: usize| median(&series(k, |s| s.syscalls));
    let load_cpu = |k: usize| median(&series(k, |s| s.row.load_cpu_us.unwrap_or(f64::NAN)));
    let floor_rps = rps(0);
    // Each round's throughput against the reference's of the same round.
    let per_round =
        |x: &[f64], reference: &[f64]| -> Vec<f64> { x.iter().zip(reference).map(|(x, r)| x / r).collect() };
    let ratios: Vec<Vec<f64>> = (1..=contenders.len()).map(|k| per_round(&rps(k), &floor_rps)).collect();
    let to_second = |i: usize| match second.filter(|k| *k < contenders.len()) {
        Some(k) => format!("{:.2}", median(&per_round(&rps(i + 1), &rps(k + 1)))),
        None => "–".to_owned(),
    };
    let second_name = second
        .and_then(|k| contenders.get(k))
        .map_or("–", |c| c.name.split('.').next().unwrap_or("–"));
    let mut out = format!(
        "\nInterleaved: {rounds} rounds of [a, {}], {}s each; ratios to the floor of the same round \
         (floor: median {:.0} checks/s, {:.0}–{:.0}).\n\n\
         | row | median × a | min–max × a | median × {second_name} | median server CPU µs/check (a: {:.1}) | median server context switches per check (a: {:.2}) | median server read+write syscalls per check (a: {:.2}) | median load generator CPU µs/check (a: {:.1}) |\n|---|---:|---:|---:|---:|---:|---:|---:|\n",
        contenders
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        per_row.as_secs(),
        median(&floor_rps),
        min(&floor_rps),
        max(&floor_rps),
        cpu(0),
        switches(0),
        syscalls(0),
        load_cpu(0),
    );
    for (i, c) in contenders.iter().enumerate() {
        out.push_str(&format!(
            "| {} | {:.2} | {:.2}–{:.2} | {} | {:.1} | {:.2} | {:.2} | {:.1} |\n",
            c.name,
            median(&ratios[i]),
            min(&ratios[i]),
            max(&ratios[i]),
            to_second(i),
            cpu(i + 1),
            switches(i + 1),
            syscalls(i + 1),
            load_cpu(i + 1)
        ));
    }
    Ok(out)
}

/// The label of a cache-hit contender at `log`.
pub(crate) fn label(tag: &str, log: LogSetting) -> String {
    format!("{tag}. cache hits, {}", log.label())
}

fn median(v: &[f64]) -> f64 {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if s.is_empty() {
        return f64::NAN;
    }
    s.sort_by(f64::total_cmp);
    let m = s.len() / 2;
    if s.len() % 2 == 1 {
        s[m]
    } else {
        (s[m - 1] + s[m]) / 2.0
    }
}

fn min(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}

fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::NEG_INFINITY, f64::max)
}

#[cfg(test)]
mod tests {
    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(super::median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(super::median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(super::median(&[f64::NAN]).is_nan());
    }
}
