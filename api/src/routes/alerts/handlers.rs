//! The alert endpoints' handlers.

use super::*;
use crate::error::InvalidParam;
use crate::extract::{AdminCtx, Cursor, PageSize, Params, PathId};
use crate::services::alerts::{self as service, clamp};
use poem_openapi::validation::Pattern;

/// Checks a rule body; also resolves every URL's host, which must not lead
/// to a forbidden address.
async fn check(state: &AppState, body: AlertRuleBody) -> Result<RuleSpec, ApiError> {
    let escalation = body.escalation.map(|levels| {
        levels
            .into_iter()
            .map(|l| {
                let channels: Vec<Value> = l
                    .channels
                    .into_iter()
                    .map(|c| {
                        let mut o = serde_json::Map::new();
                        o.insert("type".into(), c.kind.into());
                        for (k, v) in [
                            ("url", c.url),
                            ("secret", c.secret),
                            ("routing_key", c.routing_key),
                        ] {
                            if let Some(v) = v {
                                o.insert(k.into(), v.into());
                            }
                        }
                        if let Some(to) = c.to {
                            o.insert("to".into(), to.into());
                        }
                        Value::Object(o)
                    })
                    .collect();
                json!({"after_minutes": l.after_minutes, "channels": channels})
            })
            .collect()
    });
    let input = RuleInput {
        name: body.name,
        metric: body.metric,
        channel: body.channel,
        queue: body.queue,
        provider: body.provider,
        min_events: body.min_events,
        disabled_by: body.disabled_by,
        threshold: body.threshold,
        window_secs: body.window_secs,
        severity: body.severity,
        cooldown_secs: body.cooldown_secs,
        escalation,
        enabled: body.enabled,
    };
    let spec = input
        .check(state.webhooks_allow_loopback)
        .map_err(|problems| {
            ApiError::Invalid(
                problems
                    .into_iter()
                    .map(|(name, reason)| InvalidParam { name, reason })
                    .collect(),
            )
        })?;
    let mut problems = Vec::new();
    for (i, level) in spec.escalation.iter().enumerate() {
        for (j, c) in level.channels.iter().enumerate() {
            let url = match c {
                alerts::ChannelSpec::Webhook { url, .. } | alerts::ChannelSpec::Slack { url } => {
                    url
                }
                _ => continue,
            };
            if let Err(reason) =
                shared::webhooks::check_endpoint(url, state.webhooks_allow_loopback).await
            {
                problems.push(InvalidParam {
                    name: format!("escalation[{i}].channels[{j}].url"),
                    reason,
                });
            }
        }
    }
    if problems.is_empty() {
        Ok(spec)
    } else {
        Err(ApiError::Invalid(problems))
    }
}

/// Refuses a metric only platform-wide rules may watch in a rule of an
/// organisation.
fn scoped(spec: &RuleSpec, tenant: Option<TenantId>) -> Result<(), ApiError> {
    if tenant.is_some() && spec.metric.platform_only() {
        return Err(ApiError::invalid(
            "metric",
            format!(
                "{} is counted for the whole platform (the API does not attribute its 5xx \
                 answers to an organisation); only a platform admin's rule without \
                 organization_id may watch it",
                spec.metric.as_str()
            ),
        ));
    }
    Ok(())
}

/// The organisation a new rule is for (`None`: platform-wide).
fn owner(p: &Principal, requested: Option<&str>) -> Result<Option<TenantId>, ApiError> {
    match requested {
        None if p.platform => Ok(None),
        other => p.target_tenant(other).map(Some),
    }
}

