//! The checks a tree's parts pass before they are used (see the module
//! doc of [`super`], "Never trusted").

use super::{
    layout, u32_at, u64_at, DataIn, Expect, FileRef, Header, Node, Source, Tree, HEADER_CRC,
    HEADER_LEN, MAGIC, MAX_CHUNK, NONE, VERSION,
};

impl Tree {
    /// Checks the children of directory `dir` (decoded from a checked
    /// record) once.
    pub(super) fn check_dir(&self, dir: &Node<'_>) -> std::io::Result<()> {
        if self.dirs_ok.get(dir.id) {
            return Ok(());
        }
        let mut crc = crc32fast::Hasher::new();
        let mut prev: Option<&[u8]> = None;
        for c in dir.children.clone() {
            let n = self.decode(c).map_err(|e| self.damaged(e))?;
            let bad_name = n.name.is_empty()
                || n.name.len() > 255
                || n.name == b"."
                || n.name == b".."
                || n.name.iter().any(|&b| b == b'/' || b == 0);
            if n.parent != dir.id || bad_name || prev.is_some_and(|p| p >= n.name) {
                return Err(self.damaged(format!("directory entry {c}")));
            }
            prev = Some(n.name);
            crc.update(self.node_bytes(c));
            crc.update(n.name);
            if let Some(t) = n.target {
                crc.update(t);
            }
            crc.update(n.xattrs);
            // A file's record is vouched for by its own CRC, and that CRC
            // by its name's directory.
            if n.file != NONE {
                crc.update(&self.file_crc(n.file));
            }
        }
        if crc.finalize() != u32_at(self.node_bytes(dir.id), 92) {
            return Err(self.damaged(format!("the entries of directory {}", dir.id)));
        }
        self.dirs_ok.set(dir.id);
        Ok(())
    }

    /// What a file record must say to be used.
    pub(super) fn check_file(&self, f: &FileRef<'_>) -> Result<(), String> {
        if f.links().any(|l| l >= self.h.nodes) || f.links.is_empty() {
            return Err("names outside the tree".into());
        }
        if (f.size == 0) != f.chunks.is_empty() || (f.size == 0) != f.digest.is_none() {
            return Err("size, chunks and digest disagree".into());
        }
        let mut at = 0u64;
        for c in f.chunks.iter_from(0) {
            if c.offset != at || c.len == 0 || c.len > f.size - at {
                return Err("chunks that do not tile the file".into());
            }
            at += c.len;
            match (c.source, self.h.data) {
                (Source::Blob { start, end }, DataIn::Blob { data_end }) => {
                    if start >= end
                        || end > data_end
                        || end - start > MAX_CHUNK
                        || c.len > MAX_CHUNK
                    {
                        return Err("a chunk outside the blob's data".into());
                    }
                }
                (Source::Zeros, DataIn::Blob { .. }) => {}
                (Source::Stored, DataIn::Store) if f.chunks.len() == 1 => {}
                _ => return Err("a chunk from the wrong place".into()),
            }
        }
        if at != f.size {
            return Err("chunks that do not tile the file".into());
        }
        Ok(())
    }
}

/// Checks the header of a tree (see [`Tree::open`]).
pub(super) fn check_header(b: &[u8], expect: &Expect) -> Result<Header, String> {
    if b.len() < HEADER_LEN || &b[..8] != MAGIC {
        return Err("not an rcfs tree".into());
    }
    if u32_at(b, 8) != VERSION {
        return Err(format!(
            "version {} (this rcfs reads {VERSION})",
            u32_at(b, 8)
        ));
    }
    if crc32fast::hash(&b[..HEADER_CRC]) != u32_at(b, HEADER_CRC) {
        return Err("the header's checksum does not match".into());
    }
    if u64_at(b, 16) != b.len() as u64 {
        return Err(format!(
            "{} bytes where the header says {}",
            b.len(),
            u64_at(b, 16)
        ));
    }
    if b[24..56] != expect.toc.0 {
        return Err("built for another table of contents".into());
    }
    let data = match b[56] {
        0 => DataIn::Store,
        1 => DataIn::Blob {
            data_end: u64_at(b, 64),
        },
        _ => return Err("unknown data placement".into()),
    };
    if data != expect.data {
        return Err("built for another placement of the data".into());
    }
    let [nodes, files, chunks, links, order] = [72, 76, 80, 84, 88].map(|o| u32_at(b, o));
    let strings_len = u64_at(b, 144);
    let l = layout(nodes, files, chunks, links, order, strings_len);
    let stored = [96, 104, 112, 120, 128, 136].map(|o| u64_at(b, o));
    if l[..6] != stored || l[6] != b.len() as u64 || nodes == 0 || nodes == NONE {
        return Err("its sections do not fit its length".into());
    }
    let us = |v: u64| v as usize;
    Ok(Header {
        nodes,
        files,
        chunks,
        links,
        order,
        nodes_off: us(l[0]),
        files_off: us(l[1]),
        chunks_off: us(l[2]),
        links_off: us(l[3]),
        order_off: us(l[4]),
        strings_off: us(l[5]),
        strings_len: us(strings_len),
        data_bytes: u64_at(b, 152),
        data,
        root_crc: u32_at(b, 92),
    })
}
