//! Job writes (save, delete, pause and resume) and trigger requests, against a real etcd and
//! against the embedded store.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::on_both_stores;
use distcron_core::records::{DeletedJob, RunTrigger, TriggerRequest};
use distcron_core::{JobDefinition, Keys};
use distcron_kv::KvStore;
use distcron_ledger::{
    claim_slot, delete_job, load_job, pending_deletions, request_trigger, save_job,
    set_job_enabled, JobError, JobSave, LedgerExpect, SlotClaim, SlotOutcome,
};
use distcron_testkit::unique_name;

on_both_stores!(
    a_save_creates_replaces_and_refuses_a_stale_revision,
    a_save_keeps_what_the_client_did_not_send,
    concurrent_saves_expecting_one_revision_have_one_winner,
    a_delete_leaves_a_tombstone_and_drops_only_its_own_triggers,
    a_delete_refuses_a_stale_revision_and_a_missing_job,
    pausing_writes_once_and_keeps_the_definition,
    a_trigger_request_names_the_revision_it_was_asked_for,
    an_unreadable_job_is_reported_and_a_save_replaces_it
);

fn keys() -> Keys {
    Keys::new(&format!("/{}/", unique_name("jobs")))
}

/// A valid job definition as a client sends it.
fn definition(name: &str, command: &str) -> JobDefinition {
    let json = format!(r#"{{"name":"{name}","command":"{command}","cronExpr":"*/5 * * * * *"}}"#);
    JobDefinition::from_json(json.as_bytes()).unwrap()
}

/// A save of `job` that sends neither `enabled` nor a secret environment.
fn save_of(job: JobDefinition, expected_revision: Option<i64>) -> JobSave {
    JobSave {
        job,
        enabled_sent: false,
        secret_env_sent: false,
        expected_revision,
        trace_parent: String::new(),
    }
}

async fn a_save_creates_replaces_and_refuses_a_stale_revision(store: Arc<dyn KvStore>) {
    let (s, keys) = (store.as_ref(), keys());
    let created = save_job(s, &keys, &save_of(definition("j", "echo 1"), Some(0)))
        .await
        .unwrap();
    assert!(created.previous.is_none(), "a new job replaces nothing");
    let first = created.saved;
    assert!(first.revision > 0);
    assert!(first.job.enabled, "a new job is enabled");
    assert!(first.job.created_at > 0 && first.job.updated_at == first.job.created_at);
    assert_eq!(load_job(s, &keys, "j").await.unwrap(), first);

    // Create-only over an existing job, and a stale revision: refused, nothing written.
    for expected in [0, first.revision + 1000] {
        match save_job(
            s,
            &keys,
            &save_of(definition("j", "echo 2"), Some(expected)),
        )
        .await
        {
            Err(JobError::RevisionChanged {
                name,
                expected: e,
                actual,
            }) => {
                assert_eq!((name.as_str(), e, actual), ("j", expected, first.revision));
            }
            other => panic!("expected a conflict, got {other:?}"),
        }
    }
    assert_eq!(load_job(s, &keys, "j").await.unwrap(), first);
    // A revision expected of a job that does not exist: it is at revision 0.
    match save_job(s, &keys, &save_of(definition("absent", "echo"), Some(7))).await {
        Err(JobError::RevisionChanged { actual, .. }) => assert_eq!(actual, 0),
        other => panic!("expected a conflict, got {other:?}"),
    }

    // The current revision, then no expectation at all: both replace, returning what they replaced.
    let second = save_job(
        s,
        &keys,
        &save_of(definition("j", "echo 2"), Some(first.revision)),
    )
    .await
    .unwrap();
    assert_eq!(second.previous.as_ref(), Some(&first));
    assert!(second.saved.revision > first.revision);
    assert_eq!(second.saved.job.command, "echo 2");
    assert_eq!(second.saved.job.created_at, first.job.created_at);
    let third = save_job(s, &keys, &save_of(definition("j", "echo 3"), None))
        .await
        .unwrap();
    assert_eq!(third.previous, Some(second.saved));
    assert_eq!(load_job(s, &keys, "j").await.unwrap(), third.saved);

    // An invalid definition is refused with its field.
    let mut bad = definition("j", "echo 4");
    bad.cron_expr = "not a schedule".into();
    match save_job(s, &keys, &save_of(bad, None)).await {
        Err(JobError::Invalid(e)) => assert!(e.field.starts_with("cronExpr"), "{e}"),
        other => panic!("expected an invalid field, got {other:?}"),
    }
    assert_eq!(load_job(s, &keys, "j").await.unwrap(), third.saved);
}

async fn a_save_keeps_what_the_client_did_not_send(store: Arc<dyn KvStore>) {
    let (s, keys) = (store.as_ref(), keys());
    let mut job = definition("j", "echo");
    job.secret_env.insert("TOKEN".into(), "s3cret".into());
    let sent = JobSave {
        secret_env_sent: true,
        trace_parent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
        ..save_of(job, None)
    };
    let first = save_job(s, &keys, &sent).await.unwrap().saved;
    assert_eq!(first.job.trace_parent, sent.trace_parent);
    let paused = set_job_enabled(s, &keys, "j", false, "").await.unwrap();
    assert!(paused.written);

    // Neither `enabled` nor secrets sent: the stored ones stay.
    let kept = save_job(s, &keys, &save_of(definition("j", "echo 2"), None))
        .await
        .unwrap()
        .saved;
    assert!(!kept.job.enabled, "a paused job stays paused");
    assert_eq!(kept.job.secret_env.get("TOKEN").unwrap(), "s3cret");
    assert_eq!(kept.job.trace_parent, "");

    // Sent: `enabled` is the client's; an empty secret keeps its stored value; a new name with
    // no value is refused, and nothing is written.
    let mut job = definition("j", "echo 3");
    job.secret_env.insert("TOKEN".into(), String::new());
    let resumed = JobSave {
        enabled_sent: true,
        secret_env_sent: true,
        ..save_of(job.clone(), None)
    };
    let saved = save_job(s, &keys, &resumed).await.unwrap().saved;
    assert!(saved.job.enabled);
    assert_eq!(saved.job.secret_env.get("TOKEN").unwrap(), "s3cret");
    job.secret_env.insert("OTHER".into(), String::new());
    match save_job(
        s,
        &keys,
        &JobSave {
            job,
            ..resumed.clone()
        },
    )
    .await
    {
        Err(JobError::Invalid(e)) => assert_eq!(e.field, "secretEnv.OTHER"),
        other => panic!("expected an invalid field, got {other:?}"),
    }
    assert_eq!(load_job(s, &keys, "j").await.unwrap(), saved);
}

async fn concurrent_saves_expecting_one_revision_have_one_winner(store: Arc<dyn KvStore>) {
    let keys = keys();
    let created = save_job(
        store.as_ref(),
        &keys,
        &save_of(definition("j", "echo"), Some(0)),
    )
    .await
    .unwrap()
    .saved;
    let mut tasks = Vec::new();
    for w in 0..5 {
        let (store, keys) = (store.clone(), keys.clone());
        let save = save_of(
            definition("j", &format!("echo {w}")),
            Some(created.revision),
        );
        tasks.push(tokio::spawn(async move {
            save_job(store.as_ref(), &keys, &save).await
        }));
    }
    let mut winners = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            Ok(saved) => winners.push(saved.saved),
            Err(JobError::RevisionChanged { expected, .. }) => {
                assert_eq!(expected, created.revision);
            }
            Err(other) => panic!("unexpected {other}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one writer wins");
    assert_eq!(
        load_job(store.as_ref(), &keys, "j").await.unwrap(),
        winners[0]
    );
}

async fn a_delete_leaves_a_tombstone_and_drops_only_its_own_triggers(store: Arc<dyn KvStore>) {
    let (s, keys) = (store.as_ref(), keys());
    let job = save_job(s, &keys, &save_of(definition("j", "echo"), None))
        .await
        .unwrap()
        .saved;
    // "j2" shares the prefix "j": its trigger must survive the delete of "j".
    save_job(s, &keys, &save_of(definition("j2", "echo"), None))
        .await
        .unwrap();
    let trigger = request_trigger(s, &keys, "j", "").await.unwrap();
    let other = request_trigger(s, &keys, "j2", "").await.unwrap();
    // A run in progress, and the ledger it moved.
    let session = s.grant_lease(Duration::from_secs(30)).await.unwrap();
    let claim = SlotClaim {
        job: "j".into(),
        job_revision: job.revision,
        slot_ms: 1_000,
        run_id: "r1".into(),
        worker_id: "w1".into(),
        session,
        now_ms: 1_000,
        trigger: RunTrigger::Schedule,
        forbid_overlap: false,
        expect: LedgerExpect::Before,
        action: distcron_ledger::SlotAction::Run,
    };
    assert!(matches!(
        claim_slot(s, &keys, &claim, false).await.unwrap(),
        SlotOutcome::Won(_)
    ));

    let deletion = delete_job(s, &keys, "j", None).await.unwrap();
    assert_eq!(deletion.deleted, job);
    assert_eq!(deletion.running_run_ids, ["r1"]);
    assert!(s.get(&keys.job("j")).await.unwrap().is_none());
    assert!(
        s.get(&keys.trigger("j", &trigger.run_id))
            .await
            .unwrap()
            .is_none(),
        "its trigger is dropped"
    );
    assert!(
        s.get(&keys.trigger("j2", &other.run_id))
            .await
            .unwrap()
            .is_some(),
        "another job's trigger stays"
    );
    assert!(
        s.get(&keys.ledger("j")).await.unwrap().is_some(),
        "the ledger stays until the deletion is settled"
    );
    let tombstone = s.get(&keys.deleted("j")).await.unwrap().unwrap();
    let tombstone: DeletedJob = serde_json::from_slice(&tombstone.value).unwrap();
    assert_eq!(tombstone.job, job.job);
    assert!(tombstone.deleted_at_ms > 0);
    let pending = pending_deletions(s, &keys).await.unwrap();
    assert_eq!(
        pending.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
        ["j"]
    );
}

async fn a_delete_refuses_a_stale_revision_and_a_missing_job(store: Arc<dyn KvStore>) {
    let (s, keys) = (store.as_ref(), keys());
    let job = save_job(s, &keys, &save_of(definition("j", "echo"), None))
        .await
        .unwrap()
        .saved;
    match delete_job(s, &keys, "j", Some(job.revision + 1000)).await {
        Err(JobError::RevisionChanged {
            expected, actual, ..
        }) => assert_eq!((expected, actual), (job.revision + 1000, job.revision)),
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(load_job(s, &keys, "j").await.unwrap(), job, "not deleted");
    assert!(s.get(&keys.deleted("j")).await.unwrap().is_none());
    let deletion = delete_job(s, &keys, "j", Some(job.revision)).await.unwrap();
    assert!(deletion.running_run_ids.is_empty());
    for result in [
        delete_job(s, &keys, "j", None).await.map(|_| ()),
        load_job(s, &keys, "j").await.map(|_| ()),
        set_job_enabled(s, &keys, "j", false, "").await.map(|_| ()),
        request_trigger(s, &keys, "j", "").await.map(|_| ()),
    ] {
        match result {
            Err(JobError::NotFound { name }) => assert_eq!(name, "j"),
            other => panic!("expected not found, got {other:?}"),
        }
    }
}

async fn pausing_writes_once_and_keeps_the_definition(store: Arc<dyn KvStore>) {
    let (s, keys) = (store.as_ref(), keys());
    let job = save_job(s, &keys, &save_of(definition("j", "echo"), None))
        .await
        .unwrap()
        .saved;
    let paused = set_job_enabled(s, &keys, "j", false, "00-trace")
        .await
        .unwrap();
    assert!(paused.written);
    assert!(paused.stored.revision > job.revision);
    assert!(!paused.stored.job.enabled);
    assert_eq!(paused.stored.job.trace_parent, "00-trace");
    assert!(paused.stored.job.updated_at >= job.job.updated_at);
    assert_eq!(paused.stored.job.command, job.job.command);
    assert_eq!(paused.stored.job.created_at, job.job.created_at);
    assert_eq!(load_job(s, &keys, "j").await.unwrap(), paused.stored);
    // Already paused: no write, the stored job as it is.
    let again = set_job_enabled(s, &keys, "j", false, "").await.unwrap();
    assert!(!again.written);
    assert_eq!(again.stored, paused.stored);
    let resumed = set_job_enabled(s, &keys, "j", true, "").await.unwrap();
    assert!(resumed.written && resumed.stored.job.enabled);
}

async fn a_trigger_request_names_the_revision_it_was_asked_for(store: Arc<dyn KvStore>) {
    let (s, keys) = (store.as_ref(), keys());
    let job = save_job(s, &keys, &save_of(definition("j", "echo"), None))
        .await
        .unwrap()
        .saved;
    let first = request_trigger(s, &keys, "j", "00-trace").await.unwrap();
    let second = request_trigger(s, &keys, "j", "").await.unwrap();
    assert_ne!(first.run_id, second.run_id, "each request is its own run");
    assert_eq!(first.job_revision, job.revision);
    assert_eq!(first.trace_parent, "00-trace");
    assert!(first.slot_ms > 0);
    let stored = s
        .get(&keys.trigger("j", &first.run_id))
        .await
        .unwrap()
        .unwrap();
    let stored: TriggerRequest = serde_json::from_slice(&stored.value).unwrap();
    assert_eq!(stored, first);
}

async fn an_unreadable_job_is_reported_and_a_save_replaces_it(store: Arc<dyn KvStore>) {
    let (s, keys) = (store.as_ref(), keys());
    s.put(&keys.job("j"), b"not json".to_vec(), None)
        .await
        .unwrap();
    for result in [
        load_job(s, &keys, "j").await.map(|_| ()),
        delete_job(s, &keys, "j", None).await.map(|_| ()),
        set_job_enabled(s, &keys, "j", false, "").await.map(|_| ()),
        request_trigger(s, &keys, "j", "").await.map(|_| ()),
    ] {
        match result {
            Err(e @ JobError::Unreadable { .. }) => assert!(
                e.to_string()
                    .starts_with(&format!("stored job at {} is not valid: ", keys.job("j"))),
                "{e}"
            ),
            other => panic!("expected unreadable, got {other:?}"),
        }
    }
    let saved = save_job(s, &keys, &save_of(definition("j", "echo"), None))
        .await
        .unwrap();
    assert!(
        saved.previous.is_none(),
        "an unreadable definition is not returned"
    );
    assert_eq!(load_job(s, &keys, "j").await.unwrap(), saved.saved);
}
