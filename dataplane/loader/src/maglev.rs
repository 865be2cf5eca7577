//! Weighted Maglev lookup tables (Eisenbud et al., "Maglev: A Fast and
//! Reliable Software Network Load Balancer", NSDI 2016, section 3.4).
//!
//! Each endpoint has a permutation of the table slots derived from its own
//! identity (address and port): `offset = h1 % M`, `skip = h2 % (M - 1) + 1`,
//! `permutation[j] = (offset + j * skip) % M`, with M prime so every
//! permutation visits every slot. Endpoints take turns claiming their next
//! preferred free slot until the table is full. Because the preferences do
//! not depend on the other endpoints, removing one endpoint moves (almost)
//! only the slots it held.
//!
//! Weights: in every round endpoint `i` claims `weight_i / g` slots, where
//! `g` is the gcd of the non-zero weights, so slot shares follow the weights.
//! Weight-0 endpoints claim nothing (drained).
//!
//! The table length is the smallest prime >= 100 x the number of endpoints,
//! which keeps the share error under ~1% (paper: M >> N).

use crate::EndpointSpec;

/// Table length for `n` endpoints: the smallest prime >= 100 * max(n, 1).
pub fn table_len(n: usize) -> u32 {
    let mut m = 100 * n.max(1) as u32;
    while !is_prime(m) {
        m += 1;
    }
    m
}

fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    let mut d = 2u32;
    while d * d <= n {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 1;
    }
    true
}

