//! Writing a layer's tree from its checked [`Toc`] (the layout is in the
//! module doc of [`super`]).

use super::{
    kind_code, layout, u32_at, CHUNK_LEN, FILE_LEN, HEADER_CRC, HEADER_LEN, MAGIC, NODE_LEN,
    VERSION,
};
use crate::image::digest::Digest;
use crate::image::toc::{DataIn, Source, Toc, NONE};
use crate::layer::Kind;

/// Why a tree cannot be written: a TOC past what the format holds.
fn too_big(what: &str) -> String {
    format!("the layer has more {what} than an rcfs index holds")
}

fn u32_of(n: usize, what: &str) -> Result<u32, String> {
    u32::try_from(n).map_err(|_| too_big(what))
}

/// The tree of `toc` (whose compressed JSON has digest `toc_digest`, and
/// whose file data is where `data` says) as the bytes of its file.
pub fn build(toc: &Toc, toc_digest: &Digest, data: DataIn) -> Result<Vec<u8>, String> {
    // Breadth first from the root, each directory's children by name: a
    // directory's children are then a run of nodes after it.
    let n = toc.nodes.len();
    let mut order: Vec<u32> = Vec::with_capacity(n);
    let mut new_id = vec![NONE; n];
    order.push(0);
    new_id[0] = 0;
    let mut i = 0;
    while i < order.len() {
        let node = toc.node(order[i]);
        let mut kids = node.children.clone();
        kids.sort_unstable_by(|&a, &b| toc.node(a).name.cmp(&toc.node(b).name));
        for k in kids {
            new_id[k as usize] = u32_of(order.len(), "entries")?;
            order.push(k);
        }
        i += 1;
    }
    if order.len() != n {
        return Err("the table of contents has entries outside its tree".into());
    }

    let mut strings: Vec<u8> = Vec::new();
    let mut put = |bytes: &[u8]| -> Result<u32, String> {
        let off = u32_of(strings.len(), "names")?;
        strings.extend_from_slice(bytes);
        u32_of(strings.len(), "names")?;
        Ok(off)
    };
    let mut xattr_at: std::collections::HashMap<Vec<u8>, u32> = Default::default();
    let mut nodes = vec![0u8; n * NODE_LEN];
    for (p, &old) in order.iter().enumerate() {
        let node = toc.node(old);
        let r = &mut nodes[p * NODE_LEN..(p + 1) * NODE_LEN];
        let a = &node.attr;
        r[0..4].copy_from_slice(&new_id[node.parent as usize].to_le_bytes());
        r[4..8].copy_from_slice(&put(&node.name)?.to_le_bytes());
        r[8..10].copy_from_slice(&(node.name.len() as u16).to_le_bytes());
        r[10..12].copy_from_slice(&a.perm.to_le_bytes());
        r[12] = kind_code(a.kind);
        let nx = u16::try_from(node.xattrs.len()).map_err(|_| too_big("xattrs"))?;
        r[14..16].copy_from_slice(&nx.to_le_bytes());
        r[16..20].copy_from_slice(&a.uid.to_le_bytes());
        r[20..24].copy_from_slice(&a.gid.to_le_bytes());
        r[24..28].copy_from_slice(&a.nlink.to_le_bytes());
        r[28..32].copy_from_slice(&a.rdev.to_le_bytes());
        r[32..40].copy_from_slice(&a.size.to_le_bytes());
        r[40..48].copy_from_slice(&a.blocks.to_le_bytes());
        r[48..56].copy_from_slice(&a.file_id.to_le_bytes());
        r[56..64].copy_from_slice(&a.atime.0.to_le_bytes());
        r[64..72].copy_from_slice(&a.mtime.0.to_le_bytes());
        r[72..80].copy_from_slice(&a.ctime.0.to_le_bytes());
        let (x, y) = match a.kind {
            // The run of children starts with the first by name.
            Kind::Dir => match node.children.iter().map(|&c| new_id[c as usize]).min() {
                Some(first) => (first, u32_of(node.children.len(), "entries")?),
                None => (0, 0),
            },
            Kind::Symlink => {
                let t = node.target.as_deref().unwrap_or_default();
                (put(t)?, u32_of(t.len(), "names")?)
            }
            Kind::File if node.file != NONE => (node.file, 0),
            _ => (0, 0),
        };
        r[80..84].copy_from_slice(&x.to_le_bytes());
        r[84..88].copy_from_slice(&y.to_le_bytes());
        let mut xb = Vec::new();
        for (k, v) in &node.xattrs {
            xb.extend_from_slice(&(k.len() as u16).to_le_bytes());
            xb.extend_from_slice(&u32_of(v.len(), "xattrs")?.to_le_bytes());
            xb.extend_from_slice(k);
            xb.extend_from_slice(v);
        }
        // Hard links carry their file's xattrs each: written once.
        let off = match xattr_at.get(&xb) {
            Some(&off) => off,
            None => {
                let off = put(&xb)?;
                if !xb.is_empty() {
                    xattr_at.insert(xb, off);
                }
                off
            }
        };
        r[88..92].copy_from_slice(&off.to_le_bytes());
    }

    let mut files = vec![0u8; toc.files.len() * FILE_LEN];
    let mut chunks: Vec<u8> = Vec::new();
    let mut links: Vec<u8> = Vec::new();
    let mut blob_order: Vec<(u64, u32, u32)> = Vec::new();
    let mut data_bytes = 0u64;
    for (fi, f) in toc.files.iter().enumerate() {
        let r = &mut files[fi * FILE_LEN..(fi + 1) * FILE_LEN];
        data_bytes = data_bytes.saturating_add(f.size);
        r[0..8].copy_from_slice(&f.size.to_le_bytes());
        if let Some(d) = f.digest {
            r[8..40].copy_from_slice(&d.0);
            r[56] = 1;
        }
        let c0 = u32_of(chunks.len() / CHUNK_LEN, "chunks")?;
        r[40..44].copy_from_slice(&c0.to_le_bytes());
        r[44..48].copy_from_slice(&u32_of(f.chunks.len(), "chunks")?.to_le_bytes());
        let l0 = u32_of(links.len() / 4, "names")?;
        r[48..52].copy_from_slice(&l0.to_le_bytes());
        r[52..56].copy_from_slice(&u32_of(f.links.len(), "names")?.to_le_bytes());
        let chunks_from = chunks.len();
        for (ci, c) in f.chunks.iter().enumerate() {
            let mut cr = [0u8; CHUNK_LEN];
            cr[0..8].copy_from_slice(&c.offset.to_le_bytes());
            cr[8..16].copy_from_slice(&c.len.to_le_bytes());
            cr[16..48].copy_from_slice(&c.digest.0);
            cr[64] = match c.source {
                Source::Blob { start, end } => {
                    cr[48..56].copy_from_slice(&start.to_le_bytes());
                    cr[56..64].copy_from_slice(&end.to_le_bytes());
                    blob_order.push((start, fi as u32, u32_of(ci, "chunks")?));
                    0
                }
                Source::Zeros => 1,
                Source::Stored => 2,
            };
            chunks.extend_from_slice(&cr);
        }
        let links_from = links.len();
        for &l in &f.links {
            links.extend_from_slice(&new_id[l as usize].to_le_bytes());
        }
        let mut crc = crc32fast::Hasher::new();
        crc.update(&r[..60]);
        crc.update(&chunks[chunks_from..]);
        crc.update(&links[links_from..]);
        r[60..64].copy_from_slice(&crc.finalize().to_le_bytes());
    }
    blob_order.sort_unstable();

    // Each directory's CRC covers its children's records (their own CRCs
    // among them) and strings: from the deepest up.
    let string = |off: u32, len: usize| &strings[off as usize..off as usize + len];
    let xattr_bytes = |r: &[u8]| {
        let off = u32_at(r, 88) as usize;
        let mut at = off;
        for _ in 0..u16::from_le_bytes([r[14], r[15]]) {
            let klen = usize::from(u16::from_le_bytes([strings[at], strings[at + 1]]));
            let vlen = u32_at(&strings, at + 2) as usize;
            at += 6 + klen + vlen;
        }
        &strings[off..at]
    };
    for p in (0..n).rev() {
        let r = &nodes[p * NODE_LEN..(p + 1) * NODE_LEN];
        if r[12] != kind_code(Kind::Dir) {
            continue;
        }
        let (first, count) = (u32_at(r, 80) as usize, u32_at(r, 84) as usize);
        let mut crc = crc32fast::Hasher::new();
        for c in first..first + count {
            let cr = &nodes[c * NODE_LEN..(c + 1) * NODE_LEN];
            crc.update(cr);
            crc.update(string(
                u32_at(cr, 4),
                usize::from(u16::from_le_bytes([cr[8], cr[9]])),
            ));
            if cr[12] == kind_code(Kind::Symlink) {
                crc.update(string(u32_at(cr, 80), u32_at(cr, 84) as usize));
            }
            crc.update(xattr_bytes(cr));
            if cr[12] == kind_code(Kind::File) {
                let f = u32_at(cr, 80) as usize;
                crc.update(&files[f * FILE_LEN + 60..(f + 1) * FILE_LEN]);
            }
        }
        let sum = crc.finalize();
        nodes[p * NODE_LEN + 92..p * NODE_LEN + 96].copy_from_slice(&sum.to_le_bytes());
    }
    let root_crc = {
        let mut crc = crc32fast::Hasher::new();
        crc.update(&nodes[..NODE_LEN]);
        crc.update(xattr_bytes(&nodes[..NODE_LEN]));
        crc.finalize()
    };

    let counts = [
        u32_of(n, "entries")?,
        u32_of(toc.files.len(), "files")?,
        u32_of(chunks.len() / CHUNK_LEN, "chunks")?,
        u32_of(links.len() / 4, "names")?,
        u32_of(blob_order.len(), "chunks")?,
    ];
    let l = layout(
        counts[0],
        counts[1],
        counts[2],
        counts[3],
        counts[4],
        strings.len() as u64,
    );
    let mut out = Vec::with_capacity(l[6] as usize);
    out.resize(HEADER_LEN, 0);
    out[..8].copy_from_slice(MAGIC);
    out[8..12].copy_from_slice(&VERSION.to_le_bytes());
    out[16..24].copy_from_slice(&l[6].to_le_bytes());
    out[24..56].copy_from_slice(&toc_digest.0);
    if let DataIn::Blob { data_end } = data {
        out[56] = 1;
        out[64..72].copy_from_slice(&data_end.to_le_bytes());
    }
    for (k, c) in counts.iter().enumerate() {
        out[72 + 4 * k..76 + 4 * k].copy_from_slice(&c.to_le_bytes());
    }
    out[92..96].copy_from_slice(&root_crc.to_le_bytes());
    for (k, off) in l[..6].iter().enumerate() {
        out[96 + 8 * k..104 + 8 * k].copy_from_slice(&off.to_le_bytes());
    }
    out[144..152].copy_from_slice(&(strings.len() as u64).to_le_bytes());
    out[152..160].copy_from_slice(&data_bytes.to_le_bytes());
    let hcrc = crc32fast::hash(&out[..HEADER_CRC]);
    out[HEADER_CRC..HEADER_LEN].copy_from_slice(&hcrc.to_le_bytes());
    out.extend_from_slice(&nodes);
    out.extend_from_slice(&files);
    out.extend_from_slice(&chunks);
    out.extend_from_slice(&links);
    for (s, f, c) in blob_order {
        out.extend_from_slice(&s.to_le_bytes());
        out.extend_from_slice(&f.to_le_bytes());
        out.extend_from_slice(&c.to_le_bytes());
    }
    out.extend_from_slice(&strings);
    debug_assert_eq!(out.len() as u64, l[6]);
    Ok(out)
}
