use super::*;

#[test]
fn index_and_layer_records_round_trip_and_gc_keeps_what_images_use() {
    let t = tempfile::tempdir().unwrap();
    let s = Store::open(&t.path().join("store")).unwrap();
    let toc_json =
        br#"{"version":1,"entries":[{"type":"reg","name":"a","size":1,"digest":"DIG"}]}"#;
    let content = Digest::of(b"x");
    let toc_json = String::from_utf8_lossy(toc_json).replace("DIG", &content.to_string());
    let comp = zstd::bulk::compress(toc_json.as_bytes(), 3).unwrap();
    let toc_d = Digest::of(&comp);
    s.blobs.put(&toc_d, &comp).unwrap();
    s.files.put(&content, b"x").unwrap();
    let orphan = Digest::of(b"orphan");
    s.files.put(&orphan, b"orphan").unwrap();
    let layer_d = Digest::of(b"layer blob");
    let rec = LayerRecord {
        digest: layer_d.to_string(),
        media_type: "application/vnd.oci.image.layer.v1.tar".into(),
        size: 10,
        format: LayerFormat::Indexed,
        toc: toc_d.to_string(),
        toc_len: toc_json.len() as u64,
        data_end: 0,
        files: 1,
        bytes: 1,
        start_bytes: 0,
        start_order: Vec::new(),
        diff_id: None,
        tar_size: None,
    };
    let key = LayerKey::Blob(layer_d);
    s.put_layer(&key, &rec).unwrap();
    assert_eq!(s.layer(&key).unwrap(), Some(rec.clone()));
    let manifest = Digest::of(b"manifest");
    s.blobs.put(&manifest, b"manifest").unwrap();
    let img = ImageRecord {
        name: "r.io/a:1".into(),
        manifest: manifest.to_string(),
        config: manifest.to_string(),
        layers: vec![layer_d.to_string()],
        layer_tocs: Vec::new(),
        layer_diffs: Vec::new(),
        origin: None,
        pulled: "now".into(),
        size: 10,
    };
    s.add_image(img.clone()).unwrap();
    s.add_image(img.clone()).unwrap();
    assert_eq!(s.images().unwrap(), vec![img.clone()]);
    assert_eq!(s.find(&manifest.hex()[..12]).unwrap(), Some(img.clone()));
    let r = s.gc(false).unwrap();
    assert_eq!((r.layers, r.objects), (0, 1), "only the orphan file goes");
    assert!(s.files.size_of(&content).unwrap().is_some());
    assert!(s.remove_image("r.io/a:1").unwrap());
    assert!(!s.remove_image("r.io/a:1").unwrap());
    let r = s.gc(false).unwrap();
    assert_eq!(r.layers, 1);
    assert!(s.files.list().unwrap().is_empty() && s.blobs.list().unwrap().is_empty());
}

