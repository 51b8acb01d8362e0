//! Builds the XDP programs, `bpf/herd.bpf.c`, and the egress guard, `bpf/egress.bpf.c`, with
//! clang into `OUT_DIR`, where `src/xdp.rs` and `src/egress.rs` embed them.

include!("bpf/clang.rs");

fn main() {
    compile_bpf("bpf/herd.bpf.c", "herd.bpf.o", "herd's XDP programs");
    compile_bpf("bpf/egress.bpf.c", "egress.bpf.o", "herd's egress guard");
}
