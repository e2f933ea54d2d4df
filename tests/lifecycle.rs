//! The stack lifecycle after create, on both backends with real plugins: update (what is
//! unchanged, updated in place, replaced or removed is decided from the schema and proven by
//! the calls the fake cloud saw), preview (no call, and the same decisions the update then
//! makes), and recovery from a failed action without redoing what worked.

mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use fault_cloud::RequestRecord;
use kiln::config::Config;
use kiln::store::{EventRow, Store};
use support::cloud::FakeCloud;
use support::db::backends;
use support::stacks::{Running, create, run, settle, update, validate};

async fn start(url: &str, allow: &[String], workers: u32) -> Running {
    start_with(Config::default(), url, allow, workers).await
}

async fn start_with(mut config: Config, url: &str, allow: &[String], workers: u32) -> Running {
    let store = Store::open(url).await.unwrap();
    config.engine.workers = workers;
    run(&support::stacks::engine(store, config, allow).await)
}

/// The events of the stack's current action (from its "started" event on).
async fn current_action_events(store: &Store, id: &str) -> Vec<EventRow> {
    let events = store.events(id, 0).await.unwrap();
    let start = events
        .iter()
        .rposition(|e| e.resource.is_none() && e.status == "IN_PROGRESS")
        .expect("a started event");
    events[start..].to_vec()
}

/// What each resource's action did, read back from its events as the preview names it.
fn done_from_events(events: &[EventRow]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for e in events.iter().filter(|e| e.status == "IN_PROGRESS") {
        let Some(r) = &e.resource else { continue };
        let what = match (e.action.as_str(), e.reason.as_str()) {
            ("DELETE", _) => "delete",
            ("CREATE", _) => "create",
            (_, reason) if reason.starts_with("replacing") => "replace",
            (_, reason) if reason.starts_with("updating in place") => "update",
            other => panic!("unexpected event {other:?}"),
        };
        out.insert(r.clone(), what.to_string());
    }
    out
}

/// The fake cloud, its base URL, and an engine allowed to reach it.
async fn with_cloud(url: &str) -> (FakeCloud, String, Running, Store) {
    let cloud = FakeCloud::start().await;
    let base = cloud.rule();
    let run = start(url, &[cloud.rule()], 4).await;
    let store = run.engine.store().clone();
    (cloud, base, run, store)
}

fn http(name: &str, collection: &str, body: &str) -> String {
    format!(
        "  {name}:\n    type: Kiln::HTTP::Resource\n    properties:\n      url: BASE/{collection}\n      body: {body}\n"
    )
}

const HEAD: &str = "heat_template_version: 2021-04-16\nresources:\n";

fn before(base: &str) -> String {
    let text = [
        HEAD.to_string(),
        http("keep", "things", "{name: keep}"),
        http("tweak", "things", "{name: tweak, size: 1}"),
        http("swap", "things", "{name: swap}"),
        http(
            "user",
            "things",
            "{name: user, peer: {get_attr: [swap, id]}}",
        ),
        http("gone", "things", "{name: gone}"),
        http(
            "gone_child",
            "things",
            "{name: gone_child, parent: {get_attr: [gone, id]}}",
        ),
    ]
    .concat();
    text.replace("BASE", base)
}

fn after(base: &str) -> String {
    let text = [
        HEAD.to_string(),
        http("keep", "things", "{name: keep}"),
        // `body` may change in place: a PUT.
        http("tweak", "things", "{name: tweak, size: 2}"),
        // `url` may not: a new object in the new collection, then the old one deleted.
        http("swap", "others", "{name: swap}"),
        // Unchanged itself, but it refers to the replacement: repointed in place.
        http(
            "user",
            "things",
            "{name: user, peer: {get_attr: [swap, id]}}",
        ),
        http("added", "things", "{name: added}"),
    ]
    .concat();
    text.replace("BASE", base)
}

fn ids(store_rows: &[kiln::store::ResourceRow]) -> HashMap<String, String> {
    store_rows
        .iter()
        .map(|r| {
            let id = r.attributes.as_ref().unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string();
            (r.name.clone(), id)
        })
        .collect()
}

