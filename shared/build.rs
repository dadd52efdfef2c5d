//! Re-embed the migrations whenever they change (sqlx::migrate! reads them at build time).
fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