/// FNV-1a 64 over the endpoint identity with a seed byte; stable across
/// builds and hosts (both nodes of a pair must compute the same table).
fn hash(ep: &EndpointSpec, seed: u8) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in [seed]
        .iter()
        .chain(ep.ip.octets().iter())
        .chain(ep.port.to_be_bytes().iter())
    {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Build the lookup table: entry `s` is the index (into `endpoints`) of the
/// endpoint owning slot `s`. Returns an empty table if every weight is 0.
pub fn build_table(endpoints: &[EndpointSpec], len: u32) -> Vec<u8> {
    let m = len as u64;
    let g = endpoints
        .iter()
        .map(|e| u32::from(e.weight))
        .filter(|w| *w > 0)
        .fold(0, gcd);
    if g == 0 || m < 2 {
        return Vec::new();
    }
    let prefs: Vec<(u64, u64)> = endpoints
        .iter()
        .map(|e| (hash(e, 1) % m, hash(e, 2) % (m - 1) + 1))
        .collect();
    let mut next = vec![0u64; endpoints.len()];
    let mut table = vec![u8::MAX; len as usize];
    let mut filled = 0u64;
    while filled < m {
        for (i, ep) in endpoints.iter().enumerate() {
            for _ in 0..u32::from(ep.weight) / g {
                let (offset, skip) = prefs[i];
                let slot = loop {
                    let c = ((offset + next[i] * skip) % m) as usize;
                    next[i] += 1;
                    if table[c] == u8::MAX {
                        break c;
                    }
                };
                table[slot] = i as u8;
                filled += 1;
                if filled == m {
                    return table;
                }
            }
        }
    }
    table
}

/// The table after an endpoint-set change, given the live one.
///
/// When the change only removes endpoints (the survivors keep their weights),
/// every slot a survivor owned stays with it and only the removed endpoints'
/// slots are handed out, each to its owner in the fresh table for the new set.
/// So removing an endpoint moves exactly that endpoint's flows, and the
/// survivors' shares stay proportional to their weights in expectation
/// (survivor i ends with w_i/W_old + (w_r/W_old)(w_i/W_new) = w_i/W_new).
/// Any other change (an addition, a weight change) gets the fresh table.
pub fn rebuild_table(
    old_endpoints: &[EndpointSpec],
    old_table: &[u8],
    endpoints: &[EndpointSpec],
    len: u32,
) -> Vec<u8> {
    let fresh = build_table(endpoints, len);
    let only_removals = old_table.len() == fresh.len()
        && endpoints.len() < old_endpoints.len()
        && endpoints.iter().all(|e| old_endpoints.contains(e));
    if !only_removals {
        return fresh;
    }
    // Old index -> new index for every survivor.
    let remap: Vec<Option<u8>> = old_endpoints
        .iter()
        .map(|o| endpoints.iter().position(|e| e == o).map(|i| i as u8))
        .collect();
    old_table
        .iter()
        .zip(&fresh)
        .map(|(&old, &new)| {
            remap
                .get(usize::from(old))
                .copied()
                .flatten()
                .unwrap_or(new)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn eps(weights: &[u8]) -> Vec<EndpointSpec> {
        weights
            .iter()
            .enumerate()
            .map(|(i, w)| EndpointSpec {
                ip: Ipv4Addr::new(10, 1, 0, i as u8 + 1),
                port: 8080,
                weight: *w,
            })
            .collect()
    }

    fn shares(table: &[u8], n: usize) -> Vec<f64> {
        let mut c = vec![0usize; n];
        for &e in table {
            c[e as usize] += 1;
        }
        c.iter().map(|&x| x as f64 / table.len() as f64).collect()
    }

    #[test]
    fn table_len_is_prime_and_at_least_100_per_endpoint() {
        assert_eq!(table_len(1), 101);
        assert_eq!(table_len(3), 307);
        assert_eq!(table_len(64), 6421);
        assert_eq!(
            table_len(64),
            floatlb_common::MAGLEV_LEN,
            "datapath constant out of date"
        );
        assert!(table_len(64) as usize <= floatlb_common::MAGLEV_CAPACITY);
        for n in 1..=64 {
            let m = table_len(n);
            assert!(is_prime(m) && m >= 100 * n as u32);
        }
    }

    #[test]
    fn every_slot_is_owned_by_a_weighted_endpoint() {
        let e = eps(&[1, 0, 2]);
        let t = build_table(&e, table_len(e.len()));
        assert_eq!(t.len(), 307);
        assert!(
            t.iter().all(|&i| i == 0 || i == 2),
            "drained endpoint got slots"
        );
        assert!(build_table(&eps(&[0, 0]), 211).is_empty());
    }

    #[test]
    fn shares_follow_weights() {
        let w = [1u8, 2, 3, 4];
        let e = eps(&w);
        let t = build_table(&e, table_len(e.len()));
        let total: f64 = w.iter().map(|&x| f64::from(x)).sum();
        for (i, s) in shares(&t, e.len()).iter().enumerate() {
            let want = f64::from(w[i]) / total;
            assert!(
                (s - want).abs() < 0.01,
                "endpoint {i}: share {s:.4}, want {want:.4}"
            );
        }
        // Equal weights: equal shares within one slot per round.
        let e = eps(&[5; 10]);
        let t = build_table(&e, table_len(10));
        for s in shares(&t, 10) {
            assert!((s - 0.1).abs() < 0.002, "share {s}");
        }
    }

    #[test]
    fn removing_one_endpoint_moves_little_else() {
        let before_eps = eps(&[1; 10]);
        let m = table_len(10);
        let before = build_table(&before_eps, m);
        // Remove endpoint 4; keep the table length so slots are comparable.
        let mut after_eps = before_eps.clone();
        after_eps.remove(4);
        let after = build_table(&after_eps, m);
        let mut moved_other = 0usize;
        for (b, a) in before.iter().zip(&after) {
            if *b == 4 {
                continue;
            }
            let old = before_eps[*b as usize];
            let new = after_eps[*a as usize];
            if old != new {
                moved_other += 1;
            }
        }
        let frac = moved_other as f64 / m as f64;
        println!(
            "maglev: slots of surviving endpoints that moved after removing 1 of 10: {:.2}%",
            frac * 100.0
        );
        assert!(frac < 0.03, "{:.2}% of other slots moved", frac * 100.0);
    }

    #[test]
    fn deterministic() {
        let e = eps(&[3, 1, 2]);
        assert_eq!(build_table(&e, 307), build_table(&e, 307));
    }

    #[test]
    fn removing_an_endpoint_moves_only_its_slots_and_keeps_weights() {
        let before_eps = eps(&[1, 2, 3, 4]);
        let m = table_len(before_eps.len());
        let before = build_table(&before_eps, m);
        let after_eps: Vec<EndpointSpec> = before_eps
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != 1)
            .map(|(_, e)| *e)
            .collect();
        let after = rebuild_table(&before_eps, &before, &after_eps, m);
        for (s, (&b, &a)) in before.iter().zip(&after).enumerate() {
            if b != 1 {
                assert_eq!(
                    after_eps[usize::from(a)],
                    before_eps[usize::from(b)],
                    "slot {s} moved"
                );
            }
        }
        let got = shares(&after, after_eps.len());
        for (i, w) in [1.0, 3.0, 4.0].iter().enumerate() {
            assert!(
                (got[i] - w / 8.0).abs() < 0.02,
                "share {i}: {} vs {}",
                got[i],
                w / 8.0
            );
        }
        // An addition is not sticky: it gets the fresh table.
        assert_eq!(rebuild_table(&after_eps, &after, &before_eps, m), before);
    }
}
