//! Durations as users write them: `90s`, `10m`, `2h`, or a bare number of minutes (as Heat's
//! `--timeout`), for the CLI's `--timeout` and a resource's `timeout` in a template.

/// `90s`, `10m`, `2h`, or a bare number of minutes, as seconds.
pub fn parse_secs(s: &str) -> Result<u64, String> {
    let (number, unit) = match s.trim().char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&s.trim()[..i], c),
        _ => (s.trim(), 'm'),
    };
    let n: f64 = number
        .parse()
        .map_err(|_| format!("expected a duration such as 90s, 10m or 2h, got '{s}'"))?;
    let scale = match unit {
        's' => 1.0,
        'm' => 60.0,
        'h' => 3600.0,
        _ => return Err(format!("unknown unit '{unit}' in '{s}': use s, m or h")),
    };
    if !(n >= 0.0 && n.is_finite()) {
        return Err(format!("a timeout must not be negative, got '{s}'"));
    }
    Ok((n * scale).round() as u64)
}

#[cfg(test)]
mod tests {
    use super::parse_secs;

    #[test]
    fn durations_read_as_heat_and_humans_write_them() {
        assert_eq!(parse_secs("90s"), Ok(90));
        assert_eq!(parse_secs("10m"), Ok(600));
        assert_eq!(parse_secs("2h"), Ok(7200));
        assert_eq!(
            parse_secs("5"),
            Ok(300),
            "a bare number is minutes, as in Heat"
        );
        assert_eq!(parse_secs("0.5m"), Ok(30));
        assert!(parse_secs("3d").unwrap_err().contains("unknown unit"));
        assert!(parse_secs("soon").is_err());
        assert!(parse_secs("-1s").is_err());
    }
}
