//! Slot claims, batched: every claim this worker has due goes to one task that sends them to the
//! store many to a transaction ([`distcron_ledger::claim_slots`]), with at most
//! `--max-claim-txns-in-flight` transactions in flight. Claims that come due while those are out
//! wait here and leave together in the next one (group commit), so a second in which hundreds of
//! slots are due costs the store a handful of transactions, not hundreds.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use distcron_kv::KvError;
use distcron_ledger::{
    claim_slots, SlotAction, SlotClaim, SlotOutcome, MAX_CLAIMS_PER_TXN, MAX_TXN_OPS,
};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use distcron_core::Keys;
use distcron_kv::KvStore;

use crate::cluster::latency::ClaimLatency;

/// How long one claim transaction may take before its claims are answered "timed out" (and
/// retried by their callers), at least; see [`attempt_timeout`].
const CLAIM_ATTEMPT_TIMEOUT: Duration = Duration::from_millis(700);
/// The longest a claim transaction is given however slow claims have become.
const CLAIM_ATTEMPT_TIMEOUT_CAP: Duration = Duration::from_secs(3);
/// How long after its time a slot whose claim keeps failing is retried.
pub const CLAIM_RETRY_WINDOW: Duration = Duration::from_secs(30);

/// One slot claim waiting for its transaction.
#[derive(Debug)]
pub struct ClaimRequest {
    /// The claim.
    pub claim: SlotClaim,
    /// Whether the job's ledger key is believed to exist.
    pub ledger_exists: bool,
    /// The W3C `traceparent` of the span waiting for the answer.
    pub traceparent: String,
    /// Where the answer goes.
    pub reply: oneshot::Sender<Result<SlotOutcome, KvError>>,
}

/// How long one claim transaction may take: [`CLAIM_ATTEMPT_TIMEOUT`], or twice what answered
/// claims take lately when the store is that slow (capped), so an overloaded store is not sent
/// the same claims again while the first transaction is still queued. Transactions that timed
/// out do not count towards the average, so a dying member does not stretch the timeout.
pub fn attempt_timeout(latency: &ClaimLatency) -> Duration {
    (latency.average() * 2).clamp(CLAIM_ATTEMPT_TIMEOUT, CLAIM_ATTEMPT_TIMEOUT_CAP)
}

/// Takes the next batch: requests left over from the last one first, then whatever has arrived;
/// requests whose caller gave up are dropped, and a second claim of a job already in the batch
/// waits for the next one (a transaction names each key once), as does a claim whose compares
/// would take the batch over [`MAX_TXN_OPS`].
fn take_batch(
    waiting: &mut VecDeque<ClaimRequest>,
    requests: &mut mpsc::Receiver<ClaimRequest>,
) -> Vec<ClaimRequest> {
    let mut batch = Vec::new();
    let mut jobs = HashSet::new();
    let mut compares = 0;
    let mut later = VecDeque::new();
    while batch.len() < MAX_CLAIMS_PER_TXN {
        let Some(request) = waiting.pop_front().or_else(|| requests.try_recv().ok()) else {
            break;
        };
        if request.reply.is_closed() {
            continue;
        }
        let adds = request.claim.compares();
        if compares + adds > MAX_TXN_OPS {
            later.push_back(request);
            break;
        }
        if jobs.insert(request.claim.job.clone()) {
            compares += adds;
            batch.push(request);
        } else {
            later.push_back(request);
        }
    }
    later.append(waiting);
    *waiting = later;
    batch
}

/// What the claim batcher sends claims with.
#[derive(Clone)]
pub struct Batcher {
    /// The store.
    pub store: Arc<dyn KvStore>,
    /// Its key layout.
    pub keys: Keys,
    /// Where each answered transaction's duration goes.
    pub latency: Arc<ClaimLatency>,
    /// Most claim transactions in flight at once.
    pub max_in_flight: usize,
}

/// Sends batches of claims until `stop`, then waits for the transactions in flight.
pub async fn batch(
    batcher: Batcher,
    mut requests: mpsc::Receiver<ClaimRequest>,
    stop: CancellationToken,
) {
    let in_flight = Arc::new(Semaphore::new(batcher.max_in_flight));
    let transactions = TaskTracker::new();
    let mut waiting = VecDeque::new();
    loop {
        // A free transaction first: the claims that arrive meanwhile join the batch.
        let permit = tokio::select! {
            permit = in_flight.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
            () = stop.cancelled() => break,
        };
        if waiting.is_empty() {
            tokio::select! {
                request = requests.recv() => match request {
                    Some(r) => waiting.push_back(r),
                    None => break,
                },
                () = stop.cancelled() => break,
            }
        }
        let claims = take_batch(&mut waiting, &mut requests);
        if !claims.is_empty() {
            transactions.spawn(send(batcher.clone(), claims, permit));
        }
    }
    transactions.close();
    transactions.wait().await;
}

