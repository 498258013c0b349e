//! Images: what rcfs knows of OCI images and where their bytes live.
//!
//! * [`digest`] — sha256 digests, the names of everything stored.
//! * [`cas`] — a content-addressed directory, written atomically.
//! * [`toc`] — tables of contents (zstd:chunked's JSON) and the validated
//!   tree a layer serves from.
//! * [`blob`] — where a blob's bytes come from ([`blob::BlobSource`]).

pub mod blob;
pub mod cas;
pub mod digest;
pub mod toc;
