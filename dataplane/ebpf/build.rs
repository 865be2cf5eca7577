//! Rebuild the program when the bpf-linker binary changes (cargo cannot see it otherwise).
fn main() {
    if let Ok(path) = which::which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}
