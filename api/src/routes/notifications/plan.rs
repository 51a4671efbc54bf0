//! Planning a template send: the template's own fields checked and its
//! content rendered for each channel that can reach the subscriber, and the
//! 202 answer built.

use shared::domain::{Problems, recipient};

use super::*;

pub(super) fn accepted(
    created: &[(NotificationId, Channel, NotificationStatus)],
    skipped: Vec<SkippedChannel>,
    replayed: bool,
) -> SendResponse {
    let url = |id: &NotificationId| format!("/api/v1/services/notifications/{id}");
    let notifications: Vec<AcceptedNotification> = created
        .iter()
        .map(|(id, channel, status)| AcceptedNotification {
            id: id.to_string(),
            channel: channel.as_str().into(),
            status: status.as_str().into(),
            status_url: url(id),
        })
        .collect();
    let first = notifications.first().cloned();
    let (id, status, status_url) = first
        .map(|n| (n.id, n.status, n.status_url))
        .unwrap_or_default();
    SendResponse::Accepted(
        Json(Accepted {
            id,
            status,
            status_url: status_url.clone(),
            notifications,
            skipped,
        }),
        status_url,
        replayed.then(|| "true".to_owned()),
    )
}

/// A subscriber already known by its external id, so the send need not look
/// them up again.
pub(super) type KnownSubscriber = Option<(String, shared::domain::SubscriberId)>;

/// Checks a template send's own fields and renders it for each channel.
pub(super) async fn plan_template(
    state: &AppState,
    tenant_id: shared::domain::TenantId,
    req: &SendRequest,
    key: &str,
) -> Result<(Vec<ValidSend>, Vec<SkippedChannel>, bool, KnownSubscriber), ApiError> {
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
    let subscriber = subscriber_id(&mut p, req.subscriber_id.as_deref());
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
        // Who: the direct address, or the subscriber's contact point.
        let recipients: Vec<String> = match (&req.to, channel) {
            (Some(to), Channel::Email | Channel::Sms | Channel::WhatsApp | Channel::Push) => {
                vec![recipient(channel, to).map_err(|e| ApiError::invalid("to", e.0))?]
            }
            (Some(_), Channel::InApp) => {
                return Err(ApiError::invalid(
                    "to",
                    "in-app messages go to a `subscriber_id`",
                ));
            }
            (None, Channel::InApp) => subscriber.clone().into_iter().collect(),
            (None, _) => {
                let c = contacts.as_ref();
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
        };
        if recipients.is_empty() {
            skipped.push(SkippedChannel {
                channel: channel.as_str().into(),
                reason: match channel {
                    Channel::Email => "the subscriber has no email address",
                    Channel::Sms => "the subscriber has no phone number",
                    Channel::WhatsApp => "the subscriber has no WhatsApp number",
                    _ => "the subscriber has no registered device",
                }
                .into(),
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
        let reasons: Vec<String> = skipped
            .iter()
            .map(|s| format!("{}: {}", s.channel, s.reason))
            .collect();
        return Err(ApiError::invalid(
            "subscriber_id",
            format!(
                "no channel can reach this recipient ({})",
                reasons.join("; ")
            ),
        ));
    }
    Ok((plans, skipped, template.critical(), known))
}
