//! Builds herd-perf's helper eBPF programs, `bpf/perf.bpf.c` (the generator, the bare
//! XDP_DROP baseline and an empty program), with clang into `OUT_DIR`, where
//! `src/programs.rs` embeds them, the way herd-dataplane builds its own.

include!("../dataplane/bpf/clang.rs");

fn main() {
    compile_bpf("bpf/perf.bpf.c", "perf.bpf.o", "herd-perf's eBPF programs");
}
