//! Permissions: what a caller may do, as `resource:action`, and the
//! built-in permission sets.
//!
//! The vocabulary is derived from the routes: each route declares one
//! [`Permission`] (see the API's `permissions::routes`). A user's effective
//! permissions are its base set (the one assigned to it, else the one its
//! role maps to), the single permissions granted to it, and what other
//! users of its organisation delegated to it for a time window (see
//! [`crate::db::permissions`]). An API key holds its scopes (all of them
//! when it has none).
//!
//! Built-in sets ([`BUILT_IN`]) form a chain: Viewer ⊂ Developer ⊂ Admin ⊂
//! Owner, each including the one before. `member` is what every role but
//! `ADMIN` could do before sets existed (invite whom its role may invite,
//! read lookups, track shipments); `ADMIN` maps to Owner, which holds everything.

use std::fmt;

macro_rules! permissions {
    ($($(#[$doc:meta])* $variant:ident => $name:literal,)*) => {
        /// One thing a caller may do.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Permission {
            $($(#[$doc])* $variant,)*
        }

        impl Permission {
            /// Every permission, in vocabulary order.
            pub const ALL: &'static [Permission] = &[$(Permission::$variant,)*];

            /// Its name: `resource:action`.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Permission::$variant => $name,)*
                }
            }

            /// The 403 detail for a caller without it (naming the role
            /// that holds it, for callers who know only roles).
            pub fn required(self) -> &'static str {
                match self {
                    $(Permission::$variant => concat!("the permission ", $name, " is required (the ADMIN role holds every permission)"),)*
                }
            }

            /// The 403 detail for delegating it without holding it.
            pub fn not_held(self) -> &'static str {
                match self {
                    $(Permission::$variant => concat!("you do not hold ", $name, ", so you cannot delegate it"),)*
                }
            }

            /// The permission named `name` (exactly), if any.
            pub fn parse(name: &str) -> Option<Self> {
                match name {
                    $($name => Some(Permission::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

permissions! {
    /// Send notifications (single, batch, CSV, topic, organisation, broadcast).
    NotificationsSend => "notifications:send",
    /// Read notifications, batches and bulk jobs.
    NotificationsRead => "notifications:read",
    /// Cancel notifications, batches and bulk jobs.
    NotificationsCancel => "notifications:cancel",
    /// Read subscribers and their preferences.
    SubscribersRead => "subscribers:read",
    /// Create, change and delete subscribers and their preferences.
    SubscribersWrite => "subscribers:write",
    /// Read topics and their members.
    TopicsRead => "topics:read",
    /// Change topics and their members.
    TopicsWrite => "topics:write",
    /// Read workflows and their runs.
    WorkflowsRead => "workflows:read",
    /// Save workflows.
    WorkflowsWrite => "workflows:write",
    /// Trigger and cancel workflow runs, post events to them.
    WorkflowsTrigger => "workflows:trigger",
    /// Read message templates.
    TemplatesRead => "templates:read",
    /// Create, change, delete and preview message templates.
    TemplatesWrite => "templates:write",
    /// Read provider configurations.
    ProvidersRead => "providers:read",
    /// Create, change and delete provider configurations.
    ProvidersManage => "providers:manage",
    /// Read webhook endpoints and their deliveries.
    WebhooksRead => "webhooks:read",
    /// Create, change and delete webhook endpoints, rotate their secrets.
    WebhooksManage => "webhooks:manage",
    /// Read users.
    UsersRead => "users:read",
    /// Invite people (the role hierarchy still decides which types).
    UsersInvite => "users:invite",
    /// Create, change, (de)activate and unlock users, end their sessions.
    UsersManage => "users:manage",
    /// Read organisations.
    OrganizationsRead => "organizations:read",
    /// Change organisations, BAAs, rate limits and quotas.
    OrganizationsManage => "organizations:manage",
    /// Read the audit log.
    AuditRead => "audit:read",
    /// Read security events.
    SecurityRead => "security:read",
    /// Read alert rules and alerts.
    AlertsRead => "alerts:read",
    /// Change alert rules, acknowledge and resolve alerts.
    AlertsManage => "alerts:manage",
    /// Read tracked errors.
    ErrorsRead => "errors:read",
    /// Read lookup values.
    LookupsRead => "lookups:read",
    /// Change lookup values.
    LookupsWrite => "lookups:write",
    /// Read delivery reports and the forecast.
    ReportsRead => "reports:read",
    /// Change report schedules.
    ReportsManage => "reports:manage",
    /// Read shipments.
    ShipmentsRead => "shipments:read",
    /// Create, change, refresh and delete shipments.
    ShipmentsWrite => "shipments:write",
    /// Read the operations console (queues, failed work, workers, caches).
    ConsoleRead => "console:read",
    /// Retry or discard failed work, cancel console actions.
    ConsoleRetry => "console:retry",
    /// Pause and resume queues and providers, clear caches.
    ConsoleManage => "console:manage",
    /// Read permission sets, users' permissions and statistics.
    PermissionsRead => "permissions:read",
    /// Create and change permission sets, assign them, grant permissions.
    PermissionsManage => "permissions:manage",
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A built-in permission set.
#[derive(Debug, Clone, Copy)]
pub struct BuiltIn {
    /// Its key (stable, lower case).
    pub key: &'static str,
    /// Its display name.
    pub name: &'static str,
    /// The built-in set it includes, if any.
    pub includes: Option<&'static str>,
    /// The permissions it adds to what it includes.
    pub permissions: &'static [Permission],
}

use Permission as P;

/// The built-in sets, each after the one it includes (the migration that
/// creates them writes the same lists; a test compares the two).
pub const BUILT_IN: &[BuiltIn] = &[
    BuiltIn {
        key: "member",
        name: "Member",
        includes: None,
        permissions: &[
            P::UsersInvite,
            P::LookupsRead,
            P::ShipmentsRead,
            P::ShipmentsWrite,
        ],
    },
    BuiltIn {
        key: "viewer",
        name: "Viewer",
        includes: None,
        permissions: &[
            P::NotificationsRead,
            P::SubscribersRead,
            P::TopicsRead,
            P::WorkflowsRead,
            P::TemplatesRead,
            P::ProvidersRead,
            P::WebhooksRead,
            P::UsersRead,
            P::OrganizationsRead,
            P::AlertsRead,
            P::ErrorsRead,
            P::LookupsRead,
            P::ReportsRead,
            P::ShipmentsRead,
            P::ConsoleRead,
            P::PermissionsRead,
        ],
    },
    BuiltIn {
        key: "developer",
        name: "Developer",
        includes: Some("viewer"),
        permissions: &[
            P::NotificationsSend,
            P::NotificationsCancel,
            P::SubscribersWrite,
            P::TopicsWrite,
            P::WorkflowsWrite,
            P::WorkflowsTrigger,
            P::TemplatesWrite,
            P::WebhooksManage,
            P::ShipmentsWrite,
        ],
    },
    BuiltIn {
        key: "admin",
        name: "Admin",
        includes: Some("developer"),
        permissions: &[
            P::ProvidersManage,
            P::UsersInvite,
            P::UsersManage,
            P::OrganizationsManage,
            P::AuditRead,
            P::SecurityRead,
            P::AlertsManage,
            P::LookupsWrite,
            P::ReportsManage,
            P::ConsoleRetry,
            P::ConsoleManage,
        ],
    },
    BuiltIn {
        key: "owner",
        name: "Owner",
        includes: Some("admin"),
        permissions: &[P::PermissionsManage],
    },
];

/// The built-in set a role maps to: `ADMIN` to Owner (an admin could
/// always do everything in its organisation), every other role to Member.
pub fn role_set(role: &str) -> &'static str {
    if role.eq_ignore_ascii_case("admin") {
        "owner"
    } else {
        "member"
    }
}

/// The permissions of built-in set `key`, with what it includes.
pub fn built_in_permissions(key: &str) -> Vec<Permission> {
    let mut out = Vec::new();
    let mut next = Some(key);
    while let Some(k) = next {
        let Some(set) = BUILT_IN.iter().find(|s| s.key == k) else {
            break;
        };
        out.extend_from_slice(set.permissions);
        next = set.includes;
    }
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_resource_colon_action_and_round_trip() {
        for p in Permission::ALL {
            let (resource, action) = p.as_str().split_once(':').expect("resource:action");
            assert!(!resource.is_empty() && !action.is_empty(), "{p}");
            assert_eq!(Permission::parse(p.as_str()), Some(*p));
        }
        assert_eq!(Permission::parse("Notifications:Send"), None);
        assert!(
            Permission::AuditRead
                .required()
                .starts_with("the permission audit:read is required")
        );
    }

    #[test]
    fn owner_holds_every_permission_and_each_set_includes_the_one_before() {
        assert_eq!(built_in_permissions("owner"), Permission::ALL.to_vec());
        let viewer = built_in_permissions("viewer");
        let developer = built_in_permissions("developer");
        let admin = built_in_permissions("admin");
        assert!(viewer.iter().all(|p| developer.contains(p)));
        assert!(developer.iter().all(|p| admin.contains(p)));
        assert!(!admin.contains(&Permission::PermissionsManage));
        assert!(!viewer.contains(&Permission::AuditRead));
    }
}
