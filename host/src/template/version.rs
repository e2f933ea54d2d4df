//! `heat_template_version`: the dates and release aliases Kiln accepts, as Heat does, and the
//! first version of each feature that is gated by it.

use super::error::Errors;
use super::yaml::{Node, Yaml};

/// Every accepted `heat_template_version`: Heat's dates, then its release aliases.
pub const VERSIONS: [&str; 17] = [
    "2013-05-23",
    "2014-10-16",
    "2015-04-30",
    "2015-10-15",
    "2016-04-08",
    "2016-10-14",
    "2017-02-24",
    "2017-09-01",
    "2018-03-02",
    "2018-08-31",
    "2021-04-16",
    "newton",
    "ocata",
    "pike",
    "queens",
    "rocky",
    "wallaby",
];

const ALIASES: [(&str, &str); 6] = [
    ("newton", "2016-10-14"),
    ("ocata", "2017-02-24"),
    ("pike", "2017-09-01"),
    ("queens", "2018-03-02"),
    ("rocky", "2018-08-31"),
    ("wallaby", "2021-04-16"),
];

/// The first version with `conditions` and `condition`.
pub(super) const CONDITIONS_SINCE: &str = "2016-10-14";

/// The canonical date of `heat_template_version` (the newest when missing or wrong, so that
/// the rest of the template is still checked).
pub(super) fn version(doc: &Node, errors: &mut Errors) -> String {
    let newest = "2021-04-16".to_string();
    let Some(node) = doc.get("heat_template_version") else {
        if matches!(doc.value, Yaml::Map(_)) {
            errors.at(
                doc.pos,
                "heat_template_version",
                "missing: a HOT template starts with heat_template_version",
            );
        }
        return newest;
    };
    let given = match &node.value {
        Yaml::Str(s) => s.clone(),
        _ => node.to_json().to_string(),
    };
    if let Some((_, date)) = ALIASES.iter().find(|(alias, _)| *alias == given) {
        return date.to_string();
    }
    if VERSIONS.contains(&given.as_str()) {
        return given;
    }
    errors.at(
        node.pos,
        "heat_template_version",
        format!("unknown version '{given}' (valid: {})", VERSIONS.join(", ")),
    );
    newest
}
