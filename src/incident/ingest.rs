//! Alert formats turned into alert events: Prometheus Alertmanager's webhook (v4) and the
//! standard alert event that on-call SaaS users already send (`title_rule`, `event_status`,
//! `alert_key`, `description`, `labels`). One set of field limits ([`check_fields`]) holds for
//! every way in: these two formats and `POST /api/v1/incidents`.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::IncidentError;
use super::model::Severity;

/// One alert, whatever format it came in: it opens or updates the open incident of its key,
/// or resolves it.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertEvent {
    /// Unique within the source.
    pub key: String,
    pub title: String,
    pub description: String,
    pub severity: Severity,
    pub labels: BTreeMap<String, String>,
    pub resolved: bool,
}

fn invalid(field: &str, reason: impl Into<String>) -> IncidentError {
    IncidentError::Invalid {
        field: field.to_string(),
        reason: reason.into(),
    }
}

/// Alertmanager's webhook payload, version 4 (the fields we read).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct AlertmanagerPayload {
    pub version: String,
    #[serde(rename = "groupKey")]
    pub group_key: String,
    pub status: String,
    #[serde(default, rename = "groupLabels")]
    pub group_labels: BTreeMap<String, String>,
    #[serde(default, rename = "commonLabels")]
    pub common_labels: BTreeMap<String, String>,
    #[serde(default, rename = "commonAnnotations")]
    pub common_annotations: BTreeMap<String, String>,
    #[serde(default, rename = "externalURL")]
    pub external_url: String,
    #[serde(default)]
    pub alerts: Vec<AlertmanagerAlert>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct AlertmanagerAlert {
    pub status: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

fn severity_word(word: &str) -> Option<Severity> {
    match word.to_ascii_lowercase().as_str() {
        "critical" | "crit" | "page" | "p0" | "p1" | "error" | "high" => Some(Severity::Critical),
        "warning" | "warn" | "p2" | "medium" => Some(Severity::Warning),
        "info" | "informational" | "p3" | "p4" | "low" | "none" => Some(Severity::Info),
        _ => None,
    }
}

impl AlertmanagerPayload {
    /// One event per group: the group is the incident (Alertmanager already groups alerts).
    pub fn into_event(self) -> Result<AlertEvent, IncidentError> {
        if self.version != "4" {
            return Err(invalid(
                "version",
                format!(
                    "version {:?} is not supported; Alertmanager sends \"4\"",
                    self.version
                ),
            ));
        }
        if self.group_key.is_empty() {
            return Err(invalid("groupKey", "must not be empty"));
        }
        let resolved = match self.status.as_str() {
            "firing" => false,
            "resolved" => true,
            other => {
                return Err(invalid(
                    "status",
                    format!("{other:?} is neither firing nor resolved"),
                ));
            }
        };
        let firing: Vec<&AlertmanagerAlert> = self.alerts.iter().filter(|a| a.status == "firing").collect();
        let alertname = self
            .common_labels
            .get("alertname")
            .or_else(|| self.group_labels.get("alertname"))
            .cloned();
        let title = self
            .common_annotations
            .get("summary")
            .cloned()
            .or(alertname)
            .unwrap_or_else(|| cut_to(&format!("Alertmanager group {}", self.group_key), MAX_TITLE_CHARS));
        let severity = self
            .common_labels
            .get("severity")
            .and_then(|s| severity_word(s))
            .or_else(|| {
                // Without a common severity, the most severe alert of the group decides.
                self.alerts
                    .iter()
                    .filter_map(|a| a.labels.get("severity").and_then(|s| severity_word(s)))
                    .min()
            })
            .unwrap_or(Severity::Warning);
        let mut description = self
            .common_annotations
            .get("description")
            .cloned()
            .unwrap_or_default();
        if description.is_empty() {
            description = firing
                .iter()
                .filter_map(|a| {
                    a.annotations
                        .get("description")
                        .or_else(|| a.annotations.get("summary"))
                })
                .cloned()
                .collect::<Vec<_>>()
                .join("\n");
        }
        if !self.external_url.is_empty() && description.is_empty() {
            description = format!("Alertmanager: {}", self.external_url);
        }
        let mut labels = self.group_labels;
        labels.extend(self.common_labels);
        // The description is our own join of the group's alerts: cut, not refused.
        let description = cut_to(&description, MAX_DESCRIPTION_CHARS);
        check_fields(
            FieldNames {
                title: "commonAnnotations.summary",
                description: "commonAnnotations.description",
                labels: "commonLabels",
            },
            &title,
            &description,
            &labels,
        )?;
        // Alertmanager builds the group key from the group-by labels, so it can be long; a
        // digest keeps it within the key limit and still unique per group.
        let key = if self.group_key.chars().count() > MAX_ALERT_KEY_CHARS {
            format!("sha256:{}", crate::ids::sha256_hex(self.group_key.as_bytes()))
        } else {
            self.group_key
        };
        Ok(AlertEvent {
            key,
            title,
            description,
            severity,
            labels,
            resolved,
        })
    }
}

pub const MAX_TITLE_CHARS: usize = 512;
/// Long enough for a stack trace or a runbook excerpt; the card shows what fits in Lark's 30 KB
/// and links to the rest.
pub const MAX_DESCRIPTION_CHARS: usize = 65_536;
pub const MAX_LABELS: usize = 50;
pub const MAX_LABEL_KEY_CHARS: usize = 128;
pub const MAX_LABEL_VALUE_CHARS: usize = 2048;
pub const MAX_ALERT_KEY_CHARS: usize = 255;

/// What each format calls the fields [`check_fields`] checks, for its error messages.
pub struct FieldNames {
    pub title: &'static str,
    pub description: &'static str,
    pub labels: &'static str,
}

/// The limits every ingest path enforces: title 1 to [`MAX_TITLE_CHARS`], description up to
/// [`MAX_DESCRIPTION_CHARS`], at most [`MAX_LABELS`] labels with keys of 1 to
/// [`MAX_LABEL_KEY_CHARS`] and values up to [`MAX_LABEL_VALUE_CHARS`] characters.
pub fn check_fields(
    names: FieldNames,
    title: &str,
    description: &str,
    labels: &BTreeMap<String, String>,
) -> Result<(), IncidentError> {
    if title.trim().is_empty() {
        return Err(invalid(names.title, "must not be empty"));
    }
    if title.chars().count() > MAX_TITLE_CHARS {
        return Err(invalid(
            names.title,
            format!("longer than {MAX_TITLE_CHARS} characters"),
        ));
    }
    if description.chars().count() > MAX_DESCRIPTION_CHARS {
        return Err(invalid(
            names.description,
            format!("longer than {MAX_DESCRIPTION_CHARS} characters"),
        ));
    }
    if labels.len() > MAX_LABELS {
        return Err(invalid(names.labels, format!("more than {MAX_LABELS} labels")));
    }
    for (k, v) in labels {
        if k.is_empty() || k.chars().count() > MAX_LABEL_KEY_CHARS {
            let shown = cut_to(k, 40);
            return Err(invalid(
                names.labels,
                format!("label key {shown:?} must be 1 to {MAX_LABEL_KEY_CHARS} characters"),
            ));
        }
        if v.chars().count() > MAX_LABEL_VALUE_CHARS {
            return Err(invalid(
                &format!("{}.{k}", names.labels),
                format!("longer than {MAX_LABEL_VALUE_CHARS} characters"),
            ));
        }
    }
    Ok(())
}

/// Checks a dedup/alert key against [`MAX_ALERT_KEY_CHARS`].
pub fn check_key(field: &str, key: &str) -> Result<(), IncidentError> {
    if key.chars().count() > MAX_ALERT_KEY_CHARS {
        return Err(invalid(
            field,
            format!("longer than {MAX_ALERT_KEY_CHARS} characters"),
        ));
    }
    Ok(())
}

/// At most `max` characters of `text`, the last one `…` when cut.
fn cut_to(text: &str, max: usize) -> String {
    match text.char_indices().nth(max.saturating_sub(1)) {
        Some((end, _)) if text.chars().count() > max => format!("{}…", &text[..end]),
        _ => text.to_string(),
    }
}

/// The standard alert event.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct StandardEvent {
    pub title_rule: String,
    pub event_status: String,
    #[serde(default)]
    pub alert_key: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

impl StandardEvent {
    pub fn into_event(self) -> Result<AlertEvent, IncidentError> {
        let (severity, resolved) = match self.event_status.as_str() {
            "Critical" => (Severity::Critical, false),
            "Warning" => (Severity::Warning, false),
            "Info" => (Severity::Info, false),
            "Ok" => (Severity::Info, true),
            other => {
                return Err(invalid(
                    "event_status",
                    format!("{other:?} is not one of Critical, Warning, Info, Ok"),
                ));
            }
        };
        let title = self.title_rule.trim().to_string();
        let description = self.description.unwrap_or_default();
        check_fields(
            FieldNames {
                title: "title_rule",
                description: "description",
                labels: "labels",
            },
            &title,
            &description,
            &self.labels,
        )?;
        let key = match self.alert_key.filter(|k| !k.is_empty()) {
            Some(k) => {
                check_key("alert_key", &k)?;
                k
            }
            // Without a key, the title and labels identify the alert, so a recovery with the
            // same title and labels finds it.
            None => {
                let labels = serde_json::to_string(&self.labels).unwrap_or_default();
                crate::ids::sha256_hex(format!("{title}\n{labels}").as_bytes())[..32].to_string()
            }
        };
        Ok(AlertEvent {
            key,
            title,
            description,
            severity,
            labels: self.labels,
            resolved,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_events_map_status_and_check_limits() {
        let ev: StandardEvent = serde_json::from_value(serde_json::json!({
            "title_rule": "cpu high", "event_status": "Ok", "alert_key": "k1"
        }))
        .unwrap();
        let ev = ev.into_event().unwrap();
        assert!(ev.resolved);
        assert_eq!(ev.key, "k1");
        let bad: StandardEvent = serde_json::from_value(serde_json::json!({
            "title_rule": "x".repeat(513), "event_status": "Critical"
        }))
        .unwrap();
        let err = bad.into_event().unwrap_err();
        assert!(err.to_string().starts_with("title_rule"), "{err}");
        let bad: StandardEvent =
            serde_json::from_value(serde_json::json!({"title_rule": "x", "event_status": "Fatal"})).unwrap();
        assert!(
            bad.into_event()
                .unwrap_err()
                .to_string()
                .starts_with("event_status")
        );
    }

    #[test]
    fn alertmanager_payloads_get_the_same_limits() {
        let many: BTreeMap<String, String> = (0..60).map(|i| (format!("l{i}"), "v".into())).collect();
        let p: AlertmanagerPayload = serde_json::from_value(serde_json::json!({
            "version": "4", "groupKey": "g".repeat(400), "status": "firing",
            "commonLabels": many, "alerts": []
        }))
        .unwrap();
        assert!(
            p.into_event()
                .unwrap_err()
                .to_string()
                .starts_with("commonLabels")
        );
        let p: AlertmanagerPayload = serde_json::from_value(serde_json::json!({
            "version": "4", "groupKey": "g".repeat(400), "status": "firing",
            "alerts": (0..50).map(|_| serde_json::json!({"status": "firing", "annotations": {"description": "d".repeat(2000)}})).collect::<Vec<_>>()
        }))
        .unwrap();
        let ev = p.into_event().unwrap();
        assert_eq!(ev.description.chars().count(), MAX_DESCRIPTION_CHARS);
        assert!(ev.key.len() <= MAX_ALERT_KEY_CHARS);
    }

    #[test]
    fn alertmanager_groups_become_one_event() {
        let p: AlertmanagerPayload = serde_json::from_value(serde_json::json!({
            "version": "4", "groupKey": "{}:{alertname=\"X\"}", "status": "firing",
            "groupLabels": {"alertname": "X"}, "commonLabels": {"alertname": "X", "severity": "critical"},
            "commonAnnotations": {"summary": "X is down"},
            "alerts": [{"status": "firing", "labels": {"alertname": "X"}, "annotations": {}}]
        }))
        .unwrap();
        let ev = p.into_event().unwrap();
        assert_eq!(ev.title, "X is down");
        assert_eq!(ev.severity, Severity::Critical);
        assert!(!ev.resolved);
    }
}
