//! Images: what rcfs knows of OCI images and where their bytes live.
//!
//! * [`digest`] — sha256 digests, the names of everything stored.
//! * [`cas`] — a content-addressed directory, written atomically.
//! * [`toc`] — tables of contents (zstd:chunked's JSON) and the validated
//!   tree a layer serves from.
//! * [`blob`] — where a blob's bytes come from ([`blob::BlobSource`]).
//! * [`reference`], [`registries`], [`auth`] — image names, registries.conf,
//!   credentials.
//! * [`registry`] — the OCI distribution client.
//! * [`index`] — a tar layer streamed into the store and a TOC.
//! * [`pull`] — images into the store; [`open`] — a stored image's layers
//!   for a mount.
//! * [`store`] — the store's layout, index and garbage collection.
//! * [`chunked`] — writing zstd:chunked blobs; [`convert`] — images made of
//!   them; [`push`] — images to a registry.

pub mod auth;
pub mod blob;
pub mod cas;
pub mod chunked;
pub mod commit;
pub mod convert;
pub mod digest;
pub mod index;
pub mod live;
pub mod open;
pub mod pull;
pub mod push;
pub mod reference;
pub mod registries;
pub mod registry;
pub mod store;
pub mod toc;
pub mod tree;
