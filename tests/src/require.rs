//! Tests whose tool or privilege is missing: skipped with a printed reason on a developer
//! machine, failed under `cargo xtask ci` (which sets `NODE_AGENT_REQUIRE_ALL=1`), so a CI
//! run can never pass by skipping.

/// The variable `cargo xtask ci` sets.
pub const REQUIRE_ALL: &str = "NODE_AGENT_REQUIRE_ALL";

/// Whether missing tools must fail tests.
pub fn all_required() -> bool {
    std::env::var(REQUIRE_ALL).is_ok_and(|v| v == "1")
}

/// Reports that a test cannot run here because of `reason`: panics under
/// `NODE_AGENT_REQUIRE_ALL=1`, otherwise prints `SKIPPED: reason` (the caller returns).
pub fn missing(reason: &str) {
    if all_required() {
        panic!("{REQUIRE_ALL}=1 but this test cannot run: {reason}");
    }
    eprintln!("SKIPPED: {reason}");
}
