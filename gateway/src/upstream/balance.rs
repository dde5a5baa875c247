//! Load-balancing choices over a pool's backends, as pure functions of
//! "which backends may be used" so they are easy to reason about and test.
//!
//! Every function returns an index into the pool's backend list, or `None`
//! when no usable backend remains.

/// Smooth weighted round-robin order (nginx's algorithm): weights 3,1 give
/// 0,0,1,0 rather than 0,0,0,1.
pub fn interleave(weights: &[usize]) -> Vec<usize> {
    let total: usize = weights.iter().sum();
    let mut current = vec![0i64; weights.len()];
    let mut out = Vec::with_capacity(total);
    for _ in 0..total {
        let mut best = 0;
        for (i, w) in weights.iter().enumerate() {
            if let Some(c) = current.get_mut(i) {
                *c += *w as i64;
            }
            if current.get(i) > current.get(best) {
                best = i;
            }
        }
        if let Some(c) = current.get_mut(best) {
            *c -= total as i64;
        }
        out.push(best);
    }
    out
}

/// Round-robin: the first usable backend in `schedule` from position
/// `start`, wrapping once.
pub fn round_robin(
    schedule: &[usize],
    start: usize,
    usable: impl Fn(usize) -> bool,
) -> Option<usize> {
    let n = schedule.len();
    (0..n)
        .filter_map(|k| schedule.get((start + k) % n).copied())
        .find(|&i| usable(i))
}

/// Least connections relative to weight (`in_flight / weight`, compared by
/// cross-multiplication); ties go to the first usable backend from `start`
/// so equal backends share the load instead of piling onto index 0.
pub fn least_connections(
    weights: &[usize],
    in_flight: impl Fn(usize) -> usize,
    start: usize,
    usable: impl Fn(usize) -> bool,
) -> Option<usize> {
    let n = weights.len();
    let mut best: Option<(usize, usize, usize)> = None; // (index, in_flight, weight)
    for k in 0..n {
        let i = (start + k) % n;
        if !usable(i) {
            continue;
        }
        let w = weights.get(i).copied().unwrap_or(1).max(1);
        let f = in_flight(i);
        let better = match best {
            None => true,
            Some((_, bf, bw)) => f.saturating_mul(bw) < bf.saturating_mul(w),
        };
        if better {
            best = Some((i, f, w));
        }
    }
    best.map(|b| b.0)
}

/// Weighted rendezvous (highest random weight) hashing: each backend scores
/// `-w / ln(u)` with `u` a uniform value from hash(key, backend id); the top
/// score wins. Removing a backend only moves the keys it owned, and a key
/// returns to its backend when that backend comes back.
pub fn rendezvous(
    key: &[u8],
    ids: &[u64],
    weights: &[usize],
    usable: impl Fn(usize) -> bool,
) -> Option<usize> {
    let kh = fnv1a(key);
    let mut best: Option<(usize, f64)> = None;
    for (i, id) in ids.iter().enumerate() {
        if !usable(i) {
            continue;
        }
        let h = mix(kh ^ mix(*id));
        // 53 random bits in (0, 1): never 0, so ln is finite and negative.
        let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        let w = weights.get(i).copied().unwrap_or(1).max(1) as f64;
        let score = -w / u.ln();
        if best.is_none_or(|(_, s)| score > s) {
            best = Some((i, score));
        }
    }
    best.map(|b| b.0)
}

/// FNV-1a: stable across processes and versions, so every replica maps a
/// caller to the same backend.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// splitmix64 finaliser: spreads FNV's weak low bits.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smooth_weighted_order() {
        assert_eq!(interleave(&[1, 1]), vec![0, 1]);
        assert_eq!(interleave(&[3, 1]), vec![0, 0, 1, 0]);
        assert_eq!(interleave(&[5, 1, 1]).len(), 7);
    }

    #[test]
    fn round_robin_skips_unusable() {
        let s = [0, 1, 2];
        assert_eq!(round_robin(&s, 0, |_| true), Some(0));
        assert_eq!(round_robin(&s, 4, |_| true), Some(1));
        assert_eq!(round_robin(&s, 1, |i| i != 1), Some(2));
        assert_eq!(round_robin(&s, 2, |i| i == 0), Some(0));
        assert_eq!(round_robin(&s, 0, |_| false), None);
        assert_eq!(round_robin(&[], 0, |_| true), None);
    }

    #[test]
    fn least_connections_prefers_idle_and_respects_weight() {
        let loads = [3, 1, 2];
        assert_eq!(
            least_connections(&[1, 1, 1], |i| loads[i], 0, |_| true),
            Some(1)
        );
        assert_eq!(
            least_connections(&[1, 1, 1], |i| loads[i], 0, |i| i != 1),
            Some(2)
        );
        // Weight 4 with 3 in flight beats weight 1 with 1 in flight.
        assert_eq!(
            least_connections(&[4, 1, 1], |i| loads[i], 1, |_| true),
            Some(0)
        );
        // Ties rotate with `start`.
        assert_eq!(least_connections(&[1, 1], |_| 0, 1, |_| true), Some(1));
        assert_eq!(least_connections(&[1, 1], |_| 0, 0, |_| false), None);
    }

    #[test]
    fn rendezvous_is_sticky_spread_and_minimally_disrupted() {
        let ids: Vec<u64> = (0..4).map(|i| fnv1a(format!("b{i}").as_bytes())).collect();
        let w = [1, 1, 1, 1];
        let mut counts = [0usize; 4];
        let mut moved = 0;
        for k in 0..4000 {
            let key = format!("subject-{k}");
            let a = rendezvous(key.as_bytes(), &ids, &w, |_| true).unwrap();
            assert_eq!(rendezvous(key.as_bytes(), &ids, &w, |_| true), Some(a));
            counts[a] += 1;
            let b = rendezvous(key.as_bytes(), &ids, &w, |i| i != 2).unwrap();
            if a != 2 {
                assert_eq!(a, b, "only keys of the removed backend move");
            } else {
                moved += 1;
            }
        }
        for c in counts {
            assert!((800..1200).contains(&c), "{counts:?}");
        }
        assert_eq!(moved, counts[2]);
        assert_eq!(rendezvous(b"x", &ids, &w, |_| false), None);
    }

    #[test]
    fn rendezvous_follows_weights() {
        let ids = [fnv1a(b"a"), fnv1a(b"b")];
        let mut heavy = 0;
        for k in 0..4000 {
            if rendezvous(format!("k{k}").as_bytes(), &ids, &[3, 1], |_| true) == Some(0) {
                heavy += 1;
            }
        }
        assert!((2800..3200).contains(&heavy), "{heavy}");
    }
}
