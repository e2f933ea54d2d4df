//! `OS::Heat::RandomString`: a random string, generated once at create and kept in state.
//!
//! Generation follows Heat's `password_gen`: first the minimum count from each character class
//! and sequence, then fill up to `length` from the union of them all, then shuffle. With no
//! classes or sequences given, the whole string comes from `sequence` (Heat's older property).
//! No property is update-allowed: any change replaces the resource, giving a new value.

use kiln_plugin_sdk::prelude::*;

struct RandomString;

const SEQUENCES: [&str; 7] = [
    "lettersdigits",
    "letters",
    "lowercase",
    "uppercase",
    "digits",
    "hexdigits",
    "octdigits",
];

/// The characters of a named class, as in Heat (hexdigits are upper-case).
fn class_chars(name: &str) -> Option<&'static str> {
    const LOWER: &str = "abcdefghijklmnopqrstuvwxyz";
    const UPPER: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    Some(match name {
        "lettersdigits" => "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789",
        "letters" => "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
        "lowercase" => LOWER,
        "uppercase" => UPPER,
        "digits" => "0123456789",
        "hexdigits" => "0123456789ABCDEF",
        "octdigits" => "01234567",
        _ => return None,
    })
}

/// A uniformly random index below `n` (rejection sampling: no modulo bias).
fn below(n: usize) -> Result<usize, PluginError> {
    let n = n as u64;
    let zone = u64::MAX - (u64::MAX % n);
    loop {
        let r = getrandom::u64().map_err(|e| fatal(format!("no randomness available: {e}")))?;
        if r < zone {
            return Ok((r % n) as usize);
        }
    }
}

/// One pool of characters with the minimum number to draw from it.
struct Pool {
    chars: Vec<char>,
    min: usize,
}

/// Reads `character_classes`, `character_sequences` and `sequence` into pools, and checks
/// what the host's schema cannot: the shape of list items and the sum of the minimums.
fn pools(props: &Props, length: usize) -> Result<Vec<Pool>, PluginError> {
    let mut pools = Vec::new();
    for item in props.list("character_classes")? {
        let class = item
            .get("class")
            .and_then(Value::as_str)
            .unwrap_or("lettersdigits");
        let chars = class_chars(class).ok_or_else(|| {
            invalid(format!(
                "character_classes: class must be one of {}, got '{class}'",
                SEQUENCES.join(", ")
            ))
        })?;
        pools.push(Pool {
            chars: chars.chars().collect(),
            min: min_of(item, "character_classes")?,
        });
    }
    for item in props.list("character_sequences")? {
        let seq = item.get("sequence").and_then(Value::as_str).unwrap_or("");
        if seq.is_empty() {
            return Err(invalid(
                "character_sequences: each item needs a non-empty 'sequence'",
            ));
        }
        pools.push(Pool {
            chars: seq.chars().collect(),
            min: min_of(item, "character_sequences")?,
        });
    }
    if pools.is_empty() {
        let seq = props.string_or("sequence", "lettersdigits")?;
        let chars = class_chars(seq).ok_or_else(|| {
            invalid(format!(
                "property 'sequence' must be one of {}, got '{seq}'",
                SEQUENCES.join(", ")
            ))
        })?;
        pools.push(Pool {
            chars: chars.chars().collect(),
            min: 0,
        });
    }
    if pools.iter().map(|p| p.min).sum::<usize>() > length {
        return Err(invalid(
            "length property cannot be smaller than combined character class and character \
             sequence minimums",
        ));
    }
    Ok(pools)
}

fn min_of(item: &Value, list: &str) -> Result<usize, PluginError> {
    match item.get("min") {
        None | Some(Value::Null) => Ok(1),
        Some(v) => v
            .as_u64()
            .filter(|m| (1..=512).contains(m))
            .map(|m| m as usize)
            .ok_or_else(|| {
                invalid(format!(
                    "{list}: 'min' must be an integer from 1 to 512, got {v}"
                ))
            }),
    }
}

fn generate(props: &Props) -> Result<String, PluginError> {
    let length = props.integer_or("length", 32)?;
    if !(1..=512).contains(&length) {
        return Err(invalid(format!(
            "property 'length' must be from 1 to 512, got {length}"
        )));
    }
    let length = length as usize;
    let pools = pools(props, length)?;

    let mut out: Vec<char> = Vec::with_capacity(length);
    let mut all: Vec<char> = Vec::new();
    for pool in &pools {
        for _ in 0..pool.min {
            out.push(pool.chars[below(pool.chars.len())?]);
        }
        all.extend(&pool.chars);
    }
    all.sort_unstable();
    all.dedup();
    while out.len() < length {
        out.push(all[below(all.len())?]);
    }
    // Fisher-Yates, so the minimums are not all at the front.
    for i in (1..out.len()).rev() {
        out.swap(i, below(i + 1)?);
    }
    Ok(out.into_iter().collect())
}