#[OpenApi(prefix_path = "/api/v1/admin", tag = "ApiTags::Admin")]
impl AlertRulesApi {
    /// Alert rules (admins): the organisation's own, its defaults included
    /// (created on first use); platform admins see every rule and may narrow
    /// to one `organization_id` (`platform`: platform-wide rules).
    #[oai(
        path = "/alert-rules",
        method = "get",
        operation_id = "admin.alert_rules.list"
    )]
    async fn list_rules(
        &self,
        cx: AdminCtx<'_>,
        organization_id: Query<Option<String>>,
    ) -> Result<AlertRuleListResponse, ApiError> {
        let p = cx.principal().await?;
        let act = cx.acting(&p, "alert_rule.list", "alert_rule");
        let only = act
            .refused(
                None,
                match organization_id.0.as_deref() {
                    None => Ok(None),
                    Some("platform") if p.platform => Ok(Some(None)),
                    Some("platform") => Err(ApiError::NotFound("organization")),
                    Some(raw) => p.target_tenant(Some(raw)).map(|t| Some(Some(t))),
                },
            )
            .await?;
        let mut conn = cx.state.pool.acquire().await?;
        if let Some(t) = p.reach().tenant().or(only.flatten()) {
            alerts::ensure_defaults(&mut conn, t).await?;
        }
        let rules = store::list_rules(&mut *conn, p.reach(), only).await?;
        Ok(AlertRuleListResponse::Ok(Json(AlertRuleList {
            items: rules.into_iter().map(Into::into).collect(),
        })))
    }

    /// Create a rule (admins). Answers 400 naming each invalid field: an
    /// unknown metric, a window that is not 1 to 86400 seconds, a threshold
    /// outside the metric's range, a bad escalation level or target.
    #[oai(
        path = "/alert-rules",
        method = "post",
        operation_id = "admin.alert_rules.create"
    )]
    async fn create_rule(
        &self,
        cx: AdminCtx<'_>,
        body: StrictJson<AlertRuleBody>,
    ) -> Result<AlertRuleResponse, ApiError> {
        let p = cx.principal().await?;
        let act = cx.acting(&p, "alert_rule.create", "alert_rule");
        let body = body.0;
        let tenant = act
            .refused(None, owner(&p, body.organization_id.as_deref()))
            .await?;
        let spec = check(cx.state, body).await?;
        scoped(&spec, tenant)?;
        let mut tx = cx.state.pool.begin().await?;
        let id = store::insert_rule(&mut *tx, tenant, &spec, None, &p.caller.actor).await?;
        let details = json!({"metric": spec.metric.as_str(), "threshold": spec.threshold, "severity": spec.severity.as_str(), "enabled": spec.enabled});
        act.audit(&mut *tx, tenant, id, details).await?;
        let rule = store::get_rule(&mut *tx, p.reach(), id)
            .await?
            .ok_or(ApiError::NotFound("alert rule"))?;
        tx.commit().await?;
        Ok(AlertRuleResponse::Created(Json(rule.into())))
    }

    /// One rule (admins).
    #[oai(
        path = "/alert-rules/:id",
        method = "get",
        operation_id = "admin.alert_rules.get"
    )]
    async fn get_rule(
        &self,
        cx: AdminCtx<'_>,
        id: Path<PathId<AlertRuleId>>,
    ) -> Result<AlertRuleResponse, ApiError> {
        let p = cx.principal().await?;
        let act = cx.acting(&p, "alert_rule.get", "alert_rule");
        let rule_id = act.id(&id.0, "alert rule").await?;
        let found = store::get_rule(&cx.state.pool, p.reach(), rule_id).await?;
        let rule = act.found(&id.0, "alert rule", found).await?;
        Ok(AlertRuleResponse::Ok(Json(rule.into())))
    }

    /// Replace a rule (admins): every field as on creation. Its open alerts
    /// stay open and follow the new definition from the next evaluation.
    #[oai(
        path = "/alert-rules/:id",
        method = "put",
        operation_id = "admin.alert_rules.update"
    )]
    async fn update_rule(
        &self,
        cx: AdminCtx<'_>,
        id: Path<PathId<AlertRuleId>>,
        body: StrictJson<AlertRuleBody>,
    ) -> Result<AlertRuleResponse, ApiError> {
        let p = cx.principal().await?;
        let act = cx.acting(&p, "alert_rule.update", "alert_rule");
        let rule_id = act.id(&id.0, "alert rule").await?;
        if body.0.organization_id.is_some() {
            return Err(ApiError::invalid(
                "organization_id",
                "cannot be changed; create a rule in the other organisation",
            ));
        }
        let spec = check(cx.state, body.0).await?;
        let mut tx = cx.state.pool.begin().await?;
        let found = store::update_rule(&mut *tx, p.reach(), rule_id, &spec).await?;
        let rule = act.found(&id.0, "alert rule", found).await?;
        // Rolled back (the transaction is dropped) when refused.
        scoped(&spec, rule.tenant_id)?;
        let details = json!({"metric": spec.metric.as_str(), "threshold": spec.threshold, "severity": spec.severity.as_str(), "enabled": spec.enabled});
        act.audit(&mut *tx, rule.tenant_id, rule_id, details)
            .await?;
        tx.commit().await?;
        Ok(AlertRuleResponse::Ok(Json(rule.into())))
    }

    /// Delete a rule and its alerts (admins). A deleted default rule is not
    /// created again; disable it instead to keep its history.
    #[oai(
        path = "/alert-rules/:id",
        method = "delete",
        operation_id = "admin.alert_rules.delete"
    )]
    async fn delete_rule(
        &self,
        cx: AdminCtx<'_>,
        id: Path<PathId<AlertRuleId>>,
    ) -> Result<AlertDeletedResponse, ApiError> {
        let p = cx.principal().await?;
        let act = cx.acting(&p, "alert_rule.delete", "alert_rule");
        let mut tx = cx.state.pool.begin().await?;
        let rule_id = act.id(&id.0, "alert rule").await?;
        let found = store::get_rule(&mut *tx, p.reach(), rule_id).await?;
        let rule = act.found(&id.0, "alert rule", found).await?;
        store::delete_rule(&mut *tx, p.reach(), rule.id).await?;
        act.audit(
            &mut *tx,
            rule.tenant_id,
            rule.id,
            json!({"metric": rule.spec.metric.as_str()}),
        )
        .await?;
        tx.commit().await?;
        Ok(AlertDeletedResponse::Deleted)
    }
}

