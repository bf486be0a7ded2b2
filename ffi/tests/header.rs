//! The checked-in `include/herald.h` is exactly what cbindgen generates from this crate.
//! `HERALD_BLESS=1 cargo test -p herald-ffi --test header` rewrites it.

use std::path::Path;

#[test]
fn the_checked_in_header_is_up_to_date() {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml")).expect("ffi/cbindgen.toml");
    let bindings = cbindgen::Builder::new()
        .with_crate(crate_dir)
        .with_config(config)
        .generate()
        .expect("cbindgen generates the header");
    let mut generated = Vec::new();
    bindings.write(&mut generated);
    let header = crate_dir.join("../include/herald.h");
    if std::env::var_os("HERALD_BLESS").is_some() {
        std::fs::write(&header, &generated).expect("write include/herald.h");
    }
    let checked_in = std::fs::read(&header).unwrap_or_default();
    assert!(
        checked_in == generated,
        "include/herald.h is stale: run `HERALD_BLESS=1 cargo test -p herald-ffi --test header` and commit it"
    );
}
