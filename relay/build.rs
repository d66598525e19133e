//! Embeds the XDP admission object when `cargo xtask build-ebpf` has built it.
//!
//! Looks at `$RELAY_EBPF_OBJECT`, else `<workspace>/target/ebpf/bpfel-unknown-none/release/relay-ebpf`.
//! When found, it is copied into `OUT_DIR` and `cfg(relay_ebpf_embedded)` is set; otherwise relay
//! builds without it (plain `cargo build` on stable) and loads `admission.object_path` at run time.

use std::path::PathBuf;

fn main() {
    println!("cargo:rustc-check-cfg=cfg(relay_ebpf_embedded)");
    println!("cargo:rerun-if-env-changed=RELAY_EBPF_OBJECT");
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let ebpf_dir = manifest.join("../target/ebpf");
    let object = match std::env::var_os("RELAY_EBPF_OBJECT") {
        Some(p) => PathBuf::from(p),
        None => {
            // Watch the directory (cargo scans it recursively) so a later build-ebpf re-embeds.
            let _ = std::fs::create_dir_all(&ebpf_dir);
            println!("cargo:rerun-if-changed={}", ebpf_dir.display());
            ebpf_dir.join("bpfel-unknown-none/release/relay-ebpf")
        }
    };
    let out =
        PathBuf::from(std::env::var_os("OUT_DIR").expect("set by cargo")).join("relay-ebpf.o");
    if object.is_file() && std::fs::copy(&object, &out).is_ok() {
        println!("cargo:rerun-if-changed={}", object.display());
        println!("cargo:rustc-cfg=relay_ebpf_embedded");
    } else {
        let _ = std::fs::remove_file(&out);
    }
}
