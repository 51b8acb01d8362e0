//! Builds the XDP programs, `bpf/herd.bpf.c`, with clang into `OUT_DIR`, where `src/xdp.rs`
//! embeds them.

include!("bpf/clang.rs");

fn main() {
    compile_bpf("bpf/herd.bpf.c", "herd.bpf.o", "herd's XDP programs");
}
