//! Reading ahead across files: where a file stands in its directory's
//! readdir order, and asking the layers for the files that follow it (the
//! policy — when and how far — is [`crate::fuse`]'s).

use super::node;
use super::Union;
use crate::layer::Kind;

/// How much of each file [`Union::read_ahead`] asks for: small files whole,
/// and the start of large ones (the kernel reads ahead from there).
pub const READ_AHEAD_BYTES: u64 = 256 * 1024;

impl Union {
    /// Where file `ino` stands for reading ahead: its directory (of its
    /// primary name) and its readdir cookie there.
    pub fn position(&self, ino: u64) -> Option<(u64, u64)> {
        let node = self.node(ino).ok()?;
        if node.kind != Kind::File || !node.is_linked() {
            return None;
        }
        let st = node.state.read();
        Some((st.parent, node::cookie(&st.name)))
    }

    /// Reads ahead for a program that opens a directory's files one after
    /// another: of the `n` entries that follow cookie `after` in directory
    /// `dir`'s readdir order, the regular files whose data is in a lower
    /// layer have their first [`READ_AHEAD_BYTES`] asked of the layer
    /// ([`crate::layer::Layer::will_need`]). Returns the cookies of the
    /// entries it passed, in order (fewer than `n` at the end of the
    /// directory).
    pub fn read_ahead(&self, dir: u64, after: u64, n: usize) -> Vec<u64> {
        let Ok(dir) = self.node(dir) else {
            return Vec::new();
        };
        // Only names and ids here: a large directory is passed through many
        // times, and only `n` of its entries are wanted.
        let mut next: Vec<(u64, u64)> = {
            let st = dir.state.read();
            let Some(ch) = st.children() else {
                return Vec::new();
            };
            ch.map
                .iter()
                .map(|(name, c)| (node::cookie(name), c.id()))
                .filter(|(c, _)| *c > after)
                .collect()
        };
        if next.len() > n {
            next.select_nth_unstable(n);
            next.truncate(n);
        }
        next.sort_unstable();
        for &(_, id) in &next {
            let lower = self.node_by_id(id).ok().and_then(|node| {
                let below = {
                    let st = node.state.read();
                    node.kind == Kind::File && (!st.upper || st.metacopy)
                };
                below.then(|| self.lower_of(&node)).flatten()
            });
            if let Some(l) = lower {
                let len = l.attr.size.min(READ_AHEAD_BYTES);
                // Only a hint: a file that cannot be read ahead is read later.
                let _ = self.lowers[l.layer as usize].will_need(&l.path, len);
            }
        }
        next.into_iter().map(|(c, _)| c).collect()
    }
}