/// Sends one batch and answers each of its claims. A transaction that takes longer than
/// [`attempt_timeout`] answers its run claims "timed out" (they are sent again under the same run
/// id, which recognises an attempt that applied), but its skips wait for the store's answer: a
/// skip leaves no mark of its own, so one sent again could not tell its own applied attempt from
/// another worker's claim of the slot.
async fn send(batcher: Batcher, batch: Vec<ClaimRequest>, _permit: OwnedSemaphorePermit) {
    let (claims, traces): (Vec<_>, Vec<_>) = batch
        .iter()
        .map(|r| ((r.claim.clone(), r.ledger_exists), r.traceparent.clone()))
        .unzip();
    let span = tracing::info_span!("claim_txn", claims = claims.len());
    distcron_telemetry::join_or_link(&span, traces);
    let started = Instant::now();
    let mut txn = std::pin::pin!(
        claim_slots(batcher.store.as_ref(), &batcher.keys, &claims).instrument(span)
    );
    let waiting = batch;
    let result = match tokio::time::timeout(attempt_timeout(&batcher.latency), &mut txn).await {
        Ok(result) => result,
        Err(_) => {
            let timed_out = KvError::Unavailable("claim timed out".into());
            let mut skips = Vec::new();
            for request in waiting {
                if request.claim.action == SlotAction::Skip {
                    skips.push(Some(request));
                } else {
                    skips.push(None);
                    let _ = request.reply.send(Err(timed_out.clone()));
                }
            }
            observe(&batcher, started.elapsed(), false);
            if skips.iter().all(Option::is_none) {
                return;
            }
            let result = txn.await;
            answer(skips, result);
            return;
        }
    };
    observe(&batcher, started.elapsed(), result.is_ok());
    answer(waiting.into_iter().map(Some).collect(), result);
}

/// Records how long a claim transaction took (towards the timeout only if it was answered).
fn observe(batcher: &Batcher, took: Duration, answered: bool) {
    if answered {
        batcher.latency.observe(took);
    }
    distcron_metrics::worker()
        .claim_duration
        .observe(took.as_secs_f64());
}

/// Answers the requests still waiting (`None`: answered already), in the order of the batch.
fn answer(requests: Vec<Option<ClaimRequest>>, result: Result<Vec<SlotOutcome>, KvError>) {
    match result {
        Ok(outcomes) => {
            for (request, outcome) in requests.into_iter().zip(outcomes) {
                if let Some(request) = request {
                    let _ = request.reply.send(Ok(outcome));
                }
            }
        }
        Err(e) => {
            for request in requests.into_iter().flatten() {
                let _ = request.reply.send(Err(e.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use distcron_core::records::RunTrigger;

    fn request(
        job: &str,
    ) -> (
        ClaimRequest,
        oneshot::Receiver<Result<SlotOutcome, KvError>>,
    ) {
        let (reply, answer) = oneshot::channel();
        let claim = SlotClaim {
            job: job.to_owned(),
            job_revision: 1,
            slot_ms: 1_000,
            run_id: format!("run-{job}"),
            worker_id: "w".into(),
            session: 1,
            now_ms: 0,
            trigger: RunTrigger::Schedule,
            forbid_overlap: false,
            expect: distcron_ledger::LedgerExpect::Before,
            action: distcron_ledger::SlotAction::Run,
        };
        let r = ClaimRequest {
            claim,
            ledger_exists: true,
            traceparent: String::new(),
            reply,
        };
        (r, answer)
    }

    fn jobs(batch: &[ClaimRequest]) -> Vec<&str> {
        batch.iter().map(|r| r.claim.job.as_str()).collect()
    }

    #[test]
    fn a_batch_takes_leftovers_first_skips_abandoned_claims_and_names_each_job_once() {
        let (tx, mut rx) = mpsc::channel(100);
        let mut waiting = VecDeque::new();
        let mut answers = Vec::new();
        let (left, a) = request("left");
        waiting.push_back(left);
        answers.push(a);
        for job in ["a", "gone", "b", "a", "c"] {
            let (r, answer) = request(job);
            tx.try_send(r).unwrap_or_else(|_| panic!("channel full"));
            if job != "gone" {
                answers.push(answer);
            }
        }
        let batch = take_batch(&mut waiting, &mut rx);
        assert_eq!(jobs(&batch), ["left", "a", "b", "c"]);
        assert_eq!(
            jobs(waiting.make_contiguous()),
            ["a"],
            "the second claim of a waits"
        );
        let next = take_batch(&mut waiting, &mut rx);
        assert_eq!(jobs(&next), ["a"]);
        assert!(take_batch(&mut waiting, &mut rx).is_empty());
    }

    #[test]
    fn a_batch_holds_no_more_compares_than_a_transaction_takes() {
        let (tx, mut rx) = mpsc::channel(200);
        let mut answers = Vec::new();
        for i in 0..MAX_CLAIMS_PER_TXN {
            let (mut r, answer) = request(&format!("j{i}"));
            r.claim.forbid_overlap = true;
            r.claim.expect = distcron_ledger::LedgerExpect::Reached(0);
            tx.try_send(r).unwrap_or_else(|_| panic!("channel full"));
            answers.push(answer);
        }
        let mut waiting = VecDeque::new();
        let first = take_batch(&mut waiting, &mut rx);
        assert_eq!(first.len(), MAX_TXN_OPS / 4, "four compares each");
        let compares: usize = first.iter().map(|r| r.claim.compares()).sum();
        assert!(compares <= MAX_TXN_OPS);
        let second = take_batch(&mut waiting, &mut rx);
        assert_eq!(first.len() + second.len(), MAX_CLAIMS_PER_TXN, "none lost");
    }

    #[test]
    fn a_batch_holds_at_most_one_transaction_of_claims() {
        let (tx, mut rx) = mpsc::channel(200);
        let mut answers = Vec::new();
        for i in 0..MAX_CLAIMS_PER_TXN + 5 {
            let (r, answer) = request(&format!("j{i}"));
            tx.try_send(r).unwrap_or_else(|_| panic!("channel full"));
            answers.push(answer);
        }
        let mut waiting = VecDeque::new();
        assert_eq!(take_batch(&mut waiting, &mut rx).len(), MAX_CLAIMS_PER_TXN);
        assert_eq!(take_batch(&mut waiting, &mut rx).len(), 5);
    }
}
