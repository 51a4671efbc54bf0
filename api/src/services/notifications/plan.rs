//! Planning a template send: the template's own fields checked and its
//! content rendered for each channel that can reach the subscriber.

use serde_json::Value;
use shared::{
    db::subscribers::{self, Contacts},
    domain::{Channel, Problems, SubscriberId, TenantId, recipient},
};

use super::{MAX_METADATA_KEYS, Planned, SendRequest, Skipped, validate::ValidSend};
use crate::{
    AppState,
    error::{ApiError, InvalidParam},
};

/// A subscriber already known by its external id, so the send need not look
/// them up again.
pub(super) type KnownSubscriber = Option<(String, SubscriberId)>;

/// A template send's own fields, checked.
struct Fields {
    /// The template's variables.
    data: Value,
    metadata: Value,
    /// The subscriber's external id.
    subscriber: Option<String>,
    /// The channels named, each once; empty: the template's.
    channels: Vec<Channel>,
}

/// Checks a template send's own fields and renders it for each channel.
pub(super) async fn plan_template(
    state: &AppState,
    tenant_id: TenantId,
    req: &SendRequest,
    key: &str,
) -> Result<Planned, ApiError> {
    let Fields {
        data,
        metadata,
        subscriber,
        mut channels,
    } = fields(req)?;
    let prepared = state
        .templates
        .prepared(&state.pool, tenant_id, key)
        .await?
        .ok_or_else(|| ApiError::invalid("template", "no template with this key"))?;
    let template = prepared.template();
    if channels.is_empty() {
        channels = template.default_channels().to_vec();
    }
    if req.to.is_some() && channels.len() != 1 {
        return Err(ApiError::invalid(
            "to",
            "a direct address serves one channel; name it in `channels`, or send to a `subscriber_id`",
        ));
    }
    // An in-app message reaches the subscriber by their external id; their
    // stored details matter only for a locale the template could render
    // differently.
    let needs_contacts = channels.iter().any(|c| *c != Channel::InApp)
        || (req.locale.is_none() && template.locales().len() > 1);
    let (known, contacts) = match &subscriber {
        Some(external_id) if needs_contacts => {
            match subscribers::contacts_by_external_id(&state.pool, tenant_id, external_id).await? {
                Some((id, contacts)) => (Some((external_id.clone(), id)), Some(contacts)),
                None => (None, None),
            }
        }
        _ => (None, None),
    };
    let locale = req.locale.clone().or_else(|| {
        contacts
            .as_ref()
            .and_then(|c| c.locale.as_ref())
            .map(|l| l.as_str().to_owned())
    });
    let mut plans = Vec::new();
    let mut skipped = Vec::new();
    for channel in channels {
        let recipients = recipients(req, channel, subscriber.as_ref(), contacts.as_ref())?;
        if recipients.is_empty() {
            skipped.push(Skipped {
                channel,
                reason: unreachable_reason(channel),
            });
            continue;
        }
        let rendered = prepared
            .render(channel, locale.as_deref(), &data)
            .map_err(|e| {
                ApiError::Invalid(vec![InvalidParam {
                    name: "template_data".into(),
                    reason: e.to_string(),
                }])
            })?;
        for recipient in recipients {
            plans.push(ValidSend {
                recipient,
                subscriber: subscriber.clone(),
                content: rendered.content.clone(),
                category: template.category().map(str::to_owned),
                metadata: metadata.clone(),
            });
        }
    }
    if plans.is_empty() {
        return Err(unreachable(&skipped));
    }
    Ok(Planned {
        plans,
        skipped,
        critical: template.critical(),
        known,
    })
}

