//! A byte trie that answers "which stored keys are prefixes of this text",
//! in one walk over the text: O(text length), independent of how many keys
//! are stored. The route table uses it for prefix routes and to index globs
//! by their literal prefix (and, walking reversed bytes, their literal suffix).

/// Ids stored under byte-string keys. Ids at a node are kept ascending, so a
/// caller looking for the lowest id can stop early.
#[derive(Debug, Default, Clone)]
pub(crate) struct Trie {
    nodes: Vec<Node>,
}

#[derive(Debug, Default, Clone)]
struct Node {
    /// Sorted by byte, for binary search.
    children: Vec<(u8, u32)>,
    ids: Vec<u32>,
}

impl Trie {
    pub(crate) fn new() -> Self {
        Self {
            nodes: vec![Node::default()],
        }
    }

    /// Store `id` under `key`. Ids must be inserted in ascending order.
    pub(crate) fn insert(&mut self, key: impl IntoIterator<Item = u8>, id: u32) {
        let mut at = 0usize;
        for b in key {
            let next = self.nodes.len();
            let Some(node) = self.nodes.get_mut(at) else {
                return;
            };
            at = match node.children.binary_search_by_key(&b, |&(c, _)| c) {
                Ok(i) => node.children.get(i).map_or(0, |&(_, n)| n as usize),
                Err(i) => {
                    // u32 nodes: at most 4G bytes of keys, far beyond any config.
                    let n = u32::try_from(next).unwrap_or(u32::MAX);
                    node.children.insert(i, (b, n));
                    self.nodes.push(Node::default());
                    next
                }
            };
        }
        if let Some(node) = self.nodes.get_mut(at) {
            node.ids.push(id);
        }
    }

    /// Call `visit` with the ids of every stored key that is a prefix of
    /// `text` (the empty key first, then ever longer ones).
    pub(crate) fn for_each_prefix_of(
        &self,
        text: impl IntoIterator<Item = u8>,
        mut visit: impl FnMut(&[u32]),
    ) {
        let Some(mut node) = self.nodes.first() else {
            return;
        };
        let mut text = text.into_iter();
        loop {
            if !node.ids.is_empty() {
                visit(&node.ids);
            }
            let Some(b) = text.next() else { return };
            let child = match node.children.binary_search_by_key(&b, |&(c, _)| c) {
                Ok(i) => node.children.get(i).map(|&(_, n)| n as usize),
                Err(_) => None,
            };
            match child.and_then(|c| self.nodes.get(c)) {
                Some(n) => node = n,
                None => return,
            }
        }
    }

    pub(crate) fn node_count(&self) -> usize {
        self.nodes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefixes(t: &Trie, s: &str) -> Vec<u32> {
        let mut out = Vec::new();
        t.for_each_prefix_of(s.bytes(), |ids| out.extend_from_slice(ids));
        out
    }

    #[test]
    fn finds_every_stored_prefix() {
        let mut t = Trie::new();
        t.insert("a.B/".bytes(), 0);
        t.insert("a.".bytes(), 1);
        t.insert("".bytes(), 2);
        t.insert("a.B/Get".bytes(), 3);
        t.insert("a.B/Get".bytes(), 4);
        t.insert("b".bytes(), 5);
        assert_eq!(prefixes(&t, "a.B/GetX"), vec![2, 1, 0, 3, 4]);
        assert_eq!(prefixes(&t, "a.C/X"), vec![2, 1]);
        assert_eq!(prefixes(&t, "zzz"), vec![2]);
        assert_eq!(prefixes(&t, ""), vec![2]);
    }
}
