//! Lenient accessors for Redfish JSON, whose shape varies by vendor.

use serde_json::Value;

/// The value at a path of object keys.
pub fn at<'v>(value: &'v Value, path: &[&str]) -> Option<&'v Value> {
    path.iter()
        .try_fold(value, |current, key| current.get(*key))
}

/// The string at a path of object keys.
pub fn str_at<'v>(value: &'v Value, path: &[&str]) -> Option<&'v str> {
    at(value, path).and_then(Value::as_str)
}

/// The `@odata.id` of the link object at a path.
pub fn link(value: &Value, path: &[&str]) -> Option<String> {
    at(value, path)
        .and_then(|link| link.get("@odata.id"))
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// The first key of the object at a path (e.g. the vendor under `Oem`).
pub fn first_key<'v>(value: &'v Value, path: &[&str]) -> Option<&'v str> {
    at(value, path)
        .and_then(Value::as_object)
        .and_then(|object| object.keys().next())
        .map(String::as_str)
}

/// The member links of a collection.
pub fn members(collection: &Value) -> Vec<String> {
    collection
        .get("Members")
        .and_then(Value::as_array)
        .map(|members| {
            members
                .iter()
                .filter_map(|member| member.get("@odata.id").and_then(Value::as_str))
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// The strings of an array at a path.
pub fn strings(value: &Value, path: &[&str]) -> Vec<String> {
    at(value, path)
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

fn extended_info(body: &Value) -> Vec<&Value> {
    let error = body.get("error").unwrap_or(body);
    error
        .get("@Message.ExtendedInfo")
        .and_then(Value::as_array)
        .map(|items| items.iter().collect())
        .unwrap_or_default()
}

/// The MessageIds of a Redfish error body.
pub fn message_ids(body: &Value) -> Vec<String> {
    extended_info(body)
        .into_iter()
        .filter_map(|info| info.get("MessageId").and_then(Value::as_str))
        .map(str::to_owned)
        .collect()
}

/// A one-line summary of a Redfish error body or task messages; a message repeated in the
/// extended info (BMCs often copy the main message there) appears once.
pub fn messages(body: &Value) -> String {
    let mut parts: Vec<String> = Vec::new();
    if let Some(message) = str_at(body, &["error", "message"]) {
        parts.push(message.to_owned());
    }
    for info in extended_info(body) {
        if let Some(message) = info.get("Message").and_then(Value::as_str) {
            parts.push(message.to_owned());
        }
    }
    if let Some(task_messages) = body.get("Messages").and_then(Value::as_array) {
        for message in task_messages {
            if let Some(text) = message.get("Message").and_then(Value::as_str) {
                parts.push(text.to_owned());
            }
        }
    }
    let mut unique: Vec<String> = Vec::with_capacity(parts.len());
    for part in parts {
        if !unique.contains(&part) {
            unique.push(part);
        }
    }
    unique.join("; ")
}

/// A JSON scalar rendered as text (strings unquoted).
pub fn scalar_text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_message_copied_into_the_extended_info_is_shown_once() {
        let body = json!({"error": {
            "message": "BMC unreachable",
            "@Message.ExtendedInfo": [
                {"MessageId": "Base.1.0.GeneralError", "Message": "BMC unreachable"},
                {"MessageId": "Base.1.0.Busy", "Message": "try again later"},
            ],
        }});

        assert_eq!(messages(&body), "BMC unreachable; try again later");
    }
}