crate::query_params! {
    /// The filters and page of the alert list.
    pub struct AlertQuery {
        organization_id: Option<String>,
        status: Option<String> where [Pattern::new("^(open|acknowledged|resolved)$")],
        severity: Option<String> where [Pattern::new("^(info|warning|critical)$")],
        rule_id: Option<String>,
        since: Option<DateTime<Utc>>,
        until: Option<DateTime<Utc>>,
        cursor: Option<Cursor<(DateTime<Utc>, AlertId)>>,
        limit: PageSize,
    }
}

#[OpenApi(prefix_path = "/api/v1/admin", tag = "ApiTags::Admin")]
impl AlertsApi {
    /// Alerts, newest first (admins), filtered by `status`, `severity`,
    /// `rule_id`, opening time (`since` inclusive, `until` exclusive) and,
    /// for platform admins, `organization_id`.
    #[oai(path = "/alerts", method = "get", operation_id = "admin.alerts.list")]
    async fn list_alerts(
        &self,
        cx: AdminCtx<'_>,
        query: Params<AlertQuery>,
    ) -> Result<AlertPageResponse, ApiError> {
        let AlertQuery {
            organization_id,
            status,
            severity,
            rule_id,
            since,
            until,
            cursor,
            limit,
        } = query.0;
        let p = cx.principal().await?;
        let filter = service::ListFilter {
            organization_id,
            status,
            severity,
            rule_id,
            since,
            until,
        };
        let (rows, next_cursor) =
            service::list(cx.state, &p, cx.request_id, filter, cursor, limit).await?;
        Ok(AlertPageResponse::Ok(Json(AlertPage {
            items: rows.into_iter().map(Into::into).collect(),
            next_cursor,
        })))
    }

