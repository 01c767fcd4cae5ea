//! End-to-end tests live in `tests/tests/` (one binary, one module per concern); they drive
//! the built tools and scripts against clusters from [`testkit`]. This library only
//! re-exports the fixture so the tests have one import.

pub use testkit;

/// The workspace root (where `scripts/` and `Makefile` are).
pub fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}