/// Checks the fields a template send takes, and refuses the ones the
/// template gives; every problem named.
fn fields(req: &SendRequest) -> Result<Fields, ApiError> {
    let mut p = Problems::default();
    let given = [("channel", req.channel.is_some())]
        .into_iter()
        .chain(
            req.content_fields()
                .into_iter()
                .filter(|(name, _)| *name != "to"),
        )
        .chain([
            ("category", req.category.is_some()),
            ("critical", req.critical.is_some()),
        ]);
    for (name, present) in given {
        if present {
            p.add(name, "is not used with `template`: the template gives it");
        }
    }
    let data = match &req.template_data {
        None | Some(Value::Null) => Value::Object(Default::default()),
        Some(v @ Value::Object(_)) => v.clone(),
        Some(_) => {
            p.add("template_data", "must be a JSON object");
            Value::Null
        }
    };
    let metadata = p.object("metadata", req.metadata.as_ref(), MAX_METADATA_KEYS);
    let subscriber = super::validate::subscriber_id(&mut p, req.subscriber_id.as_deref());
    let mut channels = Vec::new();
    for (i, c) in req.channels.iter().flatten().enumerate() {
        match Channel::parse(c) {
            Some(c) if !channels.contains(&c) => channels.push(c),
            Some(_) => p.add(format!("channels[{i}]"), "is listed twice"),
            None => p.add(format!("channels[{i}]"), format!("`{c}` is not a channel")),
        }
    }
    if req.channels.as_ref().is_some_and(Vec::is_empty) {
        p.add("channels", "must not be empty");
    }
    if subscriber.is_none() && req.to.is_none() {
        p.add("subscriber_id", "`subscriber_id` or `to` is required");
    }
    if !p.is_empty() {
        return Err(p.into());
    }
    Ok(Fields {
        data,
        metadata,
        subscriber,
        channels,
    })
}

/// Who a template send reaches on `channel`: the direct address, or the
/// subscriber's contact point (every device for push); none when the
/// subscriber has none.
fn recipients(
    req: &SendRequest,
    channel: Channel,
    subscriber: Option<&String>,
    contacts: Option<&Contacts>,
) -> Result<Vec<String>, ApiError> {
    Ok(match (&req.to, channel) {
        (Some(to), Channel::Email | Channel::Sms | Channel::WhatsApp | Channel::Push) => {
            vec![recipient(channel, to).map_err(|e| ApiError::invalid("to", e.0))?]
        }
        (Some(_), Channel::InApp) => {
            return Err(ApiError::invalid(
                "to",
                "in-app messages go to a `subscriber_id`",
            ));
        }
        (None, Channel::InApp) => subscriber.cloned().into_iter().collect(),
        (None, _) => contact_points(channel, contacts),
    })
}

/// The subscriber's contact points for `channel`.
fn contact_points(channel: Channel, c: Option<&Contacts>) -> Vec<String> {
    match channel {
        Channel::Email => c
            .and_then(|c| c.email.as_ref())
            .map(|e| e.as_str().to_owned())
            .into_iter()
            .collect(),
        Channel::Sms => c
            .and_then(|c| c.phone.as_ref())
            .map(|e| e.as_str().to_owned())
            .into_iter()
            .collect(),
        Channel::WhatsApp => c
            .and_then(|c| c.whatsapp.as_ref())
            .map(|e| e.as_str().to_owned())
            .into_iter()
            .collect(),
        Channel::Push => c
            .map(|c| {
                c.push_tokens
                    .iter()
                    .map(|t| t.as_str().to_owned())
                    .collect()
            })
            .unwrap_or_default(),
        Channel::InApp => Vec::new(),
    }
}

/// Why the subscriber cannot be reached on `channel`.
fn unreachable_reason(channel: Channel) -> &'static str {
    match channel {
        Channel::Email => "the subscriber has no email address",
        Channel::Sms => "the subscriber has no phone number",
        Channel::WhatsApp => "the subscriber has no WhatsApp number",
        _ => "the subscriber has no registered device",
    }
}

/// The refusal of a template send no channel can carry.
fn unreachable(skipped: &[Skipped]) -> ApiError {
    let reasons: Vec<String> = skipped
        .iter()
        .map(|s| format!("{}: {}", s.channel.as_str(), s.reason))
        .collect();
    ApiError::invalid(
        "subscriber_id",
        format!(
            "no channel can reach this recipient ({})",
            reasons.join("; ")
        ),
    )
}
