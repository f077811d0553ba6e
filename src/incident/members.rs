//! On-call members: who they are (name, email, mobile) and their Lark identity per integration,
//! found by batch look-up of email and mobile or linked explicitly (OAuth, an admin). A member
//! without an identity for an integration is "not linked" there.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;

use super::IncidentError;
use super::model::{LarkIdentity, Member, MemberRole};
use super::tables;
use crate::clock::Clock;
use crate::lark::LarkClient;
use crate::store::Store;

/// A member as created or changed through the API (absent fields stay as they are).
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MemberInput {
    pub name: Option<String>,
    pub email: Option<String>,
    pub mobile: Option<String>,
    /// open_ids by integration id, for people linked by other means than a look-up.
    #[serde(default)]
    pub lark_open_ids: BTreeMap<String, String>,
    /// `responder` (the default), `viewer` or `admin`.
    pub role: Option<MemberRole>,
}

fn invalid(field: &str, reason: impl Into<String>) -> IncidentError {
    IncidentError::Invalid {
        field: field.to_string(),
        reason: reason.into(),
    }
}

fn check_contact(input: &MemberInput) -> Result<(), IncidentError> {
    if let Some(email) = &input.email
        && !email.is_empty()
        && !email.contains('@')
    {
        return Err(invalid("email", format!("{email:?} is not an email address")));
    }
    if let Some(mobile) = &input.mobile
        && !mobile.is_empty()
        && !mobile.trim_start_matches('+').chars().all(|c| c.is_ascii_digit())
    {
        return Err(invalid(
            "mobile",
            "digits only, with an optional leading +country code",
        ));
    }
    Ok(())
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

pub struct Members {
    store: Store,
    clock: Arc<dyn Clock>,
}

impl Members {
    pub fn new(store: Store, clock: Arc<dyn Clock>) -> Members {
        Members { store, clock }
    }

    pub async fn create(&self, input: MemberInput) -> Result<Member, IncidentError> {
        check_contact(&input)?;
        let name = non_empty(input.name.clone()).ok_or_else(|| invalid("name", "must not be empty"))?;
        let now = self.clock.now();
        let member = Member {
            id: crate::ids::new_id(crate::ids::prefix::MEMBER, 6),
            name,
            email: non_empty(input.email),
            mobile: non_empty(input.mobile),
            lark: input
                .lark_open_ids
                .into_iter()
                .map(|(integration, open_id)| {
                    (
                        integration,
                        LarkIdentity {
                            open_id,
                            linked_via: "manual".into(),
                            linked_at: now,
                        },
                    )
                })
                .collect(),
            role: input.role.unwrap_or_default(),
            created_at: now,
        };
        let stored = member.clone();
        self.store
            .write(move |w| w.put(&tables::MEMBERS, stored.id.as_str(), &stored))
            .await?;
        Ok(member)
    }

    pub fn get(&self, id: &str) -> Result<Member, IncidentError> {
        self.store
            .read(|r| r.get(&tables::MEMBERS, id))?
            .ok_or_else(|| IncidentError::NotFound(format!("no member {id}")))
    }

    pub fn list(&self) -> Result<Vec<Member>, IncidentError> {
        Ok(self
            .store
            .read(|r| r.page(&tables::MEMBERS, None, usize::MAX, false))?
            .into_iter()
            .map(|(_, m)| m)
            .collect())
    }

    pub async fn update(&self, id: &str, input: MemberInput) -> Result<Member, IncidentError> {
        check_contact(&input)?;
        let mut member = self.get(id)?;
        if let Some(name) = input.name {
            member.name = non_empty(Some(name)).ok_or_else(|| invalid("name", "must not be empty"))?;
        }
        // A changed address may belong to another Lark account: look it up again.
        if input.email.is_some() || input.mobile.is_some() {
            member.lark.retain(|_, identity| identity.linked_via != "lookup");
        }
        if input.email.is_some() {
            member.email = non_empty(input.email);
        }
        if input.mobile.is_some() {
            member.mobile = non_empty(input.mobile);
        }
        if let Some(role) = input.role {
            member.role = role;
        }
        let now = self.clock.now();
        for (integration, open_id) in input.lark_open_ids {
            member.lark.insert(
                integration,
                LarkIdentity {
                    open_id,
                    linked_via: "manual".into(),
                    linked_at: now,
                },
            );
        }
        let stored = member.clone();
        self.store
            .write(move |w| w.put(&tables::MEMBERS, stored.id.as_str(), &stored))
            .await?;
        Ok(member)
    }

    pub async fn delete(&self, id: &str) -> Result<(), IncidentError> {
        let id = id.to_string();
        let removed = self
            .store
            .write(move |w| w.remove(&tables::MEMBERS, id.as_str()))
            .await?;
        if removed {
            Ok(())
        } else {
            Err(IncidentError::NotFound("no such member".into()))
        }
    }

    /// Records a member's identity in one integration (e.g. after an OAuth login).
    pub async fn link(
        &self,
        id: &str,
        integration_id: &str,
        open_id: &str,
        via: &str,
    ) -> Result<Member, IncidentError> {
        let identity = LarkIdentity {
            open_id: open_id.to_string(),
            linked_via: via.to_string(),
            linked_at: self.clock.now(),
        };
        let (key, integration) = (id.to_string(), integration_id.to_string());
        self.store
            .write(move |w| {
                let Some(mut member) = w.get(&tables::MEMBERS, key.as_str())? else {
                    return Ok(None);
                };
                member.lark.insert(integration, identity);
                w.put(&tables::MEMBERS, key.as_str(), &member)?;
                Ok(Some(member))
            })
            .await?
            .ok_or_else(|| IncidentError::NotFound(format!("no member {id}")))
    }

    /// Looks up, in one integration, every member not yet linked there (batches of 50 emails and
    /// 50 mobiles) and links those found. Returns how many were linked and who stays unlinked.
    pub async fn link_by_lookup(
        &self,
        integration_id: &str,
        client: &LarkClient,
        only: Option<&[String]>,
    ) -> Result<LinkReport, IncidentError> {
        let unlinked: Vec<Member> = self
            .list()?
            .into_iter()
            .filter(|m| !m.lark.contains_key(integration_id))
            .filter(|m| only.is_none_or(|ids| ids.contains(&m.id)))
            .collect();
        let emails: Vec<String> = unlinked.iter().filter_map(|m| m.email.clone()).collect();
        let mobiles: Vec<String> = unlinked.iter().filter_map(|m| m.mobile.clone()).collect();
        let mut report = LinkReport::default();
        if emails.is_empty() && mobiles.is_empty() {
            report.not_linked = unlinked.into_iter().map(|m| m.id).collect();
            return Ok(report);
        }
        let found = client
            .user_ids_by_email_and_mobile(&emails, &mobiles)
            .await
            .map_err(|e| IncidentError::Lark(e.to_string()))?;
        let mut by_email = BTreeMap::new();
        let mut by_mobile = BTreeMap::new();
        for m in found {
            let Some(open_id) = m.user_id.filter(|id| !id.is_empty()) else {
                continue;
            };
            if let Some(email) = m.email {
                by_email.insert(email.to_lowercase(), open_id.clone());
            }
            if let Some(mobile) = m.mobile {
                by_mobile.insert(mobile, open_id);
            }
        }
        for member in unlinked {
            let open_id = member
                .email
                .as_ref()
                .and_then(|e| by_email.get(&e.to_lowercase()))
                .or_else(|| member.mobile.as_ref().and_then(|m| by_mobile.get(m)));
            match open_id {
                Some(open_id) => {
                    self.link(&member.id, integration_id, open_id, "lookup").await?;
                    report.linked.push(member.id);
                }
                None => report.not_linked.push(member.id),
            }
        }
        Ok(report)
    }
}

#[derive(Debug, Clone, Default, serde::Serialize, utoipa::ToSchema)]
pub struct LinkReport {
    pub linked: Vec<String>,
    pub not_linked: Vec<String>,
}
