// Compiles an eBPF program written in C with clang; shared, through `include!`, by the build
// scripts of herd-dataplane and herd-perf, which both embed programs they build this way.

/// Compiles `source` (relative to the crate) into `OUT_DIR/object`; `what` names the programs
/// in the error a missing clang gives.
fn compile_bpf(source: &str, object: &str, what: &str) {
    println!("cargo:rerun-if-changed={source}");
    println!("cargo:rerun-if-env-changed=HERD_CLANG");
    let out = std::path::PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"))
        .join(object);
    let clang = std::env::var("HERD_CLANG").unwrap_or_else(|_| "clang".into());
    let mut command = std::process::Command::new(&clang);
    command.args([
        "-O2", "-g", "-Wall", "-Werror", "-target", "bpf", "-c", source, "-o",
    ]);
    command.arg(&out);
    // <asm/types.h>, which <linux/types.h> includes, lives under the multiarch directory.
    if let Some(triple) = multiarch() {
        command.arg(format!("-I/usr/include/{triple}"));
    }
    match command.status() {
        Ok(status) if status.success() => {}
        Ok(status) => panic!("{clang} failed on {source} ({status}); see its messages above"),
        Err(error) => panic!(
            "cannot run {clang} ({error}): {what} are built with clang and the headers of \
             libbpf-dev; `scripts/deps` installs both (or set HERD_CLANG to a clang binary)"
        ),
    }
}

/// The Debian multiarch triple, such as `x86_64-linux-gnu`.
fn multiarch() -> Option<String> {
    let output = std::process::Command::new("gcc")
        .arg("-print-multiarch")
        .output()
        .ok()?;
    let triple = String::from_utf8(output.stdout).ok()?.trim().to_owned();
    (!triple.is_empty()).then_some(triple)
}
