//! The behavioural suite every [`KvStore`] implementation must pass.
//!
//! Each test takes a store and a key prefix of its own, so the tests can share one server.
//! [`kv_conformance_tests!`](crate::kv_conformance_tests) generates one `#[tokio::test]` per test
//! for an implementation.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic, missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;

use crate::{
    Compactor, CompareOp, CompareTarget, Condition, KvError, KvStore, Op, OpResult, RangeRequest,
    Txn, WatchEventKind,
};

/// A store under test.
pub type Store = Arc<dyn KvStore>;

/// Generates the suite for one implementation: `kv_conformance_tests!(async_factory_fn)` where
/// the factory returns `(Store, String /* unique prefix */)`.
#[macro_export]
macro_rules! kv_conformance_tests {
    ($factory:path) => {
        $crate::kv_conformance_tests!(@tests $factory;
            put_get_delete, range_pages_in_key_order, txn_create_if_absent,
            txn_value_compare_orders_padded_numbers, txn_prefix_compare, lease_revoke_deletes_keys,
            lease_expires_without_keep_alive, watch_replays_in_order,
            watch_sees_lease_expiry_in_one_batch, range_at_revision_is_a_snapshot,
            follow_prefix_starts_with_the_listing, txn_refuses_more_than_max_ops);
    };
    (@tests $factory:path; $($name:ident),*) => {
        $(
            #[tokio::test]
            async fn $name() {
                let (store, prefix) = $factory().await;
                $crate::conformance::$name(store, prefix).await;
            }
        )*
    };
}

pub async fn put_get_delete(store: Store, p: String) {
    let k = format!("{p}/a");
    assert!(store.get(&k).await.unwrap().is_none());
    assert!(store.put(&k, b"1".to_vec(), None).await.unwrap().is_none());
    let first = store.get(&k).await.unwrap().unwrap();
    assert_eq!(first.value, b"1");
    assert_eq!(first.version, 1);
    let prev = store.put(&k, b"2".to_vec(), None).await.unwrap().unwrap();
    assert_eq!(prev.value, b"1");
    let second = store.get(&k).await.unwrap().unwrap();
    assert_eq!(second.create_revision, first.create_revision);
    assert!(second.mod_revision > first.mod_revision);
    assert_eq!(second.version, 2);
    let deleted = store.delete(&k).await.unwrap().unwrap();
    assert_eq!(deleted.value, b"2");
    assert!(store.get(&k).await.unwrap().is_none());
    assert!(store.delete(&k).await.unwrap().is_none());
}

