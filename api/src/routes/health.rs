//! Liveness and readiness probes.

use std::time::Duration;

use poem::web::Data;
use poem_openapi::{ApiResponse, Object, OpenApi, payload::Json};

use crate::{AppState, error::ApiError, routes::ApiTags};

/// How long a dependency may take to answer a readiness check.
const CHECK_TIMEOUT: Duration = Duration::from_secs(1);

/// The probes.
#[derive(Debug)]
pub struct HealthApi;

/// A probe's answer.
#[derive(Debug, Object)]
pub struct HealthStatus {
    /// `ok`.
    pub status: String,
    /// Each dependency's state (readiness only).
    #[oai(skip_serializing_if_is_none)]
    pub checks: Option<Checks>,
}

/// Dependency states.
#[derive(Debug, Object)]
pub struct Checks {
    /// `ok` or `down`.
    pub postgres: String,
    /// `ok` or `down`.
    pub redis: String,
}

/// Probe responses.
#[derive(Debug, ApiResponse)]
pub enum HealthResponse {
    /// Up.
    #[oai(status = 200)]
    Ok(Json<HealthStatus>),
}

#[OpenApi(tag = "ApiTags::Health")]
impl HealthApi {
    /// Whether the process is up.
    #[oai(path = "/health/live", method = "get", operation_id = "health.live")]
    async fn live(&self) -> HealthResponse {
        HealthResponse::Ok(Json(HealthStatus {
            status: "ok".into(),
            checks: None,
        }))
    }

    /// Whether the API can serve: Postgres and Redis both answer. 503 when
    /// either does not.
    #[oai(path = "/health/ready", method = "get", operation_id = "health.ready")]
    async fn ready(&self, state: Data<&AppState>) -> Result<HealthResponse, ApiError> {
        let pg = tokio::time::timeout(CHECK_TIMEOUT, shared::db::ping(&state.pool)).await;
        let pg_ok = matches!(pg, Ok(Ok(_)));
        let redis_ok = matches!(
            tokio::time::timeout(CHECK_TIMEOUT, state.queues.ping()).await,
            Ok(Ok(()))
        );
        let word = |ok: bool| if ok { "ok" } else { "down" };
        if pg_ok && redis_ok {
            Ok(HealthResponse::Ok(Json(HealthStatus {
                status: "ok".into(),
                checks: Some(Checks {
                    postgres: word(pg_ok).into(),
                    redis: word(redis_ok).into(),
                }),
            })))
        } else {
            Err(ApiError::Unavailable(format!(
                "postgres {}, redis {}",
                word(pg_ok),
                word(redis_ok)
            )))
        }
    }
}
