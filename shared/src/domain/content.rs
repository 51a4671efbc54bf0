//! A notification's content, typed per channel: [`Content`].
//!
//! Every producer builds one: a direct send once its fields are checked, and
//! a template render for sends, batches, CSV jobs, topic and workflow sends
//! and notices. The worker decodes a claimed row into one before any
//! provider sees it, so a provider reads fields, never JSON.
//!
//! Content is stored as JSON in the notification row, beside its channel
//! column (the JSON carries no channel of its own). These are the stored
//! shapes, and every row ever written reads back through them:
//!
//! | channel    | stored JSON                                                        |
//! |------------|--------------------------------------------------------------------|
//! | `email`    | `{"subject", "text"?, "html"?}`: an absent part is omitted         |
//! | `sms`      | `{"body"}`                                                         |
//! | `push`     | `{"title", "body"?, "data"}`: an absent body is omitted            |
//! | `whatsapp` | `{"text"}`, or `{"template_name", "language", "parameters"}`       |
//! | `inapp`    | `{"title", "body", "action_url", "data"}`: absent ones are `null`  |
//!
//! Reading is lenient where rows differ: a push `body` stored as `null`
//! (direct sends wrote it so), and a `data` or `parameters` that is `null`
//! or absent, read as absent or empty.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use super::{Channel, Invalid, Subject};

/// Longest SMS body, in characters.
pub const MAX_SMS_CHARS: usize = 1_600;
/// Longest push or in-app title, in characters.
pub const MAX_TITLE_CHARS: usize = 200;
/// Longest push or in-app body, in characters.
pub const MAX_BODY_CHARS: usize = 5_000;
/// Longest WhatsApp text body, in characters (the Cloud API's limit).
pub const MAX_WHATSAPP_TEXT_CHARS: usize = 4_096;

/// What one notification says, on its channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// An email.
    Email(EmailContent),
    /// A text message.
    Sms(SmsContent),
    /// A mobile push.
    Push(PushContent),
    /// A WhatsApp message.
    WhatsApp(WhatsAppContent),
    /// An entry in the subscriber's in-app inbox.
    InApp(InAppContent),
}

/// The content of an email.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmailContent {
    /// The subject line.
    pub subject: Subject,
    /// The plain-text body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// The HTML body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub html: Option<String>,
}

/// The content of a text message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SmsContent {
    /// The message, at most [`MAX_SMS_CHARS`].
    pub body: String,
}

/// The content of a mobile push.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushContent {
    /// The title shown.
    pub title: String,
    /// The text shown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// Data for the app (string values, as FCM requires).
    #[serde(default, deserialize_with = "null_as_empty")]
    pub data: BTreeMap<String, String>,
}

/// The content of a WhatsApp message: free-form text, or a template Meta
/// approved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum WhatsAppContent {
    /// Text, only inside the 24-hour customer-service window.
    Text {
        /// The text, at most [`MAX_WHATSAPP_TEXT_CHARS`].
        text: String,
    },
    /// A template approved by Meta.
    Template {
        /// Its name.
        template_name: String,
        /// Its language code, e.g. `en_US`.
        language: String,
        /// The body's parameters, in order.
        #[serde(default, deserialize_with = "null_as_empty")]
        parameters: Vec<String>,
    },
}

/// The content of an in-app inbox entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InAppContent {
    /// The title shown.
    pub title: String,
    /// The text shown.
    #[serde(default)]
    pub body: Option<String>,
    /// Where a click leads (see [`super::action_url_ok`]).
    #[serde(default)]
    pub action_url: Option<String>,
    /// Data for the app.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub data: Map<String, Value>,
}

/// `null` read as the type's empty value.
fn null_as_empty<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// Stored content that does not read as its channel's content. Says which
/// channel only: serde's own message could quote the content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the stored content is not {} content", .0.as_str())]
pub struct UnreadableContent(pub Channel);

impl Content {
    /// The channel the content is for.
    pub fn channel(&self) -> Channel {
        match self {
            Content::Email(_) => Channel::Email,
            Content::Sms(_) => Channel::Sms,
            Content::Push(_) => Channel::Push,
            Content::WhatsApp(_) => Channel::WhatsApp,
            Content::InApp(_) => Channel::InApp,
        }
    }

    /// Reads a notification row's stored content on its `channel`.
    pub fn from_stored(channel: Channel, stored: &Value) -> Result<Self, UnreadableContent> {
        let unreadable = |_| UnreadableContent(channel);
        Ok(match channel {
            Channel::Email => {
                Content::Email(EmailContent::deserialize(stored).map_err(unreadable)?)
            }
            Channel::Sms => Content::Sms(SmsContent::deserialize(stored).map_err(unreadable)?),
            Channel::Push => Content::Push(PushContent::deserialize(stored).map_err(unreadable)?),
            Channel::WhatsApp => {
                Content::WhatsApp(WhatsAppContent::deserialize(stored).map_err(unreadable)?)
            }
            Channel::InApp => {
                Content::InApp(InAppContent::deserialize(stored).map_err(unreadable)?)
            }
        })
    }

    /// The JSON stored in the notification row (see the module's table).
    pub fn to_stored(&self) -> Value {
        let stored = match self {
            Content::Email(c) => serde_json::to_value(c),
            Content::Sms(c) => serde_json::to_value(c),
            Content::Push(c) => serde_json::to_value(c),
            Content::WhatsApp(c) => serde_json::to_value(c),
            Content::InApp(c) => serde_json::to_value(c),
        };
        // Plain structs of strings and JSON maps: serialising cannot fail.
        stored.expect("content serialises to JSON")
    }
}

impl PushContent {
    /// A push's `data` from a JSON object whose values must all be strings.
    pub fn data_from(object: &Map<String, Value>) -> Result<BTreeMap<String, String>, Invalid> {
        object
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                _ => Err(Invalid("push data values must be strings".into())),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
