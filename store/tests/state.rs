//! The flow state store, each test once per backend from one body: get,
//! list by prefix in pages, batches applied whole or not at all, limits,
//! flows kept apart, and a fenced batch refused once the lease moved on.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod common;

use std::time::Duration;

use common::Db;
use serde_json::{Value, json};
use sluice_store::{
    Acquired, LeaseGrant, StateBatch, StateError, StateKey, StateQuery, StateWrite, StoreError,
};

fn key(k: &str) -> StateKey {
    StateKey::try_from(k).unwrap()
}

fn set(k: &str, v: Value) -> StateWrite {
    StateWrite::Set {
        key: key(k),
        value: v,
    }
}

fn batch(writes: Vec<StateWrite>) -> StateBatch {
    StateBatch {
        writes,
        run_id: Some("r1".into()),
        fence: None,
        history: Vec::new(),
    }
}

fn query(prefix: &str, after: Option<&str>, limit: usize) -> StateQuery {
    StateQuery {
        prefix: prefix.into(),
        start_after: after.map(str::to_string),
        limit,
    }
}

both!(
    values_are_set_read_and_deleted_per_flow,
    a_prefix_is_listed_in_byte_order_in_pages,
    a_batch_lands_whole_or_not_at_all,
    a_fenced_batch_is_refused_once_the_lease_moved_on,
    a_large_batch_writing_keys_twice_applies_in_its_order,
    values_read_as_text_are_the_documents_stored,
);

async fn values_read_as_text_are_the_documents_stored(db: Db) {
    let s = &db.store;
    let doc = json!({"z": 1, "a": [true, null, "é\n"], "m": {"k": 1.5}});
    let writes = vec![set("p/1", doc.clone()), set("p/2", json!("two"))];
    s.state_apply("sync", batch(writes)).await.unwrap();
    let text = s.state_get_text("sync", &key("p/1")).await.unwrap();
    let text = text.expect("set");
    assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), doc);
    assert_eq!(s.state_get_text("sync", &key("p/3")).await.unwrap(), None);
    let page = s
        .state_list_text("sync", &query("p/", None, 1))
        .await
        .unwrap();
    assert!(page.more);
    assert_eq!(page.entries.len(), 1);
    assert_eq!(page.entries[0].key, "p/1");
    assert_eq!(page.entries[0].value, text);
    let page = s
        .state_list_text("sync", &query("p/", Some("p/1"), 10))
        .await
        .unwrap();
    assert!(!page.more);
    assert_eq!(page.entries[0].value, "\"two\"");
}

async fn values_are_set_read_and_deleted_per_flow(db: Db) {
    let s = &db.store;
    let doc = json!({"z": 1, "a": [true, null, "é"], "m": {"k": 1.5}});
    s.state_apply("sync", batch(vec![set("person:ada", doc.clone())]))
        .await
        .unwrap();
    let got = s.state_get("sync", &key("person:ada")).await.unwrap();
    assert_eq!(got, Some(doc.clone()));
    // Key order of a stored document is kept as written.
    assert_eq!(got.unwrap().to_string(), doc.to_string());
    // Flows are kept apart.
    assert_eq!(
        s.state_get("other", &key("person:ada")).await.unwrap(),
        None
    );
    // A set again replaces; a delete removes; deleting nothing is fine.
    s.state_apply("sync", batch(vec![set("person:ada", json!(2))]))
        .await
        .unwrap();
    assert_eq!(
        s.state_get("sync", &key("person:ada")).await.unwrap(),
        Some(json!(2))
    );
    let deletes = vec![
        StateWrite::Delete {
            key: key("person:ada"),
        },
        StateWrite::Delete {
            key: key("never-set"),
        },
    ];
    s.state_apply("sync", batch(deletes)).await.unwrap();
    assert_eq!(s.state_get("sync", &key("person:ada")).await.unwrap(), None);
    // The longest key there may be, in multi-byte characters.
    let long = "é".repeat(256);
    s.state_apply("sync", batch(vec![set(&long, json!("x"))]))
        .await
        .unwrap();
    assert_eq!(
        s.state_get("sync", &key(&long)).await.unwrap(),
        Some(json!("x"))
    );
    // Another handle (another replica) sees what was committed.
    let other = db.reopen().await;
    assert_eq!(
        other.state_get("sync", &key(&long)).await.unwrap(),
        Some(json!("x"))
    );
}

