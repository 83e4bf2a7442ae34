//! Rendezvous (highest-random-weight) hashing: every worker ranks the live workers for a key the
//! same way, so one is preferred for each (job, slot) and the others only stand by.

/// FNV-1a, stable across processes and versions (unlike std's hasher).
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in *part {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // Final avalanche (from SplitMix64) so similar keys spread well.
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The position (0 = preferred) of `me` among `workers` for `key`. A worker not in the list ranks
/// after all of them.
pub fn rank<'a>(me: &str, workers: impl IntoIterator<Item = &'a str>, key: &str) -> usize {
    let mine = fnv1a(&[me.as_bytes(), key.as_bytes()]);
    let mut ahead = 0;
    let mut others = 0;
    let mut present = false;
    for w in workers {
        if w == me {
            present = true;
            continue;
        }
        others += 1;
        let theirs = fnv1a(&[w.as_bytes(), key.as_bytes()]);
        if (theirs, w) > (mine, me) {
            ahead += 1;
        }
    }
    if present {
        ahead
    } else {
        others
    }
}

#[cfg(test)]
mod tests {
    use super::rank;

    #[test]
    fn exactly_one_worker_is_preferred_and_load_spreads() {
        let workers = ["w1", "w2", "w3"];
        let mut preferred = [0usize; 3];
        for slot in 0..3000 {
            let key = format!("job-{}/{slot}", slot % 17);
            let ranks: Vec<usize> = workers.iter().map(|w| rank(w, workers, &key)).collect();
            let mut sorted = ranks.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, [0, 1, 2], "a strict order for {key}");
            preferred[ranks.iter().position(|r| *r == 0).unwrap_or(0)] += 1;
        }
        assert!(
            preferred.iter().all(|n| (800..1200).contains(n)),
            "{preferred:?}"
        );
        assert_eq!(rank("outsider", workers, "k"), 3);
    }
}
