//! The idle pace a test platform's dispatcher gets when a test slows its
//! sweeps.

/// A dispatcher interval the caller chose above the idle pace, without
/// choosing an idle pace, gets the production ratio (idle sweeps four
/// intervals apart) instead of a configuration the platform refuses.
pub(super) fn idle_pace_follows_interval(vars: &mut Vec<(String, String)>) {
    let last = |vars: &[(String, String)], key: &str| {
        vars.iter()
            .rev()
            .position(|(k, _)| k == key)
            .map(|i| vars.len() - 1 - i)
    };
    let (Some(interval), Some(idle)) = (
        last(vars, "JOBS__DISPATCHER__INTERVAL_MS"),
        last(vars, "JOBS__DISPATCHER__IDLE_INTERVAL_MS"),
    ) else {
        return;
    };
    let value = |i: usize| vars[i].1.parse::<u64>().ok();
    if interval > idle
        && let (Some(ms), Some(idle_ms)) = (value(interval), value(idle))
        && ms > idle_ms
    {
        vars.push((
            "JOBS__DISPATCHER__IDLE_INTERVAL_MS".to_owned(),
            (ms.saturating_mul(4)).min(60_000).max(ms).to_string(),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::idle_pace_follows_interval;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn idle(vars: &[(String, String)]) -> &str {
        let (_, v) = vars
            .iter()
            .rev()
            .find(|(k, _)| k == "JOBS__DISPATCHER__IDLE_INTERVAL_MS")
            .unwrap();
        v
    }

    const INTERVAL: &str = "JOBS__DISPATCHER__INTERVAL_MS";
    const IDLE: &str = "JOBS__DISPATCHER__IDLE_INTERVAL_MS";

    #[test]
    fn an_interval_above_the_default_idle_pace_raises_it_to_four_intervals() {
        let mut v = vars(&[(INTERVAL, "50"), (IDLE, "200"), (INTERVAL, "250")]);
        idle_pace_follows_interval(&mut v);
        assert_eq!(idle(&v), "1000");
    }

    #[test]
    fn an_idle_pace_the_caller_chose_is_kept() {
        let mut v = vars(&[
            (INTERVAL, "50"),
            (IDLE, "200"),
            (INTERVAL, "250"),
            (IDLE, "300"),
        ]);
        idle_pace_follows_interval(&mut v);
        assert_eq!(idle(&v), "300");
    }

    #[test]
    fn an_interval_below_the_idle_pace_changes_nothing() {
        let mut v = vars(&[(INTERVAL, "50"), (IDLE, "200"), (INTERVAL, "20")]);
        idle_pace_follows_interval(&mut v);
        assert_eq!(v.len(), 3);
        assert_eq!(idle(&v), "200");
    }
}
