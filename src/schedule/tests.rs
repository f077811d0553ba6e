//! The schedule service's unit tests: ending a running override hands back at the second it was
//! ended.

use super::*;
use crate::clock::ManualClock;
use model::{Participant, Rotation, RotationUnit};

struct Everyone;

impl Roster for Everyone {
    fn name(&self, member_id: &str) -> Result<Option<String>, StoreError> {
        Ok(Some(member_id.to_string()))
    }
    fn lark_contact(&self, _: &str) -> Result<Option<LarkContact>, StoreError> {
        Ok(None)
    }
    fn has_integration(&self, _: &str) -> Result<bool, StoreError> {
        Ok(true)
    }
}

fn t(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc)
}

fn members(shift: Option<FinalShift>) -> Vec<String> {
    shift.map(|f| f.shift.members).unwrap_or_default()
}

#[tokio::test]
async fn ending_a_running_override_hands_back_at_the_second_it_was_ended() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("state.redb")).unwrap();
    // A clock between seconds, as every real one is.
    let clock = Arc::new(ManualClock::at(t("2026-12-14T02:00:00.250Z")));
    let schedules = Schedules::new(store, clock.clone(), Arc::new(Everyone));
    let layer = Layer {
        name: "primary".into(),
        participants: vec![Participant(vec!["alice".into()])],
        rotation: Rotation {
            unit: RotationUnit::Day,
            every: 1,
        },
        first_handoff: model::wall_time::parse("2026-12-14T09:00").unwrap(),
        active_from: None,
        active_until: None,
        restrictions: Vec::new(),
    };
    let schedule = schedules
        .create(ScheduleInput {
            name: "ops".into(),
            description: String::new(),
            time_zone: "Asia/Shanghai".into(),
            layers: vec![layer],
            handoff_notice: None,
            daily_summary: None,
        })
        .await
        .unwrap();
    let cover = schedules
        .add_override(
            &schedule.id,
            OverrideInput {
                start: None,
                end: t("2026-12-14T04:00:00Z"),
                member_id: "carol".into(),
                note: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(cover.start, t("2026-12-14T02:00:00Z"), "whole seconds");

    clock.set(t("2026-12-14T02:30:00.700Z"));
    let removal = schedules.remove_override(&schedule.id, &cover.id).await.unwrap();
    assert_eq!(removal, OverrideRemoval::EndedNow);
    let ended = t("2026-12-14T02:30:00Z");
    assert_eq!(schedules.get(&schedule.id).unwrap().overrides[0].end, ended);
    assert_eq!(
        members(schedules.on_call(&schedule.id, ended).unwrap()),
        ["alice"]
    );
    assert_eq!(
        members(
            schedules
                .on_call(&schedule.id, ended - Duration::seconds(1))
                .unwrap()
        ),
        ["carol"]
    );
}
