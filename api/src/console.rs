//! The operator console at `/console`: a single page (plain HTML, CSS and
//! JavaScript modules, no build step) that signs an admin in through
//! `POST /api/v1/auth/login` and drives the operations API
//! (`/api/v1/ops/*`), alerts, error tracking and delivery reports from the
//! browser.
//!
//! Its files are embedded in the binary (`api/console/`), so the console is
//! always the one that matches the API it is served by. Every answer carries
//! a strict `Content-Security-Policy` (only this origin's scripts, styles
//! and requests; no inline script; never framed), `X-Frame-Options: DENY`
//! and `nosniff`; the page itself is `no-store`. The console routes by the
//! URL's fragment (`/console#/queues/email`), so the server knows only the
//! page and its assets; any other path under `/console/` is a 404.
//!
//! It is not part of the OpenAPI document: it is a page, not an API.

use poem::{
    Endpoint, EndpointExt, IntoResponse, Response, Route, get, handler,
    http::{HeaderValue, StatusCode, header},
    web::Path,
};

/// One embedded file.
struct Asset {
    /// Its path under `/console/`.
    path: &'static str,
    /// Its media type.
    content_type: &'static str,
    /// Its bytes.
    body: &'static [u8],
}

macro_rules! assets {
    ($($path:literal => $type:literal),* $(,)?) => {
        &[$(Asset {
            path: $path,
            content_type: $type,
            body: include_bytes!(concat!("../console/", $path)),
        }),*]
    };
}

/// Every file the console is made of.
const ASSETS: &[Asset] = assets![
    "index.html" => "text/html; charset=utf-8",
    "console.css" => "text/css; charset=utf-8",
    "favicon.svg" => "image/svg+xml",
    "app.js" => "text/javascript; charset=utf-8",
    "api.js" => "text/javascript; charset=utf-8",
    "dom.js" => "text/javascript; charset=utf-8",
    "charts.js" => "text/javascript; charset=utf-8",
    "dialog.js" => "text/javascript; charset=utf-8",
    "views/login.js" => "text/javascript; charset=utf-8",
    "views/overview.js" => "text/javascript; charset=utf-8",
    "views/queue.js" => "text/javascript; charset=utf-8",
    "views/failed.js" => "text/javascript; charset=utf-8",
    "views/workers.js" => "text/javascript; charset=utf-8",
    "views/scheduler.js" => "text/javascript; charset=utf-8",
    "views/providers.js" => "text/javascript; charset=utf-8",
    "views/search.js" => "text/javascript; charset=utf-8",
    "views/alerts.js" => "text/javascript; charset=utf-8",
    "views/errors.js" => "text/javascript; charset=utf-8",
    "views/reports.js" => "text/javascript; charset=utf-8",
];

/// The policy every console answer carries: scripts, styles, images and
/// requests from this origin only; no inline script or style attribute; no
/// plugins; never inside a frame; forms post nowhere else.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

fn find(path: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.path == path)
}

fn serve(asset: &Asset) -> Response {
    // The page is never stored (it is the door to a signed-in session);
    // assets are revalidated, so a new release is picked up at once.
    let cache = if asset.path == "index.html" {
        "no-store"
    } else {
        "no-cache"
    };
    let mut resp = Response::builder()
        .status(StatusCode::OK)
        .content_type(asset.content_type)
        .header(header::CACHE_CONTROL, cache)
        .body(asset.body);
    secure(&mut resp);
    resp
}

/// Sets the headers every console answer carries.
fn secure(resp: &mut Response) {
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
}

#[handler]
fn page() -> Response {
    serve(find("index.html").expect("the page is embedded"))
}

#[handler]
fn file(Path(path): Path<String>) -> poem::Result<Response> {
    // `/console` itself can reach here with an empty path.
    let path = if path.is_empty() { "index.html" } else { &path };
    find(path)
        .map(serve)
        .ok_or_else(|| poem::Error::from_string("no such console file", StatusCode::NOT_FOUND))
}

/// The console, to nest at `/console`: the page at `/console` and
/// `/console/`, its files below.
pub fn endpoint() -> impl Endpoint {
    Route::new()
        .at("/", get(page))
        .at("/*path", get(file))
        .around(|ep, req| async move {
            // Errors (a 404, a 405) are problem+json like the API's, and
            // keep the policy too.
            let path = req.original_uri().path().to_owned();
            let request_id = req
                .data::<crate::middleware::RequestId>()
                .map(|r| r.0.clone())
                .unwrap_or_default();
            let mut resp = match ep.call(req).await {
                Ok(resp) => resp.into_response(),
                Err(err) => crate::error::problem_response(err, &path, &request_id),
            };
            secure(&mut resp);
            Ok(resp)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const JS: &str = "text/javascript; charset=utf-8";

    #[test]
    fn every_module_the_page_imports_is_embedded() {
        for asset in ASSETS {
            let Ok(text) = std::str::from_utf8(asset.body) else {
                continue;
            };
            for line in text.lines() {
                let line = line.trim();
                if !(line.starts_with("import ") || line.starts_with("} from ")) {
                    continue;
                }
                let Some(spec) = line.split(['\'', '"']).nth(1) else {
                    continue;
                };
                let base = asset.path.rsplit_once('/').map_or("", |(dir, _)| dir);
                let mut parts: Vec<&str> = base.split('/').filter(|p| !p.is_empty()).collect();
                for seg in spec.split('/') {
                    match seg {
                        "." => {}
                        ".." => {
                            parts.pop();
                        }
                        s => parts.push(s),
                    }
                }
                let resolved = parts.join("/");
                assert!(
                    find(&resolved).is_some(),
                    "{} imports {spec} ({resolved}), which is not embedded",
                    asset.path
                );
            }
        }
    }

    #[test]
    fn the_page_loads_only_embedded_files_and_no_inline_script() {
        let html = std::str::from_utf8(find("index.html").unwrap().body).unwrap();
        for attr in ["src=\"", "href=\""] {
            for piece in html.split(attr).skip(1) {
                let url = piece.split('"').next().unwrap();
                if url.starts_with('#') {
                    continue;
                }
                let path = url
                    .strip_prefix("/console/")
                    .unwrap_or_else(|| panic!("{url} is not a console file"));
                assert!(find(path).is_some(), "{url} is not embedded");
            }
        }
        for piece in html.split("<script").skip(1) {
            let tag = piece.split('>').next().unwrap();
            assert!(tag.contains("src="), "an inline script: <script{tag}>");
        }
        assert!(!html.contains("style=\""), "an inline style attribute");
    }

    #[test]
    fn content_types_follow_the_extension() {
        for asset in ASSETS {
            let want = match asset.path.rsplit('.').next().unwrap() {
                "html" => "text/html; charset=utf-8",
                "css" => "text/css; charset=utf-8",
                "svg" => "image/svg+xml",
                "js" => JS,
                other => panic!("unexpected extension {other}"),
            };
            assert_eq!(asset.content_type, want, "{}", asset.path);
        }
    }
}
