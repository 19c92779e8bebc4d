//! `--rounds N`: the floor and the cache-hit rows at each log setting,
//! measured one after another in N interleaved rounds, each ratio taken
//! against the floor of its own round; the median and the spread are
//! reported. On a shared machine whose speed drifts by tens of percent
//! between minutes (steal time), a single a-then-b pass compares two
//! different machines; interleaving compares neighbours.

use crate::{context_switches, load_on, LogSetting, Proc};
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
    let mut rps = vec![Vec::new(); contenders.len()];
    let mut cpu = vec![Vec::new(); contenders.len() + 1];
    let mut switches = vec![Vec::new(); contenders.len() + 1];
    let mut load_cpu = vec![Vec::new(); contenders.len() + 1];
    let mut floor_rps = Vec::new();
    // One measurement: the row and the server's context switches per check.
    async fn measure(p: &Proc, tokens: &[String], c: usize, d: Duration) -> anyhow::Result<(crate::Row, u64, f64)> {
        let before = context_switches(p.pid());
        let (row, denied) = load_on(p, tokens, c, d, None).await?;
        let per_check = (context_switches(p.pid()) - before) as f64 / (row.rps * d.as_secs_f64()).max(1.0);
        Ok((row, denied, per_check))
    }
    for round in 0..rounds {
        let (a, _, a_switches) = measure(floor, tokens, concurrency, per_row).await?;
        floor_rps.push(a.rps);
        cpu[0].push(a.cpu_us.unwrap_or(f64::NAN));
        load_cpu[0].push(a.load_cpu_us.unwrap_or(f64::NAN));
        switches[0].push(a_switches);
        for (i, c) in contenders.iter().enumerate() {
            let (r, denied, sw) = measure(c.server, tokens, concurrency, per_row).await?;
            anyhow::ensure!(denied == 0, "{}: {denied} checks not allowed in round {round}", c.name);
            rps[i].push(r.rps);
            cpu[i + 1].push(r.cpu_us.unwrap_or(f64::NAN));
            load_cpu[i + 1].push(r.load_cpu_us.unwrap_or(f64::NAN));
            switches[i + 1].push(sw);
        }
        eprintln!("authz-bench: round {}/{rounds} done", round + 1);
    }
    // Each round's throughput against the reference's of the same round.
    let per_round =
        |x: &[f64], reference: &[f64]| -> Vec<f64> { x.iter().zip(reference).map(|(x, r)| x / r).collect() };
    let ratios: Vec<Vec<f64>> = rps.iter().map(|x| per_round(x, &floor_rps)).collect();
    let to_second = |i: usize| match second.and_then(|k| rps.get(k)) {
        Some(reference) => format!("{:.2}", median(&per_round(&rps[i], reference))),
        None => "–".to_owned(),
    };
    let second_name = second
        .and_then(|k| contenders.get(k))
        .map_or("–", |c| c.name.split('.').next().unwrap_or("–"));
    let mut out = format!(
        "\nInterleaved: {rounds} rounds of [a, {}], {}s each; ratios to the floor of the same round \
         (floor: median {:.0} checks/s, {:.0}–{:.0}).\n\n\
         | row | median × a | min–max × a | median × {second_name} | median server CPU µs/check (a: {:.1}) | median server context switches per check (a: {:.2}) | median load generator CPU µs/check (a: {:.1}) |\n|---|---:|---:|---:|---:|---:|---:|\n",
        contenders
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        per_row.as_secs(),
        median(&floor_rps),
        min(&floor_rps),
        max(&floor_rps),
        median(&cpu[0]),
        median(&switches[0]),
        median(&load_cpu[0]),
    );
    for (i, c) in contenders.iter().enumerate() {
        out.push_str(&format!(
            "| {} | {:.2} | {:.2}–{:.2} | {} | {:.1} | {:.2} | {:.1} |\n",
            c.name,
            median(&ratios[i]),
            min(&ratios[i]),
            max(&ratios[i]),
            to_second(i),
            median(&cpu[i + 1]),
            median(&switches[i + 1]),
            median(&load_cpu[i + 1])
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
