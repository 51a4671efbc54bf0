//! Notices the platform sends on its own behalf: invitations, BAA-expiry
//! reminders, shipment updates.
//!
//! A notice is rendered from the organisation's template with a well-known key
//! (`platform.invitation`, …) when it has one, so each organisation can word
//! its own, and from the platform's built-in template otherwise. It becomes
//! ordinary notifications — one per channel — inserted in the caller's
//! transaction and left for the dispatcher to push, so a notice commits or
//! rolls back with the change that caused it, and delivery, preferences,
//! retries and tracking are those of every other send.

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::{
    config::JobsConfig,
    db::{
        notifications::{self, Inserted, NewNotification},
        subscribers, templates as stored_templates,
    },
    domain::{Channel, EmailAddress, NotificationId, PhoneNumber, TenantId},
    jobs::QueueName,
    templates::{RenderError, Template},
};

/// One notice to one person.
#[derive(Debug, Clone)]
pub struct Notice<'a> {
    /// The template key an organisation may define to word it its own way.
    pub key: &'a str,
    /// The platform's wording, used when the organisation has no template
    /// with `key`.
    pub default: &'a Template,
    /// The template's data.
    pub data: &'a Value,
    /// The channels it goes out on (those of the template when empty).
    pub channels: &'a [Channel],
    /// The subscriber (external id) it is for: the in-app recipient, and the
    /// email recipient when `email` is not given, at the address
    /// [`subscribers::contacts`] resolves (for a platform user, whose external
    /// id is the user's id: its subscriber's own address, else its sign-in
    /// address).
    pub subscriber: Option<&'a str>,
    /// A direct email address, for someone who is neither a subscriber nor a
    /// user yet (an invitee). Never a user's address: that is resolved from
    /// `subscriber`, so the address the user chose wins.
    pub email: Option<&'a EmailAddress>,
    /// A direct phone number for SMS, for someone who is not a subscriber
    /// (an on-call number an alert rule names). As with `email`, a
    /// subscriber's own number is resolved from `subscriber` instead.
    pub phone: Option<&'a PhoneNumber>,
    /// The locale to render in; the subscriber's, then the template's
    /// default, otherwise.
    pub locale: Option<&'a str>,
    /// Returned with the notifications as given.
    pub metadata: Value,
    /// A key unique to this notice within the tenant (e.g.
    /// `baa:<org>:<agreement>:30d`): queueing it again creates nothing.
    pub idempotency_key: Option<&'a str>,
}

/// Why a notice could not be queued.
#[derive(Debug, thiserror::Error)]
pub enum NoticeError {
    /// The database failed.
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    /// The template does not render with the data.
    #[error("template `{key}`: {source}")]
    Render {
        /// The template key.
        key: String,
        /// Why.
        #[source]
        source: RenderError,
    },
}

/// What [`queue`] created, per channel; channels without a recipient (no
/// email address, no subscriber for in-app) are left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued {
    /// The notifications, one per channel reached.
    pub notifications: Vec<(Channel, NotificationId)>,
    /// Whether they existed already (same idempotency key).
    pub replayed: bool,
}

/// Renders `notice` and inserts its notifications for `tenant_id` in `tx`.
#[tracing::instrument(skip_all, fields(key = notice.key))]
pub async fn queue(
    tx: &mut sqlx::PgConnection,
    jobs: &JobsConfig,
    tenant_id: TenantId,
    notice: Notice<'_>,
) -> Result<Queued, NoticeError> {
    let own = stored_templates::get_by_key(&mut *tx, tenant_id, notice.key).await?;
    let template = own.as_ref().map(|t| &t.template).unwrap_or(notice.default);
    let subscriber_id = match notice.subscriber {
        Some(external_id) => Some(subscribers::upsert(&mut *tx, tenant_id, external_id).await?),
        None => None,
    };
    let contacts = match subscriber_id {
        Some(id) => subscribers::contacts(&mut *tx, tenant_id, id).await?,
        None => None,
    };
    let locale = notice.locale.map(str::to_owned).or_else(|| {
        contacts
            .as_ref()
            .and_then(|c| c.locale.as_ref())
            .map(|l| l.as_str().to_owned())
    });
    let channels = if notice.channels.is_empty() {
        template.default_channels().to_vec()
    } else {
        notice.channels.to_vec()
    };
    let mut out = Queued {
        notifications: Vec::new(),
        replayed: false,
    };
    for channel in channels {
        let recipient = match channel {
            Channel::Email => notice.email.map(|e| e.as_str().to_owned()).or_else(|| {
                contacts
                    .as_ref()
                    .and_then(|c| c.email.as_ref())
                    .map(|e| e.as_str().to_owned())
            }),
            Channel::InApp => notice.subscriber.map(str::to_owned),
            Channel::Sms => notice.phone.map(|p| p.as_str().to_owned()).or_else(|| {
                contacts
                    .as_ref()
                    .and_then(|c| c.phone.as_ref())
                    .map(|p| p.as_str().to_owned())
            }),
            Channel::WhatsApp => contacts
                .as_ref()
                .and_then(|c| c.whatsapp.as_ref())
                .map(|p| p.as_str().to_owned()),
            // A notice is one message to one person, not one per device.
            Channel::Push => contacts
                .as_ref()
                .and_then(|c| c.push_tokens.first())
                .map(|t| t.as_str().to_owned()),
        };
        let Some(recipient) = recipient else { continue };
        let rendered = crate::templates::render(template, channel, locale.as_deref(), notice.data)
            .map_err(|source| NoticeError::Render {
                key: notice.key.to_owned(),
                source,
            })?;
        let key = notice
            .idempotency_key
            .map(|k| format!("{k}:{}", channel.as_str()));
        let hash = key.as_ref().map(|k| Sha256::digest(k.as_bytes()).to_vec());
        let new = NewNotification {
            channel,
            recipient: &recipient,
            content: rendered.content.to_stored(),
            metadata: notice.metadata.clone(),
            max_attempts: jobs.queue(QueueName::for_channel(channel)).max_attempts,
            idempotency: key.as_deref().zip(hash),
            subscriber_id: if channel == Channel::InApp {
                subscriber_id
            } else {
                None
            },
            category: template.category(),
            template_key: Some(notice.key),
            critical: template.critical(),
            // The dispatcher pushes it once the caller's transaction commits.
            dispatched: false,
            send_id: out.notifications.first().map(|(_, id)| *id),
            run_at: None,
            waited_by_run: None,
        };
        match notifications::insert(&mut *tx, tenant_id, new).await? {
            Inserted::Created(id) => out.notifications.push((channel, id)),
            Inserted::Existing { id, .. } => {
                out.replayed = true;
                out.notifications.push((channel, id));
            }
        }
    }
    Ok(out)
}

/// Parses one of the platform's built-in templates, for a `static`:
///
/// ```ignore
/// static INVITATION: LazyLock<Template> = LazyLock::new(|| notices::builtin(json!({ ... })));
/// ```
///
/// # Panics
/// When the template does not parse: a built-in template is part of the
/// code, so this is a programming error, caught by the first test that sends
/// it.
pub fn builtin(source: Value) -> Template {
    Template::parse(source).expect("a built-in template parses")
}