async fn a_prefix_is_listed_in_byte_order_in_pages(db: Db) {
    let s = &db.store;
    // Byte order: upper case before lower case, ASCII before multi-byte;
    // a locale's collation would mix them.
    let keys = [
        "user:B",
        "user:a",
        "user:b",
        "user:é",
        "user:\u{1F600}",
        "user;",
        "usea",
        "user:",
        "x",
    ];
    let writes = keys.iter().map(|k| set(k, json!(k))).collect();
    s.state_apply("f", batch(writes)).await.unwrap();
    let page = s.state_list("f", &query("user:", None, 100)).await.unwrap();
    let listed: Vec<&str> = page.entries.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(
        listed,
        vec![
            "user:",
            "user:B",
            "user:a",
            "user:b",
            "user:é",
            "user:\u{1F600}"
        ]
    );
    assert!(!page.more);
    assert_eq!(page.entries[1].value, json!("user:B"));
    // Paged two at a time with start_after.
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = s
            .state_list("f", &query("user:", after.as_deref(), 2))
            .await
            .unwrap();
        assert!(page.entries.len() <= 2);
        seen.extend(page.entries.iter().map(|e| e.key.clone()));
        after = page.entries.last().map(|e| e.key.clone());
        if !page.more {
            break;
        }
    }
    assert_eq!(seen, listed);
    // An empty prefix lists the flow's keys; start_after below the prefix
    // changes nothing; a limit of 0 still returns a page of one.
    let all = s.state_list("f", &query("", None, 100)).await.unwrap();
    assert_eq!(all.entries.len(), keys.len());
    let below = s
        .state_list("f", &query("user:", Some("a"), 100))
        .await
        .unwrap();
    assert_eq!(below.entries.len(), 6);
    let one = s.state_list("f", &query("", None, 0)).await.unwrap();
    assert_eq!((one.entries.len(), one.more), (1, true));
    assert!(
        s.state_list("nobody", &query("", None, 5))
            .await
            .unwrap()
            .entries
            .is_empty()
    );
}

async fn a_batch_lands_whole_or_not_at_all(db: Db) {
    let s = &db.store;
    s.state_apply("f", batch(vec![set("a", json!(1))]))
        .await
        .unwrap();
    let big = Value::String("x".repeat(sluice_store::state::MAX_VALUE_BYTES));
    let err = s
        .state_apply("f", batch(vec![set("a", json!(2)), set("b", big)]))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::State(StateError::ValueTooLarge { .. })),
        "{err:?}"
    );
    assert_eq!(s.state_get("f", &key("a")).await.unwrap(), Some(json!(1)));
    assert_eq!(s.state_get("f", &key("b")).await.unwrap(), None);
    // In order: a set then a delete of one key leaves nothing.
    let writes = vec![set("c", json!(1)), StateWrite::Delete { key: key("c") }];
    s.state_apply("f", batch(writes)).await.unwrap();
    assert_eq!(s.state_get("f", &key("c")).await.unwrap(), None);
    // Keys are checked where they are made.
    assert!(StateKey::try_from("k".repeat(513)).is_err());
    assert!(StateKey::try_from("").is_err());
}

async fn a_fenced_batch_is_refused_once_the_lease_moved_on(db: Db) {
    let s = &db.store;
    let grant = |run: &str| LeaseGrant {
        flow: "f".into(),
        replica: "one".into(),
        token: "t".into(),
        host: None,
        pid: None,
        run_id: run.into(),
    };
    let ttl = Duration::from_secs(60);
    let Acquired::Granted { fence, .. } = s.acquire_lease(&grant("r1"), ttl).await.unwrap() else {
        panic!("the lease was free")
    };
    let fenced = |f| StateBatch {
        fence: Some(f),
        ..batch(vec![set("k", json!("first"))])
    };
    s.state_apply("f", fenced(fence)).await.unwrap();
    s.release_lease("f", fence).await.unwrap();
    let Acquired::Granted { fence: next, .. } = s.acquire_lease(&grant("r2"), ttl).await.unwrap()
    else {
        panic!("the lease was released")
    };
    assert_eq!(next, fence + 1);
    let late = StateBatch {
        fence: Some(fence),
        ..batch(vec![set("k", json!("late"))])
    };
    let err = s.state_apply("f", late).await.unwrap_err();
    assert!(matches!(err, StoreError::Fenced { .. }), "{err:?}");
    assert_eq!(
        s.state_get("f", &key("k")).await.unwrap(),
        Some(json!("first"))
    );
}

/// A first run's shape: more keys than one statement takes (PostgreSQL
/// writes a run of keys per statement), then keys written again, deleted,
/// and set after their delete, all in one batch.
async fn a_large_batch_writing_keys_twice_applies_in_its_order(db: Db) {
    let s = &db.store;
    let mut writes: Vec<StateWrite> = (0..25_000)
        .map(|i| set(&format!("managed/{i:05}"), json!({"procore_id": i})))
        .collect();
    let delete = |k: &str| StateWrite::Delete { key: key(k) };
    writes.extend([
        set("managed/00005", json!("again")),
        delete("managed/00006"),
        set("managed/00006", json!("back")),
        delete("managed/00007"),
        set("managed/00005", json!("last")),
    ]);
    s.state_apply("f", batch(writes)).await.unwrap();
    let get = |k: &'static str| async move { s.state_get("f", &key(k)).await.unwrap() };
    assert_eq!(get("managed/00005").await, Some(json!("last")));
    assert_eq!(get("managed/00006").await, Some(json!("back")));
    assert_eq!(get("managed/00007").await, None);
    assert_eq!(
        get("managed/24999").await,
        Some(json!({"procore_id": 24999}))
    );
    let (mut count, mut after) = (0, None);
    loop {
        let page = s
            .state_list("f", &query("managed/", after.as_deref(), 1000))
            .await
            .unwrap();
        count += page.entries.len();
        after = page.entries.last().map(|e| e.key.clone());
        if !page.more {
            break;
        }
    }
    assert_eq!(count, 24_999);
}
