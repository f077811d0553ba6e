//! Seeds `lark-oncall demo` with members, an escalation rule and an alert source.

use std::collections::BTreeMap;

use super::members::MemberInput;
use super::model::{EscalateUnless, Level};
use super::rules::RuleInput;
use super::{IncidentError, Incidents};

/// Someone to seed the demo with.
#[derive(Debug, Clone)]
pub struct DemoPerson {
    pub name: String,
    pub email: String,
    pub mobile: String,
}

/// What [`Incidents::seed_demo`] created.
#[derive(Debug, Clone)]
pub struct DemoSeed {
    pub member_ids: Vec<String>,
    pub rule_id: String,
    pub source_id: String,
    /// The new source's integration key, for the demo's curl line.
    pub integration_key: String,
}

impl Incidents {
    /// Seeds `demo`: the people as members (linked by look-up when the integration's client
    /// can reach Lark), an alert source, and one rule for every incident — level 1 the first two
    /// people and the chats, repeating every 2 minutes twice, level 2 the third person after
    /// 5 unacknowledged minutes.
    pub async fn seed_demo(
        &self,
        integration_id: &str,
        people: &[DemoPerson],
        chat_ids: &[String],
    ) -> Result<DemoSeed, IncidentError> {
        let mut member_ids = Vec::new();
        for p in people {
            let member = self
                .members
                .create(MemberInput {
                    name: Some(p.name.clone()),
                    email: Some(p.email.clone()),
                    mobile: Some(p.mobile.clone()),
                    lark_open_ids: BTreeMap::new(),
                    role: None,
                })
                .await?;
            member_ids.push(member.id);
        }
        if let Some(client) = self.lark.get(integration_id)
            && let Err(e) = self.members.link_by_lookup(integration_id, &client, None).await
        {
            tracing::warn!(error = %e, "demo members not linked yet; they are looked up when first notified");
        }
        let first: Vec<String> = member_ids.iter().take(2).cloned().collect();
        let second: Vec<String> = member_ids.iter().skip(2).take(1).cloned().collect();
        let mut levels = vec![Level {
            members: first,
            chats: chat_ids.to_vec(),
            bot_webhooks: Vec::new(),
            schedules: Vec::new(),
            fall_through_when_nobody_on_call: false,
            delay_minutes: 0,
            repeat_every_minutes: Some(2),
            repeat_count: 2,
            escalate_after_minutes: Some(5),
            escalate_unless: EscalateUnless::Acknowledged,
        }];
        if !second.is_empty() {
            levels.push(Level {
                members: second,
                chats: Vec::new(),
                bot_webhooks: Vec::new(),
                schedules: Vec::new(),
                fall_through_when_nobody_on_call: false,
                delay_minutes: 0,
                repeat_every_minutes: None,
                repeat_count: 0,
                escalate_after_minutes: None,
                escalate_unless: EscalateUnless::Acknowledged,
            });
        }
        let rule = self
            .save_rule(
                None,
                RuleInput {
                    name: "Demo: everything".into(),
                    position: None,
                    integration_id: integration_id.to_string(),
                    matches: Default::default(),
                    time_windows: Vec::new(),
                    timezone: None,
                    levels,
                    war_room: Default::default(),
                },
                true,
            )
            .await?;
        let (source, integration_key) = self.create_source("Demo alerts").await?;
        Ok(DemoSeed {
            member_ids,
            rule_id: rule.id,
            source_id: source.id,
            integration_key,
        })
    }
}
