//! Operations: failed.

use poem_openapi::OpenApi;

/// The failed endpoints.
#[derive(Debug)]
pub struct OpsFailedApi;

#[OpenApi(
    prefix_path = "/api/v1/ops",
    tag = "crate::routes::ApiTags::Operations"
)]
impl OpsFailedApi {}
