//! Contacts (reference §5.4): user ids by email or mobile, for the users the app can see.

use serde_json::{Value, json};

use super::{ApiRequest, Reject, id_list, json_body, ok};
use crate::sim::state::State;
use crate::sim::{CallRecord, SimUser};

fn user_id_of(user: &SimUser, id_type: &str) -> String {
    match id_type {
        "user_id" => user.user_id.clone(),
        "union_id" => user.union_id.clone(),
        _ => user.open_id.clone(),
    }
}

pub(super) fn batch_get_id(st: &State, req: &ApiRequest, record: &mut CallRecord) -> Result<Value, Reject> {
    let field_error = || Reject::lark(400, 99992402, "field validation failed");
    let id_type = req.query.get("user_id_type").map_or("open_id", String::as_str);
    if !["open_id", "user_id", "union_id"].contains(&id_type) {
        return Err(field_error());
    }
    let body = json_body(req)?;
    let emails = id_list(&body, "emails", 50).map_err(|_| field_error())?;
    let mobiles = id_list(&body, "mobiles", 50).map_err(|_| field_error())?;
    record.summary = format!("{} emails, {} mobiles", emails.len(), mobiles.len());
    let status = json!({"is_frozen": false, "is_resigned": false, "is_activated": true,
                        "is_exited": false, "is_unjoin": false});
    let mut list = Vec::new();
    for (field, values) in [("email", &emails), ("mobile", &mobiles)] {
        for value in values {
            let found = st.world.users.iter().find(|u| {
                u.app_visible
                    && if field == "email" {
                        u.email.eq_ignore_ascii_case(value)
                    } else {
                        u.mobile == *value
                    }
            });
            let mut entry = json!({ field: value });
            if let Some(u) = found {
                entry["user_id"] = json!(user_id_of(u, id_type));
                entry["status"] = status.clone();
            }
            list.push(entry);
        }
    }
    Ok(ok(json!({ "user_list": list })))
}
