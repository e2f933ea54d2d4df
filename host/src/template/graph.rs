//! Dependency order: a topological order that keeps the template's order among independent
//! items, or the cycle that prevents one.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};

/// `names` in template order; `deps[n]` are the items `n` depends on (all among `names`).
/// Returns an order where every item comes after its dependencies, or one cycle as the list
/// `[a, b, c, a]` (a depends on b, which depends on c, which depends on a).
pub(crate) fn order(
    names: &[String],
    deps: &BTreeMap<String, BTreeSet<String>>,
) -> Result<Vec<String>, Vec<String>> {
    let index: BTreeMap<&str, usize> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i))
        .collect();
    let mut waiting = vec![0usize; names.len()];
    let mut dependents = vec![Vec::new(); names.len()];
    for (i, n) in names.iter().enumerate() {
        for d in deps.get(n).into_iter().flatten() {
            if let Some(&j) = index.get(d.as_str()) {
                waiting[i] += 1;
                dependents[j].push(i);
            }
        }
    }
    // Ready items by template position, so independent items keep the template's order.
    let mut ready: BinaryHeap<Reverse<usize>> = (0..names.len())
        .filter(|&i| waiting[i] == 0)
        .map(Reverse)
        .collect();
    let mut out = Vec::with_capacity(names.len());
    while let Some(Reverse(i)) = ready.pop() {
        out.push(names[i].clone());
        for &j in &dependents[i] {
            waiting[j] -= 1;
            if waiting[j] == 0 {
                ready.push(Reverse(j));
            }
        }
    }
    if out.len() == names.len() {
        return Ok(out);
    }
    // Every item left is on a cycle or depends on one: walk dependencies among them until an
    // item repeats.
    let left: BTreeSet<&str> = names
        .iter()
        .enumerate()
        .filter(|(i, _)| waiting[*i] > 0)
        .map(|(_, n)| n.as_str())
        .collect();
    let start = names
        .iter()
        .find(|n| left.contains(n.as_str()))
        .expect("an item is left");
    let mut path = vec![start.clone()];
    loop {
        let last = path.last().expect("path is never empty");
        let next = deps[last]
            .iter()
            .find(|d| left.contains(d.as_str()))
            .expect("a left item depends on a left item");
        if let Some(at) = path.iter().position(|p| p == next) {
            let mut cycle = path.split_off(at);
            cycle.push(next.clone());
            return Err(cycle);
        }
        path.push(next.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(names: &[&str], edges: &[(&str, &str)]) -> Result<Vec<String>, Vec<String>> {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut deps: BTreeMap<String, BTreeSet<String>> =
            names.iter().map(|n| (n.clone(), BTreeSet::new())).collect();
        for (a, b) in edges {
            deps.get_mut(*a).unwrap().insert(b.to_string());
        }
        order(&names, &deps)
    }

    #[test]
    fn dependencies_first_template_order_otherwise() {
        assert_eq!(
            run(&["c", "a", "b"], &[("c", "b")]).unwrap(),
            ["a", "b", "c"]
        );
        assert_eq!(run(&["x", "y", "z"], &[]).unwrap(), ["x", "y", "z"]);
    }

    #[test]
    fn cycle_is_named() {
        assert_eq!(
            run(
                &["top", "a", "b", "c"],
                &[("top", "a"), ("a", "b"), ("b", "c"), ("c", "a")]
            )
            .unwrap_err(),
            ["a", "b", "c", "a"]
        );
        assert_eq!(run(&["s"], &[("s", "s")]).unwrap_err(), ["s", "s"]);
    }
}
