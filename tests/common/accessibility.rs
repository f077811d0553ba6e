//! The accessibility check of the browser tests: axe-core (vendored under `tests/vendor/axe-core/`,
//! see its README) run inside the page the browser shows. A page passes when axe finds no
//! violation of serious or critical impact.

use serde_json::{Value, json};

use super::browser::Browser;

const AXE: &str = include_str!("../vendor/axe-core/axe.min.js");

/// Runs axe-core on the current page and returns its serious and critical violations, each as
/// `{id, impact, help, nodes: ["selector — what fails", …]}`.
pub async fn serious_violations(b: &Browser) -> Vec<Value> {
    // The page's CSP does not apply to scripts the driver runs, so axe is injected as-is.
    let loaded = b
        .execute(&format!("{AXE}\n;return typeof window.axe;"), vec![])
        .await;
    assert_eq!(loaded, json!("object"), "axe-core did not load");
    let found = b
        .execute_async(
            r#"const done = arguments[arguments.length - 1];
            axe.run(document, { resultTypes: ["violations"] })
              .then((r) => done(r.violations
                .filter((v) => v.impact === "serious" || v.impact === "critical")
                .map((v) => ({ id: v.id, impact: v.impact, help: v.help,
                  nodes: v.nodes.slice(0, 5).map((n) => `${n.target.join(" ")} — ${n.failureSummary}`) }))))
              .catch((e) => done([{ id: "axe-error", impact: "critical", help: String(e), nodes: [] }]));"#,
            vec![],
        )
        .await;
    found.as_array().cloned().unwrap_or_default()
}

/// Fails the test, naming `page` and every finding, when axe reports a serious violation.
pub async fn assert_accessible(b: &Browser, page: &str) {
    let violations = serious_violations(b).await;
    assert!(
        violations.is_empty(),
        "axe-core: serious accessibility violations on {page}:\n{}",
        serde_json::to_string_pretty(&violations).unwrap_or_default()
    );
}