pub async fn range_pages_in_key_order(store: Store, p: String) {
    for name in ["c", "a", "e", "b", "d"] {
        store
            .put(&format!("{p}/r/{name}"), name.as_bytes().to_vec(), None)
            .await
            .unwrap();
    }
    // A key outside the prefix that sorts right after it must not leak in.
    store
        .put(&format!("{p}/r0"), b"x".to_vec(), None)
        .await
        .unwrap();
    let prefix = format!("{p}/r/");
    let page1 = store
        .range(RangeRequest {
            prefix: prefix.clone(),
            limit: 2,
            ..Default::default()
        })
        .await
        .unwrap();
    let keys = |r: &crate::RangeResponse| -> Vec<String> {
        r.kvs
            .iter()
            .map(|kv| kv.key.trim_start_matches(&prefix).to_owned())
            .collect()
    };
    assert_eq!(keys(&page1), ["a", "b"]);
    assert!(page1.more);
    let page2 = store
        .range(RangeRequest {
            prefix: prefix.clone(),
            start_after: page1.kvs.last().map(|kv| kv.key.clone()),
            limit: 2,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(keys(&page2), ["c", "d"]);
    let rest = store
        .range(RangeRequest {
            prefix: prefix.clone(),
            start_after: page2.kvs.last().map(|kv| kv.key.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(keys(&rest), ["e"]);
    assert!(!rest.more);
    let keys_only = store
        .range(RangeRequest {
            prefix: prefix.clone(),
            keys_only: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(keys_only.kvs.len(), 5);
    assert!(keys_only.kvs.iter().all(|kv| kv.value.is_empty()));
}

pub async fn txn_create_if_absent(store: Store, p: String) {
    let k = format!("{p}/lock");
    let create = |v: &'static str| Txn {
        when: vec![Condition::absent(&k)],
        then: vec![Op::put(&k, v)],
        otherwise: vec![Op::get(&k)],
    };
    let a = store.txn(create("A")).await.unwrap();
    assert!(a.succeeded);
    let b = store.txn(create("B")).await.unwrap();
    assert!(!b.succeeded);
    assert_eq!(b.got(0)[0].value, b"A");
    // Compare-and-swap on the mod revision.
    let current = store.get(&k).await.unwrap().unwrap();
    let swap = |rev| Txn {
        when: vec![Condition::unchanged(&k, rev)],
        then: vec![Op::put(&k, "C")],
        otherwise: vec![],
    };
    assert!(
        store
            .txn(swap(current.mod_revision))
            .await
            .unwrap()
            .succeeded
    );
    assert!(
        !store
            .txn(swap(current.mod_revision))
            .await
            .unwrap()
            .succeeded
    );
    assert_eq!(store.get(&k).await.unwrap().unwrap().value, b"C");
}

pub async fn txn_refuses_more_than_max_ops(store: Store, p: String) {
    let k = format!("{p}/many");
    let compares = |n: usize| Txn {
        when: (0..n).map(|_| Condition::absent(&k)).collect(),
        then: vec![Op::put(&k, "x")],
        otherwise: vec![],
    };
    let err = store
        .txn(compares(crate::MAX_TXN_OPS + 1))
        .await
        .expect_err("one compare too many");
    assert!(err.to_string().contains("too many operations"), "{err}");
    assert!(!err.is_retryable());
    assert!(store.get(&k).await.unwrap().is_none(), "nothing applied");
    assert!(
        store
            .txn(compares(crate::MAX_TXN_OPS))
            .await
            .unwrap()
            .succeeded
    );
    let reads = Txn {
        when: vec![],
        then: (0..=crate::MAX_TXN_OPS).map(|_| Op::get(&k)).collect(),
        otherwise: vec![],
    };
    assert!(store.txn(reads).await.is_err(), "one read too many");
}

pub async fn txn_value_compare_orders_padded_numbers(store: Store, p: String) {
    // The slot ledger stores zero-padded numbers and claims with `value < candidate`.
    let k = format!("{p}/ledger");
    let pad = |n: i64| format!("{n:020}").into_bytes();
    store.put(&k, pad(1_000), None).await.unwrap();
    let claim = |n: i64| Txn {
        when: vec![Condition::key(
            &k,
            CompareTarget::Value(pad(n)),
            CompareOp::Less,
        )],
        then: vec![Op::put(&k, pad(n))],
        otherwise: vec![Op::get(&k)],
    };
    assert!(!store.txn(claim(999)).await.unwrap().succeeded);
    assert!(!store.txn(claim(1_000)).await.unwrap().succeeded);
    assert!(store.txn(claim(10_000)).await.unwrap().succeeded);
    // A value compare on a missing key is false.
    let missing = Txn {
        when: vec![Condition::key(
            format!("{p}/none"),
            CompareTarget::Value(pad(5)),
            CompareOp::Less,
        )],
        then: vec![],
        otherwise: vec![],
    };
    assert!(!store.txn(missing).await.unwrap().succeeded);
}

pub async fn txn_prefix_compare(store: Store, p: String) {
    let running = format!("{p}/running/");
    let guarded = |v: &'static str| Txn {
        when: vec![Condition::no_keys_under(&running)],
        then: vec![Op::put(format!("{p}/out"), v)],
        otherwise: vec![Op::get_prefix(&running)],
    };
    assert!(store.txn(guarded("first")).await.unwrap().succeeded);
    store
        .put(&format!("{running}r1"), b"x".to_vec(), None)
        .await
        .unwrap();
    let blocked = store.txn(guarded("second")).await.unwrap();
    assert!(!blocked.succeeded);
    assert_eq!(blocked.got(0).len(), 1);
    // A key that merely shares the prefix's characters outside it does not count.
    store.delete(&format!("{running}r1")).await.unwrap();
    store
        .put(&format!("{p}/running0"), b"x".to_vec(), None)
        .await
        .unwrap();
    assert!(store.txn(guarded("third")).await.unwrap().succeeded);
    // Deletes return what they removed.
    store
        .put(&format!("{running}a"), b"1".to_vec(), None)
        .await
        .unwrap();
    store
        .put(&format!("{running}b"), b"2".to_vec(), None)
        .await
        .unwrap();
    let del = store
        .txn(Txn {
            when: vec![],
            then: vec![Op::Delete {
                key: running.clone(),
                prefix: true,
            }],
            otherwise: vec![],
        })
        .await
        .unwrap();
    match &del.results[0] {
        OpResult::Delete(kvs) => assert_eq!(kvs.len(), 2),
        other => panic!("unexpected {other:?}"),
    }
}

pub async fn lease_revoke_deletes_keys(store: Store, p: String) {
    let lease = store.grant_lease(Duration::from_secs(30)).await.unwrap();
    store
        .put(&format!("{p}/l/a"), b"1".to_vec(), Some(lease))
        .await
        .unwrap();
    store
        .put(&format!("{p}/l/b"), b"2".to_vec(), Some(lease))
        .await
        .unwrap();
    assert_eq!(
        store.get(&format!("{p}/l/a")).await.unwrap().unwrap().lease,
        lease
    );
    assert!(store.keep_alive(lease).await.unwrap() > Duration::ZERO);
    store.revoke_lease(lease).await.unwrap();
    assert!(store.get(&format!("{p}/l/a")).await.unwrap().is_none());
    assert!(store.get(&format!("{p}/l/b")).await.unwrap().is_none());
    let renewed = store.keep_alive(lease).await;
    assert!(
        matches!(renewed, Err(KvError::LeaseNotFound(_))),
        "{renewed:?}"
    );
    assert!(matches!(
        store
            .put(&format!("{p}/l/c"), b"3".to_vec(), Some(lease))
            .await,
        Err(KvError::LeaseNotFound(_))
    ));
    // Revoking twice is not an error.
    store.revoke_lease(lease).await.unwrap();
}

pub async fn lease_expires_without_keep_alive(store: Store, p: String) {
    let k = format!("{p}/ephemeral");
    let lease = store.grant_lease(Duration::from_secs(2)).await.unwrap();
    store.put(&k, b"1".to_vec(), Some(lease)).await.unwrap();
    // Kept alive, it outlives its TTL.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(900)).await;
        store.keep_alive(lease).await.unwrap();
    }
    assert!(store.get(&k).await.unwrap().is_some());
    // Not kept alive, it is gone within a few seconds of its TTL.
    let mut gone = false;
    for _ in 0..80 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if store.get(&k).await.unwrap().is_none() {
            gone = true;
            break;
        }
    }
    assert!(gone, "leased key outlived its lease by more than 8 s");
}

pub async fn watch_replays_in_order(store: Store, p: String) {
    let prefix = format!("{p}/w/");
    let start = store
        .range(RangeRequest {
            prefix: prefix.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    store
        .put(&format!("{prefix}a"), b"1".to_vec(), None)
        .await
        .unwrap();
    store
        .put(&format!("{prefix}a"), b"2".to_vec(), None)
        .await
        .unwrap();
    store
        .put(&format!("{prefix}b"), b"3".to_vec(), None)
        .await
        .unwrap();
    store.delete(&format!("{prefix}a")).await.unwrap();
    // Replayed from history.
    let mut w = store.watch(&prefix, start.revision + 1).await.unwrap();
    let mut events = Vec::new();
    while events.len() < 4 {
        let batch = tokio::time::timeout(Duration::from_secs(5), w.next())
            .await
            .expect("watch events within 5 s")
            .expect("stream open")
            .unwrap();
        events.extend(batch.events);
    }
    let summary: Vec<(WatchEventKind, String, Vec<u8>)> = events
        .iter()
        .map(|e| {
            (
                e.kind,
                e.kv.key.trim_start_matches(&prefix).to_owned(),
                e.kv.value.clone(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (WatchEventKind::Put, "a".into(), b"1".to_vec()),
            (WatchEventKind::Put, "a".into(), b"2".to_vec()),
            (WatchEventKind::Put, "b".into(), b"3".to_vec()),
            (WatchEventKind::Delete, "a".into(), Vec::new()),
        ]
    );
    assert!(events
        .windows(2)
        .all(|w| w[0].kv.mod_revision < w[1].kv.mod_revision));
    // Live events arrive too, and keys outside the prefix do not.
    store
        .put(&format!("{p}/other"), b"x".to_vec(), None)
        .await
        .unwrap();
    store
        .put(&format!("{prefix}c"), b"4".to_vec(), None)
        .await
        .unwrap();
    let live = tokio::time::timeout(Duration::from_secs(5), w.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(live.events.len(), 1);
    assert_eq!(live.events[0].kv.key, format!("{prefix}c"));
    assert_eq!(live.events[0].kv.value, b"4");
}

pub async fn follow_prefix_starts_with_the_listing(store: Store, p: String) {
    let prefix = format!("{p}/f/");
    for key in ["a", "b"] {
        store
            .put(&format!("{prefix}{key}"), key.as_bytes().to_vec(), None)
            .await
            .unwrap();
    }
    let mut followed = crate::follow_prefix(store.clone(), prefix.clone());
    let first = tokio::time::timeout(Duration::from_secs(5), followed.next())
        .await
        .expect("the listing within 5 s")
        .expect("stream open");
    let crate::ResilientWatchEvent::Snapshot { kvs, revision } = first else {
        panic!("the first item is not the listing: {first:?}");
    };
    let keys: Vec<&str> = kvs
        .iter()
        .map(|kv| kv.key.trim_start_matches(&prefix))
        .collect();
    assert_eq!(keys, ["a", "b"]);
    assert!(revision >= kvs.iter().map(|kv| kv.mod_revision).max().unwrap_or(0));
    // Changes after the listing follow it, none repeated.
    store
        .put(&format!("{prefix}c"), b"c".to_vec(), None)
        .await
        .unwrap();
    let next = tokio::time::timeout(Duration::from_secs(5), followed.next())
        .await
        .expect("the change within 5 s")
        .expect("stream open");
    let crate::ResilientWatchEvent::Batch(batch) = next else {
        panic!("expected a batch of changes: {next:?}");
    };
    let changed: Vec<&str> = batch.events.iter().map(|e| e.kv.key.as_str()).collect();
    assert_eq!(changed, [format!("{prefix}c")]);
}

pub async fn watch_sees_lease_expiry_in_one_batch(store: Store, p: String) {
    let prefix = format!("{p}/session/");
    let lease = store.grant_lease(Duration::from_secs(30)).await.unwrap();
    store
        .put(&format!("{prefix}worker"), b"w".to_vec(), Some(lease))
        .await
        .unwrap();
    store
        .put(&format!("{prefix}run1"), b"r1".to_vec(), Some(lease))
        .await
        .unwrap();
    store
        .put(&format!("{prefix}run2"), b"r2".to_vec(), Some(lease))
        .await
        .unwrap();
    let mut w = store.watch(&prefix, 0).await.unwrap();
    store.revoke_lease(lease).await.unwrap();
    let batch = tokio::time::timeout(Duration::from_secs(5), w.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(batch.events.len(), 3, "{batch:?}");
    assert!(batch
        .events
        .iter()
        .all(|e| e.kind == WatchEventKind::Delete));
    let rev = batch.events[0].kv.mod_revision;
    assert!(
        batch.events.iter().all(|e| e.kv.mod_revision == rev),
        "one revision for the whole lease"
    );
}

pub async fn range_at_revision_is_a_snapshot(store: Store, p: String) {
    let prefix = format!("{p}/snap/");
    store
        .put(&format!("{prefix}a"), b"1".to_vec(), None)
        .await
        .unwrap();
    store
        .put(&format!("{prefix}b"), b"1".to_vec(), None)
        .await
        .unwrap();
    let first = store
        .range(RangeRequest {
            prefix: prefix.clone(),
            limit: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    store
        .put(&format!("{prefix}b"), b"2".to_vec(), None)
        .await
        .unwrap();
    store
        .put(&format!("{prefix}c"), b"new".to_vec(), None)
        .await
        .unwrap();
    let second = store
        .range(RangeRequest {
            prefix: prefix.clone(),
            start_after: first.kvs.last().map(|kv| kv.key.clone()),
            at_revision: first.revision,
            ..Default::default()
        })
        .await
        .unwrap();
    let values: Vec<&[u8]> = second.kvs.iter().map(|kv| kv.value.as_slice()).collect();
    assert_eq!(
        values,
        vec![b"1".as_slice()],
        "page 2 must see page 1's revision"
    );
    let (all, _) = crate::list_prefix(store.as_ref(), &prefix).await.unwrap();
    assert_eq!(all.len(), 3);
}

/// Compaction discards history store-wide, so this test needs a store of its own: it is not in
/// [`kv_conformance_tests!`](crate::kv_conformance_tests), whose tests share one server.
pub async fn compaction_rounds_take_turns_and_drop_old_revisions(store: Store, p: String) {
    let k = format!("{p}/k");
    store.put(&k, b"1".to_vec(), None).await.unwrap();
    let old = store.get(&k).await.unwrap().unwrap().mod_revision;
    let counter = format!("{p}/compaction");
    let (mut a, mut b) = (Compactor::new(&counter), Compactor::new(&counter));
    // a takes the first round, with nothing to compact yet; b sees that a peer took it.
    assert_eq!(a.round(store.as_ref()).await.unwrap(), None);
    assert_eq!(b.round(store.as_ref()).await.unwrap(), None);
    store.put(&k, b"2".to_vec(), None).await.unwrap();
    // a's next round compacts to the revision it saw in its first; b's finds a took it again.
    let compacted = a.round(store.as_ref()).await.unwrap().expect("a compacts");
    assert!(compacted > old);
    assert_eq!(b.round(store.as_ref()).await.unwrap(), None);
    let gone = store
        .range(RangeRequest {
            prefix: k.clone(),
            at_revision: old,
            ..Default::default()
        })
        .await;
    assert!(matches!(gone, Err(KvError::Compacted(_))), "{gone:?}");
    assert!(watch_ends_compacted(&store, &k, old).await);
    assert_eq!(store.get(&k).await.unwrap().unwrap().value, b"2");
    // Compacting where the history is already compacted is not an error.
    store.compact(compacted).await.unwrap();
    // Once a stops, b takes the rounds.
    let by_b = b.round(store.as_ref()).await.unwrap().expect("b compacts");
    assert!(by_b > compacted);
}

/// Whether a watch from `revision` ends with [`KvError::Compacted`], when opened or (etcd) as its
/// first item.
async fn watch_ends_compacted(store: &Store, key: &str, revision: i64) -> bool {
    match store.watch(key, revision).await {
        Err(e) => matches!(e, KvError::Compacted(_)),
        Ok(mut w) => matches!(
            tokio::time::timeout(Duration::from_secs(5), w.next()).await,
            Ok(Some(Err(KvError::Compacted(_))))
        ),
    }
}
