//! Builds herd-perf's helper eBPF programs, `bpf/perf.bpf.c` (the generator, the bare
//! XDP_DROP baseline and an empty program), with clang into `OUT_DIR`, where
//! `src/programs.rs` embeds them.

use std::env;
use std::path::PathBuf;
use std::process::Command;

const SOURCE: &str = "bpf/perf.bpf.c";

fn main() {
    println!("cargo:rerun-if-changed={SOURCE}");
    println!("cargo:rerun-if-env-changed=HERD_CLANG");
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("perf.bpf.o");
    // The same compiler choice as herd-dataplane's build script.
    let clang = env::var("HERD_CLANG").unwrap_or_else(|_| "clang".into());
    let mut command = Command::new(&clang);
    command.args([
        "-O2", "-g", "-Wall", "-Werror", "-target", "bpf", "-c", SOURCE, "-o",
    ]);
    command.arg(&out);
    // <asm/types.h>, which <linux/types.h> includes, lives under the multiarch directory.
    if let Some(triple) = multiarch() {
        command.arg(format!("-I/usr/include/{triple}"));
    }
    match command.status() {
        Ok(status) if status.success() => {}
        Ok(status) => panic!("{clang} failed on {SOURCE} ({status}); see its messages above"),
        Err(error) => panic!(
            "cannot run {clang} ({error}): herd-perf's eBPF programs are built with clang and \
             the headers of libbpf-dev; `scripts/deps` installs both (or set HERD_CLANG to a \
             clang binary)"
        ),
    }
}

fn multiarch() -> Option<String> {
    let output = Command::new("gcc").arg("-print-multiarch").output().ok()?;
    let triple = String::from_utf8(output.stdout).ok()?.trim().to_owned();
    (!triple.is_empty()).then_some(triple)
}
