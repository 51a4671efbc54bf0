//! Operations: queues.

use poem_openapi::OpenApi;

/// The queues endpoints.
#[derive(Debug)]
pub struct OpsQueuesApi;

#[OpenApi(
    prefix_path = "/api/v1/ops",
    tag = "crate::routes::ApiTags::Operations"
)]
impl OpsQueuesApi {}
