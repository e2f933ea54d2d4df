//! The stack lifecycle after create, on both backends with real plugins: update (what is
//! unchanged, updated in place, replaced or removed is decided from the schema and proven by
//! the calls the fake cloud saw), preview (no call, and the same decisions the update then
//! makes), and recovery from a failed action without redoing what worked.

mod support;

use std::collections::{BTreeMap, HashMap};

use kiln::config::{Config, EngineConfig};
use kiln::engine::Engine;
use kiln::fault_server::RequestRecord;
use kiln::store::{EventRow, Store};
use support::cloud::FakeCloud;
use support::db::backends;
use support::stacks::{Running, create, run, settle, update, validate};

async fn start(url: &str, allow: &[String], workers: u32) -> Running {
    let plugins = support::stacks::plugins(Config::default(), allow).await;
    let store = Store::open(url).await.unwrap();
    let config = EngineConfig {
        workers,
        ..EngineConfig::default()
    };
    run(&Engine::new(store, plugins, config))
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
        http("user", "things", "{name: user, peer: {get_attr: [swap, id]}}"),
        http("gone", "things", "{name: gone}"),
        http("gone_child", "things", "{name: gone_child, parent: {get_attr: [gone, id]}}"),
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
        http("user", "things", "{name: user, peer: {get_attr: [swap, id]}}"),
        http("added", "things", "{name: added}"),
    ]
    .concat();
    text.replace("BASE", base)
}

fn ids(store_rows: &[kiln::store::ResourceRow]) -> HashMap<String, String> {
    store_rows
        .iter()
        .map(|r| {
            let id = r.attributes.as_ref().unwrap()["id"].as_str().unwrap().to_string();
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
        let cloud = FakeCloud::start().await;
        let base = cloud.rule();
        let run = start(&db.url, &[cloud.rule()], 4).await;
        let store = run.engine.store().clone();
        let row = create(&run.engine, "web", &before(&base)).await;
        assert_eq!(settle(&store, &row.id).await.status, "COMPLETE", "{}", db.name);
        let old = ids(&store.resources(&row.id).await.unwrap());
        let seen = cloud.server().requests().len();

        // The preview calls nothing and says what will happen, and why.
        let new = validate(&after(&base), &run.engine);
        let (_, plan) = run.engine.preview("web", &new).await.unwrap();
        assert_eq!(cloud.server().requests().len(), seen, "{}: preview made a call", db.name);
        let planned: BTreeMap<String, String> = plan
            .iter()
            .map(|c| (c.resource.clone(), c.action.clone()))
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
            user.properties[0].new.to_string().contains("known after apply"),
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
        assert_eq!(did, expected, "{}: the update did what the preview said", db.name);

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
        assert_eq!(calls_on(&requests, "POST", "/things").len(), 1, "only `added`");
        let now = ids(&store.resources(&row.id).await.unwrap());
        assert_ne!(now["swap"], old["swap"], "{}: swap has a new object", db.name);
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
        assert_eq!(names, ["added", "keep", "swap", "tweak", "user"], "{}", db.name);

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