fn value_of(current: &Current) -> Result<Value, PluginError> {
    Ok(current
        .state_value()?
        .get("value")
        .cloned()
        .unwrap_or(Value::Null))
}

impl Resource for RandomString {
    fn describe() -> PluginInfo {
        PluginInfo::new(env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION")).with_type(
            ResourceType::new("OS::Heat::RandomString")
                .description(
                    "A random string, for passwords and unique names. The value is generated \
                     once; changing any property replaces it.",
                )
                .property(
                    Property::integer("length")
                        .description("Length of the string.")
                        .default(json!(32))
                        .range(1.0, 512.0),
                )
                .property(
                    Property::string("sequence")
                        .description(
                            "Characters to draw from when neither character_classes nor \
                             character_sequences is given.",
                        )
                        .default(json!("lettersdigits"))
                        .allowed_values(SEQUENCES),
                )
                .property(Property::list("character_classes").description(
                    "Classes to draw from: a list of {class: one of the sequence names, min: \
                     minimum count (default 1)}.",
                ))
                .property(Property::list("character_sequences").description(
                    "Custom sets of characters to draw from: a list of {sequence: the \
                     characters, min: minimum count (default 1)}.",
                ))
                .property(
                    Property::string("salt")
                        .description("Any value; changing it generates a new string."),
                )
                .attribute("value", "The generated string."),
        )
    }

    fn create(ctx: &CallContext, props: &Props) -> Result<Outcome, PluginError> {
        let value = generate(props)?;
        Ok(done(
            &ctx.idempotency_key,
            json!({"value": value}),
            json!({"value": value}),
        ))
    }

    /// Every property replaces, so an update reaching the plugin changed nothing: keep the value.
    fn update(
        _: &CallContext,
        current: &Current,
        _: &Props,
        _: &Props,
    ) -> Result<UpdateOutcome, PluginError> {
        let value = value_of(current)?;
        Ok(done(
            &current.physical_id,
            json!({"value": value}),
            json!({"value": value}),
        )
        .into())
    }

    fn delete(_: &CallContext, _: &Current, _: &Props) -> Result<Outcome, PluginError> {
        Ok(deleted())
    }

    fn check(_: &CallContext, current: &Current, _: &Props) -> Result<CheckReport, PluginError> {
        Ok(report(
            true,
            Vec::new(),
            json!({"value": value_of(current)?}),
        ))
    }
}

kiln_plugin_sdk::export_resource!(RandomString);

#[cfg(test)]
mod tests {
    use super::*;

    fn make(v: Value) -> Result<String, PluginError> {
        generate(&Props::from_value(v).unwrap())
    }

    #[test]
    fn default_is_32_letters_and_digits() {
        let s = make(json!({})).unwrap();
        assert_eq!(s.len(), 32);
        assert!(s.chars().all(|c| c.is_ascii_alphanumeric()));
    }

    #[test]
    fn sequence_applies_without_classes() {
        let s = make(json!({"length": 100, "sequence": "octdigits"})).unwrap();
        assert!(s.chars().all(|c| ('0'..='7').contains(&c)), "{s}");
    }

    #[test]
    fn minimums_are_met_and_only_listed_characters_used() {
        for _ in 0..50 {
            let s = make(json!({
                "length": 8,
                "character_classes": [{"class": "digits", "min": 3}],
                "character_sequences": [{"sequence": "!@", "min": 2}],
            }))
            .unwrap();
            assert_eq!(s.len(), 8);
            assert!(s.chars().filter(char::is_ascii_digit).count() >= 3, "{s}");
            assert!(s.chars().filter(|c| "!@".contains(*c)).count() >= 2, "{s}");
            assert!(
                s.chars().all(|c| c.is_ascii_digit() || "!@".contains(c)),
                "{s}"
            );
        }
    }

    #[test]
    fn rejects_minimums_over_length_and_unknown_classes() {
        let e = make(json!({"length": 2, "character_classes": [{"class": "digits", "min": 3}]}));
        assert!(e.unwrap_err().message().contains("cannot be smaller"));
        let e = make(json!({"character_classes": [{"class": "emoji"}]})).unwrap_err();
        assert_eq!(e.kind(), "invalid");
    }
}