fn calls_on<'a>(requests: &'a [RequestRecord], method: &str, path: &str) -> Vec<&'a RequestRecord> {
    requests
        .iter()
        .filter(|r| r.method == method && r.path == path)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_leaves_updates_replaces_and_removes_as_the_schema_says_and_preview_foretells_it() {
    for db in backends().await {
        let (cloud, base, run, store) = with_cloud(&db.url).await;
        let row = create(&run.engine, "web", &before(&base)).await;
        assert_eq!(
            settle(&store, &row.id).await.status,
            "COMPLETE",
            "{}",
            db.name
        );
        let old = ids(&store.resources(&row.id).await.unwrap());
        let seen = cloud.server().requests().len();

        // The preview calls nothing and says what will happen, and why.
        let new = validate(&after(&base), &run.engine);
        let (_, plan) = run.engine.preview("web", &new).await.unwrap();
        assert_eq!(
            cloud.server().requests().len(),
            seen,
            "{}: preview made a call",
            db.name
        );
        let planned: BTreeMap<String, String> = plan
            .iter()
            .map(|c| (c.resource.clone(), c.action.to_string()))
            .collect();
        let expected: BTreeMap<String, String> = [
            ("added", "create"),
            ("gone", "delete"),
            ("gone_child", "delete"),
            ("keep", "unchanged"),
            ("swap", "replace"),
            ("tweak", "update"),
            ("user", "update"),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        assert_eq!(planned, expected, "{}", db.name);
        let swap = plan.iter().find(|c| c.resource == "swap").unwrap();
        assert_eq!(swap.reason, "property 'url' cannot change in place");
        let user = plan.iter().find(|c| c.resource == "user").unwrap();
        assert_eq!(user.properties[0].name, "body");
        assert!(
            user.properties[0]
                .new
                .to_string()
                .contains("known after apply"),
            "{:?}",
            user.properties
        );

        // The update does exactly that.
        update(&run.engine, "web", &after(&base)).await;
        let done = settle(&store, &row.id).await;
        assert_eq!(
            (done.action.as_str(), done.status.as_str()),
            ("UPDATE", "COMPLETE"),
            "{}: {}",
            db.name,
            done.status_reason
        );
        let events = current_action_events(&store, &row.id).await;
        let mut did = done_from_events(&events);
        let retired = format!("swap/replaced-{}", done.traversal);
        assert_eq!(
            did.remove(&retired).as_deref(),
            Some("delete"),
            "{}: the replaced object is deleted in the cleanup",
            db.name
        );
        did.insert("keep".into(), "unchanged".into());
        assert_eq!(
            did, expected,
            "{}: the update did what the preview said",
            db.name
        );

        // Proven by the calls the cloud saw.
        let requests: Vec<RequestRecord> = cloud.server().requests()[seen..].to_vec();
        let thing = |name: &str| format!("/things/{}", old[name]);
        assert!(
            requests.iter().all(|r| !r.path.ends_with(&old["keep"])),
            "{}: an unchanged resource saw no call",
            db.name
        );
        assert_eq!(calls_on(&requests, "PUT", &thing("tweak")).len(), 1);
        assert_eq!(calls_on(&requests, "POST", "/others").len(), 1);
        assert_eq!(
            calls_on(&requests, "POST", "/things").len(),
            1,
            "only `added`"
        );
        let now = ids(&store.resources(&row.id).await.unwrap());
        assert_ne!(
            now["swap"], old["swap"],
            "{}: swap has a new object",
            db.name
        );
        assert_eq!(now["keep"], old["keep"]);
        assert_eq!(now["tweak"], old["tweak"], "{}: updated in place", db.name);
        assert_eq!(
            cloud.object(&now["user"]).unwrap()["peer"],
            now["swap"].as_str(),
            "{}: user was repointed to the replacement",
            db.name
        );
        // The old object goes last: after its replacement exists and its dependents moved.
        let seq = |method: &str, path: &str| calls_on(&requests, method, path)[0].seq;
        let old_swap_deleted = seq("DELETE", &thing("swap"));
        assert!(old_swap_deleted > seq("POST", "/others"));
        assert!(old_swap_deleted > seq("PUT", &thing("user")));
        // Removed resources go dependents first.
        assert!(seq("DELETE", &thing("gone_child")) < seq("DELETE", &thing("gone")));
        assert_eq!(
            requests.iter().filter(|r| r.method == "DELETE").count(),
            3,
            "{}",
            db.name
        );
        assert_eq!(cloud.objects(), 5, "{}: no object leaked", db.name);
        let mut names: Vec<String> = now.keys().cloned().collect();
        names.sort();
        assert_eq!(
            names,
            ["added", "keep", "swap", "tweak", "user"],
            "{}",
            db.name
        );

        // A second update to the same template calls nothing and writes no resource event.
        let seen = cloud.server().requests().len();
        update(&run.engine, "web", &after(&base)).await;
        assert_eq!(settle(&store, &row.id).await.status, "COMPLETE");
        assert_eq!(cloud.server().requests().len(), seen, "{}", db.name);
        let events = current_action_events(&store, &row.id).await;
        assert!(
            events.iter().all(|e| e.resource.is_none()),
            "{}: {events:?}",
            db.name
        );

        run.engine.delete_stack("web").await.unwrap();
        assert_eq!(settle(&store, &row.id).await.status, "COMPLETE");
        assert_eq!(cloud.objects(), 0, "{}", db.name);
        run.shutdown().await;
        db.cleanup().await;
    }
}

/// `n` independent TestResources `r000`...; `broken` fails.
fn many(n: usize, broken: Option<usize>) -> String {
    let mut text = HEAD.to_string();
    for i in 0..n {
        let fail = if Some(i) == broken {
            ", fail: true"
        } else {
            ""
        };
        text += &format!(
            "  r{i:03}:\n    type: OS::Heat::TestResource\n    properties: {{value: v{i}{fail}}}\n"
        );
    }
    text
}

/// Rows as `ACTION_STATUS` and physical id, by name.
async fn states(store: &Store, id: &str) -> HashMap<String, (String, Option<String>)> {
    store
        .resources(id)
        .await
        .unwrap()
        .into_iter()
        .map(|r| {
            (
                r.name,
                (format!("{}_{}", r.action, r.status), r.physical_id),
            )
        })
        .collect()
}

/// A ResourceGroup of `count` TestResources; member `broken` (if any) fails.
fn group(count: usize, broken: &str) -> String {
    format!(
        "{HEAD}  web:
    type: OS::Heat::ResourceGroup
    properties:
      count: {count}
      resource_def:
        type: OS::Heat::TestResource
        properties:
          value: member-%index%
          fail: {{equals: ['{broken}', '%index%']}}
outputs:
  values: {{value: {{get_attr: [web, output]}}}}
"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_500_member_group_whose_member_250_failed_is_resumed_and_fixed_without_redoing_what_worked()
 {
    for db in backends().await {
        let run = start(&db.url, &[], 8).await;
        let store = run.engine.store().clone();
        // Member #250 fails: what runs beside it finishes, nothing new starts.
        let row = create(&run.engine, "big", &group(500, "250")).await;
        let failed = settle(&store, &row.id).await;
        assert_eq!(failed.status, "FAILED", "{}", db.name);
        assert!(
            failed.status_reason.contains("web[250]"),
            "{}",
            failed.status_reason
        );
        let before = states(&store, &row.id).await;
        assert_eq!(before["web[250]"].0, "CREATE_FAILED");
        let member = |n: &String| n.starts_with("web[");
        let complete: Vec<&String> = before
            .iter()
            .filter(|(n, (s, _))| member(n) && s == "CREATE_COMPLETE")
            .map(|(n, _)| n)
            .collect();
        let not_started = before
            .iter()
            .filter(|(n, (s, _))| member(n) && s == "INIT_COMPLETE")
            .count();
        assert!(
            complete.len() >= 200 && not_started >= 100,
            "{}: {} complete, {not_started} not started (on_failure: stop)",
            db.name,
            complete.len()
        );
        assert_eq!(complete.len() + not_started + 1, 500, "{}", db.name);
        assert_eq!(
            before["web"].0, "INIT_COMPLETE",
            "{}: the group waits",
            db.name
        );

        let touched = async || -> Vec<String> {
            current_action_events(&store, &row.id)
                .await
                .into_iter()
                .filter(|e| e.status == "IN_PROGRESS")
                .filter_map(|e| e.resource)
                .collect()
        };

        // The same template again, now going on past failures (a resume with on_failure:
        // continue): the missing members are created, #250 is tried again (and fails again:
        // its template says so), nothing that worked is touched.
        let same = validate(&group(500, "250"), &run.engine);
        let mut sources = run.engine.sources(&row).await.unwrap();
        sources.options.on_failure = kiln::model::OnFailure::Continue;
        run.engine
            .update_stack("big", &same, &sources)
            .await
            .unwrap();
        let resumed = settle(&store, &row.id).await;
        assert_eq!(resumed.status, "FAILED", "{}", db.name);
        let mid = states(&store, &row.id).await;
        let worked = touched().await;
        assert_eq!(worked.len(), not_started + 1, "{}: {worked:?}", db.name);
        assert!(worked.iter().all(|n| !complete.contains(&n)));
        for name in &complete {
            assert_eq!(
                mid[*name], before[*name],
                "{}: {name} was left alone",
                db.name
            );
        }
        let members_done = mid
            .iter()
            .filter(|(n, (s, _))| member(n) && s == "CREATE_COMPLETE")
            .count();
        assert_eq!(
            members_done, 499,
            "{}: every other member exists now",
            db.name
        );

        // Fixed by an update: only #250 is worked on (and then the group gathers them).
        update(&run.engine, "big", &group(500, "none")).await;
        let done = settle(&store, &row.id).await;
        assert_eq!(
            done.status, "COMPLETE",
            "{}: {}",
            db.name, done.status_reason
        );
        let after = states(&store, &row.id).await;
        for name in mid.keys().filter(|n| member(n) && *n != "web[250]") {
            assert_eq!(after[name], mid[name], "{}: {name} was left alone", db.name);
        }
        assert!(
            after.values().all(|(s, _)| s == "CREATE_COMPLETE"),
            "{}",
            db.name
        );
        let mut fixed = touched().await;
        fixed.sort();
        assert_eq!(fixed, ["web", "web[250]"], "{}", db.name);
        // The group gathers every member's attribute, in index order.
        let outputs = run.engine.store().stack_template(&row.id).await.unwrap();
        let stack: kiln::template::Stack = serde_json::from_str(&outputs).unwrap();
        let rows = store.resources(&row.id).await.unwrap();
        let resolver = kiln::engine::StoredResolver::new(rows, "big", &row.id);
        let values = stack.output("values", &resolver).unwrap();
        assert_eq!(values.as_array().unwrap().len(), 500);
        assert_eq!(values[250], "member-250", "{}", db.name);
        run.shutdown().await;
        db.cleanup().await;
    }
}

/// A group of `count` members that replace themselves on any change, rolled `batch` at a
/// time with a pause between batches.
fn rolling(count: usize, version: u32, batch: usize) -> String {
    format!(
        "{HEAD}  web:
    type: OS::Heat::ResourceGroup
    update_policy:
      rolling_update: {{max_batch_size: {batch}, pause_time: 0.5}}
    properties:
      count: {count}
      resource_def:
        type: OS::Heat::TestResource
        properties:
          value: v{version}-%index%
          update_replace: true
"
    )
}

/// The most members being changed at once, replayed from the events in order.
fn most_at_once(events: &[EventRow]) -> usize {
    let mut busy = std::collections::BTreeSet::new();
    let mut most = 0;
    for e in events {
        let Some(r) = e
            .resource
            .as_deref()
            .filter(|r| r.starts_with("web[") && !r.contains("pause"))
        else {
            continue;
        };
        match (e.action.as_str(), e.status.as_str()) {
            ("UPDATE" | "CREATE", "IN_PROGRESS") => {
                busy.insert(r.to_string());
            }
            (_, "COMPLETE" | "FAILED") => {
                busy.remove(r);
            }
            _ => {}
        }
        most = most.max(busy.len());
    }
    most
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_update_replaces_at_most_max_batch_size_members_at_once_and_scales() {
    for db in backends().await {
        let run = start(&db.url, &[], 16).await;
        let store = run.engine.store().clone();
        let row = create(&run.engine, "rolled", &rolling(20, 1, 5)).await;
        assert_eq!(
            settle(&store, &row.id).await.status,
            "COMPLETE",
            "{}",
            db.name
        );
        let first = current_action_events(&store, &row.id).await;
        assert!(most_at_once(&first) <= 5, "{}: created in batches", db.name);

        update(&run.engine, "rolled", &rolling(20, 2, 5)).await;
        let done = settle(&store, &row.id).await;
        assert_eq!(
            done.status, "COMPLETE",
            "{}: {}",
            db.name, done.status_reason
        );
        let events = current_action_events(&store, &row.id).await;
        let most = most_at_once(&events);
        assert!(
            most <= 5,
            "{}: {most} members were being replaced at once",
            db.name
        );
        let replaced = events
            .iter()
            .filter(|e| e.status == "COMPLETE" && e.reason.starts_with("replaced"))
            .count();
        assert_eq!(replaced, 20, "{}", db.name);
        // Three pauses (between four batches), each a durable timer that waited.
        let pauses: Vec<&EventRow> = events
            .iter()
            .filter(|e| e.resource.as_deref().is_some_and(|r| r.contains("[pause-")))
            .filter(|e| e.status == "IN_PROGRESS")
            .collect();
        assert_eq!(pauses.len(), 3, "{}: {pauses:?}", db.name);
        let rows = store.resources(&row.id).await.unwrap();
        assert!(
            rows.iter().all(|r| !r.name.contains('/')),
            "{}: old members deleted",
            db.name
        );

        // Scaling is an update: up adds members, down removes the highest indices.
        update(&run.engine, "rolled", &rolling(23, 2, 5)).await;
        assert_eq!(settle(&store, &row.id).await.status, "COMPLETE");
        update(&run.engine, "rolled", &rolling(18, 2, 5)).await;
        assert_eq!(settle(&store, &row.id).await.status, "COMPLETE");
        let members: Vec<String> = store
            .resources(&row.id)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.name)
            .filter(|n| n.starts_with("web[") && !n.contains("pause"))
            .collect();
        let expected: std::collections::BTreeSet<String> =
            (0..18).map(|i| format!("web[{i}]")).collect();
        assert_eq!(
            members
                .into_iter()
                .collect::<std::collections::BTreeSet<_>>(),
            expected
        );
        run.shutdown().await;
        db.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_failure_continue_finishes_every_branch_that_does_not_need_the_failure() {
    use kiln::engine::StackOptions;
    use kiln::model::OnFailure;
    for db in backends().await {
        let run = start(&db.url, &[], 4).await;
        let store = run.engine.store().clone();
        let text = format!(
            "{}  child:\n    type: OS::Heat::TestResource\n    properties: {{value: {{get_attr: [r005, output]}}}}\n",
            many(40, Some(5))
        );
        let options = StackOptions {
            on_failure: OnFailure::Continue,
            ..Default::default()
        };
        let row = support::stacks::create_with(&run.engine, "wide", &text, options).await;
        let failed = settle(&store, &row.id).await;
        assert_eq!(failed.status, "FAILED", "{}", db.name);
        let states = states(&store, &row.id).await;
        let complete = states
            .values()
            .filter(|(s, _)| s == "CREATE_COMPLETE")
            .count();
        assert_eq!(
            complete, 39,
            "{}: every independent branch went on",
            db.name
        );
        assert_eq!(
            states["child"].0, "INIT_COMPLETE",
            "{}: its dependent did not",
            db.name
        );
        run.shutdown().await;
        db.cleanup().await;
    }
}

/// A stack whose resource `tweak` failed an in-place update (the cloud refused the PUT).
async fn failed_update(run: &Running, cloud: &FakeCloud, name: &str) -> (String, String) {
    let base = cloud.rule();
    let text = |size: u32| {
        [
            HEAD.to_string(),
            http("keep", "things", "{name: keep}"),
            http("tweak", "things", &format!("{{name: tweak, size: {size}}}")),
        ]
        .concat()
        .replace("BASE", &base)
    };
    let store = run.engine.store();
    let row = create(&run.engine, name, &text(1)).await;
    assert_eq!(settle(store, &row.id).await.status, "COMPLETE");
    cloud.inject(support::cloud::Inject::Status(400));
    update(&run.engine, name, &text(2)).await;
    let failed = settle(store, &row.id).await;
    assert_eq!(failed.status, "FAILED");
    let rows = store.resources(&row.id).await.unwrap();
    let tweak = rows.iter().find(|r| r.name == "tweak").unwrap();
    assert_eq!(
        format!("{}_{}", tweak.action, tweak.status),
        "UPDATE_FAILED"
    );
    let id = tweak.attributes.as_ref().unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    (row.id, id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_checks_a_failed_resource_then_updates_replaces_or_recreates_it() {
    for db in backends().await {
        let cloud = FakeCloud::start().await;
        let run = start(&db.url, &[cloud.rule()], 4).await;
        let store = run.engine.store().clone();
        let http_client = reqwest::Client::new();
        for case in ["intact", "drifted", "gone"] {
            let (stack, id) = failed_update(&run, &cloud, case).await;
            let item = format!("/things/{id}");
            match case {
                "drifted" => cloud.set_field(&id, "name", "changed by hand".into()),
                "gone" => {
                    let url = format!("{}{item}", cloud.rule());
                    http_client.delete(url).send().await.unwrap();
                }
                _ => {}
            }
            let seen = cloud.server().requests().len();
            run.engine.resume_stack(case).await.unwrap();
            let done = settle(&store, &stack).await;
            assert_eq!(
                done.status, "COMPLETE",
                "{} {case}: {}",
                db.name, done.status_reason
            );
            let requests: Vec<RequestRecord> = cloud.server().requests()[seen..].to_vec();
            let calls: Vec<String> = requests
                .iter()
                .map(|r| {
                    let path = if r.path == item {
                        "ITEM"
                    } else {
                        r.path.as_str()
                    };
                    format!("{} {path}", r.method)
                })
                .collect();
            let expected: &[&str] = match case {
                // Checked (GET), found as it was: the update runs again.
                "intact" => &["GET ITEM", "PUT ITEM"],
                // Found changed behind Kiln's back: a new object, the old one deleted last.
                "drifted" => &["GET ITEM", "POST /things", "DELETE ITEM"],
                // Found gone: created again, nothing to delete.
                _ => &["GET ITEM", "POST /things"],
            };
            assert_eq!(calls, expected, "{} {case}", db.name);
            let rows = store.resources(&stack).await.unwrap();
            assert!(
                rows.iter()
                    .all(|r| r.status == "COMPLETE" && !r.name.contains('/'))
            );
        }
        run.shutdown().await;
        db.cleanup().await;
    }
}

/// An update job keeps what it decided across its attempts (found by the chaos suite): here a
/// resource a failed update left FAILED has drifted, so its job decides to replace it; the
/// replacement's POST takes effect but its answer is lost; and on the next attempt the check
/// itself fails. Deciding again would now update the old object in place and leave the
/// replacement behind in the cloud, owned by nothing. The job must replace, with the same
/// idempotency key (the cloud replays the object it made), and delete the old object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_update_job_keeps_its_decision_and_leaves_no_object_behind() {
    for db in backends().await {
        let cloud = FakeCloud::start().await;
        let run = start(&db.url, &[cloud.rule()], 4).await;
        let store = run.engine.store().clone();
        let (stack, id) = failed_update(&run, &cloud, "sticky").await;
        cloud.set_field(&id, "name", "changed by hand".into());
        let seen = cloud.server().requests().len();
        // The check's GET finds the drift; the replacement's POST is handled, then answered
        // 503; the next attempt's check gets a 503.
        cloud.inject(support::cloud::Inject::Pass);
        cloud.inject(support::cloud::Inject::StatusAfterHandling(503));
        cloud.inject(support::cloud::Inject::Status(503));
        run.engine.resume_stack("sticky").await.unwrap();
        let done = settle(&store, &stack).await;
        assert_eq!(
            done.status, "COMPLETE",
            "{}: {}",
            db.name, done.status_reason
        );
        let item = format!("/things/{id}");
        let calls: Vec<String> = cloud.server().requests()[seen..]
            .iter()
            .map(|r| {
                let path = if r.path == item {
                    "ITEM"
                } else {
                    r.path.as_str()
                };
                format!("{} {path} {:?}", r.method, r.idempotency_key.is_some())
            })
            .collect();
        let posts: Vec<_> = cloud.server().requests()[seen..]
            .iter()
            .filter(|r| r.method == "POST")
            .map(|r| r.idempotency_key.clone())
            .collect();
        assert!(
            posts.len() >= 2 && posts.iter().all(|k| k.is_some() && *k == posts[0]),
            "{}: the replacement is POSTed again, with its key: {calls:?}",
            db.name
        );
        // `keep`, and tweak's replacement: the old object deleted, none left behind.
        let rows = store.resources(&stack).await.unwrap();
        let owned: Vec<String> = ids(&rows).into_values().collect();
        assert_eq!(cloud.objects(), 2, "{}: {calls:?}", db.name);
        assert!(cloud.object(&id).is_none(), "{}: {calls:?}", db.name);
        assert_eq!(owned.len(), 2, "{}: {rows:?}", db.name);
        assert!(
            owned.iter().all(|o| cloud.object(o).is_some()),
            "{}: {calls:?}",
            db.name
        );
        run.shutdown().await;
        db.cleanup().await;
    }
}

/// Under `on_failure: stop`, a job that started and waits to retry finishes (found by the
/// chaos suite): its replacement's POST took effect but the answer was lost, so dropping the job
/// would leave that object in the cloud, owned by nothing. Here `swap` is replaced (its POST
/// answered 503 after the object was made, the retry due 2 s later) while `bad` fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_under_stop_lets_started_jobs_finish_and_leaves_no_object_behind() {
    for db in backends().await {
        let cloud = FakeCloud::start().await;
        let base = cloud.rule();
        let config = Config::parse(
            "[retry.policies.slow]\ncomponent = \"fixed-interval\"\n\
             params = { interval_ms = 2000, max_attempts = 3 }\n\
             [[retry.rules]]\ntypes = [\"Kiln::HTTP::Resource\"]\npolicy = \"slow\"\n",
            "kiln.toml",
        )
        .unwrap();
        let run = start_with(config, &db.url, &[cloud.rule()], 4).await;
        let store = run.engine.store().clone();
        let text = |collection: &str, bad: bool| {
            let mut t = [HEAD.to_string(), http("swap", collection, "{name: swap}")].concat();
            if bad {
                t += "  bad:\n    type: OS::Heat::TestResource\n    \
                      properties: {fail: true, wait_secs: 0.5}\n";
            }
            t.replace("BASE", &base)
        };
        let row = create(&run.engine, "stopped", &text("things", false)).await;
        assert_eq!(settle(&store, &row.id).await.status, "COMPLETE");
        cloud.inject(support::cloud::Inject::StatusAfterHandling(503));
        update(&run.engine, "stopped", &text("others", true)).await;
        let done = settle(&store, &row.id).await;
        assert_eq!(done.status, "FAILED", "{}", db.name);
        let rows = store.resources(&row.id).await.unwrap();
        let owned: BTreeSet<String> = rows
            .iter()
            .filter_map(|r| r.attributes.as_ref()?["id"].as_str().map(str::to_string))
            .collect();
        let objects: BTreeSet<String> = cloud
            .server()
            .objects()
            .into_values()
            .flat_map(|objs| objs.into_keys())
            .collect();
        let summary: Vec<String> = rows
            .iter()
            .map(|r| format!("{} {}_{}", r.name, r.action, r.status))
            .collect();
        assert_eq!(
            objects, owned,
            "{}: every object in the cloud belongs to a resource: {summary:?}",
            db.name
        );
        run.shutdown().await;
        db.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_update_while_one_runs_is_refused_naming_the_first() {
    for db in backends().await {
        let run = start(&db.url, &[], 2).await;
        let store = run.engine.store().clone();
        let slow = "heat_template_version: 2021-04-16\nresources:\n  a:\n    type: OS::Heat::TestResource\n    properties: {value: VALUE, wait_secs: 2}\n";
        let row = create(&run.engine, "busy", &slow.replace("VALUE", "one")).await;
        assert_eq!(settle(&store, &row.id).await.status, "COMPLETE");
        update(&run.engine, "busy", &slow.replace("VALUE", "two")).await;
        let stack = validate(&slow.replace("VALUE", "three"), &run.engine);
        let sources = run.engine.sources(&row).await.unwrap();
        let second = run.engine.update_stack("busy", &stack, &sources).await;
        match second {
            Err(kiln::store::StoreError::ActionInProgress { action, .. }) => {
                assert_eq!(action, "UPDATE", "{}", db.name)
            }
            other => panic!("{}: expected ActionInProgress, got {other:?}", db.name),
        }
        let done = settle(&store, &row.id).await;
        assert_eq!(done.status, "COMPLETE");
        let a = &store.resources(&row.id).await.unwrap()[0];
        assert_eq!(
            a.attributes.as_ref().unwrap()["output"],
            "two",
            "{}",
            db.name
        );
        run.shutdown().await;
        db.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_finds_drift_and_loss_and_the_next_update_repairs_them() {
    for db in backends().await {
        let (cloud, base, run, store) = with_cloud(&db.url).await;
        let text = [
            HEAD.to_string(),
            http("fine", "things", "{name: fine}"),
            http("drifts", "things", "{name: drifts}"),
            http("lost", "things", "{name: lost}"),
        ]
        .concat()
        .replace("BASE", &base);
        let row = create(&run.engine, "checked", &text).await;
        assert_eq!(settle(&store, &row.id).await.status, "COMPLETE");
        let old = ids(&store.resources(&row.id).await.unwrap());
        cloud.set_field(&old["drifts"], "name", "edited by hand".into());
        let lost = format!("{base}/things/{}", old["lost"]);
        reqwest::Client::new().delete(lost).send().await.unwrap();

        run.engine.check_stack("checked").await.unwrap();
        let checked = settle(&store, &row.id).await;
        assert_eq!(
            (checked.action.as_str(), checked.status.as_str()),
            ("CHECK", "FAILED"),
            "{}",
            db.name
        );
        let rows: HashMap<String, kiln::store::ResourceRow> = store
            .resources(&row.id)
            .await
            .unwrap()
            .into_iter()
            .map(|r| (r.name.clone(), r))
            .collect();
        let status = |n: &str| format!("{}_{}", rows[n].action, rows[n].status);
        assert_eq!(status("fine"), "CHECK_COMPLETE", "{}", db.name);
        assert_eq!(status("drifts"), "CHECK_FAILED");
        assert!(
            rows["drifts"]
                .status_reason
                .contains("body.name is \"edited by hand\""),
            "{}",
            rows["drifts"].status_reason
        );
        assert_eq!(status("lost"), "CHECK_FAILED");
        assert_eq!(rows["lost"].status_reason, "its object is gone");

        // The next update (here: resume, to the same template) repairs both; `fine` is left.
        let seen = cloud.server().requests().len();
        run.engine.resume_stack("checked").await.unwrap();
        let done = settle(&store, &row.id).await;
        assert_eq!(
            done.status, "COMPLETE",
            "{}: {}",
            db.name, done.status_reason
        );
        let requests: Vec<RequestRecord> = cloud.server().requests()[seen..].to_vec();
        assert!(requests.iter().all(|r| !r.path.ends_with(&old["fine"])));
        assert_eq!(
            calls_on(&requests, "POST", "/things").len(),
            2,
            "{}",
            db.name
        );
        let old_drifted = format!("/things/{}", old["drifts"]);
        assert_eq!(calls_on(&requests, "DELETE", &old_drifted).len(), 1);
        assert_eq!(cloud.objects(), 3, "{}", db.name);

        run.engine.check_stack("checked").await.unwrap();
        assert_eq!(
            settle(&store, &row.id).await.status,
            "COMPLETE",
            "{}",
            db.name
        );
        run.shutdown().await;
        db.cleanup().await;
    }
}

fn rollback_on() -> kiln::engine::StackOptions {
    kiln::engine::StackOptions {
        rollback: true,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_update_rolls_back_to_the_previous_template_reusing_what_it_replaced() {
    for db in backends().await {
        let (cloud, base, run, store) = with_cloud(&db.url).await;
        let v1 = [
            HEAD.to_string(),
            http("keep", "things", "{name: keep}"),
            http("tweak", "things", "{name: tweak, size: 1}"),
            http("swap", "things", "{name: swap}"),
        ]
        .concat()
        .replace("BASE", &base);
        let v2 = [
            HEAD.to_string(),
            http("keep", "things", "{name: keep}"),
            http("tweak", "things", "{name: tweak, size: 2}"),
            http("swap", "others", "{name: swap}"),
            http("added", "things", "{name: added}"),
            "  broken:\n    type: OS::Heat::TestResource\n    depends_on: [added, swap, tweak]\n    properties: {fail: true}\n".into(),
        ]
        .concat()
        .replace("BASE", &base);
        let row = support::stacks::create_with(&run.engine, "rolled", &v1, rollback_on()).await;
        assert_eq!(settle(&store, &row.id).await.status, "COMPLETE");
        let old = ids(&store.resources(&row.id).await.unwrap());

        let stack = validate(&v2, &run.engine);
        let mut sources = run.engine.sources(&row).await.unwrap();
        sources.template_text = v2.clone();
        run.engine
            .update_stack("rolled", &stack, &sources)
            .await
            .unwrap();
        // The update fails at `broken`, and the rollback starts by itself and ends.
        let what = "the rollback to end";
        let end = support::procs::wait_for(std::time::Duration::from_secs(180), what, async || {
            let r = store.find_stack(&row.id).await.unwrap();
            (r.action == "ROLLBACK" && r.status != "IN_PROGRESS").then_some(r)
        })
        .await;
        assert_eq!(end.status, "COMPLETE", "{}: {}", db.name, end.status_reason);
        let events = store.events(&row.id, 0).await.unwrap();
        let failed = events
            .iter()
            .find(|e| e.resource.is_none() && e.action == "UPDATE" && e.status == "FAILED")
            .expect("the update failed");
        assert!(
            failed.reason.ends_with("; rolling back"),
            "{}",
            failed.reason
        );

        // Back to v1's objects: the original `swap` restored (no third object), `tweak` PUT
        // back, and what v2 made deleted.
        let now = ids(&store.resources(&row.id).await.unwrap());
        assert_eq!(
            now, old,
            "{}: the same objects as before the update",
            db.name
        );
        assert_eq!(cloud.objects(), 3, "{}: nothing v2 made is left", db.name);
        assert_eq!(cloud.object(&old["tweak"]).unwrap()["size"], 1);
        let restored = events
            .iter()
            .find(|e| e.resource.as_deref() == Some("swap") && e.reason.starts_with("restored"))
            .expect("swap restored");
        assert!(restored.reason.contains("no call needed"));
        let posts = cloud
            .server()
            .requests()
            .iter()
            .filter(|r| r.method == "POST")
            .count();
        assert_eq!(
            posts,
            3 + 2,
            "{}: v1's three, then v2's swap and added",
            db.name
        );
        run.shutdown().await;
        db.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_create_with_rollback_deletes_what_it_made() {
    for db in backends().await {
        let (cloud, base, run, store) = with_cloud(&db.url).await;
        let text = [
            HEAD.to_string(),
            http("a", "things", "{name: a}"),
            http("b", "things", "{name: b, peer: {get_attr: [a, id]}}"),
            "  broken:\n    type: OS::Heat::TestResource\n    depends_on: [b]\n    properties: {fail: true}\n".into(),
        ]
        .concat()
        .replace("BASE", &base);
        let row = support::stacks::create_with(&run.engine, "doomed", &text, rollback_on()).await;
        let end = support::procs::wait_for(
            std::time::Duration::from_secs(180),
            "rollback",
            async || {
                let r = store.find_stack(&row.id).await.unwrap();
                (r.action == "ROLLBACK" && r.status != "IN_PROGRESS").then_some(r)
            },
        )
        .await;
        assert_eq!(end.status, "COMPLETE", "{}: {}", db.name, end.status_reason);
        assert_eq!(cloud.objects(), 0, "{}", db.name);
        assert!(
            store.resources(&row.id).await.unwrap().is_empty(),
            "{}",
            db.name
        );
        // Dependents went first.
        let requests = cloud.server().requests();
        let deletes: Vec<&RequestRecord> =
            requests.iter().filter(|r| r.method == "DELETE").collect();
        assert_eq!(deletes.len(), 2);
        let b_id = requests[1].created.clone().unwrap();
        assert!(deletes[0].path.ends_with(&b_id), "{}: b before a", db.name);
        run.shutdown().await;
        db.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_rolls_back_unless_told_not_to() {
    for db in backends().await {
        let run = start(&db.url, &[], 4).await;
        let store = run.engine.store().clone();
        // `a` takes a while to update; `b` waits for it, so a cancel finds it not started.
        let text = |wait: u32| {
            format!(
                "{HEAD}  a:\n    type: OS::Heat::TestResource\n    properties: {{value: v{wait}, wait_secs: {wait}}}\n  \
                 b:\n    type: OS::Heat::TestResource\n    properties: {{value: {{get_attr: [a, output]}}}}\n"
            )
        };
        for rollback in [true, false] {
            let name = format!("cancelled-{rollback}");
            let row =
                support::stacks::create_with(&run.engine, &name, &text(0), rollback_on()).await;
            assert_eq!(settle(&store, &row.id).await.status, "COMPLETE");
            let stack = validate(&text(3), &run.engine);
            let sources = run.engine.sources(&row).await.unwrap();
            run.engine
                .update_stack(&name, &stack, &sources)
                .await
                .unwrap();
            support::procs::wait_until(
                std::time::Duration::from_secs(60),
                "a to start",
                async || store.resources(&row.id).await.unwrap()[0].status == "IN_PROGRESS",
            )
            .await;
            store.cancel(&row.id, "tester", rollback).await.unwrap();
            let what = "the update and what follows it to end";
            let end =
                support::procs::wait_for(std::time::Duration::from_secs(180), what, async || {
                    let r = store.find_stack(&row.id).await.unwrap();
                    let settled = r.status != "IN_PROGRESS" && !r.rollback_pending;
                    settled.then_some(r)
                })
                .await;
            let got = format!("{}_{}", end.action, end.status);
            if rollback {
                assert_eq!(
                    got, "ROLLBACK_COMPLETE",
                    "{}: {}",
                    db.name, end.status_reason
                );
            } else {
                assert_eq!(
                    (got.as_str(), end.status_reason.as_str()),
                    ("UPDATE_FAILED", "Stack UPDATE cancelled"),
                    "{}",
                    db.name
                );
            }
        }
        run.shutdown().await;
        db.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_configured_delete_first_is_replaced_old_object_first() {
    for db in backends().await {
        let cloud = FakeCloud::start().await;
        let base = cloud.rule();
        let config = Config::parse(
            "[plugins.http-resource]\nreplace = \"delete-first\"\n",
            "kiln.toml",
        )
        .unwrap();
        let run = start_with(config, &db.url, &[cloud.rule()], 4).await;
        let store = run.engine.store().clone();
        let text = |collection: &str| {
            [HEAD.to_string(), http("only", collection, "{name: only}")]
                .concat()
                .replace("BASE", &base)
        };
        let row = create(&run.engine, "unique", &text("things")).await;
        assert_eq!(settle(&store, &row.id).await.status, "COMPLETE");
        let old = ids(&store.resources(&row.id).await.unwrap());
        let new = validate(&text("others"), &run.engine);
        let (_, plan) = run.engine.preview("unique", &new).await.unwrap();
        assert!(
            plan[0]
                .reason
                .ends_with("(the old object is deleted first)"),
            "{plan:?}"
        );

        let seen = cloud.server().requests().len();
        update(&run.engine, "unique", &text("others")).await;
        let done = settle(&store, &row.id).await;
        assert_eq!(
            done.status, "COMPLETE",
            "{}: {}",
            db.name, done.status_reason
        );
        let calls: Vec<String> = cloud.server().requests()[seen..]
            .iter()
            .map(|r| format!("{} {}", r.method, r.path))
            .collect();
        assert_eq!(
            calls,
            [
                format!("DELETE /things/{}", old["only"]),
                "POST /others".to_string()
            ],
            "{}",
            db.name
        );
        assert_eq!(cloud.objects(), 1);
        let rows = store.resources(&row.id).await.unwrap();
        assert_eq!(rows.len(), 1, "{}: nothing left to clean up", db.name);
        run.shutdown().await;
        db.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resource_timeout_fires_from_another_engine_and_spares_the_rest() {
    use kiln::engine::StackOptions;
    use kiln::model::OnFailure;
    for db in backends().await {
        let first = start(&db.url, &[], 4).await;
        let store = first.engine.store().clone();
        let text = format!(
            "{HEAD}  slow:\n    type: OS::Heat::TestResource\n    timeout: 3s\n    properties: {{wait_secs: 600}}\n  \
             quick:\n    type: OS::Heat::TestResource\n    properties: {{wait_secs: 1}}\n"
        );
        let options = StackOptions {
            on_failure: OnFailure::Continue,
            ..Default::default()
        };
        let row = support::stacks::create_with(&first.engine, "timed", &text, options).await;
        support::procs::wait_until(
            std::time::Duration::from_secs(60),
            "slow to start",
            async || {
                let rows = store.resources(&row.id).await.unwrap();
                rows.iter()
                    .any(|r| r.name == "slow" && r.status == "IN_PROGRESS")
            },
        )
        .await;
        // The engine that started it goes away; the deadline is in the database.
        let gone = first.engine.id().to_string();
        first.shutdown().await;
        let second = start(&db.url, &[], 4).await;
        let end = settle(&store, &row.id).await;
        assert_eq!(end.status, "FAILED", "{}", db.name);
        let rows: HashMap<String, kiln::store::ResourceRow> = store
            .resources(&row.id)
            .await
            .unwrap()
            .into_iter()
            .map(|r| (r.name.clone(), r))
            .collect();
        assert_eq!(rows["slow"].status, "FAILED");
        assert_eq!(
            rows["slow"].status_reason, "timed out after 3 s (the resource's timeout)",
            "{}",
            db.name
        );
        assert_eq!(
            rows["quick"].status, "COMPLETE",
            "{}: its own work is spared",
            db.name
        );
        let failed = store
            .events(&row.id, 0)
            .await
            .unwrap()
            .into_iter()
            .find(|e| e.resource.as_deref() == Some("slow") && e.status == "FAILED")
            .unwrap();
        assert_ne!(failed.engine.as_deref(), Some(gone.as_str()), "{}", db.name);
        second.shutdown().await;
        db.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_update_supersedes_one_in_progress_when_asked() {
    for db in backends().await {
        let run = start(&db.url, &[], 4).await;
        let store = run.engine.store().clone();
        let text = |value: &str, wait: u32| {
            format!(
                "{HEAD}  a:\n    type: OS::Heat::TestResource\n    properties: {{value: {value}, wait_secs: {wait}}}\n  \
                 b:\n    type: OS::Heat::TestResource\n    properties: {{value: {{get_attr: [a, output]}}}}\n"
            )
        };
        let row = create(&run.engine, "moving", &text("one", 0)).await;
        assert_eq!(settle(&store, &row.id).await.status, "COMPLETE");
        // An update that would take ten minutes on `a`...
        update(&run.engine, "moving", &text("two", 600)).await;
        support::procs::wait_until(
            std::time::Duration::from_secs(60),
            "a to start",
            async || store.resources(&row.id).await.unwrap()[0].status == "IN_PROGRESS",
        )
        .await;
        // ... is refused a plain second update, and superseded by an explicit one.
        let newer = validate(&text("three", 0), &run.engine);
        let sources = run.engine.sources(&row).await.unwrap();
        assert!(matches!(
            run.engine.update_stack("moving", &newer, &sources).await,
            Err(kiln::store::StoreError::ActionInProgress { .. })
        ));
        let superseding = run
            .engine
            .supersede_stack("moving", &newer, &sources)
            .await
            .unwrap();
        assert_eq!(superseding.traversal, row.traversal + 2);
        let done = settle(&store, &row.id).await;
        assert_eq!(
            (done.action.as_str(), done.status.as_str()),
            ("UPDATE", "COMPLETE"),
            "{}: {}",
            db.name,
            done.status_reason
        );
        let rows = store.resources(&row.id).await.unwrap();
        assert_eq!(
            rows[1].attributes.as_ref().unwrap()["output"],
            "three",
            "{}",
            db.name
        );
        let events = store.events(&row.id, 0).await.unwrap();
        assert!(
            events
                .iter()
                .any(|e| e.resource.is_none()
                    && e.reason.contains("superseding the UPDATE in progress")),
            "{}",
            db.name
        );
        // The superseded traversal's poll was dropped: nothing of it is left.
        let left =
            support::procs::wait_for(std::time::Duration::from_secs(5), "jobs", async || {
                Some(store.next_due_in().await.unwrap())
            })
            .await;
        assert_eq!(left, None, "{}: no job left", db.name);
        run.shutdown().await;
        db.cleanup().await;
    }
}
