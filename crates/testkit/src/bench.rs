//! What the benchmarks (`crates/server/benches/`) share: their knobs from the environment
//! and one summary line per measured interval.

/// The number in environment variable `name`, or `default` when it is unset or not one.
pub fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The `p`th percentile (nearest rank) of `sorted`; NaN when it is empty.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Prints `name`, the count, p50, the `high` percentile and the maximum of `values`
/// (milliseconds).
pub fn summary(name: &str, mut values: Vec<f64>, high: f64) {
    values.sort_by(f64::total_cmp);
    println!(
        "{name:<58} n={:<5} p50={:>8.1} ms  p{high}={:>8.1} ms  max={:>8.1} ms",
        values.len(),
        percentile(&values, 50.0),
        percentile(&values, high),
        values.last().copied().unwrap_or(f64::NAN)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_ranks() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&values, 50.0), 51.0);
        assert_eq!(percentile(&values, 99.0), 99.0);
        assert_eq!(percentile(&values, 100.0), 100.0);
        assert!(percentile(&[], 50.0).is_nan());
    }
}
