//! Records the git revision the application is built from, for the
//! `seawall_build_info` metric both binaries export, and rebuilds the crate
//! when a migration is added (`sqlx::migrate!` embeds the folder, and cargo
//! does not otherwise see a new file in it).

use std::path::{Path, PathBuf};

fn main() {
    let manifest_dir = PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"),
    );
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=migrations");
    git_revision(&manifest_dir);
}

/// Sets `SEAWALL_GIT_REVISION` for the build-info metric: the commit the
/// application was built from, or `unknown` outside a git checkout. Rerun when
/// HEAD moves.
fn git_revision(manifest_dir: &Path) {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(manifest_dir)
            .output()
            .ok()
            .filter(|output| output.status.success())
            .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
    };
    let revision = git(&["rev-parse", "--short=12", "HEAD"])
        .filter(|commit| !commit.is_empty())
        .unwrap_or_else(|| "unknown".to_owned());
    if let Some(git_dir) = git(&["rev-parse", "--absolute-git-dir"]) {
        let git_dir = Path::new(&git_dir);
        println!("cargo:rerun-if-changed={}", git_dir.join("HEAD").display());
        if let Some(reference) = git(&["symbolic-ref", "-q", "HEAD"]) {
            let loose = git_dir.join(&reference);
            if loose.exists() {
                println!("cargo:rerun-if-changed={}", loose.display());
            }
        }
        let packed = git_dir.join("packed-refs");
        if packed.exists() {
            println!("cargo:rerun-if-changed={}", packed.display());
        }
    }
    println!("cargo:rustc-env=SEAWALL_GIT_REVISION={revision}");
}