/// A record made from a lazily pulled zstd:chunked layer is found only
/// under the (TOC, blob) pair it was checked with: not under the blob
/// digest alone, nor for another TOC or blob.
#[test]
fn a_lazy_layer_record_is_found_only_under_what_was_checked() {
    let t = tempfile::tempdir().unwrap();
    let s = Store::open(&t.path().join("store")).unwrap();
    let comp = zstd::bulk::compress(br#"{"version":1,"entries":[]}"#, 3).unwrap();
    let toc = Digest::of(&comp);
    s.blobs.put(&toc, &comp).unwrap();
    let blob = Digest::of(b"claimed blob");
    let rec = LayerRecord {
        digest: blob.to_string(),
        media_type: "application/vnd.oci.image.layer.v1.tar+zstd".into(),
        size: 100,
        format: LayerFormat::ZstdChunked,
        toc: toc.to_string(),
        toc_len: 26,
        data_end: 10,
        files: 0,
        bytes: 0,
        start_bytes: 0,
        start_order: Vec::new(),
        diff_id: None,
        tar_size: None,
    };
    let key = LayerKey::Toc { toc, blob };
    s.put_layer(&key, &rec).unwrap();
    assert_eq!(s.layer(&key).unwrap(), Some(rec.clone()));
    let other = Digest::of(b"other");
    assert_eq!(s.layer(&LayerKey::Blob(blob)).unwrap(), None);
    assert_eq!(s.layer(&LayerKey::Toc { toc: other, blob }).unwrap(), None);
    assert_eq!(s.layer(&LayerKey::Toc { toc, blob: other }).unwrap(), None);
    // As an older rcfs recorded it, under the blob digest: not trusted
    // (the blob was never hashed), so the layer is pulled again.
    s.put_layer(&LayerKey::Blob(blob), &rec).unwrap();
    assert_eq!(s.layer(&LayerKey::Blob(blob)).unwrap(), None);
    assert!(LayerKey::is_record_name(&key.file_name()));
    // gc keeps the record an image names by its pair, drops the other.
    s.add_image(ImageRecord {
        name: "r.io/lazy:1".into(),
        manifest: other.to_string(),
        config: other.to_string(),
        layers: vec![blob.to_string()],
        layer_tocs: vec![Some(toc.to_string())],
        layer_diffs: Vec::new(),
        origin: None,
        pulled: "now".into(),
        size: 100,
    })
    .unwrap();
    assert_eq!(s.gc(false).unwrap().layers, 1);
    assert_eq!(s.layer(&key).unwrap(), Some(rec));
}

/// A layer rebuilt and hashed to its diff_id serves any image whose
/// config names that diff_id, whatever blob it names; never one that
/// names another diff_id, nor a record that does not say it was
/// checked; gc keeps it while an image names it.
#[test]
fn a_rebuilt_layer_is_found_by_its_diff_id_only() {
    let t = tempfile::tempdir().unwrap();
    let s = Store::open(&t.path().join("store")).unwrap();
    let comp = zstd::bulk::compress(br#"{"version":1,"entries":[]}"#, 3).unwrap();
    let toc = Digest::of(&comp);
    s.blobs.put(&toc, &comp).unwrap();
    let (diff, blob, other) = (
        Digest::of(b"tar"),
        Digest::of(b"blob"),
        Digest::of(b"other"),
    );
    let rec = LayerRecord {
        digest: blob.to_string(),
        media_type: "application/vnd.oci.image.layer.v1.tar+zstd".into(),
        size: 100,
        format: LayerFormat::Indexed,
        toc: toc.to_string(),
        toc_len: 26,
        data_end: 0,
        files: 0,
        bytes: 0,
        start_bytes: 0,
        start_order: Vec::new(),
        diff_id: Some(diff.to_string()),
        tar_size: None,
    };
    let key = LayerKey::Diff { diff, blob };
    s.put_layer(&key, &rec).unwrap();
    assert_eq!(s.layer(&key).unwrap(), Some(rec.clone()));
    // Another blob with the same diff_id (the same tar as gzip).
    let gz = LayerKey::Diff { diff, blob: other };
    assert_eq!(s.layer(&gz).unwrap(), Some(rec.clone()));
    assert_eq!(
        s.layer(&LayerKey::Diff { diff: other, blob }).unwrap(),
        None
    );
    assert_eq!(s.layer(&LayerKey::Blob(blob)).unwrap(), None);
    // A record under the name that does not say its diff_id was checked.
    let unchecked = LayerRecord {
        diff_id: None,
        tar_size: None,
        ..rec.clone()
    };
    s.replace(
        &s.layers,
        &key.file_name(),
        &serde_json::to_vec(&unchecked).unwrap(),
    )
    .unwrap();
    assert_eq!(s.layer(&key).unwrap(), None);
    s.put_layer(&key, &rec).unwrap();

    let image = |name: &str, key: LayerKey| {
        let (layers, layer_tocs, layer_diffs) = ImageRecord::layers_of(&[key]);
        ImageRecord {
            name: name.into(),
            manifest: other.to_string(),
            config: other.to_string(),
            layers,
            layer_tocs,
            layer_diffs,
            origin: None,
            pulled: "now".into(),
            size: 100,
        }
    };
    let img = image("r.io/gz:1", gz);
    assert_eq!(img.layer_keys().unwrap(), [gz]);
    s.add_image(img).unwrap();
    assert_eq!(s.gc(false).unwrap().layers, 0);
    assert_eq!(s.layer(&gz).unwrap(), Some(rec));
    s.remove_image("r.io/gz:1").unwrap();
    assert_eq!(s.gc(false).unwrap().layers, 1);
    assert_eq!(s.layer(&key).unwrap(), None);
}