    /// Alert numbers (admins): unresolved alerts per severity now, and over
    /// alerts opened from `since` (default 7 days before `until`) to
    /// `until` (default now) how many opened and the mean time to
    /// acknowledge and to resolve. Platform admins see every organisation
    /// unless they name one `organization_id`.
    #[oai(
        path = "/alerts/statistics",
        method = "get",
        operation_id = "admin.alerts.statistics"
    )]
    async fn statistics(
        &self,
        cx: AdminCtx<'_>,
        organization_id: Query<Option<String>>,
        since: Query<Option<DateTime<Utc>>>,
        until: Query<Option<DateTime<Utc>>>,
    ) -> Result<AlertStatisticsResponse, ApiError> {
        let p = cx.principal().await?;
        let act = cx.acting(&p, "alert.statistics", "alert");
        let reach = act
            .refused(None, p.reach_of(organization_id.0.as_deref()))
            .await?;
        let until = clamp(Some(until.0.unwrap_or_else(Utc::now))).unwrap_or_else(Utc::now);
        let since = clamp(since.0)
            .unwrap_or_else(|| until.checked_sub_signed(Duration::days(7)).unwrap_or(until));
        let mut conn = cx.state.pool.acquire().await?;
        let stats = store::statistics(&mut conn, reach, since, until).await?;
        let mut open = AlertOpenBySeverity::default();
        for (severity, n) in stats.open_by_severity {
            match severity.as_str() {
                "info" => open.info = n,
                "warning" => open.warning = n,
                _ => open.critical = n,
            }
        }
        Ok(AlertStatisticsResponse::Ok(Json(AlertStatistics {
            open_by_severity: open,
            opened: stats.opened,
            mean_seconds_to_acknowledge: stats.mean_secs_to_acknowledge,
            mean_seconds_to_resolve: stats.mean_secs_to_resolve,
            since,
            until,
        })))
    }

    /// One alert with its history: every transition (opened, escalated,
    /// acknowledged, resolved) with the notifications it sent and how each
    /// went.
    #[oai(
        path = "/alerts/:id",
        method = "get",
        operation_id = "admin.alerts.get"
    )]
    async fn get_alert(
        &self,
        cx: AdminCtx<'_>,
        id: Path<PathId<AlertId>>,
    ) -> Result<AlertDetailResponse, ApiError> {
        let p = cx.principal().await?;
        let act = cx.acting(&p, "alert.get", "alert");
        let alert_id = act.id(&id.0, "alert").await?;
        let found = store::get(&cx.state.pool, p.reach(), alert_id).await?;
        let alert = act.found(&id.0, "alert", found).await?;
        let mut conn = cx.state.pool.acquire().await?;
        let (events, deliveries) = store::history(&mut conn, alert.id).await?;
        let history = events
            .into_iter()
            .map(|e| AlertEventView {
                notifications: deliveries
                    .iter()
                    .filter(|d| d.event_id == e.id)
                    .map(|d| AlertNotificationView {
                        id: d.id.to_string(),
                        channel: d.channel.clone(),
                        action: d.action.clone(),
                        status: d.status.clone(),
                        attempts: d.attempts,
                        response_status: d.response_status,
                        last_error: d.last_error.clone(),
                        notification_ids: d.notification_ids.iter().map(Uuid::to_string).collect(),
                        sent_at: d.sent_at,
                    })
                    .collect(),
                kind: e.kind,
                level: e.level,
                actor: e.actor,
                at: e.at,
                details: e.details,
            })
            .collect();
        Ok(AlertDetailResponse::Ok(Json(AlertDetail {
            alert: alert.into(),
            history,
        })))
    }

    /// Acknowledge an open alert (admins): its escalation stops, and
    /// PagerDuty, Slack and webhook targets it reached hear of it. 409 when
    /// it is already acknowledged or resolved.
    #[oai(
        path = "/alerts/:id/acknowledge",
        method = "post",
        operation_id = "admin.alerts.acknowledge"
    )]
    async fn acknowledge(
        &self,
        cx: AdminCtx<'_>,
        id: Path<PathId<AlertId>>,
    ) -> Result<AlertResponse, ApiError> {
        act(&cx, id.0.raw(), "acknowledged").await
    }

    /// Resolve an alert by hand (admins): every target it reached hears of
    /// it. If the condition still holds, a new alert opens after the rule's
    /// cooldown. 409 when it is already resolved.
    #[oai(
        path = "/alerts/:id/resolve",
        method = "post",
        operation_id = "admin.alerts.resolve"
    )]
    async fn resolve(
        &self,
        cx: AdminCtx<'_>,
        id: Path<PathId<AlertId>>,
    ) -> Result<AlertResponse, ApiError> {
        act(&cx, id.0.raw(), "resolved").await
    }
}

async fn act(cx: &AdminCtx<'_>, raw: &str, to: &str) -> Result<AlertResponse, ApiError> {
    let p = cx.principal().await?;
    let action = if to == "acknowledged" {
        "alert.acknowledge"
    } else {
        "alert.resolve"
    };
    let act = cx.acting(&p, action, "alert");
    let moved = match crate::extract::id(raw, "alert") {
        Ok(id) => {
            match alerts::evaluate::act(
                &cx.state.pool,
                &cx.state.jobs,
                p.reach(),
                id,
                to,
                &p.caller.actor,
                Utc::now(),
            )
            .await?
            {
                None => Err(ApiError::NotFound("alert")),
                Some(Err(status)) => {
                    Err(ApiError::Conflict(format!("the alert is already {status}")))
                }
                Some(Ok(alert)) => Ok(alert),
            }
        }
        Err(e) => Err(e),
    };
    let alert = act.refused(Some(raw), moved).await?;
    act.audit(
        &cx.state.pool,
        alert.tenant_id,
        alert.id,
        json!({"rule_id": alert.rule_id, "severity": alert.severity}),
    )
    .await?;
    Ok(AlertResponse::Ok(Json(alert.into())))
}
